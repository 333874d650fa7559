"""Angles at long context: float64 formation and exact reduction.

Ground truth is mpmath at 50 digits, independent of the C code.  A float32
``t * theta`` (what peers do) is shown to be far off at the same positions.
"""
import numpy as np
import pytest

import ropescale

mpmath = pytest.importorskip("mpmath")


def truth(positions, theta):
    mpmath.mp.dps = 50
    c = np.empty((len(positions), len(theta)))
    s = np.empty_like(c)
    for i, t in enumerate(positions):
        for k, th in enumerate(theta):
            a = mpmath.mpf(float(t)) * mpmath.mpf(float(th))  # theta as the double it is
            c[i, k], s[i, k] = float(mpmath.cos(a)), float(mpmath.sin(a))
    return c, s


POSITIONS = np.array([0, 1, 2**20 + 3, 10**6, 123456789, 2**31 - 1, 2**31, 3 * 10**9 + 7, -(2**31)], dtype=np.int64)


@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_float32_tables_are_rounded_truth_at_positions_up_to_2_31(base):
    theta = ropescale.inv_freq(128, base)
    want_c, want_s = truth(POSITIONS, theta)
    c, s = ropescale.cos_sin(POSITIONS, theta, dtype=np.float32)
    err = max(np.abs(c - want_c).max(), np.abs(s - want_s).max())
    assert err <= 4e-7
    # what a float32 angle gives at the same positions (the peers' way)
    ang32 = POSITIONS.astype(np.float32)[:, None] * theta.astype(np.float32)[None, :]
    err32 = max(np.abs(np.cos(ang32.astype(np.float64)) - want_c).max(),
                np.abs(np.sin(ang32.astype(np.float64)) - want_s).max())
    assert err32 > 1e-2  # radians-scale errors: the reason angles are float64 here
    print(f"base={base:g}: ropescale float32 max error {err:.2e}, float32 angles {err32:.2e}")


def test_float64_tables_are_accurate_to_a_few_ulp():
    theta = ropescale.inv_freq(64, 10000.0)
    pos = np.array([7, 4097, 10**6 + 1, 2**31 - 5, 10**10 + 3], dtype=np.int64)
    want_c, want_s = truth(pos, theta)
    c, s = ropescale.cos_sin(pos, theta, dtype=np.float64)
    assert max(np.abs(c - want_c).max(), np.abs(s - want_s).max()) <= 1e-15
    # float positions take the direct path; still exact for the product
    fpos = pos + 0.5
    want_c, want_s = truth(fpos, theta)
    c, s = ropescale.cos_sin(fpos, theta, dtype=np.float64)
    assert max(np.abs(c - want_c).max(), np.abs(s - want_s).max()) <= 1e-15


def test_float16_tables_are_correctly_rounded():
    theta = ropescale.inv_freq(32, 10000.0)
    pos = np.arange(0, 70000, 997)
    want_c, want_s = truth(pos, theta)
    c, s = ropescale.cos_sin(pos, theta, dtype=np.float16)
    # NumPy's float64 -> float16 cast rounds correctly: same bits expected
    assert np.array_equal(c, want_c.astype(np.float16)) and np.array_equal(s, want_s.astype(np.float16))


def test_fused_apply_uses_exact_angles():
    theta = ropescale.inv_freq(8, 10000.0)
    pos = np.array([2**31 - 1, 10**9 + 7])
    x = np.zeros((2, 8))
    x[:, :4] = 1.0                     # pair k = (1, 0): result is (cos, sin)
    y = ropescale.apply_rotary_positions(x, pos, theta)
    want_c, want_s = truth(pos, theta)
    assert np.abs(y[:, :4] - want_c).max() <= 1e-15 and np.abs(y[:, 4:] - want_s).max() <= 1e-15


def test_positions_beyond_exact_range_are_refused():
    theta = ropescale.inv_freq(8)
    with pytest.raises(ValueError, match="positions"):
        ropescale.cos_sin(np.array([2**35]), theta)
    with pytest.raises(ValueError, match="positions"):
        ropescale.cos_sin(np.array([2**62]), theta)


# ------------------------------------------------------- the oracle itself

LONG = np.array([501, 2**20 + 3, 10**6 + 1, 123456789, 2**31 - 1, 2**31, 3 * 10**9 + 7, -(2**31)], dtype=np.int64)


@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_reference_cos_sin_is_exact_at_positions_up_to_2_31(base):
    """The oracle must be at least as exact as the C core it checks: float64
    rounding of the truth (it was 2e-10 off at 2**31, a float64 product in
    long double)."""
    theta = ropescale.inv_freq(128, base)
    for pos in (LONG, LONG + 0.25):
        want_c, want_s = truth(pos, theta)
        c, s = ropescale.reference.cos_sin(pos, theta)
        assert max(np.abs(c - want_c).max(), np.abs(s - want_s).max()) <= 1.2e-16
        cc, cs = ropescale.cos_sin(pos, theta, dtype=np.float64)
        # ... and the C core is within a few ulp of it
        assert max(np.abs(cc - c).max(), np.abs(cs - s).max()) <= 1e-15


def test_reference_rotation_is_exact_at_position_2_31():
    theta = ropescale.inv_freq(8, 10000.0)
    pos = np.array([2**31, 2**31 - 1])
    x = np.zeros((2, 8))
    x[:, :4] = 1.0                     # pair k = (1, 0): the result is (cos, sin)
    want_c, want_s = truth(pos, theta)
    for fn in (lambda: ropescale.reference.apply_rotary_positions(x, pos, theta),
               lambda: ropescale.reference.apply_rotary(x, *ropescale.reference.cos_sin(pos, theta))):
        y = fn()
        assert np.abs(y[:, :4] - want_c).max() <= 1.2e-16 and np.abs(y[:, 4:] - want_s).max() <= 1.2e-16


def test_reference_exact_product_has_no_rounding_error():
    rng = np.random.default_rng(9)
    t = rng.integers(-2**52, 2**52, size=50).astype(np.float64)
    th = rng.random(50) * 10.0 ** rng.integers(-12, 3, size=50)
    p, e = ropescale.reference.exact_product(t, th)
    for i in range(50):
        exact = mpmath.mpf(float(t[i])) * mpmath.mpf(float(th[i]))
        assert mpmath.mpf(float(p[i])) + mpmath.mpf(float(e[i])) == exact


# What README.md and docs/math.md state about the tables (numbers from tools/table_rounding.py):
# float64 entries within F64_BOUND (absolute) of cos/sin of the exact angle -- not correctly rounded;
# float32 and bfloat16 entries are the float64 value rounded once, so they are the correctly rounded
# value unless the exact one lies within F64_BOUND of a midpoint between two neighbours.
F64_BOUND = 3 * 2.0**-53
BANDS = [np.array([0, 1, 3, 999, 1999]), np.array([2000, 40961, 2**19 + 7, 2**20 - 1]),
         np.array([2**20 + 1, 10**8 + 7, 2**31 - 1]), np.array([2.5, 40961.5, 2**31 - 0.5])]


def _exact(t, th):
    a = mpmath.mpf(float(t)) * mpmath.mpf(float(th))
    return mpmath.cos(a), mpmath.sin(a)


def _rounded(x, bits):
    with mpmath.workprec(bits):
        return float(+x)


@pytest.mark.parametrize("base", [1e4, 5e5])
def test_what_the_docs_state_about_table_rounding(base):
    """0.2.0's README said every table was correctly rounded; float64 ones are not (about 40 % of the values are
    more than half an ulp off).  The float64 bound and the float32/bfloat16 rounding, against 200-bit mpmath."""
    mpmath.mp.prec = 200
    theta = ropescale.inv_freq(128, base)[::3]
    pos = np.concatenate(BANDS)
    c64, s64 = ropescale.cos_sin(pos, theta, dtype=np.float64)
    c32, s32 = ropescale.cos_sin(pos, theta, dtype=np.float32)
    bf16 = None
    try:
        import ml_dtypes
        bf16 = ropescale.cos_sin(pos, theta, dtype=ml_dtypes.bfloat16)
    except ImportError:
        pass
    worst, over_half_ulp, n = 0.0, 0, 0
    for i, t in enumerate(pos.tolist()):
        for k, th in enumerate(theta.tolist()):
            for j, e in enumerate(_exact(t, th)):
                g = float((c64, s64)[j][i, k])
                err = float(abs(mpmath.mpf(g) - e))
                worst = max(worst, err)
                over_half_ulp += err > np.spacing(abs(float(e))) / 2
                n += 1
                for got, bits in [((c32, s32)[j][i, k], 24)] + ([(bf16[j][i, k], 8)] if bf16 else []):
                    want = _rounded(e, bits)
                    if float(got) != want:   # allowed only next to a midpoint
                        assert abs(float(mpmath.mpf((float(got) + want) / 2) - e)) <= F64_BOUND, (t, th, bits)
    assert worst <= F64_BOUND, f"float64 error {worst / 2**-53:.2f} * 2**-53"
    assert over_half_ulp > 0.1 * n   # the docs say float64 tables are not correctly rounded: keep them honest
