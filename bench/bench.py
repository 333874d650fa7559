"""Speed and memory of ropescale's rotary kernels against their floors and peers.

    python bench/bench.py                 # every case (~2-3 min on 2 cores)
    python bench/bench.py --quick         # the 4 cases of `ropescale bench`
    python bench/bench.py --repeat 9 --threads 1 --json out.json
    python bench/bench.py --cases prefill # only cases whose name contains "prefill"

Prints one Markdown table: per case the median ropescale time, the copy floor
(np.copyto of the same bytes), how far above the floor ropescale is, how many
times faster it is than the pure-NumPy reference and than PyTorch doing what
HF transformers does, and the peak RSS growth of one call measured in a fresh
process.  The targets are context, not assertions: the last column says PASS
or MISS.  The machinery lives in ``bench/harness.py`` beside this file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import ropescale

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as _bench  # noqa: E402  (beside this file, not part of the package)
from harness import QUICK_CASES, apply_case, cos_sin_case  # noqa: E402

PREFILL = (1, 8192, 32, 128)
DECODE = (64, 1, 32, 128)  # one new token for each of 64 sequences
# Targets (context for the PASS/MISS column, never asserted):
CACHED = [("x_floor", "<=", 1.3)]
PEERS = [("x_numpy", ">=", 10), ("x_torch", ">=", 5)]
MROPE = [("x_plain", "<=", 1.1)]
MROPE_SECTION = (16, 24, 24)  # Qwen2-VL's mrope_section for head_dim 128


def _have_ml_dtypes():
    try:
        import ml_dtypes  # noqa: F401  (optional: the bfloat16 row needs it)
    except ImportError:
        return False
    return True


def full_cases():
    cases = [
        apply_case("prefill cached, new array", PREFILL, targets=CACHED + PEERS, compiled=True),
        apply_case("prefill cached, out=buf", PREFILL, place="out", targets=CACHED + PEERS),
        apply_case("prefill cached, in place", PREFILL, place="inplace",
                   targets=[("x_ipfloor", "<=", 1.2)] + PEERS),
        apply_case("prefill fused, new array", PREFILL, form="fused", targets=[("x_floor", "<=", 1.6)] + PEERS,
                   compiled=True),
        apply_case("prefill fused, out=buf", PREFILL, form="fused", place="out",
                   targets=[("x_floor", "<=", 1.6)] + PEERS),
        apply_case("prefill fused, in place", PREFILL, form="fused", place="inplace",
                   targets=[("x_ipfloor", "<=", 1.6)] + PEERS),
        apply_case("GQA keys cached", (1, 8192, 8, 128), targets=CACHED),
        apply_case("GQA keys fused", (1, 8192, 8, 128), form="fused"),
        apply_case("decode cached", (64, 1, 32, 128), positions="decode", place="out",
                   targets=[("x_floor", "<=", 1.3)]),
        apply_case("decode fused", (64, 1, 32, 128), form="fused", positions="decode", place="out",
                   targets=[("x_floor", "<=", 1.6)]),
        apply_case("decode cached, new array", (64, 1, 32, 128), positions="decode", compiled=True,
                   targets=[("x_copy", "<=", 1.3), ("x_compile", ">=", 3)]),
        apply_case("decode fused, new array", (64, 1, 32, 128), form="fused", positions="decode", compiled=True,
                   targets=[("x_compile", ">=", 3)]),
        # q and k in one pass (Rope.apply_qk) against two Rope.apply calls
        apply_case("q+k decode fused, out=", DECODE, positions="decode", place="out", k_heads=32,
                   targets=[("x_two", "<=", 0.6)]),
        apply_case("q+k decode GQA fused, out=", DECODE, positions="decode", place="out", k_heads=8),
        apply_case("q+k decode fused, new array", DECODE, positions="decode", k_heads=32, compiled=True,
                   targets=[("x_compile", ">=", 3)]),
        apply_case("q+k prefill GQA fused, out=", PREFILL, place="out", k_heads=8),
        apply_case("q+k prefill fused, new array", PREFILL, k_heads=32),
        apply_case("head_dim 64 cached", (1, 8192, 32, 64), targets=CACHED),
        apply_case("head_dim 256 cached", (1, 8192, 32, 256), targets=CACHED),
        apply_case("interleaved cached", PREFILL, interleaved=True, targets=CACHED),
        apply_case("interleaved fused", PREFILL, form="fused", interleaved=True, targets=[("x_floor", "<=", 1.6)]),
        apply_case("partial R=D/4 cached", PREFILL, pairs=32, targets=CACHED),
        apply_case("float16 cached", PREFILL, "float16", targets=[("x_floor", "<=", 2.0)]),
        apply_case("float16 fused", PREFILL, "float16", form="fused"),
        apply_case("float64 cached", PREFILL, "float64"),
    ]
    # 16-bit rows in registers (issue 25): interleaved float16, and bfloat16, at decode size too
    cases += [
        apply_case("float16 interleaved cached", PREFILL, "float16", interleaved=True),
        apply_case("decode float16 interleaved, out=", DECODE, "float16", positions="decode", place="out",
                   interleaved=True),
    ]
    if _have_ml_dtypes():
        cases += [
            apply_case("bfloat16 cached (ml_dtypes array)", PREFILL, "bfloat16", numpy_ref=False),
            apply_case("bfloat16 interleaved cached", PREFILL, "bfloat16", interleaved=True, numpy_ref=False),
            apply_case("decode bfloat16, out=", DECODE, "bfloat16", positions="decode", place="out",
                       numpy_ref=False),
        ]
    # M-RoPE (issue 12): the same x at 3 position streams (Qwen2-VL's section) against
    # plain per-token positions, both through Rope.apply, timed round-robin.
    cases += [
        apply_case("M-RoPE k=3 prefill, new array", PREFILL, mrope=MROPE_SECTION, targets=MROPE),
        apply_case("M-RoPE k=3 decode, out=buf", (64, 1, 32, 128), positions="decode", place="out",
                   mrope=MROPE_SECTION, targets=MROPE),
        apply_case("M-RoPE k=3 decode, out=buf, streams differ", (64, 1, 32, 128), positions="decode", place="out",
                   mrope=MROPE_SECTION, mrope_distinct=True, targets=MROPE),
    ]
    cases += [
        cos_sin_case("cos_sin table", 131072, 64, targets=[("x_numpy", ">=", 3)]),
    ]
    # Thread scaling on the prefill case (the NumPy reference is single-threaded
    # and already measured above, so it is left out here).
    for n in (1, 2):
        cases += [
            apply_case(f"prefill cached, out=buf, {n} thr", PREFILL, place="out", threads=n, numpy_ref=False),
            apply_case(f"prefill cached, new array, {n} thr", PREFILL, threads=n, numpy_ref=False,
                       targets=[("x_copy", "<=", 1.15)] if n == 1 else ()),
            apply_case(f"prefill fused, new array, {n} thr", PREFILL, form="fused", threads=n, numpy_ref=False,
                       targets=[("x_copy", "<=", 1.3)] if n == 1 else ()),
        ]
    return cases


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="only the 4 representative cases of `ropescale bench`")
    p.add_argument("--repeat", type=int, default=None, help="timed rounds per case (median kept; default 5, quick 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for ropescale and torch (default: ropescale.get_num_threads())")
    p.add_argument("--json", metavar="FILE", help="also write the machine info and rows as JSON")
    p.add_argument("--cases", metavar="TEXT", help="only cases whose name contains TEXT")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--no-numpy", action="store_true", help="skip the NumPy reference (slow)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    args = p.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be >= 1")
        ropescale.set_num_threads(args.threads)
    repeat = args.repeat or (3 if args.quick else 5)
    cases = QUICK_CASES if args.quick else full_cases()
    if args.cases:
        cases = [c for c in cases if args.cases in c["name"]]

    info = _bench.machine_info()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print("## ropescale benchmark\n")
    for line in _bench.header_lines(info):
        print(line)
    print(f"- {repeat} timed rounds per case (median), contenders interleaved; "
          f"load average at start {load:.2f}" if load is not None else "")
    print("", flush=True)

    t0 = time.perf_counter()

    def progress(row):
        print(f"  ... {row['case']}: {row['ropescale_ms']:.3f} ms ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)

    rows = _bench.run_cases(cases, repeat=repeat, threads=args.threads, rss=not args.no_rss,
                            numpy_ref=not args.no_numpy, torch_ref=not args.no_torch, progress=progress)
    print(_bench.markdown_table(rows))
    print()
    print("×floor = ropescale / np.copyto of the same bytes (into a fresh array for `new array` rows, "
          "into a preallocated one otherwise); ×ip-floor = ropescale / np.multiply(x, 1, out=x) for in-place "
          "rows; ×faster = peer time / ropescale time. Peak RSS: growth of VmHWM over one call in a fresh "
          "process, with the output size in parentheses.")
    if load is not None:
        print(f"\nLoad average at end {os.getloadavg()[0]:.2f}: on a shared machine compare ratios within a row, "
              "not times across runs; torch's small calls with several OpenMP threads can wait milliseconds "
              "at barriers when the cores are oversubscribed.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "repeat": repeat, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
