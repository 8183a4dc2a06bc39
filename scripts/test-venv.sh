# Sourced by the install-test-*.sh scripts: installs pinned packages from PyPI into the venv the
# tests share (target/test-venv), unless what is wanted is there already.
# Usage: install_in_test_venv WHO BIN DIST==VERSION [PIP SPEC...]
#   BIN: a program the install provides; DIST==VERSION: the distribution whose version decides;
#   the PIP SPECs (default: DIST==VERSION) are what pip installs.
install_in_test_venv() {
  local who=$1 bin=$2 want=$3
  shift 3
  local venv=target/test-venv
  # sed reads pip's whole answer: `grep -q` stopped at the match, pip then failed on the broken
  # pipe, and under pipefail the check never passed (everything was installed again each run).
  if [ -x "$venv/bin/$bin" ] &&
    [ "$("$venv/bin/pip" show "${want%%==*}" 2>/dev/null | sed -n 's/^Version: //p')" = "${want#*==}" ]; then
    return 0
  fi
  echo "$who: installing $want into $venv"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${@:-$want}"
}
