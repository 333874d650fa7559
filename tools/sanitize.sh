#!/usr/bin/env bash
# Run ropescale under AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   1. tests/c/test_core.c, linked straight against csrc/*.c, built with
#      -fsanitize=address,undefined -Wall -Wextra -Werror (leak checking on).
#   2. The extension rebuilt with ROPESCALE_SANITIZE=1 in a scratch copy of
#      the work tree (the in-place .so of the repo is never touched), then the
#      Python test suite run against that copy with libasan preloaded.
#
# Usage: tools/sanitize.sh [pytest arguments]   (default: the whole tests/)
# Environment: CC (default gcc), PYTHON (default python), KEEP=1 keeps the
# scratch directory.  Exit status: non-zero if a build, a test or a
# sanitizer report fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CC=${CC:-gcc}
PYTHON=${PYTHON:-python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ropescale-sanitize.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "sanitize: scratch directory kept at $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi

SAN_FLAGS=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1)

# Sanitizer runtime options.  allocator_may_return_null: absurd sizes must
# come back as MemoryError (as with the normal allocator), not as an ASan
# abort.  Leak checking is off for Python (the interpreter keeps its objects
# to the end); the C test runs with it on.
ASAN_COMMON="allocator_may_return_null=1:abort_on_error=0:print_summary=1:strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

echo "== sanitize: C core test (tests/c/test_core.c) =="
"$CC" -std=c99 -Wall -Wextra -Werror -ffp-contract=off "${SAN_FLAGS[@]}" \
    -I"$ROOT/csrc" "$ROOT/tests/c/test_core.c" "$ROOT"/csrc/*.c \
    -lm -pthread -o "$WORK/test_core"
ASAN_OPTIONS="$ASAN_COMMON:detect_leaks=1" "$WORK/test_core"

echo "== sanitize: building the extension with ROPESCALE_SANITIZE=1 in $WORK/repo =="
mkdir -p "$WORK/repo"
# The work tree as it is (uncommitted tests included), without build output.
tar -C "$ROOT" \
    --exclude=.git --exclude=build --exclude='*.so' --exclude='*.o' \
    --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
    --exclude='*.egg-info' -cf - . | tar -C "$WORK/repo" -xf -
(
    cd "$WORK/repo"
    # CFLAGS is appended by setuptools: make every UBSan report fatal.
    CFLAGS="-fno-sanitize-recover=undefined" ROPESCALE_SANITIZE=1 \
        "$PYTHON" setup.py -q build_ext --inplace >"$WORK/build.log" 2>&1 ||
        { cat "$WORK/build.log"; exit 1; }
)

LIBASAN=$("$CC" -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ]; then
    echo "sanitize: libasan not found ($LIBASAN)" >&2
    exit 1
fi
# libstdc++ too: ASan's __cxa_throw interceptor needs it present from the
# start, or the first C++ exception in another extension (matplotlib's
# ft2font, torch) aborts with "CHECK failed: real___cxa_throw".
PRELOAD="$LIBASAN"
LIBSTDCXX=$("$CC" -print-file-name=libstdc++.so)
if [ -e "$LIBSTDCXX" ]; then
    PRELOAD="$LIBASAN $LIBSTDCXX"
fi

run_sanitized() {
    # The scratch copy first on sys.path, so it shadows an editable install.
    env PYTHONPATH="$WORK/repo/src${PYTHONPATH:+:$PYTHONPATH}" \
        LD_PRELOAD="$PRELOAD" \
        ASAN_OPTIONS="$ASAN_COMMON:detect_leaks=0" \
        ROPESCALE_SANITIZED=1 \
        PYTHONDONTWRITEBYTECODE=1 \
        "$@"
}

# Make sure the sanitized build is the one imported.
run_sanitized "$PYTHON" -c "
import sys, ropescale, ropescale._core as c
want = sys.argv[1]
assert c.__file__.startswith(want), (c.__file__, want)
print('sanitize: using', c.__file__)
" "$WORK/repo/src"

echo "== sanitize: Python test suite under ASan + UBSan =="
cd "$WORK/repo"
if [ "$#" -eq 0 ]; then
    set -- tests
fi
run_sanitized "$PYTHON" -m pytest -q -p no:cacheprovider "$@"
echo "sanitize: OK"
