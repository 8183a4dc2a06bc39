#!/usr/bin/env bash
# Builds a minimal Debian bookworm image from Debian's packages alone (debootstrap, then
# `docker import`), for engines that cannot pull debian:bookworm-slim from a registry.
# Usage: scripts/build-debian-base.sh [tag]   (default sandbox-platform/debian-base:bookworm)
set -euo pipefail
tag="${1:-sandbox-platform/debian-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
echo "build-debian-base.sh: debootstrap bookworm from $mirror (a minute or two)"
debootstrap --variant=minbase bookworm "$root/rootfs" "$mirror" >"$root/log" 2>&1 || { tail -20 "$root/log" >&2; exit 1; }
# What an image needs no copy of: package lists and caches, logs.
rm -rf "$root"/rootfs/var/lib/apt/lists/* "$root"/rootfs/var/cache/apt/*.bin "$root"/rootfs/var/log/*
tar -C "$root/rootfs" -c . | docker import -c 'CMD ["bash"]' - "$tag" >/dev/null
echo "build-debian-base.sh: $tag"
