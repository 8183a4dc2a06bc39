#!/usr/bin/env bash
# Builds the release binaries and runs the benchmarks against their anchors in one run.
# Usage: bench/run.sh [-n N] [--anchors DIR]     (results: BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
cargo build --release --bins
exec target/release/sandbox-bench "$@"
