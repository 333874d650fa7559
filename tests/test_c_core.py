"""The C core's own test program (tests/c/test_core.c), built with the system
compiler and run as part of the plain suite (tools/sanitize.sh runs it again
under ASan + UBSan with -Werror).

It needs the sources (a checkout or the unpacked sdist) and a C compiler;
without either it skips and says which is missing.
"""
import glob
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
CSRC = os.path.join(ROOT, "csrc")
TEST_C = os.path.join(ROOT, "tests", "c", "test_core.c")


def compiler():
    cc = os.environ.get("CC")
    if cc:
        return cc.split()
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def test_c_core_program_passes(tmp_path):
    sources = sorted(glob.glob(os.path.join(CSRC, "*.c")))
    if not sources or not os.path.exists(TEST_C):
        pytest.skip("the C sources (csrc/, tests/c/) are not here: run from a checkout or an unpacked sdist")
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang; or set CC)")
    exe = str(tmp_path / "test_core")
    # The build's own flags that matter for the results (see setup.py).
    cmd = cc + ["-std=c99", "-O2", "-Wall", "-Wextra", "-ffp-contract=off", "-fno-trapping-math",
                "-fno-strict-aliasing", "-I" + CSRC, TEST_C] + sources + ["-lm", "-pthread", "-o", exe]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"{' '.join(cmd)}\n{build.stderr[-4000:]}"
    run = subprocess.run([exe], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    m = re.search(r"(\d+) passed, 0 failed", run.stdout)
    assert m and int(m.group(1)) >= 100, run.stdout
