#!/usr/bin/env bash
# Sets kiln up on a fresh Debian machine (as root) and starts it: a Docker engine, a local
# registry on 127.0.0.1:5000 and a local busybox image (scripts/test-env.sh), the kiln binary in
# /usr/local/bin, and `kiln serve` in the background (embedded SQLite under /var/lib/kiln, two
# embedded workers, API on 127.0.0.1:8080). The CLI is logged in with the admin token, so
# `kiln build`, `kiln run`, `kiln list-runs` work right away. Running it again restarts the
# server and keeps its data. KILN_EMULATION=yes also registers qemu-aarch64 in binfmt_misc so
# the engine runs linux/arm64 images (off by default: it changes how the host runs binaries).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${KILN_DATA_DIR:-/var/lib/kiln}
ADDR=${KILN_ADDR:-127.0.0.1:8080}
LOG=${KILN_LOG:-/var/log/kiln-serve.log}

if ! command -v cargo >/dev/null 2>&1; then
  echo "up.sh: cargo is missing; install Rust (rustup or Debian's cargo package) first" >&2
  exit 1
fi
KILN_TEST_EMULATION=${KILN_EMULATION:-no} ./scripts/test-env.sh
./scripts/build-web.sh
cargo build --release --bin kiln
install -m 0755 target/release/kiln /usr/local/bin/kiln

if [ -f "$DATA_DIR/kiln.pid" ] && kill -0 "$(cat "$DATA_DIR/kiln.pid")" 2>/dev/null; then
  kill "$(cat "$DATA_DIR/kiln.pid")"
  while kill -0 "$(cat "$DATA_DIR/kiln.pid")" 2>/dev/null; do sleep 0.2; done
fi
mkdir -p "$DATA_DIR"
: >"$LOG.start"
nohup kiln serve --addr "$ADDR" --data-dir "$DATA_DIR" --registry 127.0.0.1:5000 \
  >"$LOG.start" 2>>"$LOG" &
echo $! >"$DATA_DIR/kiln.pid"
for _ in $(seq 1 100); do
  grep -q '^kiln listening on' "$LOG.start" && break
  kill -0 "$(cat "$DATA_DIR/kiln.pid")" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
grep -q '^kiln listening on' "$LOG.start" || { echo "up.sh: kiln serve did not start; see $LOG" >&2; exit 1; }
# The admin token is printed on the first start only: log the CLI in with it then.
if token=$(sed -n 's/^admin token: //p' "$LOG.start") && [ -n "$token" ]; then
  printf '%s\n' "$token" | kiln login --server "http://$ADDR" --token-stdin
  echo "admin token (shown once, saved for the CLI): $token"
fi
# The token must not stay in a file: the CLI config (0600) holds it now.
rm -f "$LOG.start"
echo "kiln is serving on http://$ADDR (data in $DATA_DIR, log in $LOG)"
echo "try: kiln build -t hello:{{.Run.ID}} examples/quick-build && kiln list-runs"
