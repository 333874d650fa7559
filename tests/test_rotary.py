"""Rotary application against the pure-NumPy reference, and its invariants."""

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

import ropescale
from ropescale import reference as ref
from conftest import assert_close, tol

DTYPES = [np.float16, np.float32, np.float64]


def table(positions, theta, dtype):
    return ropescale.cos_sin(positions, theta, dtype=dtype)


# ------------------------------------------------------------ hypothesis

@st.composite
def layouts(draw):
    """x of shape lead + (D,), possibly transposed / strided / negative-strided,
    and cos/sin whose leading shape broadcasts down to lead."""
    nlead = draw(st.integers(0, 3))
    lead = tuple(draw(st.lists(st.integers(0, 5), min_size=nlead, max_size=nlead)))
    r = draw(st.integers(1, 9))
    extra = draw(st.sampled_from([0, 0, 2, 4]))
    d = 2 * r + extra
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    # memory layout of x: contiguous, feature-strided, reversed, or transposed
    kind = draw(st.sampled_from(["c", "step", "neg", "T", "swap"]))
    full = lead + (d,)
    if kind == "step":
        x = rng.standard_normal(lead + (2 * d,)).astype(dtype)[..., ::2]
    elif kind == "neg":
        x = rng.standard_normal(full).astype(dtype)[..., ::-1]
        if lead:
            x = x[::-1]
    elif kind == "T" and nlead >= 2:
        swapped = (lead[1], lead[0]) + lead[2:] + (d,)
        x = np.swapaxes(rng.standard_normal(swapped).astype(dtype), 0, 1)
    elif kind == "swap":
        x = rng.standard_normal(full).astype(np.dtype(dtype).newbyteorder(">"))
    else:
        x = rng.standard_normal(full).astype(dtype)
    assert x.shape == full
    # cos/sin leading shape: some axes of lead set to 1, some leading axes dropped
    drop = draw(st.integers(0, nlead))
    ones = draw(st.lists(st.booleans(), min_size=nlead - drop, max_size=nlead - drop))
    clead = tuple(1 if o else n for o, n in zip(ones, lead[drop:]))
    tdtype = draw(st.sampled_from(DTYPES))
    pos = rng.integers(-50, 5000, size=clead)
    theta = ropescale.inv_freq(2 * r, draw(st.sampled_from([10.0, 10000.0, 5e5])))
    c, s = ropescale.cos_sin(pos, theta, dtype=np.float64)
    return x, c.astype(tdtype), s.astype(tdtype), pos, theta, dtype


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts(), st.booleans(), st.booleans(), st.sampled_from(["new", "out", "inplace"]))
def test_apply_rotary_matches_reference(lay, interleaved, inverse, mode):
    x, c, s, pos, theta, dtype = lay
    x_before = x.copy()
    want = ref.apply_rotary(x, c, s, interleaved=interleaved, inverse=inverse)
    if mode == "new":
        got = ropescale.apply_rotary(x, c, s, interleaved=interleaved, inverse=inverse)
        assert np.array_equal(x, x_before)  # input untouched
        assert got.dtype == x.dtype.newbyteorder("=")
    elif mode == "out":
        out = np.full(x.shape, np.nan, dtype=np.dtype(dtype).newbyteorder("="))
        got = ropescale.apply_rotary(x, c, s, interleaved=interleaved, inverse=inverse, out=out)
        assert got is out
        assert np.array_equal(x, x_before)
    else:
        got = ropescale.apply_rotary(x, c, s, interleaved=interleaved, inverse=inverse, out=x)
        assert got is x
    assert got.shape == x.shape
    # the table was rounded to its dtype; compare with the reference on the same table
    tdt = np.float64 if got.dtype.itemsize == 8 else np.float32
    want = ref.apply_rotary(x_before, c.astype(tdt), s.astype(tdt), interleaved=interleaved, inverse=inverse)
    assert_close(got, want, x_before, got.dtype)
    # pass-through features are bit-identical
    r = c.shape[-1]
    assert np.array_equal(got[..., 2 * r:], x_before[..., 2 * r:].astype(got.dtype))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts(), st.booleans(), st.booleans(), st.sampled_from(["new", "out", "inplace"]),
       st.sampled_from([1.0, 1.25]), st.booleans())
def test_apply_rotary_positions_matches_reference(lay, interleaved, inverse, mode, attn, float_pos):
    x, _, _, pos, theta, dtype = lay
    x_before = x.copy()
    if float_pos:
        pos = pos + 0.375
    want = ref.apply_rotary_positions(x_before, pos, theta, attention_factor=attn, interleaved=interleaved, inverse=inverse)
    kw = dict(attention_factor=attn, interleaved=interleaved, inverse=inverse)
    if mode == "new":
        got = ropescale.apply_rotary_positions(x, pos, theta, **kw)
        assert np.array_equal(x, x_before)
    elif mode == "out":
        out = np.empty(x.shape, dtype=np.dtype(dtype).newbyteorder("="))
        got = ropescale.apply_rotary_positions(x, pos, theta, out=out, **kw)
        assert got is out
    else:
        got = ropescale.apply_rotary_positions(x, pos, theta, out=x, **kw)
        assert got is x
    assert_close(got, want, x_before * attn, got.dtype)


# ----------------------------------------------------------- invariants

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_inverse_undoes_apply_and_norms_are_preserved(dtype, interleaved):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 17, 4, 64)).astype(dtype)
    pos = rng.integers(0, 100000, size=(3, 17, 1))
    theta = ropescale.inv_freq(64, 10000.0)
    y = ropescale.apply_rotary_positions(x, pos, theta, interleaved=interleaved)
    z = ropescale.apply_rotary_positions(y, pos, theta, interleaved=interleaved, inverse=True)
    limit = 2 * tol(dtype)                     # two roundings: there and back
    x64 = x.astype(np.float64)
    assert np.max(np.abs(z.astype(np.float64) - x64)) <= limit * np.max(np.abs(x64))
    n0 = np.linalg.norm(x64, axis=-1)
    n1 = np.linalg.norm(y.astype(np.float64), axis=-1)
    assert np.max(np.abs(n1 - n0) / n0) <= limit


@pytest.mark.parametrize("method", ["default", "ntk", "yarn"])
def test_scores_depend_only_on_relative_position_through_the_method_frequencies(method):
    """The kernels' scores depend on m - n only (true for any theta), and equal the
    closed form at the method's theta' from the pure-NumPy reference: so a kernel or
    a frequency that is wrong fails, not only one that breaks the invariance."""
    rng = np.random.default_rng(2)
    d = 128
    q, k = rng.standard_normal(d), rng.standard_normal(d)
    sc = None if method == "default" else {"rope_type": method, "factor": 8.0, "original_max_position_embeddings": 4096}
    theta, attn = ropescale.scaled_inv_freq(d, 10000.0, sc)
    params = {} if sc is None else {"factor": 8.0, "original_max_position_embeddings": 4096}
    want_theta, want_attn = ref.scaled_inv_freq(d, 10000.0, method, **params)
    r = d // 2
    for dist in (0, 3, 999):
        ms = np.array([0, 10, 5000, 30000])
        qm = ropescale.apply_rotary_positions(np.tile(q, (4, 1)), ms + dist, theta, attention_factor=attn)
        kn = ropescale.apply_rotary_positions(np.tile(k, (4, 1)), ms, theta, attention_factor=attn)
        scores = np.einsum("id,id->i", qm, kn)
        assert np.ptp(scores) <= 1e-10 * np.abs(scores).max()
        ang = dist * want_theta
        want = want_attn ** 2 * np.sum((q[:r] * k[:r] + q[r:] * k[r:]) * np.cos(ang)
                                       + (q[:r] * k[r:] - q[r:] * k[:r]) * np.sin(ang))
        assert abs(scores[0] - want) <= 1e-10 * want_attn ** 2 * float(np.abs(q) @ np.abs(k))


@pytest.mark.parametrize("method", ["linear", "ntk"])
@pytest.mark.parametrize("s", [2.0, 8.0, 32.0])
def test_period_matching_identity_with_the_kernels(method, s):
    """Ro'(x, t theta) = Ro(x, t theta'): rotating at the scaled frequencies equals
    rotating each pair at the original frequency and the pair's rescaled position."""
    d = 64
    rng = np.random.default_rng(int(s))
    x = rng.standard_normal((6, d))
    t = rng.integers(0, 32768, size=6).astype(np.float64)
    theta = ropescale.inv_freq(d)
    theta_p = ropescale.scaled_inv_freq(d, 10000.0, {"rope_type": method, "factor": s})[0]
    lhs = ropescale.apply_rotary_positions(x, t, theta_p)
    # per pair k: position t * theta'_k / theta_k, original frequency theta_k
    k_scale = theta_p / theta
    c, sn = ropescale.cos_sin(np.multiply.outer(t, k_scale), theta, dtype=np.float64)
    c, sn = c[:, np.arange(d // 2), np.arange(d // 2)], sn[:, np.arange(d // 2), np.arange(d // 2)]
    rhs = ropescale.apply_rotary(x, c, sn)
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["bshd", "bhsd"])
def test_cached_and_fused_forms_agree(dtype, layout):
    rng = np.random.default_rng(3)
    b, s, h, d = 2, 33, 3, 32
    theta, attn = ropescale.scaled_inv_freq(d, 10000.0, {"rope_type": "yarn", "factor": 4.0,
                                                         "original_max_position_embeddings": 16})
    pos = np.arange(s) + 7
    if layout == "bshd":
        x = rng.standard_normal((b, s, h, d)).astype(dtype)
        c, sn = ropescale.cos_sin(pos[:, None], theta, attention_factor=attn, dtype=np.float32 if dtype != np.float64 else np.float64)
        p = pos[:, None]
    else:
        x = rng.standard_normal((b, h, s, d)).astype(dtype)
        c, sn = ropescale.cos_sin(pos, theta, attention_factor=attn, dtype=np.float32 if dtype != np.float64 else np.float64)
        p = pos
    cached = ropescale.apply_rotary(x, c, sn)
    fused = ropescale.apply_rotary_positions(x, p, theta, attention_factor=attn)
    assert np.array_equal(cached, fused)  # same rounded table, same kernel arithmetic


def test_per_token_positions_for_packed_batches():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 10, 4, 16))
    pos = np.array([[0, 1, 2, 3, 0, 1, 2, 0, 1, 2], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]])[..., None]
    theta = ropescale.inv_freq(16)
    got = ropescale.apply_rotary_positions(x, pos, theta)
    for bi in range(2):
        for si in range(10):
            want = ref.apply_rotary_positions(x[bi, si], np.full(4, pos[bi, si, 0], float), theta)
            np.testing.assert_allclose(got[bi, si], want, rtol=0, atol=1e-13)


def test_one_token_and_empty_inputs():
    theta = ropescale.inv_freq(8)
    x = np.arange(8, dtype=np.float32)
    y = ropescale.apply_rotary_positions(x, 5, theta)
    np.testing.assert_allclose(y, ref.apply_rotary_positions(x, 5.0, theta), atol=2e-6 * 7)
    e = np.zeros((0, 4, 8), dtype=np.float32)
    assert ropescale.apply_rotary_positions(e, np.zeros((0, 1)), theta).shape == (0, 4, 8)
    c, s = ropescale.cos_sin(np.zeros((0,)), theta)
    assert c.shape == (0, 4) and ropescale.apply_rotary(e, c[:, None], s[:, None]).shape == (0, 4, 8)


def test_nan_in_x_propagates_only_to_its_pair():
    x = np.ones((2, 8))
    x[1, 0] = np.nan
    y = ropescale.apply_rotary_positions(x, np.array([0, 3]), ropescale.inv_freq(8))
    assert np.isnan(y[1, 0]) and np.isnan(y[1, 4])
    assert np.isfinite(np.delete(y[1], [0, 4])).all() and np.isfinite(y[0]).all()


def test_out_overlapping_input_is_handled():
    rng = np.random.default_rng(5)
    theta = ropescale.inv_freq(8)
    buf = rng.standard_normal((10, 8))
    x = buf[:8]
    want = ref.apply_rotary_positions(x.copy(), np.arange(8), theta)
    ropescale.apply_rotary_positions(x, np.arange(8), theta, out=buf[2:])
    np.testing.assert_allclose(buf[2:], want, atol=1e-13)
    # out aliasing the cos table
    c0, s = ropescale.cos_sin(np.arange(4), ropescale.inv_freq(4), dtype=np.float64)
    buf = np.empty((4, 4))
    c = buf[:, 1:3]
    c[...] = c0
    xx = np.ones((4, 4))
    want = ref.apply_rotary(xx, c0, s)
    got = ropescale.apply_rotary(xx, c, s, out=buf)
    assert got is buf
    np.testing.assert_allclose(got, want, atol=1e-13)


def test_out_dtype_rule():
    x = np.ones((3, 8), dtype=np.float16)
    theta = ropescale.inv_freq(8)
    out = np.empty((3, 8), dtype=np.float64)
    got = ropescale.apply_rotary_positions(x, np.arange(3), theta, out=out)
    assert got is out
    np.testing.assert_allclose(out, ref.apply_rotary_positions(x, np.arange(3), theta), atol=1e-13)
    got16 = ropescale.apply_rotary_positions(x, np.arange(3), theta)
    assert got16.dtype == np.float16


@pytest.mark.parametrize("x_dt, out_dt", [("f4", "f2"), ("f8", "f2"), ("f8", "f4"), ("f8", "bf16"), ("bf16", "f2")])
@pytest.mark.parametrize("form", ["cached", "fused"])
def test_an_out_narrower_than_x_is_rounded_once(x_dt, out_dt, form):
    """float32 x with a float16 out was rounded twice (x to float16, then the rotation): 29-33 % of the elements
    differed from the rotation rounded once, by up to 4,543 ulp.  Each element must now be within half an ulp of
    out's dtype (plus x's own compute error) of the exact rotation of x (the float64 reference)."""
    rng = np.random.default_rng(11)
    bf16 = pytest.importorskip("ml_dtypes").bfloat16 if "bf16" in (x_dt, out_dt) else None
    as_dt = {"f2": np.float16, "f4": np.float32, "f8": np.float64, "bf16": bf16}
    x = (rng.standard_normal((64, 4, 32)) * 100).astype(as_dt[x_dt])
    pos, theta = np.arange(64)[:, None], ropescale.inv_freq(32)
    out = np.full(x.shape, 7, as_dt[out_dt])
    if form == "fused":
        got = ropescale.apply_rotary_positions(x, pos, theta, out=out)
    else:
        c, s = ropescale.cos_sin(pos, theta, dtype=np.float64 if x_dt == "f8" else np.float32)
        got = ropescale.apply_rotary(x, c, s, out=out)
    assert got is out
    exact = ref.apply_rotary_positions(x.astype(np.float64), pos, theta)
    o = out.astype(np.float64)
    if out_dt == "bf16":
        half_ulp = np.spacing(np.abs(out.astype(np.float32))).astype(np.float64) * 2.0**15
    else:
        half_ulp = np.spacing(np.abs(out)).astype(np.float64) / 2
    compute = (1e-15 if x_dt == "f8" else 2e-6) * np.abs(x.astype(np.float64)).max(axis=-1, keepdims=True)
    err = np.abs(o - exact) - half_ulp - compute
    assert err.max() <= 0, f"{np.mean(err > 0):.1%} of the elements were rounded more than once"


def test_bfloat16_when_ml_dtypes_is_installed():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(ml_dtypes.bfloat16)
    theta = ropescale.inv_freq(8)
    y = ropescale.apply_rotary_positions(x, np.arange(4), theta)
    assert y.dtype == ml_dtypes.bfloat16
    want = ref.apply_rotary_positions(x.astype(np.float64), np.arange(4), theta)
    assert np.max(np.abs(y.astype(np.float64) - want)) <= 1.6e-2 * np.max(np.abs(want))


def test_threads_split_large_arrays_identically(threads):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2048, 8, 128)).astype(np.float32)   # 8 MiB: above the split size
    pos = np.arange(2048)[:, None]
    theta = ropescale.inv_freq(128)
    threads(1)
    one = ropescale.apply_rotary_positions(x, pos, theta)
    threads(2)
    two = ropescale.apply_rotary_positions(x, pos, theta)
    c, s = ropescale.cos_sin(np.arange(2048)[:, None], theta)
    two_cached = ropescale.apply_rotary(x, c, s)
    assert np.array_equal(one, two) and np.array_equal(one, two_cached)


def test_rope_apply_uses_sequence_length_for_dynamic():
    rope = ropescale.Rope(64, 10000.0, {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 16})
    x = np.ones((40, 64))
    pos = np.arange(40)
    got = rope.apply(x, pos)
    theta40 = ropescale.scaled_inv_freq(64, 10000.0, rope.scaling, seq_len=40)[0]
    np.testing.assert_allclose(got, ref.apply_rotary_positions(x, pos, theta40), atol=1e-13)
    short = rope.apply(x[:8], pos[:8])
    np.testing.assert_allclose(short, ref.apply_rotary_positions(x[:8], pos[:8], ropescale.inv_freq(64)), atol=1e-13)
    c, s = rope.cos_sin(pos, dtype=np.float64)
    np.testing.assert_allclose(c, np.cos(np.outer(pos, theta40)), atol=1e-13)


def test_unaligned_inputs_are_accepted():
    theta = ropescale.inv_freq(8)
    u = np.ndarray((4,), dtype=np.float64, buffer=bytearray(33), offset=1)
    u[:] = theta
    x = np.ndarray((2, 8), dtype=np.float32, buffer=bytearray(65), offset=1)
    x[:] = np.arange(16).reshape(2, 8)
    p = np.ndarray((2,), dtype=np.int64, buffer=bytearray(17), offset=1)
    p[:] = [3, 4]
    assert not (u.flags.aligned or x.flags.aligned or p.flags.aligned)
    out = np.ndarray((2, 8), dtype=np.float32, buffer=bytearray(65), offset=1)
    got = ropescale.apply_rotary_positions(x, p, u, out=out)
    assert got is out
    want = ref.apply_rotary_positions(np.array(x), np.array(p), theta)
    np.testing.assert_allclose(out, want, atol=2e-6 * 15)
    c, s = ropescale.cos_sin(p, u, dtype=np.float64)
    np.testing.assert_allclose(c, np.cos(np.outer([3, 4], theta)), atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_attention_factor_scales_cos_sin_and_the_fused_rotation(dtype):
    """cos/sin and the fused rotation carry the attention factor: a * cos(t theta),
    a * sin(t theta) and a * Ro(x, t theta), against NumPy's cos and sin."""
    theta = ropescale.inv_freq(16)
    pos = np.array([0, 1, 7, 4096])
    a = 1.25
    c, s = ropescale.cos_sin(pos, theta, attention_factor=a, dtype=dtype)
    ang = np.outer(pos, theta)
    np.testing.assert_allclose(c, a * np.cos(ang), rtol=0, atol=a * tol(dtype))
    np.testing.assert_allclose(s, a * np.sin(ang), rtol=0, atol=a * tol(dtype))
    x = np.random.default_rng(8).standard_normal((4, 16)).astype(dtype)
    got = ropescale.apply_rotary_positions(x, pos, theta, attention_factor=a)
    assert_close(got, a * ref.apply_rotary_positions(x, pos, theta), a * x)


@pytest.mark.parametrize("interleaved", [False, True])
def test_pairings_half_split_and_interleaved(interleaved):
    """Which features form pair k, written out by hand: (x[k], x[k + R]) for the
    half split, (x[2k], x[2k + 1]) interleaved; a quarter turn maps (a, b) to (-b, a)."""
    theta = np.array([np.pi / 2, 0.0])           # pair 0 turns a quarter at t = 1, pair 1 not at all
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])     # D = 6, R = 2: x[4], x[5] pass through
    want = [-2.0, 1.0, 3.0, 4.0, 5.0, 6.0] if interleaved else [-3.0, 2.0, 1.0, 4.0, 5.0, 6.0]
    got = ropescale.apply_rotary_positions(x, 1, theta, interleaved=interleaved)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    c, s = ropescale.cos_sin(1, theta, dtype=np.float64)
    np.testing.assert_allclose(ropescale.apply_rotary(x, c, s, interleaved=interleaved), want, rtol=0, atol=1e-15)


# ------------------------------------------------------------ determinism

@pytest.mark.parametrize("dtype", DTYPES)
def test_a_positions_table_row_does_not_depend_on_the_other_positions(dtype):
    """cos_sin([501]) is cos_sin([500, 501])[1], bit for bit (float64 differed by
    ~2 ulp: an exact path for a lone position, a cached one inside a run)."""
    theta = ropescale.inv_freq(64, 5e5)
    rng = np.random.default_rng(11)
    scattered = rng.integers(-10**7, 10**7, size=40)
    batches = [np.array([500, 501]), np.arange(0, 600), scattered, np.sort(scattered),
               np.concatenate([scattered, scattered + 1]), np.array([501, 17, 501, 2**31, 2**31 + 1])]
    for attn in (1.0, 0.8):
        for batch in batches:
            c, s = ropescale.cos_sin(batch, theta, attention_factor=attn, dtype=dtype)
            for i in range(len(batch)):
                c1, s1 = ropescale.cos_sin(batch[i:i + 1], theta, attention_factor=attn, dtype=dtype)
                assert c[i].tobytes() == c1[0].tobytes() and s[i].tobytes() == s1[0].tobytes(), \
                    (dtype, attn, int(batch[i]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_rows_rotation_does_not_depend_on_batch_threads_or_form(dtype):
    """The rotated row of a token at a position: the same bits alone, inside a
    batch of other positions, split over C threads, and from a cached table."""
    rng = np.random.default_rng(12)
    theta = ropescale.inv_freq(128, 1e4)
    pos = np.concatenate([np.arange(3000, 5100), rng.integers(0, 10**6, size=100)])   # runs and scattered
    x = rng.standard_normal((pos.size, 8, 128)).astype(dtype)                          # > 4 MiB for f32/f64
    tdt = np.float64 if dtype == np.float64 else np.float32
    prev = ropescale.set_num_threads(1)
    try:
        one = ropescale.apply_rotary_positions(x, pos[:, None], theta)
        ropescale.set_num_threads(2)
        two = ropescale.apply_rotary_positions(x, pos[:, None], theta)
        c, s = ropescale.cos_sin(pos[:, None], theta, dtype=tdt)
        cached = ropescale.apply_rotary(x, c, s)
    finally:
        ropescale.set_num_threads(prev)
    assert one.tobytes() == two.tobytes() and one.tobytes() == cached.tobytes()
    for i in list(range(0, pos.size, 97)) + [pos.size - 1]:
        alone = ropescale.apply_rotary_positions(x[i:i + 1], pos[i:i + 1, None], theta)
        assert alone.tobytes() == one[i:i + 1].tobytes(), (dtype, int(pos[i]))


# ---------------------------------------------------------------- aliasing

def test_inv_freq_sharing_memory_with_out_is_read_before_any_write():
    """The fused kernel reads inv_freq while it writes: a view of out must be copied first."""
    rng = np.random.default_rng(13)
    theta = ropescale.inv_freq(8)
    x = rng.standard_normal((6, 8))
    pos = np.arange(6) * 7 + 3
    want = ref.apply_rotary_positions(x.copy(), pos, theta)
    out = np.zeros((6, 8))
    out[0, :4] = theta                       # inv_freq lives in out's first row
    got = ropescale.apply_rotary_positions(x, pos, out[0, :4], out=out)
    assert got is out
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-14)
    # in place: inv_freq inside x
    y = x.copy()
    y[5, :4] = theta
    want = ref.apply_rotary_positions(y.copy(), pos, theta)
    got = ropescale.apply_rotary_positions(y, pos, y[5, :4], out=y)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


def test_the_glue_refuses_inputs_that_share_memory_with_out():
    """Second guard: the C glue itself refuses an input overlapping out, naming it."""
    from ropescale import _core
    th = ropescale.inv_freq(8)
    buf = np.zeros((4, 8))
    buf[0, :4] = th
    x = np.ones((4, 8))
    pos = np.arange(4)
    with pytest.raises(ValueError, match="inv_freq"):
        _core.rotate_positions(x, pos, buf[0, :4], 1.0, buf, False, False, 1)
    p = buf[1, :4].view(np.int64)
    with pytest.raises(ValueError, match="positions"):
        _core.rotate_positions(x, p, th, 1.0, buf, False, False, 1)
    c = buf[:, :4]
    with pytest.raises(ValueError, match="cos"):
        _core.rotate(x, c, np.zeros((4, 4)), buf, False, False, 1)
    with pytest.raises(ValueError, match="x"):
        _core.rotate(buf[::-1], np.zeros((4, 4)), np.zeros((4, 4)), buf, False, False, 1)
    cs = np.zeros(20)
    with pytest.raises(ValueError, match="cos shares memory with sin"):
        _core.cos_sin(pos.astype(np.int64), th, 1.0, cs[:16].reshape(4, 4), cs[4:].reshape(4, 4), 1)
    assert not buf[1:].any() and (buf[0, :4] == th).all()


def test_a_self_overlapping_view_in_place_behaves_as_if_copied():
    """A writeable as_strided view whose rows share memory, rotated in place:
    NumPy's rule (inputs as if copied, writes in order), not rotations that compose."""
    from numpy.lib.stride_tricks import as_strided
    theta = ropescale.inv_freq(4)
    pos = np.array([1, 2, 3])
    for fn in ("fused", "cached"):
        base = np.linspace(-1, 1, 12)
        v = as_strided(base, shape=(3, 8), strides=(16, 8))   # rows overlap by 6 elements
        assert v.flags.writeable
        want = ref.apply_rotary_positions(v.copy(), pos, theta)
        expect = base.copy()
        as_strided(expect, shape=(3, 8), strides=(16, 8))[...] = want   # NumPy writes in order
        if fn == "fused":
            got = ropescale.apply_rotary_positions(v, pos, theta, out=v)
        else:
            c, s = ropescale.cos_sin(pos, theta, dtype=np.float64)
            got = ropescale.apply_rotary(v, c, s, out=v)
        assert got is v
        np.testing.assert_allclose(base, expect, rtol=0, atol=1e-15)
    # the glue refuses it in place
    from ropescale import _core
    v = as_strided(np.zeros(12), shape=(3, 8), strides=(16, 8))
    with pytest.raises(ValueError, match="share memory"):
        _core.rotate_positions(v, pos, theta, 1.0, v, False, False, 1)


@pytest.mark.parametrize("arg", ["x", "cos", "sin", "out", "positions", "inv_freq", "cos_sin-positions",
                                 "cos_sin-inv_freq", "rerotate-k", "rerotate-from_positions",
                                 "rerotate-to_positions", "rerotate-inv_freq", "rerotate-out", "rebase-k",
                                 "rebase-positions", "rebase-inv_freq_from", "rebase-inv_freq_to"])
def test_masked_arrays_are_refused_naming_the_argument(arg):
    """rerotate and rebase ignored the mask (0.2.0); every other entry point refused it."""
    theta = ropescale.inv_freq(8)
    x = np.ones((3, 8))
    pos = np.arange(3)
    c, s = ropescale.cos_sin(pos, theta, dtype=np.float64)
    m = lambda a: np.ma.masked_array(a, mask=np.zeros(np.shape(a), bool))   # noqa: E731
    calls = {
        "x": lambda: ropescale.apply_rotary(m(x), c, s),
        "cos": lambda: ropescale.apply_rotary(x, m(c), s),
        "sin": lambda: ropescale.apply_rotary(x, c, m(s)),
        "out": lambda: ropescale.apply_rotary_positions(x, pos, theta, out=m(np.empty_like(x))),
        "positions": lambda: ropescale.apply_rotary_positions(x, m(pos), theta),
        "inv_freq": lambda: ropescale.apply_rotary_positions(x, pos, m(theta)),
        "cos_sin-positions": lambda: ropescale.cos_sin(m(pos), theta),
        "cos_sin-inv_freq": lambda: ropescale.cos_sin(pos, m(theta)),
        "rerotate-k": lambda: ropescale.rerotate(m(x), pos, pos + 1, theta),
        "rerotate-from_positions": lambda: ropescale.rerotate(x, m(pos), pos + 1, theta),
        "rerotate-to_positions": lambda: ropescale.rerotate(x, pos, m(pos + 1), theta),
        "rerotate-inv_freq": lambda: ropescale.rerotate(x, pos, pos + 1, m(theta)),
        "rerotate-out": lambda: ropescale.rerotate(x, pos, pos + 1, theta, out=m(np.empty_like(x))),
        "rebase-k": lambda: ropescale.rebase(m(x), pos, theta, theta / 2),
        "rebase-positions": lambda: ropescale.rebase(x, m(pos), theta, theta / 2),
        "rebase-inv_freq_from": lambda: ropescale.rebase(x, pos, m(theta), theta / 2),
        "rebase-inv_freq_to": lambda: ropescale.rebase(x, pos, theta, m(theta / 2)),
    }
    name = arg.split("-")[-1]
    with pytest.raises(TypeError, match=f"{name} is a masked array"):
        calls[arg]()


# --------------------------------------------------------------- memory

@pytest.mark.parametrize("nth", [1, 2])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_call_that_runs_out_of_memory_leaves_its_output_untouched(nth, threads):
    """Every buffer is allocated before any thread writes (forced failures of the
    C core's allocator: the first allocation, then none left to fail)."""
    from ropescale import _core
    rng = np.random.default_rng(14)
    theta = ropescale.inv_freq(128)
    x = rng.standard_normal((4096, 4, 128)).astype(np.float32)      # 8 MiB: split over threads
    pos = np.arange(4096)[:, None]
    c, s = ropescale.cos_sin(pos, theta)
    before = x.copy()
    prev = ropescale.set_num_threads(threads)
    try:
        for call in (lambda: ropescale.apply_rotary_positions(x, pos, theta, out=x),
                     lambda: ropescale.apply_rotary(x, c, s, out=x)):
            _core._test_fail_alloc(nth)
            try:
                call()
            except MemoryError as e:
                assert "untouched" in str(e)
                assert np.array_equal(x, before)
            else:   # the failure hit no allocation of this call (nth too large): it completed
                assert nth > 1
                x[...] = before
            finally:
                _core._test_fail_alloc(0)
        _core._test_fail_alloc(nth)
        try:
            with pytest.raises(MemoryError):
                if nth > 1:
                    raise MemoryError     # the table makes one allocation: only nth == 1 can fail it
                ropescale.cos_sin(pos, theta)
        finally:
            _core._test_fail_alloc(0)
        np.testing.assert_array_equal(ropescale.apply_rotary(x, c, s), ropescale.apply_rotary_positions(x, pos, theta))
    finally:
        ropescale.set_num_threads(prev)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_negative_integer_positions_are_their_own_angles(dtype):
    """Negative positions (rerotate deltas, left padding) split into q*16 + r with 0 <= r < 16 like any other:
    their tables and fused rotations are the float64 angles of those negative positions (a remainder taken
    with the sign of the position turned p = -1 into +1 and no other test noticed)."""
    theta = ropescale.inv_freq(64, 10000.0)
    pos = np.concatenate([-np.arange(1, 40), [-1000, -4097, -65536, -999999]]).astype(np.int64)
    c, s = ropescale.cos_sin(pos, theta, dtype=np.float64)
    ang = pos[:, None].astype(np.float64) * theta   # |angle| < 1e6: float64 rounding < 1e-10 rad
    np.testing.assert_allclose(c, np.cos(ang), rtol=0, atol=1e-9)
    np.testing.assert_allclose(s, np.sin(ang), rtol=0, atol=1e-9)
    x = np.random.default_rng(0).standard_normal((pos.size, 3, 64)).astype(dtype)
    want = ref.apply_rotary_positions(x, pos[:, None], theta)
    got = ropescale.apply_rotary_positions(x, pos[:, None], theta)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 if dtype == np.float64 else 2e-6)
    rope = ropescale.Rope(64, 10000.0, {"mrope_section": [8, 12, 12]})
    streams = np.stack([pos, pos - 3, np.where(pos % 2 == 0, pos, -pos)])[:, :, None]
    got = rope.apply(x, streams)
    sec = np.repeat(np.arange(3), [8, 12, 12])
    per_pair = streams[sec, :, 0].T.astype(np.float64)            # (tokens, pairs): each pair's position
    a = per_pair[:, None, :] * theta
    x1, x2 = x[..., :32].astype(np.float64), x[..., 32:].astype(np.float64)
    want = np.concatenate([x1 * np.cos(a) - x2 * np.sin(a), x2 * np.cos(a) + x1 * np.sin(a)], axis=-1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 if dtype == np.float64 else 2e-6)
