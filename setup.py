"""Build the C extension; all metadata lives in pyproject.toml."""
import os
import sys

import numpy
from setuptools import Extension, setup

CORE = ["freq.c", "angle.c", "tables.c", "half.c", "layout.c", "rotary.c", "threads.c"]

if sys.platform == "win32":
    extra_compile_args = ["/O2"]
    extra_link_args = []
else:
    # -O3 and warnings on; no -march=native and no -ffast-math (a fast-math
    # shared object can flip denormal handling for the whole process).
    # -ffp-contract=off: csrc/angle.c's exact product must not be fused.
    # -fno-trapping-math: lets branch-free selects on doubles vectorize; we never
    # rely on floating-point traps, and no value or rounding changes.
    extra_compile_args = ["-std=c99", "-O3", "-Wall", "-Wextra", "-ffp-contract=off",
                          "-fno-trapping-math", "-fno-strict-aliasing"]
    extra_link_args = ["-pthread"]
    if os.environ.get("ROPESCALE_SANITIZE"):
        flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
        extra_compile_args = [f for f in extra_compile_args if f != "-O3"] + flags
        extra_link_args += ["-fsanitize=address,undefined"]

ext = Extension(
    "ropescale._core",
    sources=["src/ropescale/_core.c"] + [os.path.join("csrc", f) for f in CORE],
    include_dirs=["csrc", numpy.get_include()],
    define_macros=[
        # Keep in sync with `dependencies` in pyproject.toml (numpy>=1.23).
        ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION"),
    ],
    extra_compile_args=extra_compile_args,
    extra_link_args=extra_link_args,
)

setup(ext_modules=[ext])
