#!/usr/bin/env bash
# Installs what is missing, builds, and runs sandboxd in the foreground on 127.0.0.1:8080.
# With `--runtime docker`, also a Docker engine and the sandbox image when missing.
# With `--replicas N`, N replicas on 127.0.0.1:8080, 8081, ... sharing a PostgreSQL started
# here and the S3 test server (moto) for workspaces, each replica with a data dir of its own
# under ./sandbox-replicas: one command to try several replicas on one machine. Ctrl-C stops
# them all. (To run replicas for real, see README.md, "Several replicas".)
# Other arguments go to sandboxd (see `sandboxd --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
replicas=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) replicas=${2:?--replicas takes a number}; shift 2 ;;
    --replicas=*) replicas=${1#*=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
scripts/install.sh
cargo build --release --bins
# The Docker runtime: an engine (installed and started if missing) and the sandbox image.
for arg in ${args[@]+"${args[@]}"} "--runtime=${SANDBOXD_RUNTIME:-local}"; do
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
if [ "$replicas" = 1 ]; then
  exec target/release/sandboxd ${args[@]+"${args[@]}"}
fi

# Several replicas: a fresh PostgreSQL and S3 test server each time.
scripts/install-test-s3.sh
state=$PWD/sandbox-replicas
pids=()
stop_all() {
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  scripts/postgres.sh stop "$state/postgres" || true
}
trap stop_all EXIT INT TERM
[ -d "$state/postgres" ] && { scripts/postgres.sh stop "$state/postgres" || true; rm -rf "$state/postgres"; }
mkdir -p "$state"
database=$(scripts/postgres.sh start "$state/postgres")
s3_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/test-venv/bin/moto_server -H 127.0.0.1 -p "$s3_port" >"$state/s3.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$s3_port/" >/dev/null && break; sleep 0.1; done
curl -sf -X PUT "http://127.0.0.1:$s3_port/sandboxd" >/dev/null
echo "start.sh: PostgreSQL at $database, S3 test server at http://127.0.0.1:$s3_port (bucket sandboxd)"
for i in $(seq 1 "$replicas"); do
  port=$((8079 + i))
  SANDBOXD_DATABASE_URL=$database SANDBOXD_STORAGE=s3://sandboxd/workspaces \
    SANDBOXD_S3_ENDPOINT="http://127.0.0.1:$s3_port" SANDBOXD_S3_REGION=us-east-1 \
    SANDBOXD_S3_ACCESS_KEY_ID=test SANDBOXD_S3_SECRET_ACCESS_KEY=test \
    SANDBOXD_DATA_DIR="$state/replica-$i" SANDBOXD_LISTEN="127.0.0.1:$port" \
    target/release/sandboxd ${args[@]+"${args[@]}"} &
  pids+=($!)
done
wait -n "${pids[@]}"
