#!/usr/bin/env bash
# Installs the clients nobody here wrote that the tests drive the API with, from PyPI, pinned,
# into target/test-venv: schemathesis (the OpenAPI fuzzer scripts/api-fuzz.sh runs).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/test-venv
want="schemathesis==4.32.5"
if [ -x "$venv/bin/st" ] && "$venv/bin/pip" show schemathesis 2>/dev/null | grep -q "^Version: ${want#*==}$"; then
  exit 0
fi
echo "install-test-clients.sh: installing $want into $venv"
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "$want"
