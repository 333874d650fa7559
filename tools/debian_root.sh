#!/usr/bin/env bash
# A Debian root made with debootstrap, for running the suite under another
# interpreter (trixie's CPython 3.13) or architecture (arm64 under qemu-user).
#
# Usage: tools/debian_root.sh SUITE ARCH DIR [PACKAGE...]
#   e.g. tools/debian_root.sh trixie amd64 /tmp/trixie python3-numpy python3-pytest
# A DIR that already holds a finished root (DIR/.ropescale-root names its
# suite, arch and packages) is reused: one CI run makes each root once.
# The mirror is the one this machine's apt uses (its sources name it).  A
# foreign ARCH needs qemu-user-static with binfmt_misc (the script enables
# it).  Run as root.
set -euo pipefail
SUITE=$1 ARCH=$2 DIR=$3
shift 3
WANT="$SUITE $ARCH $*"
if [ -f "$DIR/.ropescale-root" ] && [ "$(cat "$DIR/.ropescale-root")" = "$WANT" ]; then
    echo "root: $DIR ($WANT) reused"
    exit 0
fi
MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)[[:space:]]*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
if [ -z "$MIRROR" ]; then
    MIRROR=$(awk '$1 == "deb" && $2 !~ /^\[/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
if [ -z "$MIRROR" ]; then
    echo "root: no Debian mirror found in this machine's apt sources" >&2
    exit 1
fi
if [ "$ARCH" != "$(dpkg --print-architecture)" ]; then
    [ -d /proc/sys/fs/binfmt_misc ] && [ -e /proc/sys/fs/binfmt_misc/register ] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable "qemu-$(echo "$ARCH" | sed 's/arm64/aarch64/')" >/dev/null
fi
rm -rf "$DIR"
mkdir -p "$DIR"
INCLUDE=$(IFS=,; echo "$*")
echo "root: debootstrap $SUITE $ARCH into $DIR (+ $INCLUDE)"
debootstrap --variant=minbase --arch="$ARCH" ${INCLUDE:+--include="$INCLUDE"} "$SUITE" "$DIR" "$MIRROR" \
    >"$DIR.debootstrap.log" 2>&1 || { tail -30 "$DIR.debootstrap.log"; exit 1; }
echo "$WANT" >"$DIR/.ropescale-root"
