#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every unit and integration test of the workspace.
# CI (.ci/run) runs exactly this on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
