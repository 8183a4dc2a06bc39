#!/usr/bin/env bash
# Builds the Docker runtime's default sandbox image (images/sandbox/Dockerfile) with the
# executor of this checkout, tagged sandbox-platform/sandbox:latest (or $SANDBOX_IMAGE).
#
# Its base is the public debian:bookworm-slim when the engine has it or can pull it; with no
# registry (these machines, CI), a base built here from Debian packages (debootstrap,
# scripts/build-debian-base.sh), once per engine. Docker's layer cache keeps a rebuild with an
# unchanged executor to a second or two.
#
#   SANDBOX_BASE=<image>   use this base instead (skips the lookup)
#   EXECUTOR=<path>        the executor binary (default: target/debug/sandbox-executor)
#   --print-base           only find (or build) the base, and print its name
set -euo pipefail
cd "$(dirname "$0")/.."
image="${SANDBOX_IMAGE:-sandbox-platform/sandbox:latest}"
executor="${EXECUTOR:-target/debug/sandbox-executor}"

base="${SANDBOX_BASE:-}"
if [ -z "$base" ]; then
  if docker image inspect debian:bookworm-slim >/dev/null 2>&1 || timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    base=debian:bookworm-slim
  else
    base=sandbox-platform/debian-base:bookworm
    docker image inspect "$base" >/dev/null 2>&1 || scripts/build-debian-base.sh "$base" >&2
  fi
fi

if [ "${1:-}" = "--print-base" ]; then
  echo "$base"
  exit 0
fi
[ -x "$executor" ] || { echo "build-sandbox-image.sh: no executor at $executor (cargo build --bins first)" >&2; exit 1; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp images/sandbox/Dockerfile images/sandbox/prepare-etc.sh "$context/"
cp "$executor" "$context/sandbox-executor"
echo "build-sandbox-image.sh: $image from $base"
docker build -q --build-arg "BASE=$base" -t "$image" "$context" >/dev/null
