#!/usr/bin/env bash
# Engine benchmarks (issues 4 and 14), each against a baseline measured in the same run on the
# same engine and image:
#   serial    20 trivial `cmd` steps in a chain: kiln exec (fast path), kiln exec --classic-steps,
#             a shell loop of 20 `docker run --rm`, plain and with the isolation kiln gives every
#             step (own network, alias, /workspace bind)
#   parallel  10 parallel trivial steps: kiln exec, --classic-steps, 10 backgrounded `docker run --rm`
#   overhead  a step's own overhead in the 20-step chain, from the engine's events: from one
#             step's command exiting to the next one's command running (p50, p90), both paths
#   serve     the 20-step chain through `kiln serve` (submit -> Succeeded) vs the docker loop
#   big       a chain of 500 trivial steps: kiln's peak RSS and the run's peak container count
#   logs      a step printing 200 MB: kiln exec vs `docker run --rm` (both to /dev/null), with
#             kiln's peak RSS
# Needs the engine and image of scripts/test-env.sh.
# Usage: benches/engine.sh [runs] [part...]   (default: 5 runs, every part)
# KILN_BENCH_PROFILE=debug measures the debug build instead of the release one;
# KILN_BENCH_BIN=path measures that kiln binary, building nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
parts=${*:-serial parallel overhead serve big logs}
profile=${KILN_BENCH_PROFILE:-release}
./scripts/test-env.sh >/dev/null
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
if [ -n "${KILN_BENCH_BIN:-}" ]; then
  kiln=$(realpath "$KILN_BENCH_BIN")
else
  if [ "$profile" = release ]; then cargo build --release --bin kiln -q; else cargo build --bin kiln -q; fi
  kiln=$(realpath "${CARGO_TARGET_DIR:-target}/$profile/kiln")
fi
image=busybox:latest
dir=$(mktemp -d)
serve_pid=
docker network create kiln-bench >/dev/null
cleanup() {
  if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null; fi
  rm -rf "$dir"
  docker network rm kiln-bench >/dev/null
}
trap cleanup EXIT
want() { [[ " $parts " == *" $1 "* ]]; }

chain() {
  echo "steps:"
  for i in $(seq 1 "$1"); do echo "  - cmd: $image true"; done
}
chain 20 >"$dir/serial.yaml"
chain 500 >"$dir/big.yaml"
{
  echo "steps:"
  for i in $(seq 1 10); do printf '  - cmd: %s true\n    when: ["-"]\n' "$image"; done
} >"$dir/parallel.yaml"
cat >"$dir/logs.yaml" <<YAML
steps:
  - cmd: $image sh -c 'yes kiln-log-capture-benchmark-line-0123456789 | head -c 200000000'
YAML
loop="for i in \$(seq 20); do docker run --rm $image true; done"

if want serial; then
  hyperfine --style basic --warmup 1 --runs "$runs" --export-markdown "$dir/serial.md" \
    -n "kiln exec, 20 chained steps" "$kiln exec -f $dir/serial.yaml >/dev/null" \
    -n "kiln exec --classic-steps, 20 chained steps" "$kiln exec --classic-steps -f $dir/serial.yaml >/dev/null" \
    -n "docker run --rm x20 (shell loop)" "$loop" \
    -n "docker run --rm x20, same isolation as kiln" \
    "for i in \$(seq 20); do docker run --rm --network kiln-bench --network-alias s\$i -v $dir:/workspace -w /workspace $image true; done"
fi
if want parallel; then
  hyperfine --style basic --warmup 1 --runs "$runs" --export-markdown "$dir/parallel.md" \
    -n "kiln exec, 10 parallel steps" "$kiln exec -f $dir/parallel.yaml >/dev/null" \
    -n "kiln exec --classic-steps, 10 parallel steps" "$kiln exec --classic-steps -f $dir/parallel.yaml >/dev/null" \
    -n "docker run --rm x10 (backgrounded)" "for i in \$(seq 10); do docker run --rm $image true & done; wait"
fi

# The engine's events of one run: when each step's command started and ended (an exec's for a
# prepared container, the container's own for a classic one), then the gaps between one
# step's end and the next one's start.
overhead() {
  local name=$1 run=$2
  shift 2
  local since until
  since=$(date +%s.%N)
  "$kiln" exec --run-id "$run" "$@" -f "$dir/serial.yaml" >/dev/null
  until=$(date +%s.%N)
  docker events --since "$since" --until "$until" --filter type=container \
    --format '{{.TimeNano}} {{.Actor.Attributes.name}} {{.Action}}' |
    awk -v prefix="kiln-$run-acb_step_" '
      index($2, prefix) == 1 {
        step = substr($2, length(prefix) + 1); sub(/-[0-9]+$/, "", step)
        if ($3 ~ /^exec_start/) { start[step] = $1; exec[step] = 1 }
        else if ($3 == "exec_die") { stop[step] = $1 }
        else if ($3 == "start" && !(step in exec)) { start[step] = $1 }
        else if ($3 == "die" && !(step in exec)) { stop[step] = $1 }
      }
      END { for (k = 0; (k + 1) in start; k++) print (start[k + 1] - stop[k]) / 1e6 }' |
    sort -n |
    awk -v name="$name" '{ gap[NR] = $1 }
      END {
        printf "%s: step overhead (command exit -> next command running) over %d transitions: p50 %.0f ms, p90 %.0f ms\n",
          name, NR, gap[int((NR + 1) / 2)], gap[int(NR * 0.9 + 0.5)]
      }'
}
if want overhead; then
  for i in $(seq 1 3); do
    overhead "fast path" "kbo${i}f$$"
    overhead "classic path" "kbo${i}c$$" --classic-steps
  done >"$dir/overhead.txt"
fi

if want serve; then
  "$kiln" serve --addr 127.0.0.1:0 --data-dir "$dir/serve" >"$dir/serve.log" 2>&1 &
  serve_pid=$!
  until grep -q "listening on" "$dir/serve.log"; do sleep 0.1; done
  url=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$dir/serve.log" | head -n 1)
  KILN_TOKEN=$(sed -n 's/^admin token: //p' "$dir/serve.log")
  export KILN_TOKEN
  hyperfine --style basic --warmup 1 --runs "$runs" --export-markdown "$dir/serve.md" \
    -n "kiln run via kiln serve, 20 chained steps (submit -> Succeeded)" \
    "$kiln run --server $url --no-logs -f $dir/serial.yaml /dev/null >/dev/null" \
    -n "docker run --rm x20 (shell loop)" "$loop"
  kill "$serve_pid"
  serve_pid=
fi

if want big; then
  run="kbb$$"
  peak=0
  /usr/bin/time -f "%M" -o "$dir/big.rss" "$kiln" exec --run-id "$run" -f "$dir/big.yaml" >/dev/null &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    n=$(docker ps -aq --filter "label=kiln.run=$run" | wc -l)
    [ "$n" -gt "$peak" ] && peak=$n
    sleep 0.2
  done
  wait "$pid"
  echo "kiln exec, 500 chained steps: peak RSS $(cat "$dir/big.rss") KiB, peak containers of the run $peak (sampled every 0.2 s)" >"$dir/big.txt"
fi

if want logs; then
  hyperfine --style basic --warmup 1 --runs "$runs" --export-markdown "$dir/logs.md" \
    -n "kiln exec, 200 MB of output" "$kiln exec -f $dir/logs.yaml >/dev/null" \
    -n "docker run --rm, 200 MB of output" "docker run --rm $image sh -c 'yes kiln-log-capture-benchmark-line-0123456789 | head -c 200000000' >/dev/null"
  /usr/bin/time -f "kiln exec, 200 MB of output: peak RSS %M KiB" "$kiln" exec -f "$dir/logs.yaml" >/dev/null 2>"$dir/rss" || true
  tail -n 1 "$dir/rss" >"$dir/logs.txt"
fi

echo "# $profile build, $(date -u +%F), load $(cut -d' ' -f1-3 /proc/loadavg)"
for f in serial.md parallel.md overhead.txt serve.md big.txt logs.md logs.txt; do
  if [ -f "$dir/$f" ]; then cat "$dir/$f" && echo; fi
done
