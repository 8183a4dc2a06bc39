#!/usr/bin/env bash
# Fuzzes the REST API from its own OpenAPI document with schemathesis, against the real
# server (target/debug/sandboxd, real sandboxes) for a bounded time, with every check on:
# server errors, undocumented statuses, responses that break the schema, schema-valid requests
# rejected, schema-violating ones accepted, and the stateful checks (a deleted resource gone).
# The deviations accepted, each with its reason, are in tests/api/schemathesis.toml.
#
#   API_FUZZ_SECONDS=120 scripts/api-fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-clients.sh
seconds="${API_FUZZ_SECONDS:-120}"
data=$(mktemp -d /tmp/sandboxd-api-fuzz-XXXXXX)
log="$data.log"
# Small sessions that go idle soon: the fuzzer creates hundreds, and the host must not turn
# them away (503 overloaded is right, but it is not what this run is about).
SANDBOXD_LISTEN=127.0.0.1:0 SANDBOXD_DATA_DIR="$data" SANDBOXD_LOG=warn \
  SANDBOXD_DEFAULT_MEMORY_MB=256 SANDBOXD_MEMORY_OVERCOMMIT=100 SANDBOXD_DISK_OVERCOMMIT=100000 \
  SANDBOXD_IDLE_TIMEOUT_S=5 SANDBOXD_MAX_TIMEOUT_S=5 SANDBOXD_DEFAULT_TIMEOUT_S=5 SANDBOXD_SWEEP_INTERVAL_S=1 SANDBOXD_RUN_POOL=0 SANDBOXD_SESSION_POOL=0 \
  SANDBOXD_WORKSPACE_QUOTA_BYTES=$((64 << 20)) \
  target/debug/sandboxd >"$log.out" 2>"$log" &
pid=$!
stop() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$data" "$log" "$log.out"
}
trap stop EXIT
url=""
for _ in $(seq 100); do
  url=$(sed -n 's/^sandboxd listening on //p' "$log.out" | head -n 1)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "api-fuzz.sh: sandboxd did not start"; cat "$log"; exit 1; }
echo "api-fuzz.sh: schemathesis against $url for ${seconds} s"
out="$data.st"
status=0
target/test-venv/bin/st --config-file tests/api/schemathesis.toml run "$url/openapi.json" \
  --max-time "$seconds" --workers 2 --seed "${API_FUZZ_SEED:-1}" --no-color | tee "$out" || status=$?
# schemathesis 4.32.5 sometimes fails inside its own generator (CPython 3.11's "AST constructor
# recursion depth mismatch", bare or wrapped in a FlakyFailure) and counts it as an error of the
# run. That is the tool's bug, not the server's: a run with no failure whose every error is that
# one passes (tests/api/only_tool_errors.py reads the report).
if [ "$status" -ne 0 ] && target/test-venv/bin/python tests/api/only_tool_errors.py <"$out"; then
  echo "api-fuzz.sh: no failures; the only errors were schemathesis' own (AST recursion), ignored"
  status=0
fi
if [ "$status" -ne 0 ]; then
  # What the server said of its errors (internal ones name their cause only in the log).
  echo "api-fuzz.sh: the server's errors:"
  grep -E "ERROR|internal error" "$log" | grep -v "response failed" | tail -n 20 || true
fi
rm -f "$out"
exit "$status"
