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
# The runtimes benchmark: a Docker engine, the sandbox image with this build's executor, and
# llm-sandbox (its anchor) in a venv of its own.
if [[ " $* " == *runtimes* ]]; then
  scripts/install-docker.sh
  EXECUTOR=target/release/sandbox-executor scripts/build-sandbox-image.sh
  if [ ! -x target/llm-venv/bin/python ] || ! target/llm-venv/bin/python -c "import llm_sandbox" 2>/dev/null; then
    python3 -m venv target/llm-venv
    target/llm-venv/bin/pip install -q 'llm-sandbox[docker]==0.3.46'
  fi
fi
exec target/release/sandbox-bench --python "$venv/bin/python" "$@"
