"""bfloat16 through the C kernels: loaded as bits, computed in float32, rounded once.

Oracles, none of them the bfloat16 kernel itself:

* the float64 reference (``ropescale.reference``) rounded once to bfloat16
  (``_arrays.f64_to_bf16``, round-to-odd in NumPy, checked against fractions
  in test_arrays.py), on inputs for which float32 arithmetic is exact;
* the kernel's arithmetic written out in NumPy float32 (one rounding per
  product and sum, no FMA) and rounded by ml_dtypes' or torch's own
  float32 -> bfloat16 conversion, for any input.

Every comparison is exact, element by element (NaN compared as NaN), on both
instruction-set paths (``_core._test_simd_cap``).
"""
import platform
import sys

import numpy as np
import pytest

try:
    import tracemalloc
    tracemalloc.is_tracing()
except ImportError:  # PyPy: the module exists, its C part (_tracemalloc) does not
    tracemalloc = None
NEEDS_TRACEMALLOC = pytest.mark.skipif(
    tracemalloc is None, reason=f"{platform.python_implementation()} has no tracemalloc to measure allocations with")

import ropescale
from ropescale import _arrays, _core, reference

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
U16 = np.uint16
RNG = np.random.default_rng(1616)


@pytest.fixture(params=["baseline", "native"])
def simd(request):
    """Run the test with the baseline code forced, then with what the CPU has (AVX2 here)."""
    _core._test_simd_cap(1 if request.param == "baseline" else 0)
    yield request.param
    _core._test_simd_cap(0)


def _bits(a):
    return np.asarray(a).view(U16)


def _widen(bits):
    return (np.asarray(bits, dtype=U16).astype(np.uint32) << 16).view(np.float32)


def _pairs(x, r, interleaved):
    return (x[..., 0:2 * r:2], x[..., 1:2 * r:2]) if interleaved else (x[..., :r], x[..., r:2 * r])


def _emulate(xbits, c, s, interleaved, inverse=False):
    """The kernel's float32 arithmetic in NumPy; returns the float32 result before rounding."""
    x = _widen(xbits)
    c = np.asarray(c, dtype=np.float32)
    s = np.asarray(s, dtype=np.float32)
    if inverse:
        s = -s
    r = c.shape[-1]
    a, b = _pairs(x, r, interleaved)
    y = x.copy()
    ya, yb = _pairs(y, r, interleaved)
    with np.errstate(all="ignore"):  # infinities and NaNs are part of the input
        ya[...] = a * c - b * s
        yb[...] = b * c + a * s
    return y


def _round_ml(y32):
    """float32 -> bfloat16 bits by ml_dtypes (round to nearest even)."""
    return y32.astype(BF16).view(U16)


def _assert_bits_equal(got, want):
    got, want = _bits(got), _bits(want)
    assert got.shape == want.shape
    gnan, wnan = _is_nan(got), _is_nan(want)
    np.testing.assert_array_equal(gnan, wnan)
    bad = (got != want) & ~wnan
    assert not bad.any(), f"{int(bad.sum())} of {got.size} elements differ, first at {np.argwhere(bad)[0]}: " \
                          f"{got[bad][0]:#06x} != {want[bad][0]:#06x}"


def _is_nan(bits):
    return (bits & 0x7FFF) > 0x7F80


def _bf16_array(shape, lo=-4.0, hi=4.0):
    return RNG.uniform(lo, hi, shape).astype(np.float32).astype(BF16)


# -- against the float64 reference -------------------------------------------------------------
def _exact_inputs(shape, r):
    """bfloat16 x in +-[0.5, 2) and cos/sin with 8 significant bits in +-[0.5, 1): every product has
    16 bits and the two products of a pair are within 2**3 of each other, so float32 computes the
    exact value and the kernel's one rounding is the reference's."""
    mag = RNG.uniform(0.5, 2.0, shape) * RNG.choice([-1.0, 1.0], shape)
    x = mag.astype(np.float32).astype(BF16)
    lead = shape[:-2] + (1, r)  # broadcast over the heads axis
    tab = lambda: (RNG.uniform(0.5, 1.0, lead) * RNG.choice([-1.0, 1.0], lead)).astype(np.float32) \
        .astype(BF16).astype(np.float32)
    return x, tab(), tab()


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("strided", [False, True])
def test_matches_float64_reference_rounded_once(simd, interleaved, in_place, strided):
    r, d = 21, 48  # 21 pairs: two AVX2 groups of 8 and a tail of 5; features 42..47 pass through
    x, c, s = _exact_inputs((6, 3, 2 * d if strided else d), r)
    if strided:
        x = x[..., ::2]  # feature stride 4 bytes: the strided kernel
    ref = reference.apply_rotary(x.astype(np.float64), c, s, interleaved=interleaved)
    # the precondition that makes an exact comparison fair: float32 arithmetic is exact here
    np.testing.assert_array_equal(_emulate(_bits(x), c, s, interleaved).astype(np.float64), ref)
    want = _arrays.f64_to_bf16(ref)
    before = x.copy()
    if in_place:
        got = ropescale.apply_rotary(x, c, s, interleaved=interleaved, out=x)
        assert got is x
    else:
        got = ropescale.apply_rotary(x, c, s, interleaved=interleaved)
        np.testing.assert_array_equal(_bits(x), _bits(before))  # x untouched
    assert got.dtype == BF16
    _assert_bits_equal(got, want)
    # and the rounding did something: not every result was already a bfloat16
    assert (ref != want.astype(np.uint32).__lshift__(16).view(np.float32)).any()


# -- against float32 arithmetic, any input --------------------------------------------------------
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "strided_features", "strided_rows", "transposed", "reversed"])
def test_any_input_is_float32_arithmetic_rounded_once(simd, interleaved, inverse, layout):
    r, d = 29, 64
    base = (RNG.standard_normal((5, 4, 2 * d)) * 10.0 ** RNG.integers(-3, 4, (5, 4, 2 * d))).astype(np.float32)
    base = base.astype(BF16)
    x = {"contiguous": base[..., :d], "strided_features": base[..., ::2],
         "strided_rows": base[:, ::2, :d], "transposed": base[..., :d].transpose(1, 0, 2),
         "reversed": base[::-1, :, :d][..., ::-1]}[layout]
    pos = np.arange(x.shape[0])[:, None]
    c, s = ropescale.cos_sin(pos + 1000, ropescale.inv_freq(2 * r), dtype=np.float32)
    got = ropescale.apply_rotary(x, c, s, interleaved=interleaved, inverse=inverse)
    _assert_bits_equal(got, _round_ml(_emulate(_bits(x), c, s, interleaved, inverse)))
    # the float64 reference is at most one bfloat16 rounding step (plus float32's error) away
    ref = reference.apply_rotary(x.astype(np.float64), c, s, interleaved=interleaved, inverse=inverse)
    err = np.abs(got.astype(np.float64) - ref)
    bound = 2.0 ** -8 * np.abs(ref) + 2.0 ** -22 * (np.abs(x.astype(np.float64)).max() + 1e-30)
    assert (err <= bound).all()


def test_every_bit_pattern_loads_and_rounds_like_ml_dtypes(simd):
    # all 65536 bfloat16 values (subnormals, infinities, NaNs) as x, rotated by a few angles
    x = np.arange(65536, dtype=np.uint32).astype(U16).view(BF16).reshape(4096, 16)
    theta = np.array([0.3, 1.1, 2.9, 0.0, 5.0, 0.7, 1e-3, 3.14159], dtype=np.float64)
    for interleaved in (False, True):
        c, s = ropescale.cos_sin(np.arange(4096) % 7, theta, dtype=np.float32)
        got = ropescale.apply_rotary(x, c, s, interleaved=interleaved)
        _assert_bits_equal(got, _round_ml(_emulate(_bits(x), c, s, interleaved)))


def test_identity_rotation_keeps_every_value_and_nan_payloads(simd):
    # cos 1, sin 0 on pairs (v, +0): v * 1 - 0 * 0 is v itself, NaN sign and payload included
    # (the quiet bit set, as a float32 operation sets it)
    v = np.arange(65536, dtype=np.uint32).astype(U16)
    x = np.zeros((65536, 2), dtype=U16)
    x[:, 0] = v
    c = np.ones((65536, 1), np.float32)
    s = np.zeros((65536, 1), np.float32)
    got = _bits(ropescale.apply_rotary(x.view(BF16), c, s))[:, 0]
    want = np.where(_is_nan(v), v | 0x40, v).astype(U16)
    np.testing.assert_array_equal(got, want)


def test_ties_round_to_even():
    # a * c exactly halfway between two bfloat16 values: kept part even -> down, odd -> up
    a = np.array([1.0, 1.0 + 2 ** -7, -1.0, -(1.0 + 2 ** -7)], dtype=np.float32).astype(BF16)
    x = np.zeros((4, 2), BF16)
    x[:, 0] = a
    c = np.full((4, 1), 1.0 + 2 ** -8, np.float32)   # 1 + half an ulp of bfloat16 at 1
    s = np.zeros((4, 1), np.float32)
    got = ropescale.apply_rotary(x, c, s)[:, 0].astype(np.float32)
    # (1)(1 + 2^-8) ties to 1 (even); (1 + 2^-7)(1 + 2^-8) = 1 + 2^-7 + 2^-8 + 2^-15 is above the tie
    np.testing.assert_array_equal(got, [1.0, 1.0 + 2 ** -6, -1.0, -(1.0 + 2 ** -6)])


# -- paths and threads give the same bits -------------------------------------------------------
@pytest.mark.parametrize("interleaved", [False, True])
def test_baseline_and_avx2_paths_are_bit_identical(interleaved):
    x = (RNG.standard_normal((64, 4, 128)) * 100).astype(np.float32).astype(BF16)
    pos = RNG.integers(0, 100000, (64, 1))
    theta = ropescale.inv_freq(128)
    runs = []
    for forced in (True, False):
        _core._test_simd_cap(1 if forced else 0)
        try:
            runs.append(_bits(ropescale.apply_rotary_positions(x, pos, theta, interleaved=interleaved)).copy())
        finally:
            _core._test_simd_cap(0)
    np.testing.assert_array_equal(runs[0], runs[1])
    c, s = ropescale.cos_sin(pos, theta)
    _assert_bits_equal(runs[1], _round_ml(_emulate(_bits(x), c, s, interleaved)))


def test_one_and_two_threads_are_bit_identical():
    x = (RNG.standard_normal((2048, 8, 128))).astype(np.float32).astype(BF16)  # 4 MiB: threads engage
    pos = np.arange(2048)[:, None]
    theta = ropescale.inv_freq(128)
    prev = ropescale.set_num_threads(1)
    try:
        one = ropescale.apply_rotary_positions(x, pos, theta)
        ropescale.set_num_threads(2)
        two = ropescale.apply_rotary_positions(x, pos, theta)
        x2 = x.copy()
        ropescale.apply_rotary_positions(x2, pos, theta, out=x2)
    finally:
        ropescale.set_num_threads(prev)
    np.testing.assert_array_equal(_bits(one), _bits(two))
    np.testing.assert_array_equal(_bits(one), _bits(x2))


# -- the fused form, tables, re-rotation ----------------------------------------------------------
@pytest.mark.parametrize("interleaved", [False, True])
def test_positions_form_equals_table_form_and_float32_arithmetic(simd, interleaved):
    x = _bf16_array((7, 3, 40))
    pos = RNG.integers(0, 2 ** 20, (7, 1))
    theta = ropescale.inv_freq(32, 5e5)
    got = ropescale.apply_rotary_positions(x, pos, theta, attention_factor=1.25, interleaved=interleaved)
    c, s = ropescale.cos_sin(pos, theta, attention_factor=1.25, dtype=np.float32)
    assert got.dtype == BF16
    _assert_bits_equal(got, ropescale.apply_rotary(x, c, s, interleaved=interleaved))
    _assert_bits_equal(got, _round_ml(_emulate(_bits(x), c, s, interleaved)))


def test_cos_sin_bfloat16_is_the_float64_table_rounded_once():
    pos = np.concatenate([np.arange(50), RNG.integers(0, 2 ** 30, 50)])
    theta = ropescale.inv_freq(64)
    c, s = ropescale.cos_sin(pos, theta, dtype=BF16, attention_factor=0.8)
    assert c.dtype == BF16 and c.shape == (100, 32)
    rc, rs = reference.cos_sin(pos, theta, 0.8)
    np.testing.assert_array_equal(_bits(c), _arrays.f64_to_bf16(rc))
    np.testing.assert_array_equal(_bits(s), _arrays.f64_to_bf16(rs))


def test_rerotate_and_rebase_round_once_from_the_float32_computation():
    torch = pytest.importorskip("torch")
    theta = ropescale.inv_freq(64)
    k = _bf16_array((12, 2, 64))
    f = np.arange(12)[:, None] + 500
    t = f - 490
    for got, want32 in [
        (ropescale.rerotate(k, f, t, theta), ropescale.rerotate(k.astype(np.float32), f, t, theta)),
        # float positions: the two-sum correction path (tables, then the table kernel)
        (ropescale.rerotate(k, f + 0.1, t + 0.35, theta),
         ropescale.rerotate(k.astype(np.float32), f + 0.1, t + 0.35, theta)),
        (ropescale.rebase(k, f, theta, theta * 0.7),
         ropescale.rebase(k.astype(np.float32), f, theta, theta * 0.7)),
    ]:
        assert got.dtype == BF16
        want = torch.from_numpy(want32).bfloat16().view(torch.int16).numpy().view(U16)  # torch's rounding
        _assert_bits_equal(got, want)
    k2 = k.copy()
    assert ropescale.rerotate(k2, f, t, theta, out=k2) is k2
    _assert_bits_equal(k2, ropescale.rerotate(k, f, t, theta))


# -- torch and JAX ------------------------------------------------------------------------------
def _torch():
    return pytest.importorskip("torch")


def _tbits(t):
    torch = sys.modules["torch"]
    return t.view(torch.int16).numpy().view(U16)


@pytest.mark.parametrize("interleaved", [False, True])
def test_torch_bfloat16_in_torch_bfloat16_out(simd, interleaved):
    torch = _torch()
    x = _bf16_array((5, 4, 32))
    xt = torch.from_numpy(x.astype(np.float32)).bfloat16()
    c, s = ropescale.cos_sin(np.arange(5)[:, None], ropescale.inv_freq(32))
    got = ropescale.apply_rotary(xt, torch.from_numpy(c), torch.from_numpy(s), interleaved=interleaved)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.bfloat16 and got.shape == xt.shape
    want = torch.from_numpy(_emulate(_bits(x), c, s, interleaved)).bfloat16()   # torch's own rounding
    np.testing.assert_array_equal(_tbits(got), _tbits(want))
    got = ropescale.apply_rotary_positions(xt, torch.arange(5)[:, None], ropescale.inv_freq(32),
                                           interleaved=interleaved)
    assert got.dtype == torch.bfloat16
    np.testing.assert_array_equal(_tbits(got), _tbits(want))


def test_torch_bfloat16_out_in_place_and_into_another_tensor():
    torch = _torch()
    x = _bf16_array((6, 2, 16))
    c, s = ropescale.cos_sin(np.arange(6)[:, None], ropescale.inv_freq(16))
    want = _round_ml(_emulate(_bits(x), c, s, False))
    xt = torch.from_numpy(x.astype(np.float32)).bfloat16()
    ptr = xt.data_ptr()
    assert ropescale.apply_rotary(xt, c, s, out=xt) is xt
    assert xt.data_ptr() == ptr and xt.dtype == torch.bfloat16
    np.testing.assert_array_equal(_tbits(xt), want)
    src = torch.from_numpy(x.astype(np.float32)).bfloat16()
    out = torch.zeros_like(src)
    assert ropescale.apply_rotary_positions(src, np.arange(6)[:, None], ropescale.inv_freq(16), out=out) is out
    np.testing.assert_array_equal(_tbits(out), want)
    # a strided torch view, in place: only its elements change
    big = torch.from_numpy(np.concatenate([x, x], axis=-1).astype(np.float32)).bfloat16()
    keep = _tbits(big).copy()
    view = big[..., ::2]
    ropescale.apply_rotary(view, c, s, out=view)
    np.testing.assert_array_equal(_tbits(big)[..., 1::2], keep[..., 1::2])
    np.testing.assert_array_equal(_tbits(big)[..., ::2],
                                  _round_ml(_emulate(keep[..., ::2], c, s, False)))


def test_torch_bfloat16_rerotate_in_place():
    torch = _torch()
    k = _bf16_array((8, 2, 32))
    kt = torch.from_numpy(k.astype(np.float32)).bfloat16()
    f, t = np.arange(8)[:, None] + 3, np.arange(8)[:, None]
    assert ropescale.rerotate(kt, f, t, ropescale.inv_freq(32), out=kt) is kt
    np.testing.assert_array_equal(_tbits(kt), _bits(ropescale.rerotate(k, f, t, ropescale.inv_freq(32))))


def test_jax_bfloat16_in_jax_bfloat16_out():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    x = _bf16_array((3, 2, 16))
    c, s = ropescale.cos_sin(np.arange(3)[:, None], ropescale.inv_freq(16))
    got = ropescale.apply_rotary(jnp.asarray(x), c, s)
    assert isinstance(got, jax.Array) and got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got).view(U16), _round_ml(_emulate(_bits(x), c, s, False)))


# -- no float32 copy ------------------------------------------------------------------------------
@NEEDS_TRACEMALLOC
def test_no_float32_copy_of_the_array():
    x = _bf16_array((256, 8, 128))          # 512 KiB of bfloat16
    pos, theta = np.arange(256)[:, None], ropescale.inv_freq(128)
    ropescale.apply_rotary_positions(x[:1], pos[:1], theta)  # warm up lazy imports
    tracemalloc.start()
    try:
        ropescale.apply_rotary_positions(x, pos, theta, out=x)
        in_place = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        y = ropescale.apply_rotary_positions(x, pos, theta)
        fresh = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert in_place < x.nbytes // 8          # a float32 copy would be 2 * x.nbytes
    assert fresh < x.nbytes + x.nbytes // 8  # the result itself, nothing more
    assert y.dtype == BF16


@NEEDS_TRACEMALLOC
def test_no_float32_copy_of_a_torch_tensor():
    torch = _torch()
    xt = torch.from_numpy(_bf16_array((256, 8, 128)).astype(np.float32)).bfloat16()
    pos, theta = np.arange(256)[:, None], ropescale.inv_freq(128)
    ropescale.apply_rotary_positions(xt[:1], pos[:1], theta)
    nbytes = xt.numel() * 2
    tracemalloc.start()
    try:
        ropescale.apply_rotary_positions(xt, pos, theta, out=xt)
        in_place = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        ropescale.apply_rotary_positions(xt, pos, theta)
        fresh = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert in_place < nbytes // 8
    assert fresh < nbytes + nbytes // 8


# -- mixed dtypes and refusals -------------------------------------------------------------------
def test_float32_x_into_bfloat16_out_rounds_once_and_bfloat16_x_into_float32_out_is_exact():
    x32 = RNG.standard_normal((4, 2, 16)).astype(np.float32)
    c, s = ropescale.cos_sin(np.arange(4)[:, None], ropescale.inv_freq(16))
    out = np.zeros(x32.shape, BF16)
    ropescale.apply_rotary(x32, c, s, out=out)
    np.testing.assert_array_equal(_bits(out), _round_ml(ropescale.apply_rotary(x32, c, s)))
    xb = x32.astype(BF16)
    o32 = np.zeros(x32.shape, np.float32)
    ropescale.apply_rotary(xb, c, s, out=o32)
    np.testing.assert_array_equal(o32, _emulate(_bits(xb), c, s, False))


def test_uint16_is_still_not_a_float_array():
    c, s = ropescale.cos_sin(np.arange(2), ropescale.inv_freq(4))
    with pytest.raises(TypeError, match="x must be a float16, float32 or float64 array"):
        ropescale.apply_rotary(np.zeros((2, 4), U16), c, s)


def test_glue_checks_the_bf16_flag_against_the_dtypes():
    c, s = ropescale.cos_sin(np.arange(2), ropescale.inv_freq(4))
    x32 = np.zeros((2, 4), np.float32)
    with pytest.raises(TypeError, match=r"x must be uint16 \(bfloat16 bits\) when bf16 is set"):
        _core.rotate(x32, c, s, np.zeros_like(x32), False, False, 1, True)
    xu = np.zeros((2, 4), U16)
    with pytest.raises(TypeError, match="x must be float16, float32 or float64"):
        _core.rotate(xu, c, s, np.zeros_like(xu), False, False, 1)
    with pytest.raises(TypeError, match="out must be uint16"):
        _core.rotate_positions(xu, np.arange(2), ropescale.inv_freq(4), 1.0, x32, False, False, 1, True)
    with pytest.raises(TypeError, match="cos must be uint16"):
        _core.cos_sin(np.arange(2), ropescale.inv_freq(4), 1.0, np.zeros((2, 2), np.float32),
                      np.zeros((2, 2), np.float32), 1, True)


def _bf16_of_fraction(v):
    """The bfloat16 nearest to the exact value of the double v (ties to even), from fractions."""
    from fractions import Fraction
    x = Fraction(v)
    lo = np.float32(v).astype(BF16)
    cands = [lo]
    for step in (1, -1):
        b = np.array([lo]).view(U16).astype(np.int32) + step
        cands.append(b.astype(U16).view(BF16)[0])
    best = min(cands, key=lambda c: (abs(Fraction(float(c)) - x), int(np.array([c]).view(U16)[0]) & 1))
    return int(np.array([best]).view(U16)[0])


def test_cos_sin_bfloat16_rounds_from_float64_once_not_through_float32():
    # cos(0) = 1, so the table at position 0 is attention_factor itself, rounded once.  Through
    # float32 with nearest-even, 1 + 2**-8 + 2**-30 would become 1 + 2**-8, a tie, then 1.0.
    traps = [1 + 2.0 ** -8 + 2.0 ** -30, 1 + 2.0 ** -8 - 2.0 ** -30, 3 * (1 + 2.0 ** -8 + 2.0 ** -40),
             1 + 3 * 2.0 ** -8 + 2.0 ** -29]
    rand = list(1.0 + RNG.integers(0, 2 ** 20, 40) * 2.0 ** -28)  # many near bfloat16 midpoints
    for a in traps + rand:
        c, s = ropescale.cos_sin(np.zeros(1, np.int64), np.ones(1), attention_factor=a, dtype=BF16)
        assert int(_bits(c)[0, 0]) == _bf16_of_fraction(a), a
        assert int(_bits(s)[0, 0]) == 0


def test_torch_bfloat16_requiring_grad_is_refused_every_time():
    torch = _torch()
    c, s = ropescale.cos_sin(np.arange(4), ropescale.inv_freq(8))
    ropescale.apply_rotary(torch.zeros(4, 8, dtype=torch.bfloat16), c, s)  # the fast path is armed
    x = torch.zeros(4, 8, dtype=torch.bfloat16).requires_grad_()
    for _ in range(2):
        with pytest.raises(TypeError, match="x requires grad"):
            ropescale.apply_rotary(x, c, s)
