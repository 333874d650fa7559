"""The fast lanes of apply_rotary / apply_rotary_positions (plain NumPy arrays and
CPU torch tensors of the kernel dtypes) give the full path's bits, and every call
they do not own reaches the full path's checks and handling."""
import numpy as np
import pytest

import ropescale
from ropescale import _rotary, reference

FULL_ROTARY = _rotary.apply_rotary.__wrapped__            # the checked path, without the fast lane
FULL_POSITIONS = _rotary.apply_rotary_positions.__wrapped__


def _inputs(dtype, shape=(4, 3, 2, 16), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    pos = rng.integers(0, 10**6, size=shape[:2] + (1,))
    theta = ropescale.inv_freq(shape[-1])
    c, s = ropescale.cos_sin(pos, theta, dtype=np.float64 if dtype == np.float64 else np.float32)
    return x, pos, theta, c, s


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("inverse", [False, True])
def test_fast_lane_gives_the_full_paths_bits(dtype, interleaved, inverse):
    x, pos, theta, c, s = _inputs(dtype)
    kw = dict(interleaved=interleaved, inverse=inverse)
    got = ropescale.apply_rotary(x, c, s, **kw)
    want = FULL_ROTARY(x, c, s, **kw)
    assert got.dtype == x.dtype and np.array_equal(got.view(np.uint8), want.view(np.uint8))
    ref = reference.apply_rotary(x.astype(np.float64), c.astype(np.float64), s.astype(np.float64), **kw)
    tol = {np.float16: 2e-3, np.float32: 1e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(got.astype(np.float64), ref, rtol=tol, atol=tol * 4)
    got = ropescale.apply_rotary_positions(x, pos, theta, **kw)
    want = FULL_POSITIONS(x, pos, theta, **kw)
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
    # out= and in place
    out = np.empty_like(x)
    assert ropescale.apply_rotary_positions(x, pos, theta, out=out, **kw) is out
    assert np.array_equal(out.view(np.uint8), want.view(np.uint8))
    y = x.copy()
    assert ropescale.apply_rotary_positions(y, pos, theta, out=y, **kw) is y
    assert np.array_equal(y.view(np.uint8), want.view(np.uint8))


def test_calls_the_glue_refuses_are_handled_by_the_full_path():
    x, pos, theta, c, s = _inputs(np.float32)
    want = FULL_ROTARY(x, c, s)
    # out overlapping x without being x: computed as if x were copied first
    buf = np.concatenate([x.reshape(-1), np.zeros(16, np.float32)])
    xv = buf[16:].reshape(x.shape)
    xv[...] = x
    out = buf[:-16].reshape(x.shape)
    ropescale.apply_rotary(xv, c, s, out=out)
    assert np.array_equal(out, want)
    # a table that is a view of out, in place: read before it is rotated
    big = np.concatenate([x.reshape(-1), c.reshape(-1), s.reshape(-1)])
    xin = big[:x.size].reshape(x.shape)
    cin = big[x.size:x.size + c.size].reshape(c.shape)
    sin = big[x.size + c.size:].reshape(s.shape)
    ropescale.apply_rotary(xin, cin, sin, out=xin)
    assert np.array_equal(xin, want)
    # byte-swapped and unaligned inputs are converted
    assert np.array_equal(ropescale.apply_rotary(x.astype(">f4"), c, s), want)
    raw = np.zeros(x.nbytes + 1, np.uint8)
    xu = raw[1:].view(np.float32).reshape(x.shape)
    xu[...] = x
    assert not xu.flags.aligned
    assert np.array_equal(ropescale.apply_rotary(xu, c, s), want)
    assert np.array_equal(ropescale.apply_rotary_positions(xu, pos, theta), FULL_POSITIONS(x, pos, theta))


@pytest.mark.parametrize("call, match", [
    (lambda x, pos, theta, c, s: ropescale.apply_rotary(x[..., :15], c, s), "must be even"),
    (lambda x, pos, theta, c, s: ropescale.apply_rotary(x, c[:2], s[:2]), "does not broadcast"),
    (lambda x, pos, theta, c, s: ropescale.apply_rotary(x[..., :8], c, s), "2R <= D"),
    (lambda x, pos, theta, c, s: ropescale.apply_rotary(x, c, s, interleaved=1), "interleaved must be True or False"),
    (lambda x, pos, theta, c, s: ropescale.apply_rotary(x, np.concatenate([c, c], -1), np.concatenate([s, s], -1)),
     "full-width"),
    (lambda x, pos, theta, c, s: ropescale.apply_rotary(x, c, s, out=np.empty((2, 16), np.float32)), "out must have the shape"),
    (lambda x, pos, theta, c, s: ropescale.apply_rotary_positions(x, pos.astype(float) * np.nan, theta), "finite"),
    (lambda x, pos, theta, c, s: ropescale.apply_rotary_positions(x, pos, theta, attention_factor=-1.0), "attention_factor"),
    (lambda x, pos, theta, c, s: ropescale.apply_rotary_positions(x, pos[:2], theta), "does not broadcast"),
    (lambda x, pos, theta, c, s: ropescale.apply_rotary_positions(x, pos, theta * np.inf), "finite"),
])
def test_bad_calls_raise_the_full_paths_message_and_write_nothing(call, match):
    x, pos, theta, c, s = _inputs(np.float32)
    before = x.copy()
    with pytest.raises((TypeError, ValueError), match=match):
        call(x, pos, theta, c, s)
    assert np.array_equal(x, before)


def test_torch_tensors_take_the_fast_lane_and_stay_tensors():
    torch = pytest.importorskip("torch")
    x, pos, theta, c, s = _inputs(np.float32)
    xt, ct, st, pt, tt = (torch.from_numpy(a) for a in (x, c, s, pos, theta))
    for _ in range(2):   # the second call finds torch.Tensor known
        got = ropescale.apply_rotary(xt, ct, st)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        assert np.array_equal(got.numpy(), FULL_ROTARY(x, c, s))
        out = torch.empty_like(xt)
        assert ropescale.apply_rotary_positions(xt, pt, tt, out=out) is out
        assert np.array_equal(out.numpy(), FULL_POSITIONS(x, pos, theta))
    with pytest.raises(TypeError, match="requires grad"):
        ropescale.apply_rotary(xt.clone().requires_grad_(True), ct, st)
    with pytest.raises(TypeError, match="requires grad"):
        ropescale.apply_rotary_positions(xt, pt, tt, out=torch.empty_like(xt).requires_grad_(True))


def _sin_tables():
    """Half-width sin tables that do and do not read as full-width, in the layouts a caller passes."""
    rng = np.random.default_rng(3)
    h = rng.standard_normal((5, 8)).astype(np.float32)
    full = np.concatenate([h, h], -1)
    yield "cat(h, h)", full, True
    yield "cat(h, h), strided", np.concatenate([full, full], -1)[:, ::2].copy()[:, :16], None
    yield "cat(h, h) in a strided view", np.repeat(full, 2, axis=-1)[:, ::2], True
    yield "cat(h, h) only in the last row", np.concatenate([rng.standard_normal((4, 16)).astype(np.float32),
                                                           full[-1:]]), True
    yield "cat(h, h) except the last row", np.concatenate([full[:-1], rng.standard_normal((1, 16))
                                                           .astype(np.float32)]), False
    yield "a constant row (position 0, test tables)", np.ones((3, 16), np.float32), False
    yield "width 2", np.ones((3, 2), np.float32), False
    yield "broadcast along the pairs", np.broadcast_to(np.float32(0.5), (3, 16)), False
    yield "empty", np.zeros((0, 16), np.float32), False
    yield "-0.0 against +0.0 (bits differ)", np.array([[0.0, 1.0, -0.0, 1.0]], np.float32), False


@pytest.mark.parametrize("name, sin, refused", list(_sin_tables()))
def test_the_glues_full_width_test_is_refuse_fulls(name, sin, refused):
    """The fast lane leaves _refuse_full's test to the glue (_core.rotate(..., refuse_full=True)):
    both refuse exactly the same tables."""
    from ropescale import _core
    from ropescale.tables import _refuse_full
    try:
        _refuse_full(sin)
        python_refuses = False
    except ValueError:
        python_refuses = True
    if refused is not None:
        assert python_refuses == refused, name
    x = np.ones(sin.shape[:-1] + (2 * sin.shape[-1],), np.float32)
    cos = np.ones(sin.shape, np.float32)
    out = np.full_like(x, 7.0)
    try:
        _core.rotate(x, cos, sin, out, False, False, 1, False, True)
        glue_refuses = False
    except ValueError as e:
        assert "full-width" in str(e)
        glue_refuses = True
        assert np.all(out == 7.0)   # nothing written
    assert glue_refuses == python_refuses, name
    _core.rotate(x, cos, sin, out, False, False, 1)   # without the flag the glue never looks


@pytest.mark.parametrize("interleaved", [False, True])
def test_fast_lane_takes_ml_dtypes_bfloat16_with_the_full_paths_bits(interleaved):
    """ml_dtypes' bfloat16 arrays go to the kernels' bfloat16 path from the fast lanes (Rope.apply and
    apply_rotary), with the bits of the full path (which views them as uint16 bits the same way)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf = ml_dtypes.bfloat16
    x32, pos, theta, c, s = _inputs(np.float32)
    x = x32.astype(bf)
    calls = 0
    real = _rotary._core

    class Counting:   # the lane reaches the kernel itself, with bf16=True
        def __getattr__(self, name):
            fn = getattr(real, name)

            def wrapped(*a):
                nonlocal calls
                calls += bool(a and a[-2 if name == "rotate" else -1] is True)
                return fn(*a)
            return wrapped

    _rotary._core = Counting()
    try:
        got = _rotary._fast_rotary(x, c, s, interleaved, False, None)
        out = np.zeros_like(x)
        got_pos = _rotary._fast_positions(x, pos, theta, 1.0, interleaved, False, out)
    finally:
        _rotary._core = real
    assert calls == 2 and got is not None and got.dtype == bf and got_pos is out
    want = FULL_ROTARY(x, c, s, interleaved=interleaved)
    assert np.array_equal(got.view(np.uint16), want.view(np.uint16))
    want = FULL_POSITIONS(x, pos, theta, interleaved=interleaved)
    assert np.array_equal(out.view(np.uint16), want.view(np.uint16))
    # a float32 out for bfloat16 x is the full path's (a conversion), not the lane's
    assert _rotary._fast_rotary(x, c, s, interleaved, False, np.zeros(x.shape, np.float32)) is None
