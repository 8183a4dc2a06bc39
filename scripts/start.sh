#!/usr/bin/env bash
# Installs what is missing, builds, and runs sandboxd in the foreground on 127.0.0.1:8080.
# Extra arguments go to sandboxd (see `sandboxd --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
cargo build --release --bins
exec target/release/sandboxd "$@"
