#!/usr/bin/env bash
# Web app figures (issue 15), measured in Debian's Chromium through playwright-core
# (web/bench/ui.mjs) against a real `kiln serve` with one embedded worker, each part against a
# baseline measured in the same run:
#   latency   a container line -> rendered in the run page (MutationObserver), p50/p90, against
#             an HTTP follower (`GET /runs/{id}/log?follow=true`) of the same run at the same time
#   runs      first render of the runs page with 100,000 runs stored (written into SQLite
#             directly, as the store's 100k test does), against the same page before the fill
#   log       opening a 200 MB log (first screen) and scrolling it from top to end (long tasks,
#             bytes read), against a 2 MB log
# Run on demand, not by the test suite. Needs scripts/test-env.sh's engine and busybox, and the
# web app built (scripts/build-web.sh; the binary embeds web/dist as it was when it was built).
# Usage: benches/ui.sh [part...]   (default: every part)
# KILN_BENCH_PROFILE=release measures the release build (default: debug); KILN_BENCH_LOG_MB
# sets the big log's size (default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
parts=${*:-latency runs log}
profile=${KILN_BENCH_PROFILE:-debug}
./scripts/test-env.sh >/dev/null
if [ "$profile" = release ]; then nice -n 10 cargo build --release --bin kiln -q; else nice -n 10 cargo build --bin kiln -q; fi
kiln=$(realpath "${CARGO_TARGET_DIR:-target}/$profile/kiln")
dir=$(mktemp -d)
"$kiln" serve --addr 127.0.0.1:0 --data-dir "$dir/data" --workers 1 >"$dir/serve.log" 2>&1 &
serve_pid=$!
cleanup() {
  kill "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
until grep -q "listening on" "$dir/serve.log"; do
  kill -0 "$serve_pid" 2>/dev/null || { cat "$dir/serve.log"; exit 1; }
  sleep 0.1
done
echo "kiln ($profile build): $kiln"
KILN_URL=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$dir/serve.log" | head -n 1) \
KILN_TOKEN=$(sed -n 's/^admin token: //p' "$dir/serve.log") \
KILN_DB="$dir/data/kiln.db" PARTS="$parts" LOG_MB=${KILN_BENCH_LOG_MB:-200} \
  node web/bench/ui.mjs
