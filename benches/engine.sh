#!/usr/bin/env bash
# Engine benchmarks for issue 4, each against a baseline measured in the same run on the same
# engine:
#   1. 20 trivial `cmd` steps in a chain:   kiln exec  vs  a shell loop of 20 `docker run --rm`,
#      plain and with the isolation kiln gives every step (own network, alias, /workspace bind)
#   2. 10 parallel trivial steps:            kiln exec  vs  10 backgrounded `docker run --rm`
#   3. a step printing 200 MB:               kiln exec  vs  `docker run --rm` (both to /dev/null),
#      with kiln's peak RSS
# Needs the engine and image of scripts/test-env.sh. Usage: benches/engine.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
./scripts/test-env.sh >/dev/null
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
cargo build --release --bin kiln -q
kiln=$PWD/target/release/kiln
image=busybox:latest
dir=$(mktemp -d)
docker network create kiln-bench >/dev/null
trap 'rm -rf "$dir"; docker network rm kiln-bench >/dev/null' EXIT

{
  echo "steps:"
  for i in $(seq 1 20); do echo "  - cmd: $image true"; done
} >"$dir/serial.yaml"
{
  echo "steps:"
  for i in $(seq 1 10); do printf '  - cmd: %s true\n    when: ["-"]\n' "$image"; done
} >"$dir/parallel.yaml"
cat >"$dir/logs.yaml" <<YAML
steps:
  - cmd: $image sh -c 'yes kiln-log-capture-benchmark-line-0123456789 | head -c 200000000'
YAML

hyperfine --style basic --warmup 1 --runs "$runs" --export-markdown "$dir/serial.md" \
  -n "kiln exec, 20 chained steps" "$kiln exec -f $dir/serial.yaml >/dev/null" \
  -n "docker run --rm x20 (shell loop)" "for i in \$(seq 20); do docker run --rm $image true; done" \
  -n "docker run --rm x20, same isolation as kiln" \
  "for i in \$(seq 20); do docker run --rm --network kiln-bench --network-alias s$i -v $dir:/workspace -w /workspace $image true; done"
hyperfine --style basic --warmup 1 --runs "$runs" --export-markdown "$dir/parallel.md" \
  -n "kiln exec, 10 parallel steps" "$kiln exec -f $dir/parallel.yaml >/dev/null" \
  -n "docker run --rm x10 (backgrounded)" "for i in \$(seq 10); do docker run --rm $image true & done; wait"
hyperfine --style basic --warmup 1 --runs "$runs" --export-markdown "$dir/logs.md" \
  -n "kiln exec, 200 MB of output" "$kiln exec -f $dir/logs.yaml >/dev/null" \
  -n "docker run --rm, 200 MB of output" "docker run --rm $image sh -c 'yes kiln-log-capture-benchmark-line-0123456789 | head -c 200000000' >/dev/null"
/usr/bin/time -f "kiln exec, 200 MB of output: peak RSS %M KiB" "$kiln" exec -f "$dir/logs.yaml" >/dev/null 2>"$dir/rss" || true
cat "$dir"/serial.md "$dir"/parallel.md "$dir"/logs.md
tail -n 1 "$dir/rss"
