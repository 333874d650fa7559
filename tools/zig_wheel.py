"""Turn the wheel `python -m build` made into a manylinux wheel, with zig.

The wheel built on this machine links against its own glibc, so no other
Linux will take it.  This rebuilds the one compiled file, ropescale._core,
with zig (PyPI's ``ziglang``) as a cross compiler targeting an old glibc
(2.17: manylinux2014) and any CPU of the architecture (``-mcpu=baseline``;
the faster instruction sets are chosen at run time), with setup.py's own
flags, and writes a copy of the wheel with that file, the platform tag and
a new RECORD.  ``auditwheel show`` then says which policy the result meets.

    python tools/zig_wheel.py dist/ropescale-0.3-cp311-cp311-linux_x86_64.whl \\
        --target x86_64-linux-gnu.2.17 --out wheelhouse \\
        --plat manylinux_2_17_x86_64.manylinux2014_x86_64

For another architecture, give that interpreter's headers and suffix (an
arm64 Debian root made with debootstrap has them):

    python tools/zig_wheel.py WHEEL --target aarch64-linux-gnu.2.17 \\
        --plat manylinux_2_17_aarch64.manylinux2014_aarch64 --out wheelhouse \\
        --include ROOT/usr/include/python3.11 --include ROOT/usr/include/aarch64-linux-gnu/python3.11 \\
        --ext-suffix .cpython-311-aarch64-linux-gnu.so

NumPy's headers are the build's own (numpy>=2, any architecture: the C API
used is pinned by NPY_TARGET_VERSION).
"""
import argparse
import base64
import csv
import hashlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_module():
    """setup.py's flags and sources (it builds nothing unless run as __main__)."""
    spec = importlib.util.spec_from_file_location("ropescale_setup", os.path.join(ROOT, "setup.py"))
    mod = importlib.util.module_from_spec(spec)
    cwd = os.getcwd()
    os.chdir(ROOT)  # its globs are relative to the project
    try:
        spec.loader.exec_module(mod)
    finally:
        os.chdir(cwd)
    return mod


def compile_core(target, includes, numpy_include, out_path):
    setup = _setup_module()
    compile_args, link_args = setup.gcc_flags()
    defines = ["-D%s=%s" % d for d in setup.DEFINES]
    sources = [os.path.join(ROOT, "src", "ropescale", "_core.c")] + [os.path.join(ROOT, c) for c in setup.CORE]
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", target, "-mcpu=baseline", "-shared", "-fPIC",
           "-fno-sanitize=undefined", *compile_args, *defines, "-I" + os.path.join(ROOT, "csrc"),
           "-I" + numpy_include, *("-I" + i for i in includes), *sources, *link_args, "-lm", "-o", out_path]
    subprocess.run(cmd, check=True)


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, "sha256=" + digest, str(len(data))]


def retag(wheel, so_path, ext_suffix, plat, out_dir):
    """A copy of `wheel` with _core replaced by so_path and the tag cpXY-cpXY-plat."""
    m = re.match(r"\.cpython-(\d+)", ext_suffix)
    if not m:
        raise SystemExit(f"zig_wheel: cannot read a CPython version from --ext-suffix {ext_suffix!r}")
    tag = f"cp{m.group(1)}-cp{m.group(1)}-{plat}"
    name, version = os.path.basename(wheel).split("-")[:2]
    out = os.path.join(out_dir, f"{name}-{version}-{tag}.whl")
    with open(so_path, "rb") as f:
        core = f.read()
    rows = []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        for info in src.infolist():
            n = info.filename
            if n == record_name or (n.startswith("ropescale/_core") and n.endswith(".so")):
                continue
            data = src.read(n)
            if n.endswith(".dist-info/WHEEL"):
                lines = [ln for ln in data.decode().splitlines() if ln.strip() and not ln.startswith("Tag:")]
                py = tag.rsplit("-", 1)[0]
                lines += [f"Tag: {py}-{p}" for p in plat.split(".")]  # one line per platform alias
                data = ("\n".join(lines) + "\n").encode()
            dst.writestr(n, data)
            rows.append(_record_line(n, data))
        core_name = "ropescale/_core" + ext_suffix
        info = zipfile.ZipInfo(core_name, date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        dst.writestr(info, core)
        rows.append(_record_line(core_name, core))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows + [[record_name, "", ""]])
        dst.writestr(record_name, buf.getvalue())
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", help="the wheel python -m build made (its Python files and metadata are kept)")
    ap.add_argument("--target", required=True, help="zig target, e.g. x86_64-linux-gnu.2.17")
    ap.add_argument("--plat", required=True, help="platform tag(s), e.g. manylinux_2_17_x86_64.manylinux2014_x86_64")
    ap.add_argument("--out", required=True, help="directory for the new wheel")
    ap.add_argument("--include", action="append", default=None,
                    help="Python header directory of the target (default: this interpreter's)")
    ap.add_argument("--ext-suffix", default=sysconfig.get_config_var("EXT_SUFFIX"),
                    help="extension suffix of the target interpreter (default: this one's)")
    ap.add_argument("--numpy-include", default=None, help="NumPy's C headers (default: this numpy's)")
    args = ap.parse_args(argv)
    includes = args.include or [sysconfig.get_paths()["include"]]
    numpy_include = args.numpy_include
    if numpy_include is None:
        import numpy
        numpy_include = numpy.get_include()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        so = os.path.join(tmp, "_core" + args.ext_suffix)
        compile_core(args.target, includes, numpy_include, so)
        print(retag(args.wheel, so, args.ext_suffix, args.plat, args.out))


if __name__ == "__main__":
    main()
