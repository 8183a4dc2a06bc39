#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: installs what is missing, checks formatting
# and lints, builds every binary (the tests start the real executor in real sandboxes), and
# runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
scripts/install-test-s3.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
