"""Two builds of ropescale's C core side by side in one process: kernel time ratios.

    python bench/compare_builds.py OLD_TREE NEW_TREE [--cases TEXT] [--rounds N]

Each tree is a checkout built in place (``setup.py build_ext --inplace``).
Both ``_core`` extensions are loaded into this process and every case calls
the raw kernels of the two alternately (ABBA order), so a busy shared machine
slows both alike; the table gives the median time of each and the ratio
new/old.  Python-level work is left out: this measures the C core only (use
bench/bench.py for the public functions against their floors).
"""
from __future__ import annotations

import argparse
import glob
import importlib.machinery
import importlib.util
import os
import sys
import time

import numpy as np

PREFILL = (1, 8192, 32, 128)


def load(tree):
    paths = glob.glob(os.path.join(tree, "src", "ropescale", "_core*.so")) + \
        glob.glob(os.path.join(tree, "src", "ropescale", "_core*.pyd"))
    if not paths:
        sys.exit(f"no built _core in {tree}/src/ropescale (run setup.py build_ext --inplace there)")
    loader = importlib.machinery.ExtensionFileLoader("ropescale._core", paths[0])
    spec = importlib.util.spec_from_file_location("ropescale._core", paths[0], loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def inv_freq(d, base=1e4):
    return base ** (-np.arange(0, d, 2) / d)


def cases(ref):
    """(name, call(module)) for the rows of bench/bench.py, on the raw kernels."""
    rng = np.random.default_rng(0)
    th128 = inv_freq(128, 5e5)

    def rotation(name, shape, dtype=np.float32, form="cached", place="out", interleaved=False, decode=False,
                 theta=th128, threads=2):
        x = rng.standard_normal(shape).astype(dtype)
        if decode:
            pos = rng.integers(0, 100000, size=(shape[0], 1, 1)).astype(np.int64)
        else:
            pos = np.arange(shape[1], dtype=np.int64)[None, :, None]
        tdt = np.float64 if dtype == np.float64 else np.float32
        c = np.empty((pos.size, theta.size), tdt)
        s = np.empty_like(c)
        ref.cos_sin(pos.reshape(-1), theta, 1.0, c, s, 1)
        c, s = c.reshape(pos.shape + (theta.size,)), s.reshape(pos.shape + (theta.size,))
        out = np.empty_like(x)

        def call(m):
            o = np.empty_like(x) if place == "new" else (x if place == "inplace" else out)
            if form == "cached":
                m.rotate(x, c, s, o, interleaved, False, threads)
            else:
                m.rotate_positions(x, pos, theta, 1.0, o, interleaved, False, threads)
        return name, call

    def table(name, n, d, threads=2):
        p, th = np.arange(n, dtype=np.int64), inv_freq(d)
        c = np.empty((n, d // 2), np.float32)
        s = np.empty_like(c)
        return name, lambda m: m.cos_sin(p, th, 1.0, c, s, threads)

    return [
        rotation("prefill cached, new array", PREFILL, place="new"),
        rotation("prefill cached, out=buf", PREFILL),
        rotation("prefill cached, in place", PREFILL, place="inplace"),
        rotation("prefill fused, new array", PREFILL, form="fused", place="new"),
        rotation("prefill fused, out=buf", PREFILL, form="fused"),
        rotation("prefill fused, in place", PREFILL, form="fused", place="inplace"),
        rotation("GQA keys cached", (1, 8192, 8, 128)),
        rotation("GQA keys fused", (1, 8192, 8, 128), form="fused"),
        rotation("decode cached", (64, 1, 32, 128), decode=True),
        rotation("decode fused", (64, 1, 32, 128), form="fused", decode=True),
        rotation("head_dim 64 cached", (1, 8192, 32, 64), theta=inv_freq(64, 5e5)),
        rotation("head_dim 256 cached", (1, 8192, 32, 256), theta=inv_freq(256, 5e5)),
        rotation("interleaved cached", PREFILL, interleaved=True),
        rotation("interleaved fused", PREFILL, form="fused", interleaved=True),
        rotation("partial R=D/4 cached", PREFILL, theta=th128[:32]),
        rotation("float16 cached", PREFILL, np.float16),
        rotation("float16 fused", PREFILL, np.float16, form="fused"),
        rotation("float64 cached", PREFILL, np.float64),
        table("cos_sin table", 131072, 128),
        rotation("prefill cached, out=buf, 1 thr", PREFILL, threads=1),
        rotation("prefill fused, out=buf, 1 thr", PREFILL, form="fused", threads=1),
        rotation("float16 fused, 1 thr", PREFILL, np.float16, form="fused", threads=1),
        table("cos_sin table, 1 thr", 131072, 128, threads=1),
        # rerotate's kernel: a (1, 32768, 8, 128) cache rotated in place by one shift
        rotation("KV cache in place f32, 1 thr", (1, 32768, 8, 128), form="fused", place="inplace", threads=1),
        rotation("KV cache in place f16, 1 thr", (1, 32768, 8, 128), np.float16, form="fused", place="inplace",
                 threads=1),
        rotation("KV cache in place f32, 2 thr", (1, 32768, 8, 128), form="fused", place="inplace"),
        rotation("decode cached, 1 thr", (64, 1, 32, 128), decode=True, threads=1),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--cases", default="", help="only cases whose name contains TEXT")
    ap.add_argument("--rounds", type=int, default=9, help="timed rounds per build and case (median kept)")
    args = ap.parse_args(argv)
    old, new = load(args.old), load(args.new)
    print(f"load average at start {os.getloadavg()[0]:.2f}; {args.rounds} rounds, ABBA order\n")
    print("| case | old ms | new ms | new/old |")
    print("|---|---|---|---|")
    for name, call in cases(new):
        if args.cases not in name:
            continue
        reps = 200 if "decode" in name else 1
        times = {"old": [], "new": []}
        call(old)
        call(new)
        for r in range(args.rounds):
            order = (("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old))
            for label, m in order:
                t0 = time.perf_counter()
                for _ in range(reps):
                    call(m)
                times[label].append((time.perf_counter() - t0) / reps)
        mo, mn = float(np.median(times["old"])), float(np.median(times["new"]))
        print(f"| {name} | {mo * 1e3:.3f} | {mn * 1e3:.3f} | {mn / mo:.2f} |", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
