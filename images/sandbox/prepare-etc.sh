#!/bin/sh
# Builds the /etc that code sees inside the Docker runtime's second layer, at image build time:
# what the local runtime's sandboxes get (`prepare_etc` in crates/sandbox-runtime/src/bwrap.rs),
# from the image's own files. The public dynamic-linker, TLS, time-zone and interpreter entries
# (HOST_ETC there, and python3*), and passwd, group, hosts and resolv.conf naming only the
# sandbox user and no host. A unit test there keeps the two in step.
# Usage: prepare-etc.sh DIR
set -eu
dir="$1"
rm -rf "$dir"
mkdir -p "$dir"
for name in ld.so.cache ld.so.conf ld.so.conf.d alternatives ssl ca-certificates localtime timezone nsswitch.conf mime.types matplotlibrc fonts bash.bashrc profile inputrc protocols services magic magic.mime; do
  if [ -e "/etc/$name" ] || [ -L "/etc/$name" ]; then cp -a "/etc/$name" "$dir/"; fi
done
for p in /etc/python3*; do
  if [ -e "$p" ]; then cp -a "$p" "$dir/"; fi
done
# What others may not read stays out (private keys).
rm -rf "$dir/ssl/private"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:1000:1000:sandbox:/tmp:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$dir/passwd"
printf 'root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n' >"$dir/group"
printf '127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n' >"$dir/hosts"
: >"$dir/resolv.conf"
chmod 0644 "$dir/passwd" "$dir/group" "$dir/hosts" "$dir/resolv.conf"
chmod -R a+rX "$dir"
