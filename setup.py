"""Build the C extension; all metadata lives in pyproject.toml."""
import glob
import os
import sys

import numpy
from setuptools import Extension, setup

# Every C file in csrc/ is part of the core: a new file needs no edit here.
CORE = sorted(glob.glob(os.path.join("csrc", "*.c")))
# Headers and X-macro tables: editing one rebuilds the extension.
DEPENDS = sorted(glob.glob(os.path.join("csrc", "*.h")) + glob.glob(os.path.join("csrc", "*.def")))

if sys.platform == "win32":
    extra_compile_args = ["/O2"]
    extra_link_args = []
else:
    # -O3 and warnings on; no -march=native and no -ffast-math (a fast-math
    # shared object can flip denormal handling for the whole process).
    # -ffp-contract=off: csrc/angle.c's exact product must not be fused.
    # -fno-trapping-math: lets branch-free selects on doubles vectorize; we never
    # rely on floating-point traps, and no value or rounding changes.
    # -fno-strict-aliasing: the kernels reach NumPy's buffers as bytes and cast
    # them per dtype at run time, carve one scratch block into double, float
    # and uint16 rows, and the glue casts between CPython's object structs;
    # the flag keeps the optimizer from reordering loads and stores across
    # those views.  It is not a no-op (freq.c, rotary.c and _core.c compile
    # to different code without it), so dropping it needs an audit of every
    # cast, not just a green test run.
    extra_compile_args = ["-std=c99", "-O3", "-Wall", "-Wextra", "-ffp-contract=off",
                          "-fno-trapping-math", "-fno-strict-aliasing"]
    extra_link_args = ["-pthread"]
    if os.environ.get("ROPESCALE_SANITIZE"):
        flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
        extra_compile_args = [f for f in extra_compile_args if f != "-O3"] + flags
        extra_link_args += ["-fsanitize=address,undefined"]

ext = Extension(
    "ropescale._core",
    sources=["src/ropescale/_core.c"] + CORE,
    depends=DEPENDS,
    include_dirs=["csrc", numpy.get_include()],
    define_macros=[
        # Keep in sync with `dependencies` in pyproject.toml (numpy>=1.23).
        ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION"),
    ],
    extra_compile_args=extra_compile_args,
    extra_link_args=extra_link_args,
)

setup(ext_modules=[ext])
