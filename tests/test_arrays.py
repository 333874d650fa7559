"""Any CPU array in, the same kind out: torch, JAX, DLPack and buffer-protocol inputs; bfloat16 without ml_dtypes.

The oracle for values is the NumPy path (the same kernels on NumPy views of
the same memory) and, for bfloat16 rounding, torch's and ml_dtypes' own
conversions and exact arithmetic with fractions.
"""
import array
import sys
from fractions import Fraction

import numpy as np
import pytest

import ropescale
from ropescale import _arrays, _core, _rotary

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(7)
THETA = ropescale.inv_freq(16)


def _data(dtype=np.float32, shape=(3, 4, 16)):
    x = RNG.standard_normal(shape).astype(dtype)
    c, s = ropescale.cos_sin(np.arange(shape[0])[:, None], THETA, dtype=np.float64)
    return x, c, s


# -- torch ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_torch_in_torch_out_same_values_as_numpy(dtype):
    x, c, s = _data(np.float64)
    xt = torch.from_numpy(x).to(dtype)
    got = ropescale.apply_rotary(xt, torch.from_numpy(c), torch.from_numpy(s))
    assert isinstance(got, torch.Tensor) and got.dtype == dtype and got.shape == xt.shape
    want = ropescale.apply_rotary(xt.numpy(), c, s)
    np.testing.assert_array_equal(got.numpy(), want)
    pos = torch.arange(3)[:, None]
    got = ropescale.apply_rotary_positions(xt, pos, torch.from_numpy(THETA), attention_factor=1.5, interleaved=True)
    assert isinstance(got, torch.Tensor) and got.dtype == dtype
    np.testing.assert_array_equal(got.numpy(), ropescale.apply_rotary_positions(
        xt.numpy(), pos.numpy(), THETA, attention_factor=1.5, interleaved=True))


def test_torch_input_is_read_without_a_copy_and_left_alone():
    x, c, s = _data()
    xt = torch.from_numpy(x.copy())
    before = xt.clone()
    ropescale.apply_rotary(xt, torch.from_numpy(c), torch.from_numpy(s))
    assert torch.equal(xt, before)
    view, kind, bf16 = _arrays.unwrap("x", xt)
    assert kind == "torch" and not bf16 and view.ctypes.data == xt.data_ptr()


@pytest.mark.parametrize("form", ["tables", "positions"])
def test_out_torch_tensor_is_written_in_place(form):
    x, c, s = _data()
    xt = torch.from_numpy(x.copy())
    out = torch.full_like(xt, 7.0)
    ptr = out.data_ptr()
    if form == "tables":
        res = ropescale.apply_rotary(xt, c, s, out=out)
        want = ropescale.apply_rotary(x, c, s)
    else:
        res = ropescale.apply_rotary_positions(xt, torch.arange(3)[:, None], THETA, out=out)
        want = ropescale.apply_rotary_positions(x, np.arange(3)[:, None], THETA)
    assert res is out and out.data_ptr() == ptr
    np.testing.assert_array_equal(out.numpy(), want)


def test_out_is_x_in_place_for_torch():
    x, c, s = _data()
    xt = torch.from_numpy(x.copy())
    res = ropescale.apply_rotary(xt, c, s, out=xt)
    assert res is xt
    np.testing.assert_array_equal(xt.numpy(), ropescale.apply_rotary(x, c, s))


def test_numpy_x_with_torch_out_returns_out():
    x, c, s = _data()
    out = torch.empty(x.shape, dtype=torch.float64)
    assert ropescale.apply_rotary(x, c, s, out=out) is out
    # the dtype rule: out's dtype (float64) when given
    np.testing.assert_array_equal(out.numpy(), ropescale.apply_rotary(x, c, s, out=np.empty(x.shape)))


# -- bfloat16 ------------------------------------------------------------------
def _f32_result(xb, c, s):
    return ropescale.apply_rotary(xb.float().numpy(), c, s)


def test_torch_bfloat16_computes_in_float32_and_rounds_once():
    x, c, s = _data()
    xb = torch.from_numpy(x).bfloat16()
    got = ropescale.apply_rotary(xb, torch.from_numpy(c), torch.from_numpy(s))
    assert got.dtype == torch.bfloat16
    want = torch.from_numpy(_f32_result(xb, c, s)).bfloat16()  # torch's own rounding to nearest-even
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))


def test_torch_bfloat16_needs_no_ml_dtypes(monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes now fails
    monkeypatch.setattr(_rotary, "_BF16", None)
    x, c, s = _data()
    xb = torch.from_numpy(x).bfloat16()
    got = ropescale.apply_rotary_positions(xb, torch.arange(3)[:, None], THETA)
    want = torch.from_numpy(ropescale.apply_rotary_positions(xb.float().numpy(), np.arange(3)[:, None], THETA))
    assert torch.equal(got.view(torch.int16), want.bfloat16().view(torch.int16))
    out = torch.zeros_like(xb)
    assert ropescale.apply_rotary(xb, c, s, out=out) is out
    assert torch.equal(out.view(torch.int16), torch.from_numpy(_f32_result(xb, c, s)).bfloat16().view(torch.int16))
    cb, sb = ropescale.cos_sin(np.arange(5), THETA, dtype=torch.bfloat16)
    assert cb.dtype == torch.bfloat16 and cb.shape == (5, 8)


def test_bfloat16_out_with_float32_x():
    x, c, s = _data()
    out = torch.empty(x.shape, dtype=torch.bfloat16)
    ropescale.apply_rotary(torch.from_numpy(x), c, s, out=out)
    want = torch.from_numpy(ropescale.apply_rotary(x, c, s)).bfloat16()
    assert torch.equal(out.view(torch.int16), want.view(torch.int16))


def test_ml_dtypes_and_torch_bfloat16_give_the_same_bits():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x, c, s = _data()
    xb = torch.from_numpy(x).bfloat16()
    via_torch = ropescale.apply_rotary(xb, c, s)
    via_ml = ropescale.apply_rotary(xb.float().numpy().astype(ml_dtypes.bfloat16), c, s)
    np.testing.assert_array_equal(via_torch.view(torch.int16).numpy().view(np.uint16), via_ml.view(np.uint16))


def _bf16_values(bits):
    return _arrays.bf16_to_f32(np.asarray(bits, dtype=np.uint16)).astype(np.float64)


def test_f32_to_bf16_matches_torch_rounding_including_ties_nan_inf():
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4e38, 1e-40, -1e-45, 1 + 2**-8, 1 + 3 * 2**-8],
                       dtype=np.float32)
    vals = np.concatenate([special, RNG.standard_normal(10000).astype(np.float32) * 10.0 ** RNG.integers(-30, 30, 10000)])
    vals = vals.astype(np.float32)
    mine = _arrays.f32_to_bf16(vals)
    theirs = torch.from_numpy(vals).bfloat16().view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(vals)
    np.testing.assert_array_equal(mine[~nan], theirs[~nan])
    assert np.all(np.isnan(_bf16_values(mine[nan])))


def test_f64_to_bf16_is_one_correct_rounding_not_two():
    # 1 + 2**-8 + 2**-30: float32 rounds it to the bfloat16 tie 1 + 2**-8, which then goes to even (1.0);
    # the exact value is above the tie, so the correct bfloat16 is 1 + 2**-7.
    a = np.array([1 + 2**-8 + 2**-30, -(1 + 2**-8 + 2**-30), 1 + 2**-8, 1 + 3 * 2**-8 - 2**-40])
    got = _bf16_values(_arrays.f64_to_bf16(a))
    np.testing.assert_array_equal(got, [1 + 2**-7, -(1 + 2**-7), 1.0, 1 + 2**-7])
    # random values: the result is the nearest bfloat16 (exact comparison with fractions)
    vals = RNG.standard_normal(300) * 10.0 ** RNG.integers(-20, 20, 300)
    for v, b in zip(vals, _arrays.f64_to_bf16(vals)):
        b = int(b)
        here = Fraction(float(_bf16_values([b])[0]))
        for nb in (b - 1, b + 1):
            other = Fraction(float(_bf16_values([nb])[0]))
            d_here, d_other = abs(here - Fraction(v)), abs(other - Fraction(v))
            assert d_here < d_other or (d_here == d_other and b % 2 == 0)


def test_cos_sin_torch_positions_give_torch_tables():
    c, s = ropescale.cos_sin(torch.arange(6)[:, None], torch.from_numpy(THETA))
    assert isinstance(c, torch.Tensor) and c.dtype == torch.float32 and c.shape == (6, 1, 8)
    wc, ws = ropescale.cos_sin(np.arange(6)[:, None], THETA)
    np.testing.assert_array_equal(c.numpy(), wc)
    c64, _ = ropescale.cos_sin(np.arange(6), THETA, dtype=torch.float64)
    assert isinstance(c64, torch.Tensor) and c64.dtype == torch.float64
    cb, sb = ropescale.cos_sin(np.arange(6), THETA, dtype=torch.bfloat16, attention_factor=1.3)
    exact_c, exact_s = ropescale.cos_sin(np.arange(6), THETA, dtype=np.float64, attention_factor=1.3)
    np.testing.assert_array_equal(cb.view(torch.int16).numpy().view(np.uint16), _arrays.f64_to_bf16(exact_c))
    np.testing.assert_array_equal(sb.view(torch.int16).numpy().view(np.uint16), _arrays.f64_to_bf16(exact_s))


def test_rope_methods_follow_the_kind():
    rope = ropescale.Rope(16, 10000.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8})
    x, _, _ = _data()
    y = rope.apply(torch.from_numpy(x), torch.arange(3)[:, None])
    assert isinstance(y, torch.Tensor)
    np.testing.assert_array_equal(y.numpy(), rope.apply(x, np.arange(3)[:, None]))
    c, s = rope.cos_sin(torch.arange(3))
    assert isinstance(c, torch.Tensor)


# -- refusals ------------------------------------------------------------------
def test_requires_grad_is_refused_with_the_way_out():
    x, c, s = _data()
    xt = torch.from_numpy(x).requires_grad_()
    with pytest.raises(TypeError, match=r"x requires grad.*ropescale\.torch\.apply_rotary.*x\.detach\(\)"):
        ropescale.apply_rotary(xt, c, s)
    with pytest.raises(TypeError, match=r"cos requires grad"):
        ropescale.apply_rotary(x, torch.from_numpy(c).requires_grad_(), s)


def test_non_cpu_tensor_is_refused_naming_the_device():
    x = torch.empty(3, 4, 16, device="meta")
    with pytest.raises(TypeError, match=r"x is a torch tensor on device meta.*ropescale\.torch.*x\.cpu\(\)"):
        ropescale.apply_rotary_positions(x, np.arange(3)[:, None], THETA)


@pytest.mark.parametrize("dtype", [torch.int32, torch.complex64])
def test_unsupported_torch_dtype_is_refused_naming_it(dtype):
    x = torch.zeros(3, 16, dtype=dtype)
    with pytest.raises(TypeError, match=r"x.*(int32|complex64)"):
        ropescale.apply_rotary_positions(x, np.arange(3), THETA)


def test_failed_call_leaves_torch_out_untouched():
    x, c, s = _data()
    out = torch.full((3, 4, 16), 5.0, dtype=torch.bfloat16)
    with pytest.raises(ValueError):
        ropescale.apply_rotary(torch.from_numpy(x), c[:2], s[:2], out=out)
    assert torch.all(out == 5.0)


# -- JAX, DLPack, buffer protocol --------------------------------------------------
def test_jax_in_jax_out():
    jnp = pytest.importorskip("jax.numpy")
    x, c, s = _data()
    got = ropescale.apply_rotary(jnp.asarray(x), jnp.asarray(c), jnp.asarray(s))
    assert type(got).__module__.startswith("jax")
    np.testing.assert_array_equal(np.asarray(got), ropescale.apply_rotary(x, c, s))
    gb = ropescale.apply_rotary_positions(jnp.asarray(x, dtype=jnp.bfloat16), np.arange(3)[:, None], THETA)
    assert gb.dtype == jnp.bfloat16
    with pytest.raises(TypeError, match="out is a JAX array, which is immutable"):
        ropescale.apply_rotary(x, c, s, out=jnp.zeros(x.shape))


class _DLPackOnly:
    """An array-like that only speaks DLPack (what a third framework's tensor offers)."""

    def __init__(self, arr, device=(1, 0)):
        self._arr, self._device = arr, device

    def __dlpack__(self, **kw):
        return self._arr.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._device


def test_dlpack_object_is_read_without_copy():
    x, c, s = _data()
    got = ropescale.apply_rotary(_DLPackOnly(x), _DLPackOnly(c), _DLPackOnly(s))
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, ropescale.apply_rotary(x, c, s))
    view = _arrays.unwrap("x", _DLPackOnly(x))[0]
    assert view.ctypes.data == x.ctypes.data


def test_dlpack_positions_and_inv_freq_with_numpy_x():
    x, _, _ = _data()
    pos = np.arange(3)[:, None]
    got = ropescale.apply_rotary_positions(x, _DLPackOnly(pos), _DLPackOnly(THETA))
    np.testing.assert_array_equal(got, ropescale.apply_rotary_positions(x, pos, THETA))
    c, _ = ropescale.cos_sin(_DLPackOnly(pos), _DLPackOnly(THETA))
    np.testing.assert_array_equal(c, ropescale.cos_sin(pos, THETA)[0])


def test_dlpack_object_on_a_gpu_is_refused():
    x, c, s = _data()
    with pytest.raises(TypeError, match="x is on DLPack device cuda"):
        ropescale.apply_rotary(_DLPackOnly(x, (2, 0)), c, s)


class _Versioned(_DLPackOnly):
    """An exporter that hands out DLPack 1.x ("dltensor_versioned") capsules."""

    def __dlpack__(self, **kw):
        return self._arr.__dlpack__(max_version=(1, 0))


@pytest.mark.parametrize("exporter", [_DLPackOnly, _Versioned])
def test_dlpack_bfloat16_of_any_exporter_is_read_as_bits_without_a_copy(exporter):
    """DLPack's bfloat16 code (which NumPy's from_dlpack refuses) goes to the C kernels as bits, from any exporter:
    the same bits as the torch route, out= written in place, the result an ml_dtypes array."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x, c, s = _data()
    xb = torch.from_numpy(x).bfloat16()
    view, kind, bf16 = _arrays.unwrap("x", exporter(xb))
    assert bf16 and type(view) is _arrays.BF16Bits and view.ctypes.data == xb.data_ptr()
    assert view.flags.writeable and view.shape == tuple(xb.shape)
    want = ropescale.apply_rotary(xb, torch.from_numpy(c), torch.from_numpy(s))
    got = ropescale.apply_rotary(exporter(xb), exporter(torch.from_numpy(c)), s)
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.view(np.int16), want.view(torch.int16).numpy())
    out = torch.zeros_like(xb)
    assert ropescale.apply_rotary(exporter(xb), c, s, out=exporter(out)) is not None
    assert torch.equal(out.view(torch.int16), want.view(torch.int16))
    strided = xb[:, ::2]   # strides in elements, as DLPack gives them
    got = ropescale.apply_rotary(exporter(strided), c[:, ::2], s[:, ::2])
    want = ropescale.apply_rotary(strided, torch.from_numpy(c[:, ::2].copy()), torch.from_numpy(s[:, ::2].copy()))
    np.testing.assert_array_equal(got.view(np.int16), want.view(torch.int16).numpy())


def test_dlpack_view_keeps_the_exporters_memory_alive_and_returns_it():
    """The view owns the exported tensor until it is released, and then hands it back (the exporter's deleter
    runs): 400 fresh 4 MiB tensors viewed and dropped leave the resident size where it was."""
    import gc
    import resource

    t = torch.arange(8, dtype=torch.float32).bfloat16()
    view = _arrays.unwrap("x", _DLPackOnly(t))[0]
    del t
    gc.collect()
    filler = [torch.full((8,), 7.0).bfloat16() for _ in range(100)]   # reuse of freed memory would show
    assert _arrays.bf16_to_f32(view).tolist() == list(range(8)) and len(filler) == 100

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/statm")
    before = rss_mb()
    for _ in range(400):
        fresh = torch.ones(1 << 21, dtype=torch.bfloat16)   # 4 MiB, touched
        v = _arrays.unwrap("x", _DLPackOnly(fresh))[0]
        assert v[-1] == 0x3F80
        del fresh, v
    assert rss_mb() - before < 800   # 1.6 GB if no tensor were handed back (ASan holds up to 256 MB of freed memory)


def test_dlpack_refusals_name_the_argument_and_leave_the_capsule_to_its_owner():
    x, c, s = _data()
    with pytest.raises(TypeError, match=r"x has DLPack dtype \(code 5, 64 bits, 1 lanes\).*float16, bfloat16"):
        ropescale.apply_rotary(_DLPackOnly(torch.zeros(3, 16, dtype=torch.complex64)), c, s)
    with pytest.raises(TypeError, match="x: __dlpack__\\(\\) did not give an unused DLPack capsule"):
        _core.from_dlpack(object(), "x")
    cap = torch.zeros(2, dtype=torch.complex64).__dlpack__()
    with pytest.raises(TypeError):
        _core.from_dlpack(cap, "x")
    arr, bf16 = _core.from_dlpack(torch.arange(3).__dlpack__(), "positions")
    assert arr.tolist() == [0, 1, 2] and arr.dtype == np.int64 and not bf16
    used = torch.arange(3).__dlpack__()
    _core.from_dlpack(used, "positions")
    with pytest.raises(TypeError, match="did not give an unused DLPack capsule"):
        _core.from_dlpack(used, "positions")


def test_bfloat16_positions_and_frequencies_are_read_as_values_not_bits():
    """A bfloat16 positions tensor once went to the kernels as its bit patterns (position 1 read as 16256)."""
    x, _, _ = _data()
    pos = np.arange(3)[:, None]
    pb = torch.from_numpy(pos).bfloat16()
    want = ropescale.apply_rotary_positions(x, pos, THETA)
    np.testing.assert_array_equal(ropescale.apply_rotary_positions(x, pb, THETA), want)
    np.testing.assert_array_equal(ropescale.apply_rotary_positions(torch.from_numpy(x), pb, THETA).numpy(), want)
    np.testing.assert_array_equal(ropescale.cos_sin(pb, THETA)[0].numpy(), ropescale.cos_sin(pos, THETA)[0])
    np.testing.assert_array_equal(ropescale.tables.angles(pb, THETA), ropescale.tables.angles(pos, THETA))
    import ropescale.torch as rt

    np.testing.assert_array_equal(rt.apply_rotary_positions(torch.from_numpy(x), pb, THETA, attention_factor=1.0).numpy(), want)
    np.testing.assert_array_equal(ropescale.rerotate(x, pos, pb + 7, THETA), ropescale.rerotate(x, pos, pos + 7, THETA))


def test_buffer_protocol_objects():
    buf = array.array("d", [1.0, 0.0, 0.0, 1.0])
    y = ropescale.apply_rotary_positions(memoryview(buf), np.array(1), ropescale.inv_freq(4))
    want = ropescale.apply_rotary_positions(np.array([1.0, 0.0, 0.0, 1.0]), np.array(1), ropescale.inv_freq(4))
    np.testing.assert_array_equal(y, want)


# -- the other entry points: rerotate / rebase -----------------------------------------
def test_rerotate_and_rebase_take_tensors_and_write_out_in_place():
    x, _, _ = _data()
    pos = np.arange(3)[:, None]
    k = torch.from_numpy(x.copy())
    moved = ropescale.rerotate(k, torch.from_numpy(pos), torch.from_numpy(pos + 7), torch.from_numpy(THETA))
    assert isinstance(moved, torch.Tensor) and moved.dtype == torch.float32
    np.testing.assert_array_equal(moved.numpy(), ropescale.rerotate(x, pos, pos + 7, THETA))
    ptr = k.data_ptr()
    assert ropescale.rerotate(k, pos, pos + 7, THETA, out=k) is k and k.data_ptr() == ptr
    np.testing.assert_array_equal(k.numpy(), moved.numpy())
    theta2 = ropescale.inv_freq(16, 20000.0)
    rb = ropescale.rebase(torch.from_numpy(x), pos, THETA, theta2, attention_factor=1.1)
    assert isinstance(rb, torch.Tensor)
    np.testing.assert_array_equal(rb.numpy(), ropescale.rebase(x, pos, THETA, theta2, attention_factor=1.1))
    kb = torch.from_numpy(x).bfloat16()
    mb = ropescale.rerotate(kb, pos, pos + 7, THETA)
    assert mb.dtype == torch.bfloat16
    want = torch.from_numpy(ropescale.rerotate(kb.float().numpy(), pos, pos + 7, THETA)).bfloat16()
    assert torch.equal(mb.view(torch.int16), want.view(torch.int16))
    with pytest.raises(TypeError, match="k requires grad"):
        ropescale.rerotate(k.clone().requires_grad_(), pos, pos, THETA)
