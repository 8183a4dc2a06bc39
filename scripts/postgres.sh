#!/usr/bin/env bash
# A throwaway PostgreSQL on loopback, for tests and trials.
#   scripts/postgres.sh start DIR   makes a cluster in DIR (initdb; trust authentication;
#                                   listening on 127.0.0.1 only, on a free port, its socket in
#                                   DIR) and prints its URL
#   scripts/postgres.sh stop DIR    stops it (DIR stays; remove it yourself)
# Installs Debian's postgresql package where it is missing. initdb refuses to run as root, so a
# root caller runs the server as the postgres user.
set -euo pipefail
cmd=${1:?usage: postgres.sh start|stop DIR}
dir=${2:?usage: postgres.sh start|stop DIR}

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_server() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    if [ -z "$(bin_dir)" ]; then
      echo "postgres.sh: installing postgresql" >&2
      apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    bin=$(bin_dir)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_server "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
    # Tests make and drop many small databases: durability is not what they test. With
    # POSTGRES_DURABLE=1 (benchmarks), fsync stays on; commits still do not wait for a flush,
    # as SQLite's WAL with synchronous=NORMAL does not.
    durability="-c fsync=off -c synchronous_commit=off"
    if [ "${POSTGRES_DURABLE:-}" = 1 ]; then durability="-c synchronous_commit=off"; fi
    as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir $durability -c max_connections=300" \
      start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    bin=$(bin_dir)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_server "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null
    fi
    ;;
  *)
    echo "usage: postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
