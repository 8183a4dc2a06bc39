#!/usr/bin/env bash
# Installs the clients nobody here wrote that the tests drive the API with, from PyPI, pinned,
# into target/test-venv: schemathesis (the OpenAPI fuzzer scripts/api-fuzz.sh runs) and the
# official MCP client (tests/mcp/, which crates/sandboxd/tests/mcp.rs runs), and E2B's SDKs
# (tests/e2b/, which crates/sandboxd/tests/e2b.rs runs), and the Kubernetes API's JSON schemas
# (kubernetes-validate, which tests/kubernetes/ checks the runtime's objects and the Helm chart
# with) and Helm's own engine as a library (helm-python-sdk: lint and render, offline).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/test-venv.sh
install_in_test_venv install-test-clients.sh st "schemathesis==4.32.5"
install_in_test_venv install-test-clients.sh mcp "mcp==2.3.0"
install_in_test_venv install-test-clients.sh kubernetes-validate "kubernetes-validate==1.37.0"
install_in_test_venv install-test-clients.sh python "helm-python-sdk==0.2.2"
install_in_test_venv install-test-clients.sh python e2b-code-interpreter==2.11.5 "e2b==2.63.0" "e2b-code-interpreter==2.11.5"
# The MCP Inspector's command-line mode, from npm: a second MCP client nobody here wrote.
inspector=target/test-node/node_modules/.bin/mcp-inspector
if [ ! -x "$inspector" ]; then
  echo "install-test-clients.sh: installing @modelcontextprotocol/inspector@0.15.0 into target/test-node"
  mkdir -p target/test-node
  npm install --silent --no-audit --no-fund --prefix target/test-node @modelcontextprotocol/inspector@0.15.0
fi
