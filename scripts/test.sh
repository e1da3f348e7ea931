#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every unit and integration test of the workspace
# against a real Docker engine and registries (started by scripts/test-env.sh).
# CI (.ci/run) runs exactly this on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
./scripts/test-env.sh
./scripts/build-web.sh
set -a
# shellcheck disable=SC1091
. /var/lib/kiln-test/env
set +a
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
