#!/usr/bin/env bash
# The scoped Docker API's overhead (issue 13), against the engine's own socket in the same run:
# the same task file through `kiln exec --docker-api scoped` (the run's socket, served by kiln)
# and `--docker-api host` (the engine's socket mounted as ACR does); only the socket differs.
#   1. `docker build --no-cache` of examples/quick-build inside a step
#   2. 1,000 `docker inspect` calls inside a step (a shell loop of the docker CLI)
# Needs the engine and docker:latest image of scripts/test-env.sh.
# Usage: benches/docker_api.sh [runs]   (KILN_BIN=path to use another kiln binary)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
./scripts/test-env.sh >/dev/null
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
if [[ -z ${KILN_BIN:-} ]]; then
  cargo build --release --bin kiln -q
  KILN_BIN=$PWD/target/release/kiln
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"; docker images -q kiln-bench-dockerapi | sort -u | xargs -r docker rmi -f >/dev/null' EXIT

cat >"$dir/build.yaml" <<'YAML'
steps:
  - cmd: docker build --no-cache -q -t kiln-bench-dockerapi:{{.Run.ID}} .
YAML
cat >"$dir/inspect.yaml" <<'YAML'
steps:
  - cmd: docker sh -c 'i=0; while [ $i -lt 1000 ]; do docker inspect busybox:latest >/dev/null; i=$((i+1)); done'
YAML

for what in build inspect; do
  ctx=/dev/null
  [[ $what == build ]] && ctx=examples/quick-build
  hyperfine --style basic --warmup 1 --runs "$runs" --export-markdown "$dir/$what.md" \
    -n "$what, scoped (the run's socket)" "$KILN_BIN exec -f $dir/$what.yaml $ctx >/dev/null" \
    -n "$what, host (the engine's socket)" "$KILN_BIN exec --docker-api host -f $dir/$what.yaml $ctx >/dev/null"
done
cat "$dir"/build.md "$dir"/inspect.md
