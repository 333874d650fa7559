"""ropescale for PyTorch: autograd-aware rotations and a drop-in rotary module.

* :func:`apply_rotary` and :func:`apply_rotary_positions` record autograd.
  On CPU they run ropescale's C kernels (the backward of a rotation is the
  inverse rotation, computed by the same kernels); on any other device they
  compute with torch operations, on cos/sin tables that ropescale formed
  exactly (float64 angles, exact reduction) on the CPU and moved to the device
  once per call.
* :class:`RotaryEmbedding` is an ``nn.Module`` with the forward contract of
  transformers' rotary modules, so it can replace one in a loaded model
  (:func:`ropescale.hf.patch` does that).

Requires ``torch`` (the ``torch`` extra); nothing else in ropescale imports
this module.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import numpy as np
import torch

from . import _arrays, _rotary
from .methods import SPECS, length_at
from .rope import Rope
from .tables import _refuse_full, check_layout, from_full, full_width_error

__all__ = ["apply_rotary", "apply_rotary_positions", "RotaryEmbedding"]

#: Tests set this to run the device (torch-ops) path on CPU tensors.
_FORCE_TORCH_OPS = False

_HALF_TYPES = (torch.float16, torch.bfloat16)
_NUMPY_TYPES = (torch.float16, torch.float32, torch.float64)  # Tensor.numpy() views these

_arrays.know_torch(torch)  # arms the tensor fast lanes of the array functions


def _c_path(x: torch.Tensor) -> bool:
    return x.is_cpu and not _FORCE_TORCH_OPS


def _rotate_ops(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool, inverse: bool) -> torch.Tensor:
    """The rotation in torch operations (differentiable; any device).

    float16/bfloat16 compute in float32 and round once, as the C kernels do.
    """
    r = cos.shape[-1]
    work = torch.float32 if x.dtype in _HALF_TYPES else x.dtype
    xw = x.to(work)
    c = cos.to(device=x.device, dtype=work)
    s = sin.to(device=x.device, dtype=work)
    if inverse:
        s = -s
    if interleaved:
        a, b = xw[..., 0:2 * r:2], xw[..., 1:2 * r:2]
    else:
        a, b = xw[..., :r], xw[..., r:2 * r]
    ya = a * c - b * s
    yb = b * c + a * s
    rot = torch.stack((ya, yb), dim=-1).flatten(-2) if interleaved else torch.cat((ya, yb), dim=-1)
    if 2 * r < x.shape[-1]:
        rot = torch.cat((rot, xw[..., 2 * r:]), dim=-1)
    return rot.to(x.dtype)


def _fast_tables(x: Any, cos: Any, sin: Any, interleaved: Any, inverse: Any) -> Optional[torch.Tensor]:
    """A CPU call that needs no autograd, through the fast lane of :func:`ropescale.apply_rotary`, or None.

    ``Tensor.numpy()`` refuses what it cannot view (another device,
    conj/neg bits) and the lane refuses what it does not
    serve (mixed dtypes, a full-width-looking table, any invalid argument)
    before writing anything; None hands the call to the full path, which
    gives every check's message.
    """
    if _FORCE_TORCH_OPS or type(x) is not torch.Tensor or type(cos) is not torch.Tensor \
            or type(sin) is not torch.Tensor \
            or ((x.requires_grad or cos.requires_grad or sin.requires_grad) and torch.is_grad_enabled()):
        return None   # autograd's path; numpy() would refuse these slowly (a C++ exception, ~30 us)
    views = _arrays._torch_views(x, cos, sin, None)
    if views is None:
        return None
    res = _rotary._fast_rotary(views[0], views[1], views[2], interleaved, inverse, None)
    return None if res is None else torch.from_numpy(res)


def _c_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool, inverse: bool,
              layout: Optional[str] = "half") -> torch.Tensor:
    """The C kernels on detached CPU tensors; half-width tables (checked by the caller for ``"half"``; None:
    refused here when they look full-width, as :func:`ropescale.apply_rotary` does)."""
    res = _fast_tables(x, cos, sin, interleaved, inverse)   # its lane refuses full-width-looking tables
    if res is not None:
        return res
    return _rotary.apply_rotary(x, cos, sin, interleaved=interleaved, inverse=inverse, layout=layout)


class _Rotate(torch.autograd.Function):
    """Rotation by given tables through the C kernels; backward = inverse rotation.

    ``layout`` is None when the forward is to check that the tables are
    half-width (the C path checks them as it goes) or ``"half"`` once checked."""

    @staticmethod
    def forward(ctx, x, cos, sin, interleaved, inverse, layout):
        ctx.interleaved, ctx.inverse = interleaved, inverse
        y = _c_rotate(_no_grad(x), _no_grad(cos), _no_grad(sin), interleaved, inverse, layout)
        # x is needed only for the tables' gradients (products, not rotations)
        ctx.save_for_backward(x if ctx.needs_input_grad[1] or ctx.needs_input_grad[2] else None, cos, sin)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, cos, sin = ctx.saved_tensors
        gx = gc = gs = None
        if ctx.needs_input_grad[0]:
            gx = _c_rotate(grad.contiguous(), _no_grad(cos), _no_grad(sin), ctx.interleaved, not ctx.inverse)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            # Gradients of the tables are products, not rotations: torch's own autograd of the same formula.
            with torch.enable_grad():
                c = cos.detach().requires_grad_(ctx.needs_input_grad[1])
                s = sin.detach().requires_grad_(ctx.needs_input_grad[2])
                y = _rotate_ops(x.detach(), c, s, ctx.interleaved, ctx.inverse)
                wanted = [t for t in (c, s) if t.requires_grad]
                got = list(torch.autograd.grad(y, wanted, grad))
            if ctx.needs_input_grad[1]:
                gc = got.pop(0)
            if ctx.needs_input_grad[2]:
                gs = got.pop(0)
        return gx, gc, gs, None, None, None


class _RotatePositions(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, positions, theta, attention_factor, interleaved, inverse):
        ctx.args = (positions, theta, attention_factor, interleaved, inverse)
        return _c_rotate_positions(x.detach(), positions, theta, attention_factor, interleaved, inverse)

    @staticmethod
    def backward(ctx, grad):
        positions, theta, attention_factor, interleaved, inverse = ctx.args
        gx = _c_rotate_positions(grad.contiguous(), positions, theta, attention_factor, interleaved, not inverse)
        return gx, None, None, None, None, None


def _tensor(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}; for NumPy arrays use "
                        f"ropescale.{'apply_rotary' if name != 'positions' else 'apply_rotary_positions'}")
    return value


def _torch_half_tables(cos: torch.Tensor, sin: torch.Tensor, layout: Optional[str]):
    """As :func:`ropescale.tables.half_tables`, for tensors on any device."""
    check_layout(layout)
    if layout == "full":
        return from_full(cos, sin)
    if layout is not None:
        return cos, sin
    view = None
    if sin.is_cpu and sin.dtype in _NUMPY_TYPES:
        try:
            view = sin.detach().numpy()
        except (TypeError, RuntimeError):  # conj/neg bits: torch's own operations below
            view = None
    if view is not None:
        # CPU: the very test ropescale.apply_rotary makes (and so this function without grad)
        _refuse_full(view)
    elif sin.ndim and sin.shape[-1] >= 2 and sin.shape[-1] % 2 == 0 and sin.numel() and sin.device.type != "meta":
        row = sin[(-1,) * (sin.ndim - 1)]
        h = row.shape[0] // 2
        if bool(torch.equal(row[:h], row[h:])) and not bool(torch.all(row[:h] == row[0])):
            raise full_width_error(sin.shape[-1])
    return cos, sin


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, interleaved: bool = False,
                 inverse: bool = False, layout: Optional[str] = None) -> torch.Tensor:
    """Autograd-aware :func:`ropescale.apply_rotary` for torch tensors on any device.

    ``cos``/``sin`` are half-width ``(..., R)`` tables (``layout="full"`` for
    transformers' ``cat(c, c)``) broadcasting against ``x.shape[:-1]``.  On CPU
    the C kernels run forward and backward; elsewhere torch operations.

    Examples
    --------
    >>> import torch, ropescale.torch as rt
    >>> x = torch.randn(3, 2, 8, dtype=torch.float64, requires_grad=True)
    >>> c, s = ropescale.cos_sin(torch.arange(3)[:, None], ropescale.inv_freq(8), dtype=torch.float64)
    >>> torch.autograd.gradcheck(lambda t: rt.apply_rotary(t, c, s), (x,))
    True
    """
    if layout is None:
        # Plain CPU tensors that need no autograd: the lane of ropescale.apply_rotary, first.
        res = _fast_tables(x, cos, sin, interleaved, inverse)
        if res is not None:
            return res
    x, cos, sin = _tensor("x", x), _tensor("cos", cos), _tensor("sin", sin)
    if _c_path(x) and cos.is_cpu and sin.is_cpu:
        if not (torch.is_grad_enabled() and (x.requires_grad or cos.requires_grad or sin.requires_grad)):
            # nothing to record: skip autograd.Function's bookkeeping (tens of microseconds); a tensor
            # that requires grad under no_grad() is read as it is (the array functions refuse it)
            return _rotary.apply_rotary(_no_grad(x), _no_grad(cos), _no_grad(sin), interleaved=interleaved,
                                        inverse=inverse, layout=layout)
        if layout is not None:
            cos, sin = _torch_half_tables(cos, sin, layout)
            layout = "half"
        return _Rotate.apply(x, cos, sin, bool(interleaved), bool(inverse), layout)
    cos, sin = _torch_half_tables(cos, sin, layout)
    if cos.shape != sin.shape:
        raise ValueError(f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if x.ndim == 0 or x.shape[-1] % 2 or 2 * cos.shape[-1] > x.shape[-1]:
        raise ValueError(f"x's last axis D must be even and >= 2R = {2 * cos.shape[-1]}, got shape {tuple(x.shape)}")
    return _rotate_ops(x, cos, sin, bool(interleaved), bool(inverse))


def _no_grad(t: torch.Tensor) -> torch.Tensor:
    return t.detach() if t.requires_grad else t


def _fast_positions(x: Any, positions: Any, inv_freq: Any, attention_factor: Any, interleaved: Any,
                    inverse: Any) -> Optional[torch.Tensor]:
    """As :func:`_fast_tables`, for :func:`apply_rotary_positions` (positions and
    inv_freq may be CPU tensors or NumPy arrays)."""
    if _FORCE_TORCH_OPS or type(x) is not torch.Tensor or (x.requires_grad and torch.is_grad_enabled()) \
            or x.dtype is torch.bfloat16:
        return None
    try:
        xa = x.numpy()
        if type(positions) is torch.Tensor:
            if positions.requires_grad:  # refused even under no_grad(), by the full path
                return None
            positions = positions.numpy()
        if type(inv_freq) is torch.Tensor:
            if inv_freq.requires_grad:
                return None
            inv_freq = inv_freq.numpy()
    except (TypeError, RuntimeError):
        return None
    res = _rotary._fast_positions(xa, positions, inv_freq, attention_factor, interleaved, inverse, None)
    return None if res is None else torch.from_numpy(res)


def _c_rotate_positions(x: torch.Tensor, positions: Any, theta: Any, attention_factor: Any, interleaved: bool,
                        inverse: bool) -> torch.Tensor:
    res = _fast_positions(x, positions, theta, attention_factor, interleaved, inverse)
    if res is not None:
        return res
    return _rotary.apply_rotary_positions(x, positions, theta, attention_factor=attention_factor,
                                          interleaved=interleaved, inverse=inverse)


def _cpu_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            raise TypeError(f"{name} requires grad; ropescale.torch differentiates with respect to x only: "
                            f"pass {name}.detach()")
        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()  # bfloat16 values, exactly
    return value


def apply_rotary_positions(x: torch.Tensor, positions: Any, inv_freq: Any, *, attention_factor: float = 1.0,
                           interleaved: bool = False, inverse: bool = False) -> torch.Tensor:
    """Autograd-aware :func:`ropescale.apply_rotary_positions` for torch tensors on any device.

    Examples
    --------
    >>> import torch, ropescale.torch as rt
    >>> q = torch.ones(4, 2, 8, requires_grad=True)
    >>> y = rt.apply_rotary_positions(q, torch.arange(4)[:, None], ropescale.inv_freq(8))
    >>> y.sum().backward(); q.grad.shape
    torch.Size([4, 2, 8])
    """
    res = _fast_positions(x, positions, inv_freq, attention_factor, interleaved, inverse)
    if res is not None:
        return res
    x = _tensor("x", x)
    pos = _cpu_array("positions", positions)
    theta = _cpu_array("inv_freq", inv_freq)
    if _c_path(x):
        if not (torch.is_grad_enabled() and x.requires_grad):
            return _rotary.apply_rotary_positions(_no_grad(x), pos, theta, attention_factor=attention_factor,
                                                  interleaved=interleaved, inverse=inverse)
        return _RotatePositions.apply(x, pos, theta, attention_factor, bool(interleaved), bool(inverse))
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = _rotary.cos_sin(pos, theta, attention_factor=attention_factor, dtype=work)
    return apply_rotary(x, cos.to(x.device), sin.to(x.device), interleaved=interleaved, inverse=inverse,
                        layout="half")


# -- the module -------------------------------------------------------------------
_CACHE_LIMIT = 1 << 20  # positions beyond this are computed per call, not cached


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class RotaryEmbedding(torch.nn.Module):
    """A rotary module with transformers' forward contract, tables made by ropescale.

    ``forward(x, position_ids[, layer_type]) -> (cos, sin)``: full-width
    ``cat(c, c)`` tables of shape ``position_ids.shape + (rotary_dim,)`` in
    ``x.dtype`` on ``x.device``, ``attention_scaling`` applied.  Angles are
    formed in float64 and reduced exactly, so the tables are correctly rounded
    at any position (transformers forms ``t * theta`` in float32).

    Parameters
    ----------
    rope : Rope, or a dict ``{layer_type: Rope}``
        A dict serves models with per-layer-type ropes (Gemma 3's sliding and
        full attention): ``forward`` then takes ``layer_type``.
    config : optional
        The model config, kept as ``self.config`` like transformers' modules.
    layout : "full" or "half"
        ``"full"`` returns transformers' usual ``cat(c, c)`` tables;
        ``"half"`` the ``(..., R)`` tables some models (gpt-oss) use.

    Tables of static ropes are cached per device and dtype for positions up
    to the largest seen (rounded up to a power of two, so decoding token by
    token does not rebuild them each step).  ``dynamic`` and ``longrope``
    recompute their frequencies per call from ``max(position_ids) + 1``, as
    transformers does (dynamic keeps the longest length seen until a call
    falls back inside the trained context).

    Examples
    --------
    >>> import torch, ropescale.torch as rt
    >>> emb = rt.RotaryEmbedding(ropescale.Rope(64, 10000.0))
    >>> cos, sin = emb(torch.zeros(1, 5, 8), torch.arange(5)[None])
    >>> cos.shape, cos.dtype
    (torch.Size([1, 5, 64]), torch.float32)
    """

    def __init__(self, rope: Union[Rope, Mapping[str, Rope]], *, config: Any = None, layout: str = "full"):
        super().__init__()
        if layout not in ("full", "half"):
            raise ValueError(f"layout must be 'full' (transformers' cat(c, c)) or 'half', got {layout!r}")
        self.layout = layout
        if isinstance(rope, Rope):
            ropes = {None: rope}
        elif isinstance(rope, Mapping) and rope and all(isinstance(r, Rope) for r in rope.values()):
            ropes = dict(rope)
        else:
            raise TypeError(f"rope must be a ropescale.Rope or a dict of them by layer type, got {type(rope).__name__}")
        self.ropes = ropes
        self.config = config
        self.layer_types = None if None in ropes else sorted(ropes)
        self._cache: dict = {}
        self._dynamic_len: dict = {}
        if None in ropes:
            r = ropes[None]
            self.rope_type = r.method
            self.attention_scaling = r.attention_factor
            self.register_buffer("inv_freq", torch.from_numpy(np.asarray(r.inv_freq, np.float32).copy()), persistent=False)
            self.original_inv_freq = self.inv_freq.clone()
        else:
            self.rope_type = {lt: r.method for lt, r in ropes.items()}
            for lt, r in ropes.items():
                setattr(self, f"{lt}_attention_scaling", r.attention_factor)
                self.register_buffer(f"{lt}_inv_freq", torch.from_numpy(np.asarray(r.inv_freq, np.float32).copy()),
                                     persistent=False)

    def extra_repr(self) -> str:
        return ", ".join(f"{lt}: {r!r}" if lt is not None else repr(r) for lt, r in self.ropes.items())

    def _rope(self, layer_type):
        try:
            return self.ropes[layer_type]
        except KeyError:
            allowed = "no layer_type" if None in self.ropes else f"one of {sorted(self.ropes)}"
            raise ValueError(f"layer_type must be {allowed}, got {layer_type!r}") from None

    def _length(self, rope: Rope, layer_type, seq_len: int) -> int:
        """The sequence length length-dependent frequencies are taken at (``MethodSpec.length_rule``)."""
        n = length_at(rope.method, seq_len, rope.original_max_position_embeddings, self._dynamic_len.get(layer_type))
        self._dynamic_len[layer_type] = n
        return n

    def _tables(self, positions: np.ndarray, theta, attn, dtype, device):
        c, s = _rotary.cos_sin(positions, theta, attention_factor=attn, dtype=dtype)
        if self.layout == "full":
            c, s = torch.cat((c, c), dim=-1), torch.cat((s, s), dim=-1)
        return c.to(device), s.to(device)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, layer_type: Optional[str] = None):
        rope = self._rope(layer_type)
        dtype, device = x.dtype, x.device
        if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            dtype = torch.float32
        ids = position_ids
        if SPECS[rope.method].length_dependent or ids.is_floating_point():
            pos = ids.detach().cpu().numpy()
            seq_len = int(np.floor(pos.max())) + 1 if pos.size else 0
            theta, attn = rope.inv_freq_at(max(self._length(rope, layer_type, seq_len), 1))
            return self._tables(pos, theta, attn, dtype, device)
        if ids.numel() == 0:
            return self._tables(ids.cpu().numpy(), rope.inv_freq, rope.attention_factor, dtype, device)
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= _CACHE_LIMIT:
            return self._tables(ids.detach().cpu().numpy(), rope.inv_freq, rope.attention_factor, dtype, device)
        key = (layer_type, device, dtype)
        table = self._cache.get(key)
        if table is None or table[0].shape[0] <= hi:
            n = _next_pow2(hi + 1)
            table = self._tables(np.arange(n), rope.inv_freq, rope.attention_factor, dtype, device)
            self._cache[key] = table
        ids = ids.to(device=device, dtype=torch.long)
        return table[0][ids], table[1][ids]

    def _apply(self, fn, *args, **kwargs):
        # model.to(...) / .half(): cached tables follow by being rebuilt.
        self._cache.clear()
        return super()._apply(fn, *args, **kwargs)
