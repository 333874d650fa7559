"""ropescale.torch: autograd through the C kernels, the torch-ops device path, and RotaryEmbedding.

Oracles: torch.autograd.gradcheck (finite differences), the NumPy path, a
rotation written out in torch operations here, and transformers' own rotary
modules for the module contract.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ropescale  # noqa: E402
import ropescale.torch as rt  # noqa: E402

THETA = ropescale.inv_freq(16)


def _tables(n, dtype=torch.float64, attention_factor=1.0, r=8):
    return ropescale.cos_sin(torch.arange(n)[:, None], ropescale.inv_freq(2 * r), dtype=dtype,
                             attention_factor=attention_factor)


@pytest.fixture(params=["c", "torch-ops"])
def path(request, monkeypatch):
    monkeypatch.setattr(rt, "_FORCE_TORCH_OPS", request.param == "torch-ops")
    return request.param


def _by_hand(x, cos, sin, interleaved=False, inverse=False):
    """The rotation written out, as the oracle for both paths."""
    r = cos.shape[-1]
    s = -sin if inverse else sin
    if interleaved:
        a, b = x[..., 0:2 * r:2], x[..., 1:2 * r:2]
    else:
        a, b = x[..., :r], x[..., r:2 * r]
    ya, yb = a * cos - b * s, b * cos + a * s
    rot = torch.stack((ya, yb), -1).flatten(-2) if interleaved else torch.cat((ya, yb), -1)
    return torch.cat((rot, x[..., 2 * r:]), -1)


# -- autograd ---------------------------------------------------------------------
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("inverse", [False, True])
def test_gradcheck_tables_form(path, interleaved, inverse):
    x = torch.randn(4, 2, 20, dtype=torch.float64, requires_grad=True)  # 2R = 16 < D = 20: a pass-through tail
    c, s = _tables(4, attention_factor=1.2)
    c, s = c.clone().requires_grad_(), s.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b, d: rt.apply_rotary(a, b, d, interleaved=interleaved, inverse=inverse), (x, c, s))


@pytest.mark.parametrize("interleaved", [False, True])
def test_gradcheck_positions_form(path, interleaved):
    x = torch.randn(5, 3, 16, dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([0, 3, 7, 100, 12345])[:, None]
    assert torch.autograd.gradcheck(
        lambda a: rt.apply_rotary_positions(a, pos, THETA, attention_factor=0.9, interleaved=interleaved), (x,))


def test_backward_is_the_inverse_rotation():
    x = torch.randn(6, 16, dtype=torch.float64, requires_grad=True)
    g = torch.randn(6, 16, dtype=torch.float64)
    rt.apply_rotary_positions(x, torch.arange(6), THETA, attention_factor=1.0).backward(g)
    want = ropescale.apply_rotary_positions(g.numpy(), np.arange(6), THETA, inverse=True)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("interleaved", [False, True])
def test_both_paths_agree_with_the_rotation_by_hand(dtype, interleaved, monkeypatch):
    x = torch.randn(5, 3, 20).to(dtype)
    c, s = _tables(5, torch.float64, attention_factor=1.1)
    want = _by_hand(x.double(), c, s, interleaved).to(dtype)
    got = {}
    for forced in (False, True):
        monkeypatch.setattr(rt, "_FORCE_TORCH_OPS", forced)
        got[forced] = rt.apply_rotary(x, c, s, interleaved=interleaved)
        pos = rt.apply_rotary_positions(x, torch.arange(5)[:, None], THETA, attention_factor=1.1,
                                        interleaved=interleaved)
        assert got[forced].dtype == dtype and pos.dtype == dtype
        tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
        torch.testing.assert_close(got[forced].double(), want.double(), rtol=tol, atol=tol)
        torch.testing.assert_close(pos.double(), want.double(), rtol=tol, atol=tol)
    # to float rounding: the two paths differ by at most one rounding of the result type
    torch.testing.assert_close(got[False].double(), got[True].double(),
                               rtol={torch.float64: 1e-13}.get(dtype, 1e-2 if dtype == torch.bfloat16 else 1e-3),
                               atol=1e-6 if dtype in (torch.float32, torch.float64) else 1e-2)


def test_non_cpu_tensors_take_the_torch_ops_path():
    x = torch.empty(4, 2, 16, device="meta")
    c, s = _tables(4, torch.float32)
    y = rt.apply_rotary(x, c.to("meta"), s.to("meta"), layout="half")
    assert y.device.type == "meta" and y.shape == x.shape
    y = rt.apply_rotary_positions(x, torch.arange(4)[:, None], ropescale.Rope(16))
    assert y.device.type == "meta" and y.shape == x.shape
    # off the CPU the layout is not guessed from the values (that would read them)
    with pytest.raises(ValueError, match="on device meta needs layout='half' or 'full'"):
        rt.apply_rotary(x, c.to("meta"), s.to("meta"))


def test_full_layout_and_its_refusal():
    x = torch.randn(3, 24, dtype=torch.float64)
    c, s = _tables(3, r=8)
    fc, fs = ropescale.tables.to_full(c[:, 0], s[:, 0])
    np.testing.assert_allclose(rt.apply_rotary(x, fc, fs, layout="full").numpy(),
                               rt.apply_rotary(x, c[:, 0], s[:, 0]).numpy(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="full-width"):
        rt.apply_rotary(x, fc, fs)


def test_argument_errors():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        rt.apply_rotary(np.zeros((2, 4)), *_tables(2, r=2))
    with pytest.raises(TypeError, match="inv_freq requires grad"):
        rt.apply_rotary_positions(torch.zeros(2, 4), torch.arange(2), torch.tensor([1.0, 0.1], requires_grad=True),
                                  attention_factor=1.0)
    # the same under no_grad(), with dtypes the fast lane would otherwise take
    f64 = torch.float64
    with torch.no_grad(), pytest.raises(TypeError, match="positions requires grad"):
        rt.apply_rotary_positions(torch.zeros(2, 4), torch.arange(2, dtype=f64).requires_grad_(),
                                  torch.tensor([1.0, 0.1], dtype=f64), attention_factor=1.0)
    with torch.no_grad(), pytest.raises(TypeError, match="inv_freq requires grad"):
        rt.apply_rotary_positions(torch.zeros(2, 4), torch.arange(2), torch.tensor([1.0, 0.1], dtype=f64,
                                                                                 requires_grad=True),
                                  attention_factor=1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tensors_that_require_grad_under_no_grad_are_rotated_without_a_graph(dtype):
    # a parameter-like leaf inside torch.no_grad(): nothing to record, and no refusal either
    x = torch.randn(5, 3, 16).to(dtype).requires_grad_()
    c, s = _tables(5, torch.float32)
    want = ropescale.apply_rotary(x.detach(), c, s)
    want_p = ropescale.apply_rotary_positions(x.detach(), torch.arange(5)[:, None], THETA)
    with torch.no_grad():
        y = rt.apply_rotary(x, c, s)
        yp = rt.apply_rotary_positions(x, torch.arange(5)[:, None], THETA, attention_factor=1.0)
    assert not y.requires_grad and not yp.requires_grad and y.dtype == dtype
    assert torch.equal(y, want) and torch.equal(yp, want_p)


def _raised(fn):
    try:
        fn()
    except (TypeError, ValueError) as e:
        return type(e), str(e)
    return None


@pytest.mark.parametrize("bad", [
    lambda x, c, s: (x, c[:2], s[:2]),                       # leading shapes do not broadcast
    lambda x, c, s: (x, c, s[..., :4]),                      # cos and sin differ
    lambda x, c, s: (x[..., :15], c, s),                     # odd D
    lambda x, c, s: (x[..., :8], c, s),                      # 2R > D
    lambda x, c, s: (x, *ropescale.tables.to_full(c, s)),    # a full-width table without layout="full"
    lambda x, c, s: (x, c.numpy(), s),                       # not a tensor
])
def test_refusals_say_the_same_with_and_without_grad_as_the_array_function(bad):
    x = torch.randn(5, 3, 16)
    c, s = _tables(5, torch.float32)
    args = bad(x, c, s)
    want = _raised(lambda: ropescale.apply_rotary(*args)) if all(isinstance(a, torch.Tensor) for a in args) else \
        (TypeError, "cos must be a torch.Tensor, got ndarray; for NumPy arrays use ropescale.apply_rotary")
    assert want is not None
    assert _raised(lambda: rt.apply_rotary(*args)) == want
    assert _raised(lambda: rt.apply_rotary(args[0].clone().requires_grad_(), *args[1:])) == want


def test_positions_refusals_say_the_same_as_the_array_function():
    x = torch.randn(5, 3, 16)
    for pos, theta in ((torch.arange(4)[:, None], THETA), (torch.arange(5)[:, None], np.tile(THETA, 2)),
                       (torch.arange(5)[:, None] * 1e30, THETA), (torch.arange(5)[:, None], THETA * np.nan)):
        want = _raised(lambda: ropescale.apply_rotary_positions(x, pos, theta))
        assert want is not None
        assert _raised(lambda: rt.apply_rotary_positions(x, pos, theta, attention_factor=1.0)) == want
        assert _raised(lambda: rt.apply_rotary_positions(x.clone().requires_grad_(), pos, theta,
                                                         attention_factor=1.0)) == want


# -- RotaryEmbedding ------------------------------------------------------------------
def test_forward_contract_shapes_dtypes_and_values():
    rope = ropescale.Rope(16, 10000.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32})
    emb = rt.RotaryEmbedding(rope)
    ids = torch.tensor([[0, 1, 2, 3], [5, 9, 40, 7]])
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        cos, sin = emb(torch.zeros(2, 4, 8, dtype=dtype), ids)
        assert cos.shape == (2, 4, 16) and cos.dtype == dtype and sin.dtype == dtype
        wc, ws = ropescale.cos_sin(ids.numpy(), rope.inv_freq, attention_factor=rope.attention_factor,
                                   dtype=np.float64)
        torch.testing.assert_close(cos.double(), torch.from_numpy(np.concatenate([wc, wc], -1)),
                                   rtol=0, atol=float(torch.finfo(dtype).eps))
        torch.testing.assert_close(sin.double(), torch.from_numpy(np.concatenate([ws, ws], -1)),
                                   rtol=0, atol=float(torch.finfo(dtype).eps))
    assert emb.attention_scaling == rope.attention_factor != 1.0


def test_tables_are_exact_at_any_position_on_both_paths(monkeypatch):
    """CPU: the C core per call; device path: the exact table inside its length, float64 angles outside."""
    rope = ropescale.Rope(16, 10000.0, max_position_embeddings=64)
    ids = torch.tensor([[0, 1, 2, 63, 64, 1000, 17, 999, -3, 10**9]])
    wc, ws = ropescale.cos_sin(ids.numpy(), rope.inv_freq, dtype=np.float64)
    for forced in (False, True):
        monkeypatch.setattr(rt, "_FORCE_TORCH_OPS", forced)
        emb = rt.RotaryEmbedding(rope)
        for dtype, tol in ((torch.float64, 3e-16), (torch.float32, 0.0)):
            cos, sin = emb(torch.zeros(1, dtype=dtype), ids)
            want_c = torch.from_numpy(wc).to(dtype).double()
            want_s = torch.from_numpy(ws).to(dtype).double()
            inside = (ids >= 0) & (ids < 64)
            # exact (correctly rounded) where C or the table serve; elsewhere on the device path float64
            # angles, off by their rounding (|p| * 2**-53 radians per unit of theta <= 1)
            bound = torch.clamp(ids.abs().double() * 2.0**-52, min=float(torch.finfo(dtype).eps))[..., None]
            for got, want in ((cos[..., :8], want_c), (sin[..., 8:], want_s)):
                err = (got.double() - want).abs()
                assert float(err[inside].max()) <= tol
                assert bool((err <= (tol if not forced else bound)).all())


def test_device_table_length_is_host_known(monkeypatch):
    monkeypatch.setattr(rt, "_FORCE_TORCH_OPS", True)
    monkeypatch.setattr(rt, "_TABLES", type(rt._TABLES)())
    emb = rt.RotaryEmbedding(ropescale.Rope(16, 10000.0, max_position_embeddings=100))
    emb(torch.zeros(1), torch.arange(5)[None])
    assert [t[0].shape[0] for t in rt._TABLES.values()] == [128]  # the context length, rounded up to 2**k
    emb(torch.zeros(1), torch.arange(300)[None])                    # a longer sequence axis: doubled to cover it
    assert sorted(t[0].shape[0] for t in rt._TABLES.values()) == [512]


def _hf_rotary(rope_parameters, max_pos=32):
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=max_pos,
                                   rope_parameters=dict(rope_parameters))
    return LlamaRotaryEmbedding(cfg), ropescale.Rope.from_hf(cfg)


@pytest.mark.parametrize("params", [
    {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0},
    {"rope_type": "longrope", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": 16,
     "short_factor": [1.0 + 0.1 * k for k in range(8)], "long_factor": [1.0 + k for k in range(8)]},
])
def test_length_dependent_ropes_follow_transformers_call_by_call(params):
    native, rope = _hf_rotary(params)
    ours = rt.RotaryEmbedding(rope)
    x = torch.zeros(1)
    # grow past the trained length, come back inside it, decode steps beyond it
    for n in (8, 40, 36, 20, 64, 10, 33):
        ids = torch.arange(n)[None] if n != 33 else torch.tensor([[32]])
        want = native(x, ids)
        got = ours(x, ids)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=3e-5)  # transformers' float32 angles at t < 64


def test_matches_transformers_static_module():
    native, rope = _hf_rotary({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 16, "rope_theta": 500000.0})
    ids = torch.arange(30)[None]
    for a, b in zip(rt.RotaryEmbedding(rope)(torch.zeros(1), ids), native(torch.zeros(1), ids)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_per_layer_type_ropes():
    ropes = {"sliding_attention": ropescale.Rope(16, 10000.0),
             "full_attention": ropescale.Rope(16, 1e6, {"rope_type": "linear", "factor": 8.0})}
    emb = rt.RotaryEmbedding(ropes)
    ids = torch.arange(5)[None]
    for lt, rope in ropes.items():
        cos, _ = emb(torch.zeros(1, dtype=torch.float64), ids, lt)
        wc, _ = ropescale.cos_sin(ids.numpy(), rope.inv_freq, dtype=np.float64)
        np.testing.assert_array_equal(cos.numpy()[..., 8:], wc)
    with pytest.raises(ValueError, match=r"layer_type must be one of \['full_attention', 'sliding_attention'\]"):
        emb(torch.zeros(1), ids, "global")
    with pytest.raises(ValueError, match="layer_type must be no layer_type"):
        rt.RotaryEmbedding(ropescale.Rope(16))(torch.zeros(1), ids, "full_attention")


def test_half_layout_module_and_bad_arguments():
    emb = rt.RotaryEmbedding(ropescale.Rope(16), layout="half")
    cos, _ = emb(torch.zeros(1), torch.arange(3)[None])
    assert cos.shape == (1, 3, 8)
    with pytest.raises(ValueError, match="layout must be"):
        rt.RotaryEmbedding(ropescale.Rope(16), layout="interleaved")
    with pytest.raises(TypeError, match="rope must be a ropescale.Rope"):
        rt.RotaryEmbedding({"rope_type": "linear"})


# -- no host reads, fake tensors, meta ------------------------------------------------
_HOST_READS = ("aten::_local_scalar_dense", "aten::equal", "aten::is_nonzero", "aten::item")


class NoHostRead(torch.Tensor):
    """A CPU tensor that behaves like device memory: reading a value on the host raises.

    Every aten op is run on the wrapped tensor and rewrapped; ``.item()``,
    ``int()``, ``bool()``, ``torch.equal`` (``_local_scalar_dense`` & co.)
    and ``.numpy()``/``.tolist()`` raise.  ropescale's own ops run their
    device implementation on these tensors, so it is checked too.
    """

    @staticmethod
    def __new__(cls, elem):
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, dtype=elem.dtype, device=elem.device,
                                                   strides=elem.stride(), storage_offset=elem.storage_offset(),
                                                   requires_grad=elem.requires_grad)

    def __init__(self, elem):
        self.elem = elem

    __torch_function__ = torch._C._disabled_torch_function_impl

    def numpy(self, *a, **k):
        raise AssertionError("host read: numpy()")

    def tolist(self):
        raise AssertionError("host read: tolist()")

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in _HOST_READS:
            raise AssertionError(f"host read: {name}")
        kwargs = kwargs or {}
        if name.startswith("ropescale::"):
            return rt._IMPLS[name](*args, **kwargs)  # the device implementation, on these tensors
        un = torch.utils._pytree.tree_map_only(NoHostRead, lambda t: t.elem, (args, kwargs))
        out = func(*un[0], **un[1])
        return torch.utils._pytree.tree_map_only(torch.Tensor, NoHostRead, out)


@pytest.mark.parametrize("method", ["yarn", "linear", "llama3"])
def test_no_host_read_on_the_forward_and_backward_paths(method, monkeypatch):
    monkeypatch.setattr(rt, "_FORCE_TORCH_OPS", True)  # the device implementation
    rope = ropescale.Rope(16, 10000.0, max_position_embeddings=64).extend(256, method)
    emb = rt.RotaryEmbedding(rope)
    ids = NoHostRead(torch.tensor([[0, 5, 63, 64, 300, 7]]))
    x = NoHostRead(torch.randn(1, 6, 16))
    cos, sin = emb(x, ids)
    assert type(cos) is NoHostRead and cos.shape == (1, 6, 16)
    want = rt.RotaryEmbedding(rope)(torch.zeros(1), ids.elem)
    torch.testing.assert_close(cos.elem, want[0], rtol=0, atol=float(torch.finfo(torch.float32).eps))
    q = NoHostRead(torch.randn(1, 6, 2, 16)).requires_grad_()
    y = rt.apply_rotary(q, cos[:, :, None], sin[:, :, None], layout="full")
    y2 = rt.apply_rotary_positions(q, ids[0][:, None], rope)
    (y * y2).sum().backward()
    assert q.grad is not None and q.grad.shape == q.shape
    # ... and the detector works: it catches what 0.2's forward did
    with pytest.raises(AssertionError, match="host read"):
        int(ids.max())


def test_forward_under_fake_tensor_mode_and_on_meta():
    from torch._subclasses.fake_tensor import FakeTensorMode

    for method in ("yarn", "dynamic", "longrope"):
        rope = ropescale.Rope(16, 10000.0, max_position_embeddings=64).extend(256, method)
        with FakeTensorMode():
            emb = rt.RotaryEmbedding(rope)           # made under the mode, as an FSDP meta init does
            cos, sin = emb(torch.empty(2, 7, 32), torch.arange(7)[None].expand(2, 7))
            assert cos.shape == (2, 7, 16) and sin.dtype == torch.float32
            x = torch.empty(2, 7, 4, 16, requires_grad=True)
            rt.apply_rotary(x, cos[:, :, None], sin[:, :, None], layout="full").sum().backward()
            assert x.grad.shape == x.shape
        emb = rt.RotaryEmbedding(rope).to("meta")
        cos, _ = emb(torch.empty(2, 7, 32, device="meta", dtype=torch.bfloat16),
                     torch.arange(7, device="meta")[None])
        assert cos.device.type == "meta" and cos.shape == (1, 7, 16) and cos.dtype == torch.bfloat16
        assert not emb._dynamic_len  # nothing read, nothing recorded


# -- double backward ---------------------------------------------------------------------
@pytest.mark.parametrize("interleaved", [False, True])
def test_double_backward_is_exact(path, interleaved):
    x = torch.randn(4, 2, 20, dtype=torch.float64, requires_grad=True)
    c, s = _tables(4, attention_factor=1.2)
    c, s = c.clone().requires_grad_(), s.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a, b, d: rt.apply_rotary(a, b, d, interleaved=interleaved), (x, c, s))
    pos = torch.tensor([0, 3, 7, 100])[:, None]
    assert torch.autograd.gradgradcheck(
        lambda a: rt.apply_rotary_positions(a, pos, THETA, attention_factor=0.9, interleaved=interleaved), (x,))


# -- a Rope in, factors kept --------------------------------------------------------------
def test_positions_form_takes_a_rope_and_keeps_its_attention_factor(path):
    rope = ropescale.Rope(16, 10000.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32})
    x = torch.randn(6, 2, 16, dtype=torch.float64)
    pos = torch.arange(6)[:, None]
    want = torch.from_numpy(rope.apply(x.numpy(), pos.numpy()))
    torch.testing.assert_close(rt.apply_rotary_positions(x, pos, rope), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="a bare inv_freq needs attention_factor="):
        rt.apply_rotary_positions(x, pos, rope.inv_freq)
    with pytest.raises(TypeError, match="attention_factor comes with the Rope"):
        rt.apply_rotary_positions(x, pos, rope, attention_factor=1.0)


def test_positions_form_length_dependent_rope_needs_seq_len():
    rope = ropescale.Rope(16, 10000.0, {"rope_type": "dynamic", "factor": 4.0, "original_max_position_embeddings": 32})
    x = torch.randn(6, 2, 16, dtype=torch.float64)
    pos = torch.arange(6)[:, None]
    with pytest.raises(ValueError, match="pass seq_len="):
        rt.apply_rotary_positions(x, pos, rope)
    got = rt.apply_rotary_positions(x, pos, rope, seq_len=100)
    want = torch.from_numpy(rope.apply(x.numpy(), pos.numpy(), seq_len=100))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_positions_form_takes_layer_ropes_and_a_layer_type():
    cfg = {"model_type": "gemma3_text", "rope_theta": 1e6, "rope_local_base_freq": 1e4, "head_dim": 16,
           "num_hidden_layers": 6, "max_position_embeddings": 4096,
           "rope_scaling": {"rope_type": "linear", "factor": 8.0}}
    lr = ropescale.layer_ropes(cfg)
    x = torch.randn(5, 2, 16, dtype=torch.float64)
    pos = torch.arange(5)[:, None]
    for lt in ("sliding_attention", "full_attention"):
        want = torch.from_numpy(lr.by_type[lt].apply(x.numpy(), pos.numpy()))
        torch.testing.assert_close(rt.apply_rotary_positions(x, pos, lr, layer_type=lt), want, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="layer_type must be one of"):
        rt.apply_rotary_positions(x, pos, lr)


# -- RotaryEmbedding: refused calls, NaN ids, negative views ---------------------------------
def test_dynamic_module_records_no_length_from_a_refused_call():
    rope = ropescale.Rope(16, 10000.0, {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 32})
    emb = rt.RotaryEmbedding(rope)
    x = torch.zeros(1)
    with pytest.raises(ValueError):
        emb(x, torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError):
        emb(x, torch.tensor([[2.0**60]]))   # refused by the core: |p| > 2**52
    assert not emb._dynamic_len
    # and later calls past the trained length still work, as a fresh module's
    ids = torch.arange(40)[None]
    for a, b in zip(emb(x, ids), rt.RotaryEmbedding(rope)(x, ids)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("method", ["default", "dynamic", "longrope"])
def test_nan_and_inf_float_ids_are_a_value_error(bad, method):
    rope = ropescale.Rope(16, 10000.0, max_position_embeddings=64)
    if method != "default":
        rope = rope.extend(256, method)
    with pytest.raises(ValueError, match="finite"):
        rt.RotaryEmbedding(rope)(torch.zeros(1), torch.tensor([[0.0, 1.0, bad]]))
