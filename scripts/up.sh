#!/usr/bin/env bash
# Sets kiln up on a fresh Debian machine (as root) and starts it: a Docker engine, a local
# registry on 127.0.0.1:5000 and a local busybox image (scripts/test-env.sh), and the kiln
# binary in /usr/local/bin. The server arrives with a later issue; until then kiln runs task
# files directly: `kiln exec -f examples/build-push/acb.yaml examples/build-push --registry 127.0.0.1:5000`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "up.sh: cargo is missing; install Rust (rustup or Debian's cargo package) first" >&2
  exit 1
fi
./scripts/test-env.sh
cargo build --release --bin kiln
install -m 0755 target/release/kiln /usr/local/bin/kiln
kiln --help
