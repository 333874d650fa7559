"""Every instruction-set path of the kernels gives the same bits.

The core picks, at run time, baseline code, AVX2/F16C or AVX-512 (the widest
the CPU has) on x86-64, baseline or NEON on arm64.  ``_core._test_simd_cap(level)``
caps that choice (1 baseline, 2 AVX2 or NEON, 3 AVX-512), so each path runs
here on the same inputs and the results are compared bit for bit; the widest
path is also checked against the NumPy reference, so a path that agreed with a
broken sibling would still fail.  (On arm64 levels 2 and 3 are both NEON.)

The AVX-512 rotation aligns its vectors to the output's 64-byte lines with
masked head and tail vectors, so the inputs cover every offset of the data in
its line, row lengths that are not a multiple of the vector width, partial
rotary, in place and out of place, and rows sharing one cos/sin row (the
batch path, where a table row is copied to the output's place in its line).
"""
import platform

import numpy as np
import pytest

import ropescale
from ropescale import _core, reference

RNG = np.random.default_rng(512)
LEVELS = (1, 2, 3)
HAS_AVX512 = _core.simd_name() == "avx512"
IS_ARM64 = platform.machine().lower() in ("aarch64", "arm64")


@pytest.fixture(autouse=True)
def _lift_cap():
    yield
    _core._test_simd_cap(0)


def _bits(a):
    a = np.asarray(a)
    return a.view({8: np.uint64, 4: np.uint32, 2: np.uint16}[a.itemsize]).copy()


def _at_offset(shape, dtype, offset_items):
    """A C-contiguous array of `shape` starting `offset_items` elements into a 64-byte line."""
    n = int(np.prod(shape))
    item = np.dtype(dtype).itemsize
    buf = np.empty(n + 64 // item + offset_items + 1, dtype)
    lead = (-buf.ctypes.data % 64) // item
    a = buf[lead + offset_items: lead + offset_items + n].reshape(shape)
    assert (a.ctypes.data - offset_items * item) % 64 == 0
    a[...] = (RNG.standard_normal(shape) * 10).astype(dtype)
    return a


def _each_level(fn):
    runs = []
    for level in LEVELS:
        _core._test_simd_cap(level)
        runs.append(fn())
    _core._test_simd_cap(0)
    return runs


CASES = [  # (D, R): full, partial, odd R, R below one vector, R over RS_PAIR_BLOCK
    (128, 64), (64, 32), (96, 24), (34, 17), (10, 5), (6, 1), (600, 300),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("D,R", CASES)
@pytest.mark.parametrize("form", ["cached", "fused"])
def test_paths_agree_at_every_offset(dtype, D, R, form):
    theta = ropescale.inv_freq(2 * R, 1e4)
    pos = RNG.integers(0, 1 << 20, (5, 1))
    item = np.dtype(dtype).itemsize
    c, s = ropescale.cos_sin(pos, theta, dtype=np.float64 if dtype == np.float64 else np.float32)
    for off in range(0, 64 // item, max(1, 16 // item) if item < 8 else 1):
        x = _at_offset((5, 3, D), dtype, off)
        for in_place in (False, True):
            def call():
                xx = x.copy() if in_place else x
                out = xx if in_place else _at_offset((5, 3, D), dtype, (off * 7 + 3) % (64 // item))
                if form == "fused":
                    ropescale.apply_rotary_positions(xx, pos, theta, out=out)
                else:
                    ropescale.apply_rotary(xx, c, s, out=out)
                return _bits(out)
            runs = _each_level(call)
            for level, run in zip(LEVELS[1:], runs[1:]):
                np.testing.assert_array_equal(run, runs[0], err_msg=f"level {level} offset {off} in_place {in_place}")
            want = reference.apply_rotary_positions(x.astype(np.float64), pos, theta)
            tol = {np.float64: 1e-12, np.float32: 1e-4, np.float16: 2e-2}[dtype]
            np.testing.assert_allclose(np.asarray(_bits(runs[-1]).view(dtype), np.float64), want,
                                       rtol=tol, atol=tol * 10)


def _nan_16(bits, bf16):
    return (bits & 0x7FFF) > (0x7F80 if bf16 else 0x7C00)


def _special_16(n, bf16):
    """n 16-bit patterns: random values with NaNs (signed, with payloads), infinities, zeros,
    subnormals and the largest finite values (whose rotation can round to infinity)."""
    f = (RNG.standard_normal(n) * 10).astype(np.float32)
    bits = (f.view(np.uint32) >> 16).astype(np.uint16) if bf16 else f.astype(np.float16).view(np.uint16)
    special = ([0x7FC1, 0xFF81, 0x7F80, 0xFF80, 0x0000, 0x8000, 0x0001, 0x807F, 0x7F7F, 0xFF7F] if bf16 else
               [0x7E01, 0xFC01, 0x7C00, 0xFC00, 0x0000, 0x8000, 0x0001, 0x83FF, 0x7BFF, 0xFBFF])
    at = RNG.choice(n, size=min(n, 3 * len(special)), replace=False)
    bits[at] = np.resize(np.array(special, np.uint16), at.size)
    return bits


@pytest.mark.parametrize("bf16", [False, True], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("D,R", CASES)
def test_16_bit_paths_agree_for_both_pairings_with_special_values(bf16, interleaved, D, R):
    """float16 and bfloat16 rows in registers (AVX2 eight lanes, AVX-512 sixteen, interleaved
    pairs shuffled within the vector) against the baseline code, bit for bit, at every offset of
    the data in a line, in place and not, NaN payloads and values that round to infinity too.
    One exception, on every path alike: where both elements of a pair are NaN, which of the two
    a sum passes on is the compiler's choice of operand order, so NaN is only compared as NaN."""
    theta = ropescale.inv_freq(2 * R, 1e4)
    pos = RNG.integers(0, 1 << 20, (5, 1))
    c, s = ropescale.cos_sin(pos, theta, dtype=np.float32)
    for off in range(0, 32, 5):
        x = _at_offset((5, 3, D), np.uint16, off)
        x[...] = _special_16(x.size, bf16).reshape(x.shape)
        for in_place in (False, True):
            def call():
                xx = x.copy() if in_place else x
                out = xx if in_place else _at_offset((5, 3, D), np.uint16, (off * 7 + 3) % 32)
                if bf16:
                    _core.rotate(xx, c, s, out, interleaved, False, 1, True)
                else:
                    _core.rotate(xx.view(np.float16), c, s, out.view(np.float16), interleaved, False, 1)
                return out.copy()
            runs = _each_level(call)
            nan = _nan_16(runs[0], bf16)
            for level, run in zip(LEVELS[1:], runs[1:]):
                assert np.array_equal(_nan_16(run, bf16), nan), f"NaN elsewhere: level {level} offset {off}"
                np.testing.assert_array_equal(np.where(nan, 0, run), np.where(nan, 0, runs[0]),
                                              err_msg=f"level {level} offset {off} in_place {in_place}")
    xf = (x.astype(np.uint32) << 16).view(np.float32) if bf16 else x.view(np.float16)
    got = (runs[-1].astype(np.uint32) << 16).view(np.float32) if bf16 else runs[-1].view(np.float16)
    with np.errstate(invalid="ignore", over="ignore"):   # inf * 0 and friends: NaN, as the kernels give
        want = reference.apply_rotary(xf.astype(np.float64), c, s, interleaved=interleaved)
        got = got.astype(np.float64)                     # signalling NaN patterns: "invalid"
        fine = np.isfinite(want) & np.isfinite(got) & (np.abs(want) < 6e4)
    np.testing.assert_allclose(got[fine], want[fine], rtol=2e-2, atol=0.2)
    assert np.array_equal(np.isnan(got), np.isnan(want))


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("inverse", [False, True])
def test_paths_agree_on_decode_batches(interleaved, inverse):
    """Rows sharing one cos/sin row (heads of a token): the batch path, tables at any place in a line."""
    theta = ropescale.inv_freq(128, 5e5)
    pos = RNG.integers(0, 1 << 24, (16, 1, 1))
    table_c, table_s = ropescale.cos_sin(pos[:, :, 0], theta, dtype=np.float32)
    for t_off in range(0, 16, 3):
        c = _at_offset(table_c.shape, np.float32, t_off)
        s = _at_offset(table_s.shape, np.float32, (t_off + 5) % 16)
        c[...] = table_c
        s[...] = table_s
        x = _at_offset((16, 1, 8, 128), np.float32, 4)
        runs = _each_level(lambda: _bits(ropescale.apply_rotary(x, c[:, :, None], s[:, :, None],
                                                                interleaved=interleaved, inverse=inverse)))
        for run in runs[1:]:
            np.testing.assert_array_equal(run, runs[0])
        want = reference.apply_rotary_positions(x.astype(np.float64), pos, theta, interleaved=interleaved,
                                                inverse=inverse)
        np.testing.assert_allclose(runs[-1].view(np.float32), want, rtol=1e-4, atol=1e-3)


def _token_layouts(dtype):
    """(name, x, cos, sin): tokens of 4 heads under every layout the token-run path sees or refuses."""
    theta = ropescale.inv_freq(128, 1e4)
    pos = RNG.integers(0, 1 << 20, (3, 14))
    cdt = np.float64 if dtype == np.float64 else np.float32
    c, s = ropescale.cos_sin(pos, theta, dtype=cdt)            # (3, 14, 64)
    x = _at_offset((3, 7, 4, 128), dtype, 3)
    gappy = _at_offset((3, 7, 6, 128), dtype, 1)[:, :, :4]      # tokens 6 rows apart, 4 rotated
    return [
        ("contiguous table", x, c[:, :7, None].copy(), s[:, :7, None].copy()),
        ("table rows 2 apart", x, c[:, ::2, None], s[:, ::2, None]),
        ("table broadcast over the batch", x, c[:1, :7, None], s[:1, :7, None]),
        ("tokens with gaps", gappy, c[:, :7, None], s[:, :7, None]),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_token_runs_agree_on_every_layout_and_output_offset(dtype, n_threads, threads):
    """Tokens whose heads follow one another go to the AVX-512 kernel as one run (a cos/sin row
    per token, the vector that straddles two rows carried across token edges): every layout,
    output offset in its line, in place or not, split over threads or not, gives the
    baseline's bits, and the reference's values."""
    threads(n_threads)
    _core._test_split(1 if n_threads > 1 else 2)
    item = np.dtype(dtype).itemsize
    try:
        for name, x, c, s in _token_layouts(dtype):
            want = reference.apply_rotary(x.astype(np.float64), c.astype(np.float64), s.astype(np.float64))
            for off in range(0, 64 // item, 2 if item == 4 else 1):
                for in_place in (False, True):
                    def call():
                        out = _at_offset(x.shape, dtype, off)
                        if in_place:
                            out[...] = x
                            ropescale.apply_rotary(out, c, s, out=out)
                        else:
                            ropescale.apply_rotary(x, c, s, out=out)
                        return _bits(out)
                    runs = _each_level(call)
                    where = f"{name}: offset {off} in_place {in_place}"
                    for level, run in zip(LEVELS[1:], runs[1:]):
                        np.testing.assert_array_equal(run, runs[0], err_msg=f"level {level}, {where}")
                    tol = 1e-12 if dtype == np.float64 else 1e-5
                    np.testing.assert_allclose(runs[-1].view(dtype), want, rtol=tol, atol=tol * 100, err_msg=where)
    finally:
        _core._test_split(0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_fused_token_runs_agree_on_every_layout(dtype, n_threads, threads):
    """Fused positions on the token-run path: the rows of up to 16 tokens are made first (a
    token at its predecessor's position copies that row), then streamed.  Runs longer and
    shorter than 16, repeated positions, positions broadcast over the batch, tokens with
    gaps, the inverse, and q with k in one pass (GQA) give the baseline's bits at every
    output offset, and the reference's values."""
    threads(n_threads)
    _core._test_split(1 if n_threads > 1 else 2)
    item = np.dtype(dtype).itemsize
    theta = ropescale.inv_freq(128, 5e5)
    distinct = RNG.integers(0, 1 << 20, (3, 7, 1))
    repeats = np.repeat(RNG.integers(0, 1 << 20, (3, 3, 1)), 3, axis=1)[:, :7]
    x = _at_offset((3, 7, 4, 128), dtype, 5)
    gappy = _at_offset((3, 7, 6, 128), dtype, 2)[:, :, :4]
    cases = [("distinct", x, distinct, False), ("repeated", x, repeats, False), ("inverse", x, distinct, True),
             ("broadcast over the batch", x, distinct[:1], False), ("tokens with gaps", gappy, distinct, False)]
    try:
        for name, xx, pos, inverse in cases:
            want = reference.apply_rotary_positions(xx.astype(np.float64), pos, theta, inverse=inverse)
            for off in range(0, 64 // item, 3 if item == 4 else 1):
                def call():
                    out = _at_offset(xx.shape, dtype, off)
                    ropescale.apply_rotary_positions(xx, pos, theta, inverse=inverse, out=out)
                    return _bits(out)
                runs = _each_level(call)
                for level, run in zip(LEVELS[1:], runs[1:]):
                    np.testing.assert_array_equal(run, runs[0], err_msg=f"level {level}, {name}: offset {off}")
                tol = 1e-12 if dtype == np.float64 else 1e-5
                np.testing.assert_allclose(runs[-1].view(dtype), want, rtol=tol, atol=tol * 100, err_msg=name)
        k = _at_offset((3, 7, 2, 128), dtype, 9 % (64 // item))
        for pos in (distinct, repeats):
            def qk():
                oq, ok = _at_offset(x.shape, dtype, 1), _at_offset(k.shape, dtype, 6 % (64 // item))
                ropescale.apply_rotary_qk(x, k, pos, theta, out=(oq, ok))
                return np.concatenate([_bits(oq).ravel(), _bits(ok).ravel()])
            runs = _each_level(qk)
            for run in runs[1:]:
                np.testing.assert_array_equal(run, runs[0])
            one = np.concatenate([_bits(ropescale.apply_rotary_positions(x, pos, theta)).ravel(),
                                  _bits(ropescale.apply_rotary_positions(k, pos, theta)).ravel()])
            np.testing.assert_array_equal(runs[-1], one)
    finally:
        _core._test_split(0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_zero_pairs_leave_x_as_it_is_on_every_path(dtype):
    """R = 0 (empty cos/sin rows): nothing rotates and x passes through, on every path.  The
    AVX-512 row kernel once took the empty row of a strided float16 x (widened into the task's
    buffer, found by the fuzzer as x of shape (2,) and stride 4 bytes) for a whole row and
    stored a vector around it, over the end of the task's working memory: a crash at a later
    garbage collection, and in the sanitizer run a heap-buffer-overflow here."""
    import gc
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dt = np.dtype(ml_dtypes.bfloat16)
    else:
        dt = np.dtype(dtype)
    tdt = np.float64 if dt == np.float64 else np.float32
    for level in LEVELS:
        _core._test_simd_cap(level)
        for shape in [(2,), (6,), (3, 8), (5, 3, 16), (1, 2)]:
            for strided in (True, False):
                x = (RNG.standard_normal(shape[:-1] + (2 * shape[-1],)) * 10).astype(dt)
                x = x[..., ::2] if strided else x[..., :shape[-1]]
                c = np.ones(shape[:-1] + (0,), tdt)
                got = ropescale.apply_rotary(x, c, c)
                assert _bits(got).tolist() == _bits(x).tolist(), (shape, strided)
        gc.collect()
    _core._test_simd_cap(0)


def test_table_and_angle_rows_agree():
    """cos_sin's exact angle rows (AVX-512 eight lanes at a time) give the same bits on every path."""
    theta = ropescale.inv_freq(256, 1e6)
    pos = np.concatenate([np.arange(40), RNG.integers(0, 1 << 31, 200)]).astype(np.int64)
    for dtype in (np.float64, np.float32, np.float16):
        runs = _each_level(lambda: [_bits(t) for t in ropescale.cos_sin(pos, theta, dtype=dtype)])
        for run in runs[1:]:
            np.testing.assert_array_equal(run[0], runs[0][0])
            np.testing.assert_array_equal(run[1], runs[0][1])


def test_rerotate_paths_agree():
    theta = ropescale.inv_freq(128, 1e4)
    k = _at_offset((1, 300, 4, 128), np.float32, 12)
    frm = RNG.integers(0, 1 << 20, (300, 1))
    to = frm - RNG.integers(0, 4096, (300, 1))

    def call():
        kk = k.copy()
        ropescale.rerotate(kk, frm, to, theta, out=kk)
        return _bits(kk)
    runs = _each_level(call)
    for run in runs[1:]:
        np.testing.assert_array_equal(run, runs[0])


@pytest.mark.skipif(not HAS_AVX512, reason="the CPU has no AVX-512: the cap makes no difference here")
def test_cap_reaches_the_avx512_path():
    """The cap really switches paths: simd_name follows it (otherwise the tests above compare one path)."""
    _core._test_simd_cap(2)
    assert _core.simd_name() != "avx512"
    _core._test_simd_cap(0)
    assert _core.simd_name() == "avx512"


def test_cap_rejects_unknown_levels():
    with pytest.raises(ValueError, match="level must be 0 to 3"):
        _core._test_simd_cap(7)


@pytest.mark.skipif(not IS_ARM64, reason=f"not an arm64 machine ({platform.machine()}): no NEON path")
def test_arm64_runs_the_neon_kernels():
    """On arm64 the NEON kernels are the ones chosen, and the cap falls back to the portable code
    (so the comparisons above really set NEON against the baseline)."""
    assert _core.simd_name() == "neon"
    _core._test_simd_cap(1)
    assert _core.simd_name() == "portable"
    _core._test_simd_cap(0)
    assert _core.simd_name() == "neon"
