"""Speed of in-place ``ropescale.rerotate`` on a KV cache against the in-place floor.

    python bench/bench_rerotate.py               # (1, 32768, 8, 128), float16 and float32, 1 and 2 threads
    python bench/bench_rerotate.py --repeat 9 --shape 1,8192,8,128

The floor is ``np.multiply(k, 1, out=k)``: the same read-modify-write traffic
over the cache with no arithmetic worth the name.  NumPy multiplies float16
without SIMD (converting each element), so that floor is slow for float16; the
``traffic floor``, ``np.bitwise_or`` of the same bytes viewed as unsigned
integers with 0, is the same traffic at memory speed for every dtype, and the
stricter of the two.  Two position patterns:

* ``shift``: every key moves by the same delta (a sliding window or llama.cpp's
  context shift: positions ``(S, 1)``, from ``arange(S) + 1000`` to ``arange(S)``);
* ``compaction``: 1/8 of the tokens evicted at random (H2O/SnapKV-style), the
  survivors moving down by how many were evicted before them (piecewise-constant deltas);
* ``scattered``: each token has its own random delta up to 2**20 (the worst
  case: one cos/sin row per token).

Contenders run round-robin so they see the same machine state; the median of
the rounds is kept.  Target: ropescale <= 1.2x the floor (context, never asserted).
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time

import numpy as np

import ropescale

TARGET = 1.2


def _median_times(fns, repeat):
    """Median seconds per call of each contender, timed round-robin after one warm-up round."""
    samples = {name: [] for name in fns}
    gc.disable()
    try:
        for r in range(repeat + 1):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                t = time.perf_counter() - t0
                if r:
                    samples[name].append(t)
    finally:
        gc.enable()
    return {name: float(np.median(v)) for name, v in samples.items()}


def run(shape, dtypes, threads, repeat):
    rng = np.random.default_rng(0)
    theta = ropescale.inv_freq(shape[-1], 500000.0)
    s = shape[1]
    patterns = {
        "shift": (np.arange(s)[:, None] + 1000, np.arange(s)[:, None]),
        "compaction": (np.arange(s)[:, None],
                       np.arange(s)[:, None] - np.cumsum(rng.random(s) < 0.125)[:, None]),
        "scattered": (np.arange(s)[:, None], rng.integers(0, 2**20, size=(s, 1))),
    }
    rows = []
    for dtype in dtypes:
        k = rng.standard_normal(shape).astype(dtype)
        for n in threads:
            prev = ropescale.set_num_threads(n)
            try:
                for pat, (frm, to) in patterns.items():
                    kv = k.view(f"u{k.itemsize}")
                    fns = {
                        "floor": lambda: np.multiply(k, 1, out=k),
                        "traffic": lambda: np.bitwise_or(kv, 0, out=kv),
                        "rerotate": lambda: ropescale.rerotate(k, frm, to, theta, out=k),
                    }
                    t = _median_times(fns, repeat)
                    rows.append({"dtype": dtype, "threads": n, "positions": pat,
                                 "floor_ms": 1e3 * t["floor"], "traffic_ms": 1e3 * t["traffic"],
                                 "rerotate_ms": 1e3 * t["rerotate"],
                                 "x_floor": t["rerotate"] / t["floor"], "x_traffic": t["rerotate"] / t["traffic"]})
            finally:
                ropescale.set_num_threads(prev)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="1,32768,8,128", help="cache shape B,S,H,D (default 1,32768,8,128)")
    p.add_argument("--repeat", type=int, default=7, help="timed rounds (median kept)")
    p.add_argument("--threads", default="1,2", help="thread counts to run, comma-separated")
    p.add_argument("--dtypes", default="float16,float32")
    args = p.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    if len(shape) != 4:
        p.error("--shape must be B,S,H,D")
    threads = [int(v) for v in args.threads.split(",")]
    dtypes = args.dtypes.split(",")
    print(f"## rerotate in place, cache {shape}\n")
    print(f"- {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"Python {platform.python_version()}, NumPy {np.__version__}, ropescale {ropescale.__version__}")
    if hasattr(os, "getloadavg"):
        print(f"- load average at start {os.getloadavg()[0]:.2f}; {args.repeat} rounds, median")
    print()
    rows = run(shape, dtypes, threads, args.repeat)
    print("| dtype | threads | positions | rerotate ms | floor ms | ×floor | traffic floor ms | ×traffic |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")

    def mark(x):
        return f"{x:.2f} {'PASS' if x <= TARGET else 'MISS'}"

    for r in rows:
        print(f"| {r['dtype']} | {r['threads']} | {r['positions']} | {r['rerotate_ms']:.2f} | {r['floor_ms']:.2f} | "
              f"{mark(r['x_floor'])} | {r['traffic_ms']:.2f} | {mark(r['x_traffic'])} |")
    print(f"\nfloor = np.multiply(k, 1, out=k); traffic floor = np.bitwise_or(k.view(uint), 0, out=...); "
          f"×floor = rerotate / floor; PASS: <= {TARGET}x.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
