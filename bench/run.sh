#!/usr/bin/env bash
# Builds the release binaries and runs the benchmarks against their anchors in one run.
# Usage: bench/run.sh [-n N] [--anchors DIR]     (results: BENCHMARKS.md)
# The Jupyter anchor runs in a venv of its own (target/bench-venv) with jupyter_client,
# ipykernel and matplotlib from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
# The doors benchmark drives sandboxd with the E2B SDK and the MCP client from the test venv.
scripts/install-test-clients.sh
# curl is the second client of the file benchmark.
command -v curl >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }
cargo build --release --bins
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import jupyter_client, ipykernel, matplotlib" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q jupyter_client ipykernel matplotlib
fi
exec target/release/sandbox-bench --python "$venv/bin/python" "$@"
