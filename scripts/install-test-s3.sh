#!/usr/bin/env bash
# Installs the S3-compatible server the tests of S3 workspace storage run against: moto's
# server, from PyPI, into target/test-venv (the tests start it themselves, one per test, on a
# free port). Why moto: ARCHITECTURE.md, "Workspace storage".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/test-venv.sh
install_in_test_venv "install-test-s3.sh (S3 server for tests)" moto_server "moto==5.2.5" \
  "moto[s3]==5.2.5" "flask==3.1.3" "flask-cors==6.0.5"
