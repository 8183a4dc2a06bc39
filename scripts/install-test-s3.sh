#!/usr/bin/env bash
# Installs the S3-compatible server the tests of S3 workspace storage run against: moto's
# server, from PyPI, into target/test-venv (the tests start it themselves, one per test, on a
# free port). Why moto: ARCHITECTURE.md, "Workspace storage".
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/test-venv
want="moto==5.2.5"
if [ -x "$venv/bin/moto_server" ] && "$venv/bin/pip" show moto 2>/dev/null | grep -q "^Version: ${want#*==}$"; then
  exit 0
fi
echo "install-test-s3.sh: installing $want (S3 server for tests) into $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "moto[s3]==5.2.5" "flask==3.1.3" "flask-cors==6.0.5"
