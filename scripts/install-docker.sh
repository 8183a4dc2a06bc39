#!/usr/bin/env bash
# Makes a Docker engine available for the Docker runtime: installs Debian's docker.io when no
# dockerd is installed (and docker-compose when no compose is), and starts dockerd (logging to /var/log/sandboxd-dockerd.log) when
# none answers. With DOCKER_HOST pointing elsewhere, only checks that engine answers.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

if [ -n "${DOCKER_HOST:-}" ] && [[ "$DOCKER_HOST" != unix://* ]]; then
  docker version >/dev/null || { echo "install-docker.sh: the engine at $DOCKER_HOST does not answer" >&2; exit 1; }
  exit 0
fi
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
# For deploy/compose (and its test): Debian's docker-compose, as no compose plugin is packaged.
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-docker.sh: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! docker version >/dev/null 2>&1; then
  echo "install-docker.sh: starting dockerd"
  $sudo sh -c 'nohup dockerd >/var/log/sandboxd-dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    docker version >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker version >/dev/null 2>&1 || { tail -20 /var/log/sandboxd-dockerd.log >&2; exit 1; }
fi
