"""How far ropescale's cos/sin tables are from correctly rounded values, measured with mpmath.

    python tools/table_rounding.py [--per-band 400] [--seed 0]

For heads of dim 64 and 128 with bases 1e4, 5e5 and 1e7, at integer and
half-integer positions drawn per band (0-2000, 2000-2**20, 2**20-2**31) and
attention factor 1, each entry of ``ropescale.cos_sin`` is compared with
cos/sin of the exact product ``t * theta`` (both doubles, 200-bit mpmath):

* float64: the absolute error in units of 2**-53, and how many entries are
  more than half an ulp (of the correctly rounded value) off;
* float32 and bfloat16: how many entries differ from the correctly rounded
  value (mpmath rounding to 24 / 8 bits, nearest-even);
* float16: the same against NumPy's correctly rounded cast of the float64
  nearest to the exact value (float16 subnormals).

The numbers in README.md ("Arrays, dtypes, threads") and docs/math.md come
from this script; tests/test_precision.py checks the stated bounds on a
smaller sample.
"""
import argparse
import platform
import time

import mpmath
import numpy as np

import ropescale

mpmath.mp.prec = 200


def exact(t: float, theta: float):
    a = mpmath.mpf(t) * mpmath.mpf(theta)   # exact: 106 bits fit in 200
    return mpmath.cos(a), mpmath.sin(a)


def rounded(x, bits: int) -> float:
    """x rounded to ``bits`` significant bits, nearest-even (no subnormals at these magnitudes)."""
    with mpmath.workprec(bits):
        return float(+x)


def measure(per_band: int, seed: int):
    rng = np.random.default_rng(seed)
    stats = {"values": 0, "f64_max_abs": 0.0, "f64_over_half_ulp": 0, "f32_miss": 0, "bf16_miss": 0,
             "f16_miss": 0}
    bf16 = None
    try:
        import ml_dtypes
        bf16 = ml_dtypes.bfloat16
    except ImportError:
        pass
    for dim in (64, 128):
        for base in (1e4, 5e5, 1e7):
            theta = ropescale.inv_freq(dim, base)
            for lo, hi in ((0, 2000), (2000, 2**20), (2**20, 2**31)):
                ints = rng.integers(lo, hi, per_band)
                for pos in (ints, ints + 0.5):
                    c64, s64 = ropescale.cos_sin(pos, theta, dtype=np.float64)
                    c32, s32 = ropescale.cos_sin(pos, theta, dtype=np.float32)
                    c16, s16 = ropescale.cos_sin(pos, theta, dtype=np.float16)
                    tb = ropescale.cos_sin(pos, theta, dtype=bf16) if bf16 is not None else None
                    for i, t in enumerate(pos.tolist()):
                        for k, th in enumerate(theta.tolist()):
                            for j, e in enumerate(exact(t, th)):
                                g64 = (c64, s64)[j][i, k]
                                err = abs(mpmath.mpf(float(g64)) - e)
                                stats["f64_max_abs"] = max(stats["f64_max_abs"], float(err * 2**53))
                                near = float(e)
                                half_ulp = np.spacing(abs(near)) / 2 if near else 2.0**-1075
                                stats["f64_over_half_ulp"] += float(err) > half_ulp
                                stats["f32_miss"] += float((c32, s32)[j][i, k]) != rounded(e, 24)
                                stats["f16_miss"] += (c16, s16)[j][i, k] != np.float16(near)
                                if tb is not None:
                                    stats["bf16_miss"] += float(tb[j][i, k]) != rounded(e, 8)
                                stats["values"] += 1
    return stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-band", type=int, default=400, help="positions per band, per dim and base")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    st = measure(args.per_band, args.seed)
    n = st["values"]
    print(f"ropescale {ropescale.__version__}, NumPy {np.__version__}, mpmath {mpmath.__version__}, "
          f"{platform.machine()} ({ropescale._core.simd_name()}); {n:,} cos/sin values, "
          f"{time.perf_counter() - start:.0f} s")
    print(f"float64: max |error| {st['f64_max_abs']:.3f} * 2**-53; more than half an ulp off: "
          f"{st['f64_over_half_ulp']:,} ({st['f64_over_half_ulp'] / n:.1%})")
    print(f"float32: {st['f32_miss']} not correctly rounded; bfloat16: {st['bf16_miss']}; float16: {st['f16_miss']}")


if __name__ == "__main__":
    main()
