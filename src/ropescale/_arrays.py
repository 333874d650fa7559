"""Any CPU array in, the same kind out.

The public rotary functions are written for NumPy arrays.  This module lets
them take what a training script holds instead: torch tensors and JAX arrays
(through zero-copy views of their CPU memory), objects that speak DLPack or
the buffer protocol, and bfloat16 with or without ``ml_dtypes``.  The result
is of ``x``'s kind (``positions``' for :func:`ropescale.cos_sin`): torch in,
torch out; JAX in, JAX out; anything else gives NumPy.

bfloat16 is carried as its bit pattern: a :class:`BF16Bits` view (``uint16``)
of the tensor's own memory, which the rotary functions hand to the C kernels
as bfloat16 (``_core.rotate(..., bf16=True)``).  The kernels widen each
element exactly (a 16-bit shift), compute in float32 and round once to
nearest-even as they store, so a bfloat16 call makes no float32 copy of the
array.  Tables (cos, sin, frequencies) given in bfloat16 are small and are
widened to float32 here.  The NumPy conversions below serve the mixed cases
(float x with a bfloat16 ``out``) and the tests.

Neither torch nor JAX is imported here: a tensor can only exist if its
framework is already in ``sys.modules``.
"""
from __future__ import annotations

import functools
import inspect
import sys
from typing import Any, Callable, Optional, Tuple

import numpy as np

from . import _core

_U16 = np.dtype(np.uint16)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)

NUMPY, TORCH, JAX = "numpy", "torch", "jax"
DLPACK = "dlpack"  # another DLPack exporter's bfloat16: the result is an ml_dtypes array (write into out= to avoid it)

# DLPack device types (dlpack.h): only kDLCPU memory can be read here.
_DL_DEVICES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal", 9: "vpi",
               10: "rocm", 11: "rocm_host", 13: "cuda_managed", 14: "oneapi"}


# -- bfloat16 as bits ---------------------------------------------------------
class BF16Bits(np.ndarray):
    """bfloat16 values as their ``uint16`` bit patterns, which ropescale's functions read as bfloat16.

    Made by :func:`unwrap` for torch and JAX bfloat16 (``x.view(dtype=np.uint16,
    type=BF16Bits)``: no copy, no ml_dtypes) and given back by the rotary
    functions for such input, for :func:`wrap` to turn into the caller's kind.
    Internal: a plain ``uint16`` array is refused as a non-float array.
    """


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) to float32, exactly."""
    return (np.asarray(bits).astype(np.uint32) << 16).view(_F32)


def f32_to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 to bfloat16 bit patterns, rounded to nearest-even (NaN stays NaN)."""
    a = np.ascontiguousarray(a, dtype=_F32)
    u = a.view(np.uint32)
    bits = ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16).astype(_U16)
    nan = np.isnan(a)
    if nan.any():
        bits[nan] = ((u[nan] >> 16) | np.uint32(0x40)).astype(_U16)
    return bits


def f64_to_bf16(a: np.ndarray) -> np.ndarray:
    """float64 to bfloat16 bit patterns with one correct rounding.

    float64 -> float32 rounds to odd (truncate, then set the last bit when
    inexact); float32 keeps 16 more bits than bfloat16, so the following
    nearest-even step rounds as if from the exact value.
    """
    a = np.asarray(a, dtype=_F64)
    with np.errstate(over="ignore", invalid="ignore"):
        f = a.astype(_F32)
        back = f.astype(_F64)
        finite = np.isfinite(a)
        inexact = (back != a) & finite
        over = inexact & (np.abs(back) > np.abs(a))
        if over.any():
            f[over] = np.nextafter(f[over], np.float32(0))
        u = f.view(np.uint32)
        u |= inexact.astype(np.uint32)
    return f32_to_bf16(f)


# -- recognising arrays -------------------------------------------------------
def _torch_tensor(value: Any):
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return torch
    return None


def _jax_array(value: Any):
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(value, getattr(jax, "Array", ())):
        return jax
    return None


def torch_dtype(dtype: Any):
    """The NumPy dtype (or ``"bfloat16"``) for a torch dtype, or None when ``dtype`` is not one."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(dtype, torch.dtype):
        return None
    if dtype == torch.bfloat16:
        return "bfloat16"
    found = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}.get(dtype)
    if found is None:
        raise TypeError(f"dtype must be torch.float16, torch.bfloat16, torch.float32 or torch.float64, got {dtype}")
    return np.dtype(found)


_TENSOR: Any = None  # torch.Tensor once a tensor has been seen (torch is then imported)
_TENSOR_BF16: Any = None
_TENSOR_I16: Any = None
_FROM_NUMPY: Any = None  # torch.from_numpy, looked up with _TENSOR


def know_torch(torch: Any) -> None:
    """Arm the torch fast lanes (they compare ``type(x)`` with ``torch.Tensor``); ``ropescale.torch`` calls it."""
    global _TENSOR, _TENSOR_BF16, _TENSOR_I16, _FROM_NUMPY
    _TENSOR, _TENSOR_BF16, _TENSOR_I16 = torch.Tensor, torch.bfloat16, torch.int16
    _FROM_NUMPY = torch.from_numpy


def unwrap(name: str, value: Any) -> Tuple[Any, str, bool]:
    """``(array, kind, is_bf16)``: a NumPy view of a CPU tensor/array, its kind, and whether it holds bfloat16 bits.

    Values that are neither torch nor JAX nor DLPack exporters are returned as
    they are (kind ``numpy``): the rotary functions convert them with
    ``np.asarray`` (buffer protocol, lists).  No data is copied.
    """
    if isinstance(value, np.ndarray):   # subclasses too: the rotary checks see them (a masked array is refused)
        return value, NUMPY, False
    if type(value) is _TENSOR:
        # The common case first: Tensor.numpy() itself refuses every tensor
        # it cannot view (device, requires_grad, bfloat16, conj/neg bits),
        # so those are diagnosed only after it fails.  bfloat16 is asked for
        # first: the refusal is a C++ exception, ~30 us.
        try:
            if value.dtype is _TENSOR_BF16:
                if value.requires_grad:  # the int16 view would drop it
                    raise TypeError
                return value.view(_TENSOR_I16).numpy().view(dtype=_U16, type=BF16Bits), TORCH, True
            return value.numpy(), TORCH, False
        except (TypeError, RuntimeError):
            pass
    torch = _torch_tensor(value)
    if torch is not None:
        know_torch(torch)
        if not value.is_cpu:
            raise TypeError(f"{name} is a torch tensor on device {value.device}; ropescale's array functions run on CPU "
                            f"memory: use ropescale.torch.apply_rotary / apply_rotary_positions, which run on any "
                            f"device, or pass {name}.cpu()")
        if value.requires_grad:
            raise TypeError(f"{name} requires grad; ropescale's array functions do not record autograd: use "
                            f"ropescale.torch.apply_rotary / apply_rotary_positions (autograd-aware), or pass "
                            f"{name}.detach()")
        if value.is_neg():  # a negative view (z.conj().imag): its values, as torch shows them (a copy)
            value = value.resolve_neg()
        if value.dtype == torch.bfloat16:
            return value.view(torch.int16).numpy().view(dtype=_U16, type=BF16Bits), TORCH, True
        try:
            return value.numpy(), TORCH, False
        except (TypeError, RuntimeError) as e:
            raise TypeError(f"{name}: torch tensor of dtype {value.dtype} is not supported ({e}); use float16, "
                            f"bfloat16, float32 or float64 (integers for positions)") from None
    jax = _jax_array(value)
    if jax is not None:
        platforms = sorted({d.platform for d in value.devices()})
        if platforms != ["cpu"]:
            raise TypeError(f"{name} is a JAX array on {', '.join(platforms)}; ropescale's array functions run on CPU "
                            f"memory: pass jax.device_put({name}, jax.devices('cpu')[0])")
        arr = np.asarray(value)
        if arr.dtype.name == "bfloat16":
            return arr.view(dtype=_U16, type=BF16Bits), JAX, True
        return arr, JAX, False
    if hasattr(value, "__dlpack__") and hasattr(value, "__dlpack_device__") and not isinstance(value, np.generic):
        arr, bf16 = _from_dlpack(name, value)
        if bf16:
            return arr.view(type=BF16Bits), DLPACK, True
        return arr, NUMPY, False
    return value, NUMPY, False


# The newest DLPack ABI ropescale's reader knows (_core.c's rs_dl_versioned): asked for so that
# exporters hand over 1.x capsules, whose read-only flag lets them export read-only memory.
_DLPACK_MAX_VERSION = (1, 0)


def _from_dlpack(name: str, value: Any) -> Tuple[np.ndarray, bool]:
    """``(view, is_bf16)`` of any CPU DLPack exporter; every failure of a foreign exporter is a TypeError naming
    ``name`` (its own exceptions, whatever they are, do not escape raw)."""
    what = type(value).__name__
    try:
        device = value.__dlpack_device__()
        dev = int(device[0])
    except Exception as e:  # an exporter's own code: anything can come out of it
        raise TypeError(f"{name}: {what}.__dlpack_device__() did not give a DLPack device (an integer device "
                        f"type and an id): {type(e).__name__}: {e}") from None
    if dev != 1:
        raise TypeError(f"{name} is on DLPack device {_DL_DEVICES.get(dev, dev)}; ropescale's array functions "
                        f"need CPU memory: move it to the CPU first")
    try:
        try:
            capsule = value.__dlpack__(max_version=_DLPACK_MAX_VERSION)
        except TypeError:  # an exporter older than the 2023 array API takes no max_version
            capsule = value.__dlpack__()
    except Exception as e:
        raise TypeError(f"{name}: cannot read {what} through DLPack ({type(e).__name__}: {e}); use float16, "
                        f"bfloat16, float32 or float64") from None
    # ropescale's own reader: NumPy's refuses DLPack's bfloat16 code, which is read here as bits
    return _core.from_dlpack(capsule, name)


def wrap(result: np.ndarray, kind: str, bf16: bool):
    """``result`` (bfloat16 as uint16 bits when ``bf16``) as an array of ``kind``."""
    if kind == TORCH:
        torch = sys.modules["torch"]
        if bf16:
            return torch.from_numpy(np.ascontiguousarray(result).view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(result)
    if bf16:
        result = _bits_as_ml_dtypes(result)
    if kind == JAX:
        return sys.modules["jax"].numpy.asarray(result)
    return result


def _bits_as_ml_dtypes(bits: np.ndarray) -> np.ndarray:
    try:
        import ml_dtypes  # optional; JAX depends on it
    except ImportError:
        raise TypeError("a bfloat16 NumPy array needs the ml_dtypes package (pip install ml_dtypes); torch "
                        "tensors work without it") from None
    return np.ascontiguousarray(bits).view(ml_dtypes.bfloat16)


def _float_in(name: str, value: Any) -> Any:
    """A table, frequency or position argument as NumPy, bfloat16 widened to float32 (exactly; these are small).

    Never :func:`unwrap` alone for them: its bfloat16 *bits* read as numbers would be wrong values."""
    arr, _, bf16 = unwrap(name, value)
    return bf16_to_f32(arr) if bf16 else arr


def _of_kind(result: np.ndarray, kind: str):
    """The rotary functions' result as ``kind``: :class:`BF16Bits` are bfloat16 bits.

    ``kind`` is NumPy only for NumPy-like input, whose result is already
    NumPy (an ml_dtypes bfloat16 array for ml_dtypes input).
    """
    if kind == NUMPY:
        return result
    return wrap(result, kind, type(result) is BF16Bits)


def _out(out: Any) -> Any:
    """``out`` as a writeable NumPy view of its memory (bfloat16 as :class:`BF16Bits`)."""
    oa, kind, _ = unwrap("out", out)
    if kind == JAX:
        raise TypeError("out is a JAX array, which is immutable; leave out=None and use the returned array")
    return oa


def _check_torch_out(out: Any) -> None:
    """Refuse, as torch's own in-place operations do, an inference tensor outside inference mode."""
    if out.is_inference() and not sys.modules["torch"].is_inference_mode_enabled():
        raise ValueError("out is an inference tensor (made under torch.inference_mode()); torch refuses in-place "
                         "updates to it outside inference mode, and so does ropescale: write into it inside "
                         "torch.inference_mode(), or pass a tensor made outside it")


def _written(out: Any) -> Any:
    """A torch ``out`` was written through a NumPy view: bump its version counter, as torch's in-place ops do,
    so that autograd refuses a backward through an earlier use of its old values."""
    sys.modules["torch"].autograd.graph.increment_version(out)
    return out


def _into(out: Any, write: Callable[[Any], Any]) -> Any:
    """``write(view)`` into ``out``, with torch's in-place rules for a torch tensor."""
    torch = _torch_tensor(out)
    if torch is None:
        write(_out(out))
        return out
    _check_torch_out(out)
    if out.is_neg():
        # A negative view stores -value: write into plain memory and let torch copy it in.
        tmp = torch.empty(out.shape, dtype=out.dtype)
        write(_out(tmp))
        out.copy_(tmp)
        return out
    write(_out(out))
    return _written(out)


# -- entry points -------------------------------------------------------------
def _foreign(value: Any) -> bool:
    """True for arrays of another framework (torch, JAX, DLPack exporters): they need :func:`unwrap`."""
    return type(value) is not np.ndarray and hasattr(value, "__dlpack__") and not isinstance(value, np.generic)


def _torch_views(x: Any, a: Any, b: Any, out: Any) -> Optional[tuple]:
    """NumPy views of three CPU torch tensors and ``out`` for the fast lane, or None.

    ``Tensor.numpy()`` refuses whatever it cannot view (device, requires_grad,
    conj bits); the general path then says why.  bfloat16 tensors go to the
    general path at once (numpy() would refuse them slowly).
    """
    if type(x) is not _TENSOR or type(a) is not _TENSOR or type(b) is not _TENSOR \
            or (out is not None and (type(out) is not _TENSOR or out.is_inference())) or x.dtype is _TENSOR_BF16:
        return None
    try:
        xv = x.numpy()
        return xv, a.numpy(), b.numpy(), (None if out is None else xv if out is x else out.numpy())
    except (TypeError, RuntimeError):
        return None


def rotary_entry(fn: Optional[Callable] = None, *, fast: Optional[Callable] = None) -> Callable:
    """Wrap ``apply_rotary(x, cos, sin, *, ..., out=None)`` to accept any CPU array kind.

    ``fast(x, cos, sin, interleaved, inverse, out)``, when given, is tried
    first on NumPy arrays (after viewing tensors) with the default ``layout``;
    it returns the result, or None to hand the call to ``fn`` (which then
    gives every check's message).
    """
    if fn is None:
        return functools.partial(rotary_entry, fast=fast)

    def run(xa, ca, sa, interleaved, inverse, o, layout):
        if fast is not None and layout is None:
            res = fast(xa, ca, sa, interleaved, inverse, o)
            if res is not None:
                return res
        return fn(xa, ca, sa, interleaved=interleaved, inverse=inverse, out=o, layout=layout)

    @functools.wraps(fn)
    def apply_rotary(x, cos, sin, *, interleaved=False, inverse=False, out=None, layout=None):
        if type(x) is np.ndarray and type(cos) is np.ndarray and type(sin) is np.ndarray \
                and (out is None or type(out) is np.ndarray):
            if fast is not None and layout is None:  # run()'s first step, one frame less at a decode step
                res = fast(x, cos, sin, interleaved, inverse, out)
                if res is not None:
                    return res
            return fn(x, cos, sin, interleaved=interleaved, inverse=inverse, out=out, layout=layout)
        views = _torch_views(x, cos, sin, out)
        if views is not None:
            res = run(views[0], views[1], views[2], interleaved, inverse, views[3], layout)
            return _written(out) if out is not None else _FROM_NUMPY(res)
        xa, kind, _ = unwrap("x", x)
        ca = _float_in("cos", cos)
        sa = _float_in("sin", sin)
        if out is None:
            return _of_kind(run(xa, ca, sa, interleaved, inverse, None, layout), kind)
        return _into(out, lambda o: run(xa, ca, sa, interleaved, inverse, o, layout))

    return apply_rotary


def positions_entry(fn: Optional[Callable] = None, *, fast: Optional[Callable] = None) -> Callable:
    """Wrap ``apply_rotary_positions(x, positions, inv_freq, *, ..., out=None)``.

    ``fast(x, positions, inv_freq, attention_factor, interleaved, inverse,
    out)`` is tried first when given, as in :func:`rotary_entry`.
    """
    if fn is None:
        return functools.partial(positions_entry, fast=fast)

    def run(xa, pa, ta, af, interleaved, inverse, o):
        if fast is not None:
            res = fast(xa, pa, ta, af, interleaved, inverse, o)
            if res is not None:
                return res
        return fn(xa, pa, ta, attention_factor=af, interleaved=interleaved, inverse=inverse, out=o)

    @functools.wraps(fn)
    def apply_rotary_positions(x, positions, inv_freq, *, attention_factor=1.0, interleaved=False, inverse=False,
                               out=None):
        if type(x) is np.ndarray and (out is None or type(out) is np.ndarray) \
                and not _foreign(positions) and not _foreign(inv_freq):
            return run(x, positions, inv_freq, attention_factor, interleaved, inverse, out)
        views = _torch_views(x, positions, inv_freq, out)
        if views is not None:
            res = run(views[0], views[1], views[2], attention_factor, interleaved, inverse, views[3])
            return _written(out) if out is not None else _FROM_NUMPY(res)
        xa, kind, _ = unwrap("x", x)
        pa = _float_in("positions", positions)
        ta = _float_in("inv_freq", inv_freq)
        if out is None:
            return _of_kind(run(xa, pa, ta, attention_factor, interleaved, inverse, None), kind)
        return _into(out, lambda o: run(xa, pa, ta, attention_factor, interleaved, inverse, o))

    return apply_rotary_positions


def cos_sin_entry(fn: Callable) -> Callable:
    """Wrap ``cos_sin(positions, inv_freq, *, attention_factor, dtype)``: tables of ``positions``' kind."""

    @functools.wraps(fn)
    def cos_sin(positions, inv_freq, *, attention_factor=1.0, dtype=np.float32):
        tdt = torch_dtype(dtype)
        if type(positions) is np.ndarray and tdt is None and not _foreign(inv_freq):
            return fn(positions, inv_freq, attention_factor=attention_factor, dtype=dtype)
        pa, kind, bits = unwrap("positions", positions)
        if bits:  # bfloat16 positions: their values (every one is exact in float32)
            pa = bf16_to_f32(pa)
        ta = _float_in("inv_freq", inv_freq)
        if tdt is not None and kind != TORCH:
            kind = TORCH  # a torch dtype asks for torch tables
        bf16 = tdt == "bfloat16" or (isinstance(dtype, str) and dtype == "bfloat16" and kind != NUMPY)
        if bf16:  # the C core rounds the float64 rows once to bfloat16 bits
            c, s = fn(pa, ta, attention_factor=attention_factor, dtype=BF16Bits)
            return wrap(c, kind, True), wrap(s, kind, True)
        c, s = fn(pa, ta, attention_factor=attention_factor, dtype=tdt if tdt is not None else dtype)
        return wrap(c, kind, False), wrap(s, kind, False)

    return cos_sin


def any_kind(fn: Callable) -> Callable:
    """Wrap ``fn(x, *arrays, ..., out=None)`` (the first argument decides the result's kind).

    For entry points of the form ``f(k, a, b, c, *, ..., out=None)`` such as
    :func:`ropescale.rerotate`: every positional argument may be a torch
    tensor, JAX array or DLPack object; a bfloat16 ``x`` (and ``out``) stays
    bfloat16 bits for the kernels, the other arrays are widened to float32.
    """
    names = [p.name for p in inspect.signature(fn).parameters.values()
             if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]

    @functools.wraps(fn)
    def wrapper(x, *arrays, out=None, **kw):
        if type(x) is np.ndarray and (out is None or type(out) is np.ndarray) \
                and not any(_foreign(a) for a in arrays):
            return fn(x, *arrays, out=out, **kw)
        xa, kind, _ = unwrap(names[0], x)
        rest = [_float_in(n, a) for n, a in zip(names[1:], arrays)]
        if out is None:
            return _of_kind(fn(xa, *rest, **kw), kind)
        return _into(out, lambda o: fn(xa, *rest, out=o, **kw))

    return wrapper
