#!/usr/bin/env bash
# The C core and its test program (tests/c/test_core.c) cross-compiled for
# the platforms this machine cannot build on natively, with -Wall -Wextra
# -Werror:
#
#   windows  x86_64 with Debian's mingw-w64 gcc (`gcc-mingw-w64-x86-64-win32`;
#            zig's windows-gnu target works too, but compiles mingw's C runtime
#            from source on first use, over ten minutes here): the Win32
#            threads backend (csrc/rs_threads.h); the program runs under Wine
#            (Debian's `wine`).
#   macos    aarch64-macos and x86_64-macos with zig (PyPI's `ziglang`):
#            compiled and linked, not run
#            (nothing here runs a Mach-O binary).
#   arm64    aarch64-linux-musl, static, with zig: the NEON kernels; the program runs
#            under qemu-user (Debian's `qemu-user-static`), and asserts that
#            NEON was selected and gives the baseline's bits.
#
# Usage: tools/cross_check.sh [windows] [macos] [arm64]   (default: all three)
# Environment: PYTHON (default python3; must have ziglang installed),
# MINGW_CC (default x86_64-w64-mingw32-gcc),
# WORK (scratch directory, default a fresh one under TMPDIR).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
WHICH=${*:-windows macos arm64}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/ropescale-cross.XXXXXX")}
mkdir -p "$WORK"
# The flags of setup.py's GCC/clang build, and -Werror.
FLAGS=(-std=c99 -O3 -Wall -Wextra -Werror -ffp-contract=off -fno-trapping-math -fno-strict-aliasing
       -fno-sanitize=undefined -I"$ROOT/csrc")
SOURCES=("$ROOT/tests/c/test_core.c" "$ROOT"/csrc/*.c)

zigcc() {  # zigcc TARGET OUT [extra flags]
    local target=$1 out=$2; shift 2
    echo "cross: zig cc -target $target -> $(basename "$out")"
    "$PYTHON" -m ziglang cc -target "$target" -mcpu=baseline "${FLAGS[@]}" "$@" "${SOURCES[@]}" -o "$out"
}

for what in $WHICH; do
    case $what in
    windows)
        echo "cross: ${MINGW_CC:-x86_64-w64-mingw32-gcc} -> test_core.exe"
        "${MINGW_CC:-x86_64-w64-mingw32-gcc}" "${FLAGS[@]}" -static "${SOURCES[@]}" -o "$WORK/test_core.exe"
        # a prefix of its own (the first run makes it, ~15 s); no debug chatter
        WINEPREFIX="$WORK/wine" WINEDEBUG=-all timeout 600 wine "$WORK/test_core.exe" >"$WORK/wine.log" 2>&1 ||
            { cat "$WORK/wine.log"; echo "cross: the Windows test program failed under Wine" >&2; exit 1; }
        tr -d "\r" <"$WORK/wine.log" | grep -E "^[0-9]+ passed, 0 failed$" | sed "s/^/cross: windows (wine): /"
        ;;
    macos)
        zigcc aarch64-macos "$WORK/test_core-aarch64-macos"
        zigcc x86_64-macos "$WORK/test_core-x86_64-macos"
        ;;
    arm64)
        zigcc aarch64-linux-musl "$WORK/test_core-aarch64" -static
        timeout 600 qemu-aarch64-static "$WORK/test_core-aarch64" >"$WORK/arm64.log" 2>&1 ||
            { cat "$WORK/arm64.log"; echo "cross: the arm64 test program failed under qemu" >&2; exit 1; }
        grep -E '^[0-9]+ passed, 0 failed$' "$WORK/arm64.log" | sed 's/^/cross: arm64 (qemu): /'
        ;;
    *)
        echo "cross: unknown platform $what (windows, macos, arm64)" >&2
        exit 2
        ;;
    esac
done
