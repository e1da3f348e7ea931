#!/usr/bin/env bash
# Sets kiln up on a fresh Debian machine (as root) and starts it.
# Today kiln is the task-file toolchain (validate, render); the server arrives with a later
# issue and this script will start it then.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "up.sh: cargo is missing; install Rust (rustup or Debian's cargo package) first" >&2
  exit 1
fi
if ! command -v cc >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq build-essential pkg-config
fi

cargo build --release --bin kiln
install -m 0755 target/release/kiln /usr/local/bin/kiln
kiln --help
