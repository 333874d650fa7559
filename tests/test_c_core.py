"""The C core's own test program (tests/c/test_core.c), built and run in the plain suite.

tools/sanitize.sh runs it again under AddressSanitizer/UBSan; here it runs with
the default optimisation, as the extension is built.  Skipped when no C
compiler is found (the source tree only; an installed wheel has no csrc/).
"""
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "csrc").glob("*.c"))


def compiler():
    cc = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@pytest.mark.skipif(not SOURCES, reason="csrc/ is not here (an installed package)")
def test_c_core_program_passes(tmp_path):
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "test_core"
    build = subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-ffp-contract=off", f"-I{ROOT / 'csrc'}",
                            str(ROOT / "tests" / "c" / "test_core.c"), *map(str, SOURCES), "-lm", "-pthread",
                            "-o", str(exe)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert " passed, 0 failed" in run.stdout
