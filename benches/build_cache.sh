#!/usr/bin/env bash
# Build-cache benchmark for issue 13 (`cache: enabled`), against a baseline measured in the same
# run on the same engine and registry: a multi-stage Dockerfile whose first stage has a slow
# `RUN` (sleep 5), built by `kiln exec` with `cache: enabled`,
#   1. cold:   a new `RUN` line (a fresh nonce), so neither the engine nor the registry has it
#   2. cached: the same Dockerfile again, the registry cache filled by a cold build in --setup
# with the built image and the local cache tag removed before every timed build (`docker rmi`,
# which prunes the stages' untagged layers), so the cached build has only the registry to use.
# Needs the engine, image and registries of scripts/test-env.sh.
# Usage: benches/build_cache.sh [runs]   (KILN=path/to/kiln skips the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
./scripts/test-env.sh >/dev/null
set -a; . /var/lib/kiln-test/env; set +a
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
if [ -z "${KILN:-}" ]; then
  cargo build --release --bin kiln -q
  KILN=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
fi
registry=$KILN_TEST_REGISTRY
repo=$registry/kiln-bench-cache
task=bench$$
dir=$(mktemp -d)
trap 'docker rmi "$repo:bench" "$repo:cache_${task}_build" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

cat >"$dir/acb.yaml" <<YAML
steps:
  - id: build
    build: -t $repo:bench .
    cache: enabled
YAML
# The Dockerfile with a new nonce in the slow RUN: a build nothing has cached.
fresh() {
  printf 'FROM %s AS slow\nRUN echo %s > /marker && sleep 5\nFROM slow\nRUN cp /marker /copied\n' \
    "$KILN_TEST_IMAGE" "$(date +%s%N)" >"$dir/Dockerfile"
}
forget() { docker rmi "$repo:bench" "$repo:cache_${task}_build" >/dev/null 2>&1 || true; }
build="$KILN exec -f $dir/acb.yaml $dir --registry $registry --task-name $task >$dir/last.log 2>&1"
export -f fresh forget
export dir repo task KILN_TEST_IMAGE

# --setup runs before each series: for the cached one it is the cold build that fills the cache.
hyperfine --style basic --shell bash --runs "$runs" --export-markdown "$dir/cache.md" \
  --setup "forget; fresh; $build" \
  --prepare "forget; fresh" -n "cold build (no cache anywhere)" "$build" \
  --prepare "forget" -n "build from the registry cache" "$build"
grep -q "Using cache" "$dir/last.log" || { echo "the last build did not use the cache:"; cat "$dir/last.log"; exit 1; }
cat "$dir/cache.md"
