#!/usr/bin/env bash
# Builds sandboxd's own image (deploy/sandboxd.Dockerfile) from binaries built on this host,
# tagged sandbox-platform/sandboxd:latest (or $SANDBOXD_IMAGE): its `prebuilt` stage, on the
# same base as the sandbox image (the public Debian image, or the one built here from Debian's
# packages when no registry answers).
#   BIN_DIR=<dir>   where sandboxd and sbx are (default: target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
image="${SANDBOXD_IMAGE:-sandbox-platform/sandboxd:latest}"
bin_dir="${BIN_DIR:-target/release}"
[ -x "$bin_dir/sandboxd" ] || { echo "build-sandboxd-image.sh: no $bin_dir/sandboxd (cargo build first)" >&2; exit 1; }
base="$(scripts/build-sandbox-image.sh --print-base)"
echo "build-sandboxd-image.sh: $image from $base with $bin_dir"
docker build -q -f deploy/sandboxd.Dockerfile --target prebuilt --build-arg "BASE=$base" \
  --build-arg "BIN_DIR=$bin_dir" -t "$image" . >/dev/null
