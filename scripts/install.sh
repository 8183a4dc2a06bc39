#!/usr/bin/env bash
# Installs what sandboxd needs on a Debian/Ubuntu host, skipping whatever is already there:
# bubblewrap (the local runtime), mkfs.ext4 and mount (workspace volumes), the interpreters
# sandboxes run (python3, node under /usr, the only tree they see), the Python packages of the
# session kernel (IPython, matplotlib with its inline backend), the data stack users of
# code-interpreter sandboxes expect (numpy, pandas, scipy, seaborn, scikit-learn, openpyxl,
# requests, Pillow), pip for template and session package installs, and, when run as root, the unprivileged `sandbox` user that
# sandboxes run as on the host.
set -euo pipefail

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
[ -x /usr/bin/python3 ] || missing+=(python3)
[ -x /usr/bin/node ] || [ -x /usr/local/bin/node ] || missing+=(nodejs)
command -v setsid >/dev/null 2>&1 || missing+=(util-linux)
# Workspace volumes (the quota for what code writes): mkfs.ext4, and mount for loop devices.
PATH="$PATH:/usr/sbin:/sbin" command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
PATH="$PATH:/usr/sbin:/sbin" command -v mount >/dev/null 2>&1 || missing+=(mount)
# Sandboxes see the host's /usr only, so kernel packages come from the distribution.
# pip installs template and session packages (for the same interpreter the kernels run).
for pkg in IPython:python3-ipython matplotlib:python3-matplotlib matplotlib_inline:python3-matplotlib-inline \
  numpy:python3-numpy pandas:python3-pandas scipy:python3-scipy seaborn:python3-seaborn sklearn:python3-sklearn \
  openpyxl:python3-openpyxl requests:python3-requests PIL:python3-pil pip:python3-pip; do
  /usr/bin/python3 -c "import ${pkg%%:*}" >/dev/null 2>&1 || missing+=("${pkg#*:}")
done

if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install.sh: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$(id -u)" -eq 0 ] && ! id sandbox >/dev/null 2>&1; then
  echo "install.sh: creating the unprivileged 'sandbox' user"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sandbox
fi
