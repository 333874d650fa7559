"""Build the C extension; all metadata lives in pyproject.toml.

The flags depend on the compiler, not the platform (mingw and clang on
Windows take GCC's), so they are chosen in build_ext, once the compiler is
known.  tools/zig_wheel.py imports GCC_FLAGS to cross-compile the same way.
"""
import glob
import os

# Every C file in csrc/ is part of the core: a new file needs no edit here.
CORE = sorted(glob.glob(os.path.join("csrc", "*.c")))
# Headers and X-macro tables: editing one rebuilds the extension.
DEPENDS = sorted(glob.glob(os.path.join("csrc", "*.h")) + glob.glob(os.path.join("csrc", "*.def")))
# Keep in sync with `dependencies` in pyproject.toml (numpy>=1.23).
DEFINES = [("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")]

# GCC and clang (Linux, macOS, mingw): -O3 and warnings on; no -march=native
# and no -ffast-math (a fast-math shared object can flip denormal handling
# for the whole process).
# -ffp-contract=off: csrc/angle.c's exact product must not be fused, and every
# instruction-set path must round like the baseline (Apple clang contracts
# by default).
# -fno-trapping-math: lets branch-free selects on doubles vectorize; we never
# rely on floating-point traps, and no value or rounding changes.
# -fno-strict-aliasing: the kernels reach NumPy's buffers as bytes and cast
# them per dtype at run time, carve one scratch block into double, float
# and uint16 rows, and the glue casts between CPython's object structs;
# the flag keeps the optimizer from reordering loads and stores across
# those views.  It is not a no-op (freq.c, rotary.c and _core.c compile
# to different code without it), so dropping it needs an audit of every
# cast, not just a green test run.
GCC_FLAGS = ["-std=c99", "-O3", "-Wall", "-Wextra", "-ffp-contract=off",
             "-fno-trapping-math", "-fno-strict-aliasing"]
GCC_LINK = ["-pthread"]
# MSVC (CPython's own Windows builds): /fp:precise neither contracts nor
# reassociates (/fp:contract stays off; no /arch, so no FMA instruction is
# even available); the threads are Win32's (csrc/rs_threads.h); /wd4244 and
# /wd4267 silence the int64 -> int/size_t narrowing notes the C99 code makes
# on purpose.
MSVC_FLAGS = ["/O2", "/fp:precise", "/W3", "/wd4244", "/wd4267"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]


def gcc_flags(sanitize=False):
    """(compile, link) flags for GCC and clang."""
    if not sanitize:
        return list(GCC_FLAGS), list(GCC_LINK)
    return ([f for f in GCC_FLAGS if f != "-O3"] + SANITIZE,
            GCC_LINK + ["-fsanitize=address,undefined"])


if __name__ == "__main__":
    import numpy
    from setuptools import Extension, setup
    from setuptools.command.build_ext import build_ext

    class BuildExt(build_ext):
        def build_extensions(self):
            if self.compiler.compiler_type == "msvc":
                compile_args, link_args = list(MSVC_FLAGS), []
            else:
                compile_args, link_args = gcc_flags(bool(os.environ.get("ROPESCALE_SANITIZE")))
            for ext in self.extensions:
                ext.extra_compile_args = compile_args
                ext.extra_link_args = link_args
            super().build_extensions()

    setup(
        ext_modules=[Extension(
            "ropescale._core",
            sources=["src/ropescale/_core.c"] + CORE,
            depends=DEPENDS,
            include_dirs=["csrc", numpy.get_include()],
            define_macros=DEFINES,
        )],
        cmdclass={"build_ext": BuildExt},
    )
