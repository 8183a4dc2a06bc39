#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: installs what is missing, starts PostgreSQL,
# checks formatting and lints, builds every binary (the tests start the real executor in real
# sandboxes), runs the fuzz targets and the API fuzzer (schemathesis) for a bounded time,
# starts a Docker engine and builds the sandbox image, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
# A fresh clone (CI) gains nothing from incremental build data, which is a third of target/.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
# When the disk fills, the build fails with an LLVM I/O error; the free space here says why.
df -h . | tail -n 1 | awk '{print "disk free for the build: " $4}'
scripts/install.sh
scripts/install-test-s3.sh
scripts/install-test-clients.sh
# A real PostgreSQL for the tests of the store's other backend (Debian's package, installed if
# missing; a cluster in a temporary directory, loopback only, a private port), stopped at the
# end. Tests make a database of their own on it.
pg_dir=$(mktemp -d /tmp/sandbox-test-postgres.XXXXXX)
trap 'scripts/postgres.sh stop "$pg_dir"; rm -rf "$pg_dir"' EXIT
SANDBOXD_TEST_POSTGRES_URL=$(scripts/postgres.sh start "$pg_dir")
export SANDBOXD_TEST_POSTGRES_URL
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
# The Docker runtime's tests run on a real engine with the sandbox image of this build's
# executor: start the engine (installing it if missing) and build the image (cached by the
# engine; a fresh machine builds its Debian base once, a few minutes).
scripts/install-docker.sh
scripts/build-sandbox-image.sh
BIN_DIR=target/debug scripts/build-sandboxd-image.sh
# An engine in a container, for the test of sandboxd with an engine of its own.
docker build -q --build-arg "BASE=$(scripts/build-sandbox-image.sh --print-base)" \
  -t sandbox-platform/dind:latest images/dind >/dev/null
# The fuzz targets (fuzz/), 45 s each from the committed corpus; before the tests, so that the
# test runner's summary is the last thing printed.
scripts/fuzz.sh
# The REST API fuzzed from its own OpenAPI document against the real server (2 minutes).
scripts/api-fuzz.sh
# The whole file API suite again, through the executor inside each sandbox (the way a runtime
# whose sandboxes do not share sandboxd's disk reaches workspaces). The gibibyte test stays on
# the host path: through a debug build's executor it takes minutes.
executor_files=(-p sandbox-server --test files --locked --no-fail-fast)
# The server's runtime-agnostic suites again on the Docker runtime: the hostile suite, kernels,
# limits, packages (installs in a container of their own), files, executions, streaming, the
# queue and isolation. (The conformance suite runs on both runtimes below.)
docker_suites='binary(security) | binary(kernel) | binary(limits) | binary(packages) | binary(files) | binary(executions) | binary(streaming) | binary(queue) | binary(isolation)'
if command -v cargo-nextest >/dev/null 2>&1; then
  SANDBOXD_FILE_ACCESS=executor cargo nextest run "${executor_files[@]}" -E 'not test(a_gibibyte)'
  SANDBOXD_RUNTIME=docker cargo nextest run -p sandbox-server --locked --no-fail-fast -E "($docker_suites) & not test(a_gibibyte)"
  # Every test of the workspace, the runtime conformance suite among them
  # (crates/sandbox-service/tests/conformance.rs: one line per runtime).
  cargo nextest run --workspace --locked --no-fail-fast
else
  SANDBOXD_FILE_ACCESS=executor cargo test "${executor_files[@]}" -- --skip a_gibibyte
  SANDBOXD_RUNTIME=docker cargo test -p sandbox-server --locked --no-fail-fast --test security --test kernel \
    --test limits --test packages --test files --test executions --test streaming --test queue --test isolation \
    -- --skip a_gibibyte
  cargo test --workspace --locked --no-fail-fast
fi
