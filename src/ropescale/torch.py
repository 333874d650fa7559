"""ropescale for PyTorch: rotations as torch custom ops, and a drop-in rotary module.

The rotations are registered with ``torch.library`` (``torch.ops.ropescale.*``:
a custom op, its fake implementation and its autograd formula), so
``torch.compile(fullgraph=True)``, ``torch.export``, ``FakeTensorMode`` and
``meta`` tensors trace through them without a graph break.

* :func:`apply_rotary` (tables) and :func:`apply_rotary_positions` (a
  :class:`~ropescale.Rope` and positions) record autograd; the backward of a
  rotation is the inverse rotation, itself the same op, so double backward
  works too.  On CPU the op runs ropescale's C kernels; on any other device it
  runs torch operations on cos/sin tables that ropescale formed exactly
  (float64 angles, exact reduction) on the CPU and moved to the device once.
* :class:`RotaryEmbedding` is an ``nn.Module`` with the forward contract of
  transformers' rotary modules, so it can replace one in a loaded model
  (:func:`ropescale.hf.patch` does that).

Nothing on the forward path of a static rope reads a tensor's values on the
host (no ``.item()``, no ``int(tensor)``, no copy to the CPU): a device never
waits for Python.  Length-dependent methods (``SPECS[m].length_dependent``:
dynamic NTK, dynamic YaRN, LongRoPE) take their frequencies at
``max(position_ids) + 1``, which :class:`RotaryEmbedding` reads on the host
exactly where transformers' own modules do (``dynamic_rope_update``, 5.x);
:func:`apply_rotary_positions` asks for ``seq_len=`` instead of reading it.

Requires torch >= 2.4 (the ``torch`` extra: ``pip install ".[torch]"`` from a
clone); nothing else in ropescale imports this module.
"""
import collections
import threading
from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np

try:
    import torch
except ImportError as _e:  # pragma: no cover - exercised by a subprocess test without torch
    raise ImportError("ropescale.torch needs PyTorch >= 2.4, which is not installed: install ropescale's torch "
                      "extra (pip install \".[torch]\" in a clone of ropescale) or torch itself "
                      "(pip install torch)") from _e

if not hasattr(torch, "library") or not hasattr(torch.library, "custom_op"):  # pragma: no cover
    raise ImportError(f"ropescale.torch needs torch >= 2.4 (torch.library.custom_op), found torch "
                      f"{torch.__version__}: upgrade torch")

from torch import Tensor
from torch._subclasses.fake_tensor import is_fake

from . import _arrays, _rotary
from .methods import SPECS, length_at
from .rope import Rope
from .tables import LAYOUTS, _refuse_full, check_layout, from_full

__all__ = ["apply_rotary", "apply_rotary_positions", "RotaryEmbedding"]

#: Tests set this to run the device (torch-ops) path on CPU tensors.
_FORCE_TORCH_OPS = False

_HALF_TYPES = (torch.float16, torch.bfloat16)
_FLOAT_TYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_arrays.know_torch(torch)  # arms the tensor fast lanes of the array functions


def _tracing() -> bool:
    """True while torch.compile / torch.export trace: every call then goes through the ops."""
    return torch.compiler.is_compiling()


def _c_path(x: Tensor) -> bool:
    return x.device.type == "cpu" and not _FORCE_TORCH_OPS


# -- the rotation in torch operations (devices other than the CPU) -----------------
def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF_TYPES else dtype


def _pairs(t: Tensor, r: int, interleaved: bool) -> Tuple[Tensor, Tensor]:
    if interleaved:
        return t[..., 0:2 * r:2], t[..., 1:2 * r:2]
    return t[..., :r], t[..., r:2 * r]


def _rotate_ops(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool, inverse: bool) -> Tensor:
    """The rotation in torch operations: float16/bfloat16 compute in float32 and round once, as the C kernels do."""
    r = cos.shape[-1]
    work = _work_dtype(x.dtype)
    xw = x.to(work)
    c = cos.to(device=x.device, dtype=work)
    s = sin.to(device=x.device, dtype=work)
    if inverse:
        s = -s
    a, b = _pairs(xw, r, interleaved)
    ya = a * c - b * s
    yb = b * c + a * s
    rot = torch.stack((ya, yb), dim=-1).flatten(-2) if interleaved else torch.cat((ya, yb), dim=-1)
    if 2 * r < x.shape[-1]:
        rot = torch.cat((rot, xw[..., 2 * r:]), dim=-1)
    return rot.to(x.dtype)


# -- exact tables on devices ---------------------------------------------------------
# Tables of position 0..L-1, made once per (frequencies, factor, dtype, device) on
# the CPU by the C core (correctly rounded in that dtype) and copied to the device:
# forming them never reads a device tensor.  A few ropes per process at most.
_TABLES: "collections.OrderedDict[tuple, Tuple[Tensor, Tensor]]" = collections.OrderedDict()
_THETAS: "collections.OrderedDict[tuple, Tensor]" = collections.OrderedDict()
_TABLES_KEPT = 16
_TABLES_LOCK = threading.Lock()
#: The longest table kept on a device; positions beyond are computed there in float64.
_TABLE_MAX = 1 << 18


def _device_table(theta: Tensor, attn: float, dtype: torch.dtype, device: torch.device, n: int):
    key = (theta.numpy().tobytes(), attn, dtype, device)
    with _TABLES_LOCK:
        found = _TABLES.get(key)
        if found is not None and found[0].shape[0] >= n:
            _TABLES.move_to_end(key)
            return found
    c, s = _rotary.cos_sin(torch.arange(n), theta.numpy(), attention_factor=attn, dtype=dtype)
    made = (c.to(device), s.to(device))
    with _TABLES_LOCK:
        _TABLES[key] = made
        while len(_TABLES) > _TABLES_KEPT:
            _TABLES.popitem(last=False)
    return made


def _device_theta(theta: Tensor, device: torch.device) -> Tensor:
    """The float64 frequencies on ``device``, copied once: a copy per call would make the host wait for the
    device each time (a blocking host-to-device copy waits for the stream)."""
    key = (theta.numpy().tobytes(), device)
    with _TABLES_LOCK:
        found = _THETAS.get(key)
    if found is None:
        found = theta.to(device=device, dtype=torch.float64)
        with _TABLES_LOCK:
            _THETAS[key] = found
            while len(_THETAS) > _TABLES_KEPT:
                _THETAS.popitem(last=False)
    return found


def _device_cos_sin(positions: Tensor, theta: Tensor, attn: float, dtype: torch.dtype, table_len: int):
    """cos/sin of ``positions`` on their device without reading them.

    Integer positions in ``[0, table_len)`` index the exact table; every other
    position (negative, beyond the table, fractional) is computed on the device
    from float64 angles and rounded once, which differs from the exact value by
    float64's rounding of the angle (far below the result's ulp).
    """
    dev = positions.device
    t64 = theta if dev.type in ("cpu", "meta") else _device_theta(theta, dev)
    ang = positions.to(torch.float64)[..., None] * t64
    c = (torch.cos(ang) * attn).to(dtype)
    s = (torch.sin(ang) * attn).to(dtype)
    n = min(int(table_len), _TABLE_MAX)
    if n > 0 and not positions.is_floating_point() and dev.type != "meta":
        tc, ts = _device_table(theta, attn, dtype, dev, n)
        ids = positions.to(torch.long)
        inside = ((ids >= 0) & (ids < n))[..., None]
        idx = ids.clamp(0, n - 1)
        c = torch.where(inside, tc[idx], c)
        s = torch.where(inside, ts[idx], s)
    return c, s


# -- the custom ops ----------------------------------------------------------------
def _cpu_rotate(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool, inverse: bool, layout: Optional[str]):
    res = _fast_tables(x, cos, sin, interleaved, inverse) if layout is None else None
    if res is None:
        res = _rotary.apply_rotary(x, cos, sin, interleaved=interleaved, inverse=inverse, layout=layout)
    return res


def _rotate_impl(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool, inverse: bool, check_full: bool) -> Tensor:
    """Rotate by half-width tables (``check_full``: refuse tables that look full-width, read on the CPU only)."""
    if _c_path(x):
        return _cpu_rotate(x.detach(), cos.detach(), sin.detach(), interleaved, inverse,
                           None if check_full else "half")
    if check_full and sin.device.type == "cpu":  # the torch-ops path forced on CPU tensors: reading is free
        _refuse_full(sin.detach().to(torch.float64).numpy())
    return _rotate_ops(x, cos, sin, interleaved, inverse)


_rotate_op = torch.library.custom_op("ropescale::rotate", mutates_args=())(_rotate_impl)


@_rotate_op.register_fake
def _(x, cos, sin, interleaved, inverse, check_full):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _rotate_setup(ctx, inputs, output):
    x, cos, sin, interleaved, inverse, _ = inputs
    ctx.interleaved, ctx.inverse = interleaved, inverse
    tables = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
    # x is needed only for the tables' gradients (products, not rotations)
    ctx.save_for_backward(x if tables else None, cos, sin)


def _table_grads(x: Tensor, grad: Tensor, cos: Tensor, sin: Tensor, interleaved: bool, inverse: bool):
    """d loss / d cos and d loss / d sin of ``y = rotate(x, cos, sin)``, summed down to the tables' shape."""
    r = cos.shape[-1]
    work = torch.promote_types(_work_dtype(x.dtype), _work_dtype(cos.dtype))
    a, b = _pairs(x.to(work), r, interleaved)
    ga, gb = _pairs(grad.to(work), r, interleaved)
    gc = ga * a + gb * b
    gs = gb * a - ga * b
    if inverse:
        gs = -gs
    return gc.sum_to_size(cos.shape).to(cos.dtype), gs.sum_to_size(sin.shape).to(sin.dtype)


def _rotate_backward(ctx, grad):
    x, cos, sin = ctx.saved_tensors
    gx = gc = gs = None
    if ctx.needs_input_grad[0]:
        # The inverse rotation, by the same op: differentiable again (double backward).
        gx = _rotate_op(grad, cos, sin, ctx.interleaved, not ctx.inverse, False)
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        gc, gs = _table_grads(x, grad, cos, sin, ctx.interleaved, ctx.inverse)
    return gx, gc, gs, None, None, None


_rotate_op.register_autograd(_rotate_backward, setup_context=_rotate_setup)


def _rotate_positions_impl(x: Tensor, positions: Tensor, inv_freq: Tensor, attention_factor: float,
                         interleaved: bool, inverse: bool) -> Tensor:
    """Rotate by the angles ``positions * inv_freq`` (C's fused kernel on the CPU)."""
    if _c_path(x):
        return _c_rotate_positions(x.detach(), positions, inv_freq.numpy(), attention_factor,
                                   interleaved, inverse)
    c, s = _device_cos_sin(positions, inv_freq, attention_factor, _work_dtype(x.dtype), 0)
    return _rotate_ops(x, c, s, interleaved, inverse)


_rotate_positions_op = torch.library.custom_op("ropescale::rotate_positions", mutates_args=())(_rotate_positions_impl)


@_rotate_positions_op.register_fake
def _(x, positions, inv_freq, attention_factor, interleaved, inverse):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _positions_setup(ctx, inputs, output):
    _, positions, inv_freq, attention_factor, interleaved, inverse = inputs
    ctx.args = (inv_freq, attention_factor, interleaved, inverse)
    ctx.save_for_backward(positions)


def _positions_backward(ctx, grad):
    (positions,) = ctx.saved_tensors
    inv_freq, attention_factor, interleaved, inverse = ctx.args
    gx = _rotate_positions_op(grad, positions, inv_freq, attention_factor, interleaved, not inverse)
    return gx, None, None, None, None, None


_rotate_positions_op.register_autograd(_positions_backward, setup_context=_positions_setup)


def _cos_sin_impl(positions: Tensor, inv_freq: Tensor, attention_factor: float, dtype: torch.dtype,
                table_len: int) -> Tuple[Tensor, Tensor]:
    """Half-width ``(cos, sin)`` of ``positions``: exact on the CPU (C), from the exact table on devices."""
    if positions.device.type == "cpu" and not _FORCE_TORCH_OPS:
        ids = positions.detach()
        if not ids.is_floating_point() and ids.numel():
            lo, hi = int(ids.min()), int(ids.max())  # CPU memory: reading it costs no device a wait
            if lo >= 0 and hi < _TABLE_MAX:
                # rows of the cached exact table (the same bits as computing them: one correct rounding)
                tc, ts = _device_table(inv_freq, attention_factor, dtype, positions.device,
                                       max(min(int(table_len), _TABLE_MAX), _next_pow2(hi + 1)))
                return tc[ids], ts[ids]
        return _rotary.cos_sin(ids, inv_freq.numpy(), attention_factor=attention_factor, dtype=dtype)
    return _device_cos_sin(positions, inv_freq, attention_factor, dtype, table_len)


_cos_sin_op = torch.library.custom_op("ropescale::cos_sin", mutates_args=())(_cos_sin_impl)
#: The ops' implementations by op name (a test runs them on tensors that refuse host reads).
_IMPLS = {"ropescale::rotate": _rotate_impl, "ropescale::rotate_positions": _rotate_positions_impl,
          "ropescale::cos_sin": _cos_sin_impl}


@_cos_sin_op.register_fake
def _(positions, inv_freq, attention_factor, dtype, table_len):
    shape = tuple(positions.shape) + (inv_freq.shape[0],)
    return positions.new_empty(shape, dtype=dtype), positions.new_empty(shape, dtype=dtype)


# -- the eager CPU lanes (no autograd, no tracing): the array functions directly ------
def _fast_tables(x: Any, cos: Any, sin: Any, interleaved: Any, inverse: Any) -> Optional[Tensor]:
    """A CPU call that needs no autograd, through the fast lane of :func:`ropescale.apply_rotary`, or None.

    ``Tensor.numpy()`` refuses what it cannot view (another device,
    conj/neg bits) and the lane refuses what it does not
    serve (mixed dtypes, a full-width-looking table, any invalid argument)
    before writing anything; None hands the call to the full path, which
    gives every check's message.
    """
    if _FORCE_TORCH_OPS or type(x) is not Tensor or type(cos) is not Tensor or type(sin) is not Tensor \
            or ((x.requires_grad or cos.requires_grad or sin.requires_grad) and torch.is_grad_enabled()):
        return None   # autograd's path; numpy() would refuse these slowly (a C++ exception, ~30 us)
    views = _arrays._torch_views(x, cos, sin, None)
    if views is None:
        return None
    res = _rotary._fast_rotary(views[0], views[1], views[2], interleaved, inverse, None)
    return None if res is None else torch.from_numpy(res)


def _fast_positions(x: Any, positions: Any, inv_freq: Any, attention_factor: Any, interleaved: Any,
                    inverse: Any) -> Optional[Tensor]:
    """As :func:`_fast_tables`, for the positions form (positions a CPU tensor or NumPy array)."""
    if _FORCE_TORCH_OPS or type(x) is not Tensor or (x.requires_grad and torch.is_grad_enabled()) \
            or x.dtype is torch.bfloat16:
        return None
    try:
        xa = x.numpy()
        if type(positions) is Tensor:
            if positions.requires_grad:  # refused even under no_grad(), by the full path
                return None
            positions = positions.numpy()
    except (TypeError, RuntimeError):
        return None
    res = _rotary._fast_positions(xa, positions, inv_freq, attention_factor, interleaved, inverse, None)
    return None if res is None else torch.from_numpy(res)


def _c_rotate_positions(x: Tensor, positions: Any, theta: Any, attention_factor: Any, interleaved: bool,
                        inverse: bool) -> Tensor:
    res = _fast_positions(x, positions, theta, attention_factor, interleaved, inverse)
    if res is not None:
        return res
    return _rotary.apply_rotary_positions(x, positions, theta, attention_factor=attention_factor,
                                          interleaved=interleaved, inverse=inverse)


# -- argument checks ----------------------------------------------------------------
def _tensor(name: str, value: Any) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}; for NumPy arrays use "
                        f"ropescale.{'apply_rotary' if name != 'positions' else 'apply_rotary_positions'}")
    return value


def _float_tensor(name: str, t: Tensor) -> Tensor:
    if t.dtype not in _FLOAT_TYPES:
        raise TypeError(f"{name} must be a float16, bfloat16, float32 or float64 tensor, got {t.dtype}")
    return t.resolve_neg()  # a negative view (z.conj().imag) as the values it shows; else t itself


def _check_rows(name: str, lead: torch.Size, xlead: torch.Size) -> None:
    """The array functions' broadcast rule, on shapes (host-known, also while tracing)."""
    try:
        b = torch.broadcast_shapes(tuple(lead), tuple(xlead))
    except RuntimeError:
        raise ValueError(f"{name} leading shape {tuple(lead)} does not broadcast against x's leading shape "
                         f"{tuple(xlead)}") from None
    if tuple(b) != tuple(xlead):
        raise ValueError(f"{name} leading shape {tuple(lead)} broadcasts x's leading shape {tuple(xlead)} up to "
                         f"{tuple(b)}; it may only broadcast down to it")


def _check_x(x: Tensor) -> None:
    if x.ndim == 0:
        raise ValueError("x must have at least one axis (..., D), got a 0-d array")
    if x.shape[-1] % 2:
        raise ValueError(f"x's last axis D must be even, got D={x.shape[-1]}")


def _check_tables(x: Tensor, cos: Tensor, sin: Tensor) -> None:
    if cos.shape != sin.shape:
        raise ValueError(f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if cos.ndim == 0:
        raise ValueError("cos and sin must have a last axis of R entries, got 0-d arrays")
    r, d = cos.shape[-1], x.shape[-1]
    if 2 * r > d:
        raise ValueError(f"cos.shape[-1] (R={r}) must satisfy 2R <= D, x's last axis (D={d})")
    _check_rows("cos/sin", cos.shape[:-1], x.shape[:-1])


def _no_grad(t: Tensor) -> Tensor:
    return t.detach() if t.requires_grad else t


# -- public functions ----------------------------------------------------------------
def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, *, interleaved: bool = False, inverse: bool = False,
                 layout: Optional[str] = None) -> Tensor:
    """Autograd-aware :func:`ropescale.apply_rotary` for torch tensors on any device (a custom op).

    ``cos``/``sin`` are tables that already carry the attention factor (from
    :meth:`Rope.cos_sin`, :class:`RotaryEmbedding` or ``ropescale.cos_sin``):
    half-width ``(..., R)``, or transformers' full-width ``cat(c, c)`` with
    ``layout="full"``; they broadcast against ``x.shape[:-1]``.

    ``layout=None`` refuses tables whose rows look full-width (a rotation by
    the wrong angles otherwise), which needs their values: it is checked on
    CPU tensors, where reading is free.  On other devices that check would stall
    the device, so ``layout`` must be given there (``"half"`` or ``"full"``).

    Examples
    --------
    >>> import torch, ropescale.torch as rt
    >>> x = torch.randn(3, 2, 8, dtype=torch.float64, requires_grad=True)
    >>> c, s = ropescale.cos_sin(torch.arange(3)[:, None], ropescale.inv_freq(8), dtype=torch.float64)
    >>> torch.autograd.gradcheck(lambda t: rt.apply_rotary(t, c, s), (x,))
    True
    """
    tracing = _tracing()
    if layout is None and not tracing:
        # Plain CPU tensors that need no autograd: the lane of ropescale.apply_rotary, first.
        res = _fast_tables(x, cos, sin, interleaved, inverse)
        if res is not None:
            return res
    x, cos, sin = _tensor("x", x), _tensor("cos", cos), _tensor("sin", sin)
    check_layout(layout)
    interleaved, inverse = bool(interleaved), bool(inverse)
    if _c_path(x) and not tracing and not is_fake(x):
        if not (torch.is_grad_enabled() and (x.requires_grad or cos.requires_grad or sin.requires_grad)):
            # nothing to record: the array function, whose checks give the messages; a tensor that
            # requires grad under no_grad() is read as it is (the array functions refuse it)
            return _rotary.apply_rotary(_no_grad(_neg(x)), _no_grad(_neg(cos)), _no_grad(_neg(sin)),
                                        interleaved=interleaved, inverse=inverse, layout=layout)
        if layout == "full":
            cos, sin = from_full(cos, sin)  # CPU: the halves are checked
            layout = "half"
    x = _float_tensor("x", x)
    cos, sin = _float_tensor("cos", cos), _float_tensor("sin", sin)
    _check_x(x)
    if layout == "full":
        # Not compared half against half here: that would read the values (a device sync).
        if cos.ndim == 0 or cos.shape[-1] % 2:
            raise ValueError(f"cos is not a full-width (cat(c, c)) table: its last axis {tuple(cos.shape)[-1:]} "
                             f"is odd")
        r = cos.shape[-1] // 2
        cos, sin = cos[..., :r], sin[..., :r]
    elif layout is None and x.device.type != "cpu":
        raise ValueError(f"ropescale.torch.apply_rotary on device {x.device} needs layout='half' or 'full': telling "
                         f"the two apart reads the tables' values, which would make the device wait for the host")
    if not (_c_path(x) and not tracing and not is_fake(x)):  # on the CPU the op's array function checks
        _check_tables(x, cos, sin)
    if cos.device != x.device:
        cos, sin = cos.to(x.device), sin.to(x.device)
    return _rotate_op(x, cos, sin, interleaved, inverse, layout is None)


def _neg(t: Any) -> Any:
    return t.resolve_neg() if isinstance(t, Tensor) and t.is_neg() else t


def _rope_of(rope: Any, layer_type: Optional[str]) -> Optional[Rope]:
    """The Rope of a Rope or of a LayerRopes' layer type; None for a bare inv_freq."""
    if isinstance(rope, Rope):
        if layer_type is not None:
            raise ValueError(f"layer_type is for a LayerRopes; a single Rope has none, got {layer_type!r}")
        return rope
    by_type = getattr(rope, "by_type", None)
    if isinstance(by_type, Mapping) and hasattr(rope, "layer_types"):
        if layer_type not in by_type:
            raise ValueError(f"layer_type must be one of {sorted(by_type)} for this LayerRopes, got {layer_type!r}")
        found = by_type[layer_type]
        if found is None:
            raise ValueError(f"layers of type {layer_type!r} do not rotate (no rope): nothing to apply")
        return found
    return None


def apply_rotary_positions(x: Tensor, positions: Any, rope: Any, *, layer_type: Optional[str] = None,
                           seq_len: Optional[int] = None, attention_factor: Optional[float] = None,
                           interleaved: Optional[bool] = None, inverse: bool = False) -> Tensor:
    """Rotate ``x`` by ``rope`` at ``positions``: autograd-aware, any device, a custom op.

    Parameters
    ----------
    x : Tensor, shape (..., D)
    positions : Tensor or array of int or float
        Broadcasting against ``x.shape[:-1]`` (``(S, 1)`` for ``(B, S, H, D)``).
    rope : Rope, LayerRopes, or a bare ``inv_freq``
        A :class:`~ropescale.Rope` carries its frequencies, its attention
        factor (YaRN's, LongRoPE's) and its pairing; a
        :class:`~ropescale.LayerRopes` needs ``layer_type``.  A bare
        ``inv_freq`` array needs ``attention_factor=`` given explicitly (1.0
        for a rope that has none), so a method's factor cannot be dropped by
        passing only its frequencies.
    seq_len : int, optional
        The sequence length a length-dependent rope (dynamic NTK, dynamic
        YaRN, LongRoPE) takes its frequencies at; required for them (reading
        ``max(positions)`` would make a device wait for the host).
    interleaved : bool, optional
        The pairing; defaults to the Rope's (False for a bare ``inv_freq``).

    On the CPU the C kernels run (forward and backward); on other devices torch
    operations on float64 angles, rounded once.

    Examples
    --------
    >>> import torch, ropescale.torch as rt
    >>> rope = ropescale.Rope(8, 10000.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})
    >>> q = torch.ones(4, 2, 8, requires_grad=True)
    >>> y = rt.apply_rotary_positions(q, torch.arange(4)[:, None], rope)
    >>> y.sum().backward(); q.grad.shape
    torch.Size([4, 2, 8])
    >>> round(float(y[0].norm() / q[0].norm()), 4) == round(rope.attention_factor, 4)
    True
    """
    found = _rope_of(rope, layer_type)
    if found is not None:
        if attention_factor is not None:
            raise TypeError("attention_factor comes with the Rope: pass either a Rope or a bare inv_freq with "
                            "attention_factor=")
        if found.pair_streams is not None:
            raise ValueError(f"{found!r} rotates M-RoPE position streams: use Rope.apply (NumPy/CPU) for it")
        if SPECS[found.method].length_dependent:
            if seq_len is None:
                raise ValueError(f"rope_type {found.method!r} takes its frequencies at the sequence length: pass "
                                 f"seq_len= (ropescale.torch does not read max(positions) on the host)")
            theta, attn = found.inv_freq_at(seq_len)
        else:
            theta, attn = found.inv_freq, found.attention_factor
        if interleaved is None:
            interleaved = found.interleaved
    else:
        if layer_type is not None or seq_len is not None:
            raise TypeError("layer_type and seq_len need a Rope or LayerRopes as the third argument, not a bare "
                            "inv_freq")
        if attention_factor is None:
            raise TypeError("a bare inv_freq needs attention_factor= (a scaled rope such as YaRN's has one, and "
                            "the frequencies alone drop it): pass the ropescale.Rope instead, or "
                            "attention_factor=1.0 for a rope without one")
        theta, attn = _host_array("inv_freq", rope), attention_factor
    interleaved, inverse = bool(interleaved), bool(inverse)
    if not _tracing():
        res = _fast_positions(x, positions, theta, attn, interleaved, inverse)
        if res is not None:
            return res
    x = _float_tensor("x", _tensor("x", x))
    if isinstance(positions, Tensor):
        if positions.requires_grad:
            raise TypeError("positions requires grad; ropescale.torch differentiates with respect to x only: "
                            "pass positions.detach()")
        if positions.dtype == torch.bfloat16:
            positions = positions.float()  # bfloat16 values, exactly
        else:
            positions = positions.resolve_neg()
    else:
        positions = torch.as_tensor(np.asarray(positions), device=x.device)
    if _c_path(x) and not _tracing() and not is_fake(x):
        if not (torch.is_grad_enabled() and x.requires_grad):
            return _rotary.apply_rotary_positions(_no_grad(x), positions, theta, attention_factor=attn,
                                                  interleaved=interleaved, inverse=inverse)
    # Checked here in eager mode (a Rope's are valid already); under tracing a constant, as given.
    theta = torch.from_numpy(np.array(theta if found is not None or _tracing() else _rotary._theta(theta),
                                      dtype=np.float64))
    _check_x(x)
    r = theta.shape[0]
    if 2 * r > x.shape[-1]:
        raise ValueError(f"len(inv_freq) (R={r}) must satisfy 2R <= D, x's last axis (D={x.shape[-1]})")
    _check_rows("positions", positions.shape, x.shape[:-1])
    if positions.device != x.device:
        positions = positions.to(x.device)
    return _rotate_positions_op(x, positions, theta.to(torch.float64), float(attn), interleaved, inverse)


def _host_array(name: str, value: Any) -> np.ndarray:
    """A frequency argument as a float64 NumPy array (a device tensor is read once, here)."""
    if isinstance(value, Tensor):
        if value.requires_grad:
            raise TypeError(f"{name} requires grad; ropescale.torch differentiates with respect to x only: "
                            f"pass {name}.detach()")
        value = value.detach().cpu()
        value = (value.float() if value.dtype == torch.bfloat16 else value.resolve_neg()).numpy()
    return value


# -- the module -------------------------------------------------------------------
def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


#: Table length when a rope names no context length.
_DEFAULT_TABLE = 4096


def _can_read(t: Tensor) -> bool:
    """Whether ``t`` has values to read (not meta, not a fake tensor of a trace)."""
    return t.device.type != "meta" and not is_fake(t)


class RotaryEmbedding(torch.nn.Module):
    """A rotary module with transformers' forward contract, tables made by ropescale.

    ``forward(x, position_ids[, layer_type]) -> (cos, sin)``: full-width
    ``cat(c, c)`` tables of shape ``position_ids.shape + (rotary_dim,)`` in
    ``x.dtype`` on ``x.device``, ``attention_scaling`` applied.  Angles are
    formed in float64 and reduced exactly, so float32/float16/bfloat16 tables
    are correctly rounded at any position, float64 ones within 3 * 2**-53
    (transformers forms ``t * theta`` in float32).

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

    The forward is one custom op (``torch.ops.ropescale.cos_sin``): on the CPU
    the C core computes the tables of the given positions; on a device they are
    gathered from an exact table of positions ``0 .. L-1`` made once on the CPU,
    where ``L`` is known on the host (the rope's context length rounded up to a
    power of two, doubled when a call's sequence axis is longer); positions
    outside it are computed on the device from float64 angles.  No tensor value
    is read on the host for static ropes.

    ``dynamic``, ``dynamic_yarn`` and ``longrope`` take their frequencies at
    ``max(position_ids) + 1`` as transformers does (dynamic keeps the longest
    length seen until a call falls back inside the trained context): that one
    value is read on the host, where transformers reads it too.  Under
    ``FakeTensorMode`` or on ``meta`` nothing is read (their shapes do not
    depend on it).

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
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be 'full' (transformers' cat(c, c)) or 'half', got {layout!r}")
        self.layout = layout
        if isinstance(rope, Rope):
            ropes = {None: rope}
        elif isinstance(rope, Mapping) and rope and all(isinstance(r, Rope) for r in rope.values()):
            ropes = dict(rope)
        else:
            raise TypeError(f"rope must be a ropescale.Rope or a dict of them by layer type, got {type(rope).__name__}")
        for r in ropes.values():
            if r.pair_streams is not None:
                raise ValueError(f"RotaryEmbedding does not serve M-RoPE position streams ({r!r})")
        self.ropes = ropes
        self.config = config
        self.layer_types = None if None in ropes else sorted(ropes)
        self._dynamic_len: dict = {}
        # host constants the forward passes to the op (lists of Python floats, exact float64)
        # CPU float64 frequencies (not buffers: model.to(device, dtype) must neither move nor round them)
        self._static = {lt: (torch.tensor(r.inv_freq, dtype=torch.float64), float(r.attention_factor))
                        for lt, r in ropes.items()}
        self._table_len = {lt: _next_pow2(min(_TABLE_MAX, int(r.max_position_embeddings or r.trained_length
                                                                 or _DEFAULT_TABLE)))
                           for lt, r in ropes.items()}
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
        """The sequence length length-dependent frequencies are taken at (``MethodSpec.length_rule``);
        not recorded here (a call refused afterwards must not move it)."""
        return length_at(rope.method, seq_len, rope.original_max_position_embeddings,
                         self._dynamic_len.get(layer_type))

    def _at_length(self, rope: Rope, layer_type, ids: Tensor):
        """Frequencies of a length-dependent rope at this call's length (one value read on the host)."""
        if not _can_read(ids):
            # meta / fake: shapes do not depend on the length; the state is left alone
            n = self._dynamic_len.get(layer_type) or int(rope.trained_length or 1)
            theta, attn = rope.inv_freq_at(max(n, 1))
            return torch.tensor(theta, dtype=torch.float64), float(attn)
        if ids.numel() == 0:
            seq_len = 0
        else:
            top = ids.max()
            if ids.is_floating_point():
                top = float(top)  # read on the host, as transformers' dynamic_rope_update does
                if not np.isfinite(top) or not bool(torch.isfinite(ids).all()):
                    raise ValueError("position_ids must be finite, got NaN or inf")
                seq_len = int(np.floor(top)) + 1
            else:
                seq_len = int(top) + 1
        n = self._length(rope, layer_type, seq_len)
        theta, attn = rope.inv_freq_at(max(n, 1))
        if SPECS[rope.method].length_rule == "longest_seen":
            self._dynamic_len[layer_type] = n  # recorded only once the call is known to be valid
        return torch.tensor(theta, dtype=torch.float64), float(attn)

    def forward(self, x: Tensor, position_ids: Tensor, layer_type: Optional[str] = None):
        rope = self._rope(layer_type)
        dtype = x.dtype if x.dtype in _FLOAT_TYPES else torch.float32
        ids = position_ids
        if ids.device != x.device:
            ids = ids.to(x.device)
        ids = ids.resolve_neg()
        if SPECS[rope.method].length_dependent:
            theta, attn = self._at_length(rope, layer_type, ids)
        else:
            theta, attn = self._static[layer_type]
        n = self._table_len[layer_type]
        if ids.ndim and ids.shape[-1] > n:
            n = _next_pow2(ids.shape[-1])  # the sequence axis is known on the host
        # Eager CPU calls skip the dispatcher (~20 us a call); traces and other tensors go through the op.
        eager = type(ids) is Tensor and ids.device.type == "cpu" and not _tracing()
        c, s = (_cos_sin_impl if eager else _cos_sin_op)(ids, theta, attn, dtype, n)
        if self.layout == "full":
            c, s = torch.cat((c, c), dim=-1), torch.cat((s, s), dim=-1)
        return c, s
