#!/usr/bin/env bash
# Usage: tools/in_root.sh DIR COMMAND...
# COMMAND run inside the Debian root DIR (tools/debian_root.sh made it) with
# chroot, a clean environment, /proc and /dev/shm mounted for it and
# unmounted after (tests start subprocesses and multiprocessing locks).
set -euo pipefail
DIR=$(cd "$1" && pwd)
shift
cleanup() {
    for m in "$DIR/dev/shm" "$DIR/proc"; do
        if mountpoint -q "$m"; then umount "$m" || umount -l "$m"; fi
    done
}
trap cleanup EXIT
mountpoint -q "$DIR/proc" || mount -t proc proc "$DIR/proc"
mkdir -p "$DIR/dev/shm"
mountpoint -q "$DIR/dev/shm" || mount -t tmpfs -o size=512m tmpfs "$DIR/dev/shm"
chroot "$DIR" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
