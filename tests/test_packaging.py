"""The source distribution: what MANIFEST.in takes, and that building it is quiet.

Needs the checkout (setup.py, MANIFEST.in and src/); skipped where the tests
run from an installed wheel without them.
"""
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_OUTPUT = ("build", "dist", ".git", "__pycache__", ".pytest_cache", ".hypothesis", "*.egg-info", "*.so",
                "*.o", "*.pyd", "*.pyc")


def test_the_sdist_builds_without_warnings_and_without_build_output(tmp_path):
    """0.2.0's MANIFEST.in excluded build output that a clean clone does not have: every build printed a
    'no previously-included files' warning per pattern (20 lines from python -m build)."""
    if not all((ROOT / f).exists() for f in ("setup.py", "MANIFEST.in", "src/ropescale/_core.c")):
        pytest.skip("needs the checkout or the unpacked sdist, with src/")
    pytest.importorskip("setuptools")
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*BUILD_OUTPUT))
    # build output of a working checkout, which the manifest must not pick up either
    for junk in ("src/ropescale/_core.cpython-311-x86_64-linux-gnu.so", "tests/__pycache__/x.cpython-311.pyc",
                 "build/lib/ropescale/_core.so", "bench/z.o", "bench/__pycache__/b.cpython-311.pyc"):
        (tree / junk).parent.mkdir(parents=True, exist_ok=True)
        (tree / junk).write_bytes(b"\0")
    proc = subprocess.run([sys.executable, "setup.py", "sdist", "-d", str(tmp_path / "dist")], cwd=str(tree),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [line for line in (proc.stdout + proc.stderr).splitlines()
             if "previously-included" in line or "no files found matching" in line]
    assert not noise, noise
    (sdist,) = (tmp_path / "dist").glob("ropescale-*.tar.gz")
    names = [n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n]
    assert not [n for n in names if n.endswith((".so", ".o", ".pyc")) or "__pycache__" in n
                or n.startswith(("build/", "dist/"))], names
    for needed in ("csrc/rotary.c", "csrc/methods.def", "src/ropescale/_core.c", "tests/test_hostile.py",
                   "LICENSE", ".ci/run", "tools/sanitize.sh"):
        assert needed in names, needed
    data = [str(p.relative_to(ROOT)).replace(os.sep, "/") for p in (ROOT / "tests" / "data").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts]
    assert data and not [n for n in data if n not in names], "test data missing from the sdist"
