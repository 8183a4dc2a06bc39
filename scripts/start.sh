#!/usr/bin/env bash
# Installs what is missing, builds, and runs sandboxd in the foreground on 127.0.0.1:8080.
# With `--runtime docker`, also a Docker engine and the sandbox image when missing.
# Extra arguments go to sandboxd (see `sandboxd --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
cargo build --release --bins
# The Docker runtime: an engine (installed and started if missing) and the sandbox image.
for arg in "$@" "--runtime=${SANDBOXD_RUNTIME:-local}"; do
  case "$arg" in
    docker | --runtime=docker) docker=1 ;;
  esac
done
if [ -n "${docker:-}" ]; then
  scripts/install-docker.sh
  # Rebuilt with this build's executor each time: the engine's cache makes that a second.
  SANDBOX_IMAGE="${SANDBOXD_DOCKER_IMAGE:-sandbox-platform/sandbox:latest}" \
    EXECUTOR=target/release/sandbox-executor scripts/build-sandbox-image.sh
fi
exec target/release/sandboxd "$@"
