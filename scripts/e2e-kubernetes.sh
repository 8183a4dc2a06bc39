#!/usr/bin/env bash
# The Kubernetes runtime's tests against a real cluster (kind, k3s, a cloud cluster), for users
# and for any machine that has one; the project's own CI has none and runs the same tests
# against a fake API server (scripts/test.sh).
#
#   KUBECONFIG=~/.kube/config SANDBOX_E2E_IMAGE=registry.example.com/sandbox-platform/sandbox:0.1.0 \
#     scripts/e2e-kubernetes.sh [--bench] [--second-layer on|off]
#
# It runs, one test at a time, in a namespace of its own (made, labelled for Pod Security, and
# deleted at the end; SANDBOX_E2E_NAMESPACE names it, default sandbox-e2e):
#   - the whole runtime conformance suite (crates/sandbox-service/tests/conformance.rs,
#     `kubernetes::`), with the second layer unless `--second-layer off`;
#   - the replica-loss case (crates/sandboxd/tests/kubernetes.rs): two sandboxd replicas on a
#     PostgreSQL of their own, one SIGKILLed mid-session, the other finding its pod again.
# With --bench it then prints pooled and cold session-ready times and a stateful print(1) on
# the cluster against the Docker runtime on this machine (sandbox-bench --only kubernetes).
#
# What the cluster must give:
#   - the sandbox image (scripts/build-sandbox-image.sh, pushed where the cluster pulls from);
#   - pod IPs this machine can reach on port 7323: run it on a node (k3s here), or where the pod
#     network is routed; sandboxd reaches executors over the pod network;
#   - for the second layer: user namespaces for pods (1.33+), and, if your nodes' default
#     seccomp profile refuses namespaces, `--second-layer off` or our profile installed
#     (SECURITY.md, the chart's seccompProfile.install).
set -euo pipefail
cd "$(dirname "$0")/.."

bench=false
second_layer=on
while [ $# -gt 0 ]; do
  case "$1" in
    --bench) bench=true ;;
    --second-layer) second_layer="$2"; shift ;;
    *) echo "e2e-kubernetes.sh: unknown argument $1" >&2; exit 64 ;;
  esac
  shift
done

kubeconfig="${KUBECONFIG:-$HOME/.kube/config}"
: "${SANDBOX_E2E_IMAGE:?set SANDBOX_E2E_IMAGE to the sandbox image the cluster pulls (see the README, Run it on Kubernetes)}"
namespace="${SANDBOX_E2E_NAMESPACE:-sandbox-e2e}"
command -v kubectl >/dev/null || { echo "e2e-kubernetes.sh: kubectl is missing" >&2; exit 69; }
[ -f "$kubeconfig" ] || { echo "e2e-kubernetes.sh: no kubeconfig at $kubeconfig (set KUBECONFIG)" >&2; exit 69; }
kubectl --kubeconfig "$kubeconfig" version >/dev/null || { echo "e2e-kubernetes.sh: the cluster does not answer" >&2; exit 69; }

# The namespace's Pod Security level, as the chart picks it: `restricted`; with the second
# layer (`procMount: Unmasked` in a user namespace of the pod's own) `baseline` on 1.35+,
# whose policy lets it in, and `privileged` before.
level=restricted
if [ "$second_layer" = on ]; then
  minor=$(kubectl --kubeconfig "$kubeconfig" version -o json | python3 -c 'import json,sys; print(int("".join(c for c in json.load(sys.stdin)["serverVersion"]["minor"] if c.isdigit())))')
  if [ "$minor" -ge 35 ]; then level=baseline; else level=privileged; fi
fi
kubectl --kubeconfig "$kubeconfig" create namespace "$namespace" --dry-run=client -o yaml \
  | kubectl --kubeconfig "$kubeconfig" apply -f - >/dev/null
kubectl --kubeconfig "$kubeconfig" label --overwrite namespace "$namespace" \
  "pod-security.kubernetes.io/enforce=$level" >/dev/null
pg_dir=$(mktemp -d /tmp/sandbox-e2e-postgres.XXXXXX)
cleanup() {
  scripts/postgres.sh stop "$pg_dir" >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
  kubectl --kubeconfig "$kubeconfig" delete namespace "$namespace" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

scripts/install.sh
SANDBOXD_TEST_POSTGRES_URL=$(scripts/postgres.sh start "$pg_dir")
export SANDBOXD_TEST_POSTGRES_URL
export SANDBOX_E2E_KUBECONFIG="$kubeconfig" SANDBOX_E2E_IMAGE SANDBOX_E2E_NAMESPACE="$namespace"
cargo build --workspace --bins --locked

# The conformance suite's Kubernetes target runs with the second layer unless told otherwise;
# without it, the kernel test's check that every layer is up fails, as it should.
export SANDBOX_E2E_SECOND_LAYER="$second_layer"
echo "e2e-kubernetes.sh: the conformance suite and the replica-loss case on $(kubectl --kubeconfig "$kubeconfig" config current-context), namespace $namespace"
cargo test --locked -p sandbox-service --test conformance -- --test-threads 1 kubernetes::
cargo test --locked -p sandboxd --test kubernetes -- --test-threads 1 a_lost_replica

if $bench; then
  cargo build --release --bins --locked
  target/release/sandbox-bench --only kubernetes --kubeconfig "$kubeconfig" \
    --kubernetes-image "$SANDBOX_E2E_IMAGE" --kubernetes-namespace "$namespace" \
    --kubernetes-second-layer "$second_layer"
fi
