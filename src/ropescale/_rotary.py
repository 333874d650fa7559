"""Rotary application: validation and array preparation around the C kernels.

The dtype rule, in one place:

* ``x``, ``out``: float16, float32 or float64; bfloat16 as an ``ml_dtypes``
  array or a torch/JAX tensor (:class:`_arrays.BF16Bits` inside).  The result
  has ``x``'s dtype, or ``out``'s when ``out`` is given (``x`` is then
  converted first; a float ``x`` into a bfloat16 ``out`` is computed in
  float32 and rounded once).
* The kernel computes in float64 for float64 results and in float32 for
  float16, bfloat16 and float32 results (float16 is widened and narrowed per
  row; bfloat16 is converted in the kernel's loads and stores, as uint16 bits
  with the ``bf16`` flag of the C calls: inside this module a ``uint16``
  array or dtype always means bfloat16 bits).
* ``cos``/``sin`` of any float dtype are converted to that compute type.
* Angles (fused form and :func:`cos_sin`) are always formed and reduced in
  float64, then rounded once to the output type.
"""
from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Any, Optional, Tuple

import numpy as np

from . import _arrays, _checks, _core
from .tables import half_tables

_KERNEL_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

#: Largest |position * inv_freq| whose reduction modulo 2 pi is exact (2**34).
MAX_ANGLE = float(_core.MAX_ANGLE)

_num_threads = None


def get_num_threads() -> int:
    """Threads the kernels may use on large arrays (default: ``ROPESCALE_NUM_THREADS`` or the CPU count, at most 8).

    Examples
    --------
    >>> ropescale.get_num_threads() >= 1
    True
    """
    global _num_threads
    if _num_threads is None:
        _num_threads = _threads_from_env(os.environ.get("ROPESCALE_NUM_THREADS"))
    return _num_threads


def _env_int(name: str, env: Optional[str], lo: int, hi: int, what: str, fallback: str) -> Optional[int]:
    """The integer from ``lo`` to ``hi`` an environment variable asks for, or None when it is
    unset or bad; a bad value is ignored with a warning (it must not break every call)."""
    if env is None or not env.strip():
        return None
    text = env.strip()
    # isdecimal, not isdigit: '²' is a digit that int() refuses.
    if text.isascii() and text.isdecimal() and lo <= int(text) <= hi:
        return int(text)
    warnings.warn(f"{name} must be an integer from {lo} to {hi}{what}, got {env!r}; using {fallback}",
                  RuntimeWarning, stacklevel=4)
    return None


def _threads_from_env(env: Optional[str]) -> int:
    """The thread count ROPESCALE_NUM_THREADS asks for (1 to 64; default the CPU count, at most 8)."""
    default = max(1, min(os.cpu_count() or 1, 8))
    n = _env_int("ROPESCALE_NUM_THREADS", env, 1, 64, "", f"{default} threads")
    return default if n is None else n


def _spin_from_env(env: Optional[str]) -> None:
    """ROPESCALE_SPIN_US: how long (microseconds, 0 to 100000) the pool's threads spin before
    they sleep; default 200.  0 suits a machine whose cores are all busy with other work (a
    training step's own threads)."""
    us = _env_int("ROPESCALE_SPIN_US", env, 0, 100000, " (microseconds)", "the default 200")
    if us is not None:
        _core._set_spin(us * 1000)


_spin_from_env(os.environ.get("ROPESCALE_SPIN_US"))


def set_num_threads(n: int) -> int:
    """Set the number of threads for large calls (1 disables threading); returns the previous value.

    Small calls always run on the calling thread.

    Examples
    --------
    >>> prev = ropescale.set_num_threads(1)
    >>> ropescale.get_num_threads()
    1
    >>> _ = ropescale.set_num_threads(prev)
    """
    global _num_threads
    prev = get_num_threads()
    _num_threads = _checks.integer("n", n, minimum=1, maximum=64)
    return prev


_BF16: Any = False  # not looked up yet


def _bfloat16():
    # Looked up once: a failed import is not cached by Python, and retrying it
    # on every call with a non-float dtype costs ~100 us of path scanning.
    global _BF16
    if _BF16 is False:
        try:
            import ml_dtypes  # optional
        except ImportError:  # pragma: no cover - depends on the environment
            _BF16 = None
        else:
            _BF16 = np.dtype(ml_dtypes.bfloat16)
    return _BF16


_U16 = np.dtype(np.uint16)  # bfloat16 bits, in this module only
_F32 = np.dtype(np.float32)


def _bf16_bits(a: np.ndarray) -> Optional[np.ndarray]:
    """The bit patterns (a plain uint16 view) of a bfloat16 array, else None."""
    if type(a) is _arrays.BF16Bits:
        return a.view(np.ndarray)
    if a.dtype.kind == "V":  # ml_dtypes' bfloat16 is a 'V'-kind dtype
        bf16 = _bfloat16()
        if bf16 is not None and a.dtype == bf16:
            return a.view(_U16)
    return None


def _widened(a: np.ndarray) -> np.ndarray:
    """A table or frequency array with bfloat16 widened to float32 (exact)."""
    bits = _bf16_bits(a)
    return a if bits is None else _arrays.bf16_to_f32(bits)


def _kernel_view(a: np.ndarray) -> Tuple[np.ndarray, np.dtype]:
    """``a`` as the kernels see it and its result dtype: bfloat16 as uint16 bits."""
    bits = _bf16_bits(a)
    if bits is not None:
        return bits, _U16
    return a, a.dtype.newbyteorder("=")


def _as_given(result: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A result of bfloat16 bits as ``like``'s bfloat16 kind (ml_dtypes or BF16Bits)."""
    if result.dtype != _U16:
        return result
    if type(like) is _arrays.BF16Bits:
        return result.view(_arrays.BF16Bits)
    return result.view(like.dtype)


def _float_dtype(name: str, dt: np.dtype) -> np.dtype:
    """The native kernel dtype for a float dtype; TypeError for anything else."""
    if dt.kind == "f" and dt.itemsize in (2, 4, 8):
        return dt.newbyteorder("=")
    bf16 = _bfloat16()
    if bf16 is not None and dt == bf16:
        return bf16
    raise TypeError(f"{name} must be a float16, float32 or float64 array (bfloat16 with ml_dtypes), got dtype {dt}")


def _refuse_masked(name: str, value: Any) -> None:
    """A masked array's mask would be silently ignored by the kernels: refuse it."""
    ma = sys.modules.get("numpy.ma")   # no masked array can exist before numpy.ma is imported
    if ma is not None and isinstance(value, ma.MaskedArray):
        raise TypeError(f"{name} is a masked array, whose mask ropescale would ignore; pass "
                        f"{name}.filled(fill_value) or np.asarray({name}) to say what masked entries hold")


def _asarray(name: str, value: Any) -> np.ndarray:
    _refuse_masked(name, value)
    return _checks.asarray(name, value)


def _as_float_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a float array, got {type(value).__name__}")
    if type(value) is not np.ndarray:
        _refuse_masked(name, value)
    arr = value if isinstance(value, np.ndarray) else _asarray(name, value)
    if type(arr) is not _arrays.BF16Bits:
        _float_dtype(name, arr.dtype)
    return arr


def _compute_dtype(dt: np.dtype) -> np.dtype:
    """Kernel dtype for a result dtype (bfloat16 bits are one)."""
    return dt if dt in _KERNEL_DTYPES or dt == _U16 else _F32


def _table_dtype(kernel_dt: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if kernel_dt == np.float64 else np.dtype(np.float32)


def _theta(inv_freq: Any) -> np.ndarray:
    """inv_freq as a contiguous, aligned, non-empty float64 1-D array (no copy if it is one).

    Converted input is checked for finiteness here; an array passed through
    as it is gets the same check from the C glue before any kernel runs.
    """
    if type(inv_freq) is np.ndarray and inv_freq.dtype == np.float64 and inv_freq.ndim == 1 \
            and inv_freq.flags.c_contiguous and inv_freq.flags.aligned and inv_freq.size:
        return inv_freq
    if isinstance(inv_freq, (str, bytes)) or inv_freq is None:
        raise TypeError(f"inv_freq must be a 1-D array of frequencies, got {type(inv_freq).__name__}")
    t = _asarray("inv_freq", inv_freq)
    if t.dtype.kind not in "fiu":
        raise TypeError(f"inv_freq must be a 1-D array of real numbers, got dtype {t.dtype}")
    if t.ndim != 1:
        raise ValueError(f"inv_freq must be 1-D, got shape {t.shape}")
    if t.size == 0:
        raise ValueError("inv_freq must not be empty")
    t = np.require(t, dtype=np.float64, requirements=["C", "A"])
    if not np.all(np.isfinite(t)):
        raise ValueError("inv_freq must be finite")
    return t


_INT64 = np.dtype(np.int64)
_FLOAT64 = np.dtype(np.float64)


def _positions(positions: Any) -> np.ndarray:
    """positions as native int64 or float64 (no copy when already so).

    Their values (finite, ``|p| <= 2**52``, ``|p * inv_freq| <= 2**34``) are
    checked by the C glue in the same pass that reads them.
    """
    p = positions if type(positions) is np.ndarray else None
    if p is None:
        _refuse_masked("positions", positions)
        if isinstance(positions, (str, bytes)) or positions is None:
            raise TypeError(f"positions must be an array of integers or floats, got {type(positions).__name__}")
        p = _asarray("positions", positions)
    dt = p.dtype
    if (dt == _INT64 or dt == _FLOAT64) and p.flags.aligned:
        return p
    if dt.kind in "iu":
        if dt.kind == "u" and dt.itemsize == 8 and p.size and int(p.max()) > 2**52:
            raise ValueError(f"positions must satisfy |position| <= 2**52, got {int(p.max())}")
        return p.astype(_INT64)
    if dt.kind == "f":
        return p.astype(_FLOAT64)
    raise TypeError(f"positions must be integers or real numbers, got dtype {dt}")


@_arrays.cos_sin_entry
def cos_sin(positions: Any, inv_freq: Any, *, attention_factor: float = 1.0, dtype: Any = np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """cos and sin tables of ``positions[..., None] * inv_freq``, times ``attention_factor``.

    Angles are formed in float64 and reduced exactly before one rounding to
    ``dtype``, so the error stays at ``dtype``'s rounding at any position.

    Parameters
    ----------
    positions : array_like of int or float, any shape
        Token positions (finite; ``|position * inv_freq| <= 2**34``).
    inv_freq : array_like, shape (R,)
        Frequencies in radians per position (e.g. from :func:`scaled_inv_freq`).
    attention_factor : float
        Multiplies cos and sin (YaRN / LongRoPE temperature).
    dtype : float16, float32 or float64; bfloat16 (``ml_dtypes.bfloat16``, or ``torch.bfloat16`` without ml_dtypes)
        bfloat16 tables are the float64 rows rounded once, in C.

    Returns
    -------
    (cos, sin) : two arrays of shape ``positions.shape + (R,)`` and ``dtype``.

    Examples
    --------
    >>> c, s = ropescale.cos_sin(np.arange(3), ropescale.inv_freq(4), dtype=np.float64)
    >>> c.shape
    (3, 2)
    >>> bool(np.allclose(c[2], np.cos(2 * ropescale.inv_freq(4))))
    True
    """
    theta = _theta(inv_freq)
    pos = _positions(positions)
    scale = _checks.real("attention_factor", attention_factor, above=0.0)
    if dtype is _arrays.BF16Bits:  # from the array-kind layer: bfloat16 bits
        dt = None
    else:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float16, float32 or float64, got {dtype!r}") from None
        dt = _float_dtype("dtype", dt)
    bf16 = dt is None or dt not in _KERNEL_DTYPES  # the C core rounds float64 rows once to bfloat16
    flat = pos.reshape(-1)
    n, r = flat.shape[0], theta.shape[0]
    c = np.empty((n, r), dtype=_U16 if bf16 else dt)
    s = np.empty((n, r), dtype=_U16 if bf16 else dt)
    _core.cos_sin(flat, theta, scale, c, s, get_num_threads(), bf16)
    if bf16:
        c, s = (c.view(_arrays.BF16Bits), s.view(_arrays.BF16Bits)) if dt is None else (c.view(dt), s.view(dt))
    return c.reshape(pos.shape + (r,)), s.reshape(pos.shape + (r,))


def cos_sin_streams(streams: Any, inv_freq: Any, pair_stream: np.ndarray, *, attention_factor: float = 1.0,
                    dtype: Any = np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """M-RoPE cos/sin: ``streams`` of shape ``(k, ...)``, pair ``j`` at ``streams[pair_stream[j]]``.

    One C table kernel over every stream (``csrc/tables.c``, ``rs_cos_sin_streams``);
    each entry has the bits :func:`cos_sin` gives for that pair at that
    position.  Returns two arrays of shape ``streams.shape[1:] + (R,)``.
    """
    theta = _theta(inv_freq)
    pos = _positions(streams)
    scale = _checks.real("attention_factor", attention_factor, above=0.0)
    dt = _float_dtype("dtype", np.dtype(dtype))
    kdt = dt if dt in _KERNEL_DTYPES else np.dtype(np.float64)
    flat = pos.reshape(pos.shape[0], -1)
    n, r = flat.shape[1], theta.shape[0]
    c = np.empty((n, r), dtype=kdt)
    s = np.empty((n, r), dtype=kdt)
    _core.cos_sin_streams(flat, theta, np.ascontiguousarray(pair_stream, dtype=np.int64), scale, c, s,
                          get_num_threads())
    if kdt != dt:
        c, s = c.astype(dt), s.astype(dt)
    return c.reshape(pos.shape[1:] + (r,)), s.reshape(pos.shape[1:] + (r,))


def _fused_inputs(x, positions, inv_freq, attention_factor, interleaved, inverse, name="x"):
    """The checked inputs both fused forms share: ``(x, theta, positions, scale, interleaved, inverse)``."""
    xa = _check_x(x, name)
    theta = _theta(inv_freq)
    pos = _positions(positions)
    scale = _checks.real("attention_factor", attention_factor, above=0.0)
    il = _checks.boolean("interleaved", interleaved)
    inv = _checks.boolean("inverse", inverse)
    r, d = theta.shape[0], xa.shape[-1]
    if 2 * r > d:
        raise ValueError(f"len(inv_freq) (R={r}) must satisfy 2R <= D, {name}'s last axis (D={d})")
    return xa, theta, pos, scale, il, inv


# The fused M-RoPE kernel takes up to this many streams and pairs (csrc/ropescale.h).
STREAMS_MAX, STREAM_PAIRS_MAX = _core.MAX_STREAMS, _core.PAIR_BLOCK


def apply_rotary_streams(x: Any, streams: Any, inv_freq: Any, pair_stream: np.ndarray, *,
                         attention_factor: float = 1.0, interleaved: bool = False, inverse: bool = False,
                         out: Optional[np.ndarray] = None) -> np.ndarray:
    """Fused M-RoPE: pair ``j`` rotated by the angle of ``streams[pair_stream[j]]``, no table in memory.

    ``streams`` has shape ``(k, ...)`` with ``k <= 8``, its trailing axes
    broadcasting against ``x.shape[:-1]``; at most 256 pairs.  The bits are
    those of :func:`apply_rotary` with :func:`cos_sin_streams`' tables
    (tests/test_mrope.py); used by :meth:`Rope.apply`.
    """
    fast = _fast_streams(x, streams, inv_freq, pair_stream, attention_factor, interleaved, inverse, out)
    if fast is not None:
        return fast
    xa, theta, pos, scale, il, inv = _fused_inputs(x, streams, inv_freq, attention_factor, interleaved, inverse)
    r = theta.shape[0]
    if pos.ndim < 1 or not 1 <= pos.shape[0] <= STREAMS_MAX or r > STREAM_PAIRS_MAX:
        raise ValueError(f"the fused M-RoPE kernel takes 1 to {STREAMS_MAX} streams and at most "
                         f"{STREAM_PAIRS_MAX} pairs, got positions of shape {pos.shape} and {r} pairs")
    _check_broadcast("positions", pos.shape[1:], xa.shape[:-1])
    ps = np.ascontiguousarray(pair_stream, dtype=np.int64)
    if out is not None:
        out = _check_out(out, xa.shape)
    xk, ok = _kernel_view(xa)[0], None if out is None else _kernel_view(out)[0]
    n = get_num_threads()

    def kernel(xv, target, pv, tv, sv):
        _core.rotate_streams(xv, pv, tv, sv, scale, target, il, inv, n, target.dtype == _U16)

    res = _run(kernel, xk, ok, _result_dtype(xk, ok), [pos, theta, ps])
    return out if out is not None else _as_given(res, xa)


def _check_out(out: Any, shape: Tuple[int, ...], name: str = "out") -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    _refuse_masked(name, out)
    if type(out) is not _arrays.BF16Bits:
        _float_dtype(name, out.dtype)
    if out.shape != shape:
        raise ValueError(f"{name} must have the shape of {name[4:] or 'x'} {shape}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only; pass a writeable array")
    return out


def _may_self_overlap(a: np.ndarray) -> bool:
    """May two elements of ``a`` be the same memory?  Sufficient test: sorted by
    stride, each axis steps past everything the smaller axes span."""
    if a.flags.c_contiguous or a.flags.f_contiguous or a.size <= 1:
        return False
    span = a.itemsize
    for stride, n in sorted((abs(st), n) for st, n in zip(a.strides, a.shape) if n > 1):
        if stride < span:
            return True
        span += stride * (n - 1)
    return False


def _check_x(x: Any, name: str = "x") -> np.ndarray:
    xa = _as_float_array(name, x)
    if xa.ndim == 0:
        raise ValueError(f"{name} must have at least one axis (..., D), got a 0-d array")
    d = xa.shape[-1]
    if d % 2:
        raise ValueError(f"{name}'s last axis D must be even, got D={d}")
    return xa


def _broadcast_shape(a: Tuple[int, ...], b: Tuple[int, ...]) -> Tuple[int, ...]:
    """np.broadcast_shapes for two shapes, without its 32-axis limit (NumPy arrays may have 64)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    if any(i != j and i != 1 and j != 1 for i, j in zip(a, b)):
        raise ValueError("shapes do not broadcast")
    return tuple(j if i == 1 else i for i, j in zip(a, b))


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.ctypes.data == b.ctypes.data
        and a.shape == b.shape
        and a.dtype == b.dtype
        and all(sa == sb or n <= 1 for sa, sb, n in zip(a.strides, b.strides, a.shape))
    )


def _ready(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``a`` as native, aligned ``dtype``; the array itself when it already is."""
    if a.dtype == dtype and a.flags.aligned:
        return a
    return np.require(a, dtype=dtype, requirements=["A"])


def _result_dtype(x: np.ndarray, out: Optional[np.ndarray]) -> np.dtype:
    """The dtype rule: ``out``'s dtype when given, else ``x``'s (native order; uint16: bfloat16 bits).

    ``x`` and ``out`` are kernel views (:func:`_kernel_view`).
    """
    return _kernel_dtype("out", out) if out is not None else _kernel_dtype("x", x)


def _kernel_dtype(name: str, a: np.ndarray) -> np.dtype:
    return _U16 if a.dtype == _U16 else _float_dtype(name, a.dtype)


def _exactly_in(x_dt: np.dtype, rdt: np.dtype) -> bool:
    """Does every value of ``x_dt`` convert exactly to ``rdt`` (uint16: bfloat16 bits)?"""
    if x_dt == rdt or x_dt == _F16 and rdt != _U16:
        return True
    return rdt == _FLOAT64 and x_dt in (_F32, _U16) or rdt == _F32 and x_dt == _U16


def _round_into(out: np.ndarray, wide: np.ndarray) -> None:
    """Store a float32/float64 result in ``out`` with one rounding to out's dtype (uint16: bfloat16 bits)."""
    if out.dtype == _U16:
        np.copyto(out, _arrays.f64_to_bf16(wide) if wide.dtype == _FLOAT64 else _arrays.f32_to_bf16(wide))
    else:
        np.copyto(out, wide, casting="unsafe")  # NumPy's float casts round once, to nearest even


def _rounds_once(x: np.ndarray, out: Optional[np.ndarray], rdt: np.dtype) -> Optional[np.dtype]:
    """The float type :func:`_run` rotates in before one rounding into ``out``, or None when the kernel writes
    ``out``'s type itself: for an ``out`` that cannot hold ``x`` exactly, or whose elements share memory."""
    if out is None or (_exactly_in(x.dtype, rdt) and not _may_self_overlap(out)):
        return None
    return _FLOAT64 if _FLOAT64 in (x.dtype, rdt) else _F32


def table_dtype(x: np.ndarray, out: Optional[np.ndarray], rdt: np.dtype) -> np.dtype:
    """The dtype of the cos/sin tables the kernel reads for this call (kernel views, as in :func:`_run`)."""
    wide = _rounds_once(x, out, rdt)
    return _table_dtype(_compute_dtype(rdt) if wide is None else wide)


def _run(kernel, x: np.ndarray, out: Optional[np.ndarray], rdt: np.dtype, readers):
    """Shared driver: out handling, overlap, then one kernel call.

    ``x`` and ``out`` are kernel views (bfloat16 as uint16 bits) and ``rdt``
    the result dtype from :func:`_result_dtype`.  ``readers`` are every other
    input of the kernel (already prepared); each is copied if ``out``
    overlaps it, since the kernel reads inputs while it writes.
    ``kernel(xv, target, *readers)`` runs the C call (bfloat16 when
    ``target`` is uint16).

    An ``out`` narrower than ``x`` (float32 ``x``, float16 ``out``) gets
    ``x`` rotated in x's own compute type and rounded once: converting ``x``
    first would round twice.  An ``out`` whose elements share memory (an
    ``as_strided`` view) is refused unless it is ``x``: which of the values
    written to one place survives would depend on the order of the threads.
    In place on such an ``x``, the rows are computed apart and written in
    order, as NumPy's ufuncs do.
    """
    overlapping = out is not None and _may_self_overlap(out)
    in_place = out is not None and (out is x or _same_view(x, out))
    if overlapping and not in_place:
        raise ValueError("out has elements that share memory (an as_strided view?); which of the values written "
                         "to one place survives would depend on the order of the threads: pass an array whose "
                         "elements are distinct")
    wide = _rounds_once(x, out, rdt)
    if wide is not None:
        xv = _arrays.bf16_to_f32(x) if x.dtype == _U16 else _ready(x, wide)
        target = np.empty(x.shape, dtype=wide)
        kernel(_ready(xv, wide), target, *readers)
        _round_into(out, target)
        return out
    kdt = _compute_dtype(rdt)
    if x.dtype == _U16 and kdt != _U16:  # bfloat16 x, float out: widen x (exact)
        x = _arrays.bf16_to_f32(x)
    if out is None:
        target = np.empty(x.shape, dtype=kdt)
        kernel(_ready(x, kdt), target, *readers)
        return target if kdt == rdt else target.astype(rdt)
    usable = out.dtype == kdt and out.flags.aligned
    if usable and in_place:
        # In place.  An input that is a view of x (a table, the positions,
        # inv_freq) would be read after earlier rows rotated it: copy it first.
        readers = [r.copy() if np.may_share_memory(r, out) else r for r in readers]
        kernel(out, out, *readers)
        return out
    xv = _ready(x, kdt)
    if usable:
        if np.may_share_memory(xv, out):
            xv = xv.copy()
        readers = [r.copy() if np.may_share_memory(r, out) else r for r in readers]
        kernel(xv, out, *readers)
        return out
    target = np.empty(x.shape, dtype=kdt)
    kernel(xv, target, *readers)
    np.copyto(out, target, casting="unsafe")
    return out


_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_MAX_PAIRS = _checks.MAX_DIM // 2


# Fast paths for the common calls (plain NumPy arrays of the kernel dtypes,
# Python bools and floats), where the Python checks would cost several times
# the kernel at decode shapes.  They weaken nothing: what they do not check
# themselves the C glue checks before it writes anything (shapes, broadcasting,
# pair count, alignment, byte order, writeability, overlap, position and
# frequency values), and any refusal returns None, which hands the call to the
# full path: it gives the argument-naming message, or handles the case
# (overlap by copying, conversions).  dtype equality is byte-order aware
# ('>f4' != '<f4'); the C glue refuses non-native order anyway.

def _fast_rotary(x, cos, sin, interleaved, inverse, out):
    # Only what the glue cannot see (array kinds: a subclass such as a masked array takes the full
    # path; Python bools; the pair limit); the glue checks the dtypes (cos/sin float32 for float16 and
    # float32 x, float64 for float64 x, out of x's dtype) and _refuse_full's test (refuse_full=True).
    # At a decode step each line here runs from a cold cache: the dtype tests made in Python cost
    # 4-6 us against a 35 us copy floor (Intel Xeon family 6 model 167).
    if type(x) is not np.ndarray or type(cos) is not np.ndarray or type(sin) is not np.ndarray \
            or (out is not None and type(out) is not np.ndarray) \
            or not (interleaved is False or interleaved is True) or not (inverse is False or inverse is True) \
            or not cos.ndim or cos.shape[-1] > _MAX_PAIRS:
        return None   # subclasses (a masked array is refused) and other kinds: the full path
    bf16 = x.dtype.kind == "V"
    if bf16 and _bf16_pair(x, out) is None:
        return None
    try:
        target = np.empty(x.shape, x.dtype) if out is None else out
    except (ValueError, MemoryError, TypeError):
        return None   # the full path decides what the call raises
    try:
        _core.rotate(x.view(_U16) if bf16 else x, cos, sin, target.view(_U16) if bf16 else target, interleaved,
                     inverse, _num_threads if _num_threads is not None else get_num_threads(), bf16, True)
    except (TypeError, ValueError):
        return None   # refused before writing anything (a MemoryError of the kernel propagates)
    return target


def _bf16_pair(x, out):
    """ml_dtypes' bfloat16 dtype when x (and out, if given) are ml_dtypes bfloat16 arrays, else None:
    the fast lanes then hand the kernels their bits with bf16=True (the full path's view of them,
    without its ~40 us of Python at a decode step)."""
    bf = _bfloat16()
    if bf is None or x.dtype != bf or (out is not None and out.dtype != bf):
        return None
    return bf


def _fast_streams(x, streams, inv_freq, pair_stream, attention_factor, interleaved, inverse, out):
    """apply_rotary_streams' common case straight to the kernel, or None (the full path then
    runs, and raises what it must); the glue's own checks stand behind every shortcut here."""
    if type(pair_stream) is not np.ndarray or pair_stream.dtype != _INT64:
        return None
    return _fast_positions(x, streams, inv_freq, attention_factor, interleaved, inverse, out, pair_stream)


def _fast_positions(x, positions, inv_freq, attention_factor, interleaved, inverse, out, pair_stream=None):
    if type(x) is not np.ndarray or type(positions) is not np.ndarray or type(inv_freq) is not np.ndarray \
            or (out is not None and type(out) is not np.ndarray):
        return None
    # the dtypes (x float16/32/64, out of x's, positions int64/float64, inv_freq float64) are the glue's
    # to check, as in _fast_rotary
    if type(attention_factor) is not float or not 0.0 < attention_factor < math.inf \
            or not (interleaved is False or interleaved is True) or not (inverse is False or inverse is True):
        return None
    bf16 = x.dtype.kind == "V"
    if bf16 and _bf16_pair(x, out) is None:
        return None
    try:
        target = np.empty(x.shape, x.dtype) if out is None else out
    except (ValueError, MemoryError, TypeError):
        return None
    n = _num_threads if _num_threads is not None else get_num_threads()
    xk, tk = (x.view(_U16), target.view(_U16)) if bf16 else (x, target)
    try:
        if pair_stream is None:
            _core.rotate_positions(xk, positions, inv_freq, attention_factor, tk, interleaved, inverse, n, bf16)
        else:
            _core.rotate_streams(xk, positions, inv_freq, pair_stream, attention_factor, tk, interleaved,
                                 inverse, n, bf16)
    except (TypeError, ValueError):
        return None
    return target


@_arrays.rotary_entry(fast=_fast_rotary)
def apply_rotary(x: Any, cos: Any, sin: Any, *, interleaved: bool = False, inverse: bool = False, out: Optional[np.ndarray] = None,
                 layout: Optional[str] = None) -> np.ndarray:
    """Rotate the pairs of ``x``'s first ``2R`` features by the angles whose cos/sin are given.

    Parameters
    ----------
    x : ndarray, shape (..., D), float16/32/64 or bfloat16
        Queries or keys; ``D`` even.  Never modified unless it is ``out``.
        bfloat16 (ml_dtypes, torch, JAX) is rotated by the C kernels in
        float32 and rounded once, without a float32 copy of ``x``.
    cos, sin : ndarray, shape (..., R), ``2R <= D``
        Tables (e.g. from :func:`cos_sin`); their leading axes broadcast
        against ``x.shape[:-1]``: ``(S, 1, R)`` serves ``(B, S, H, D)``,
        ``(S, R)`` serves ``(B, H, S, D)``.  Features ``2R..D-1`` pass through.
    interleaved : bool
        False pairs ``(x[k], x[k+R])`` (HF ``rotate_half``, NeoX); True pairs
        ``(x[2k], x[2k+1])`` (GPT-J, Meta).
    inverse : bool
        Rotate by the negative angle (backward pass, undoing a rotation).
    out : ndarray, optional
        Where to write; ``out=x`` works in place.  Overlap with an input is
        handled by copying that input first (a view whose elements share
        memory is never rotated in place: it behaves as if copied, as NumPy's
        ufuncs do).
    layout : None, "half" or "full"
        ``"full"`` reads transformers' full-width ``cat(c, c)`` tables
        (``(..., 2R)``); ``"half"`` trusts the tables to be half-width; the
        default reads half-width tables and refuses ones whose rows are
        ``cat(c, c)`` (see :mod:`ropescale.tables`).

    Any CPU array kind works for every array argument (torch tensors, JAX
    arrays, DLPack or buffer-protocol objects); the result is of ``x``'s kind.

    Returns
    -------
    ndarray of ``x``'s shape and dtype (``out``'s when given).

    Notes
    -----
    A long call can be interrupted (Ctrl-C): it stops within about 0.1 s and
    raises ``KeyboardInterrupt``; ``out`` (or ``x`` in place) then holds some
    rows rotated and the others as they were.  A call that fails for lack of
    memory raises ``MemoryError`` before writing anything.

    Examples
    --------
    >>> x = np.ones((2, 4), dtype=np.float32)
    >>> c, s = ropescale.cos_sin(np.arange(2), ropescale.inv_freq(4))
    >>> ropescale.apply_rotary(x, c, s).round(3)
    array([[ 1.   ,  1.   ,  1.   ,  1.   ],
           [-0.301,  0.99 ,  1.382,  1.01 ]], dtype=float32)
    """
    xa = _check_x(x)
    il = _checks.boolean("interleaved", interleaved)
    inv = _checks.boolean("inverse", inverse)
    ca = _widened(_as_float_array("cos", cos))
    sa = _widened(_as_float_array("sin", sin))
    ca, sa = half_tables(ca, sa, layout)
    if ca.shape != sa.shape:
        raise ValueError(f"cos and sin must have the same shape, got {ca.shape} and {sa.shape}")
    if ca.ndim == 0:
        raise ValueError("cos and sin must have a last axis of R entries, got 0-d arrays")
    r = ca.shape[-1]
    d = xa.shape[-1]
    if 2 * r > d:
        raise ValueError(f"cos.shape[-1] (R={r}) must satisfy 2R <= D, x's last axis (D={d})")
    if r > _checks.MAX_DIM // 2:
        # Zero-strided (broadcast) tables can be this long without the memory;
        # the kernel's per-row buffer size would overflow (R * 32 bytes).
        raise ValueError(f"cos.shape[-1] (R={r}) must be <= {_checks.MAX_DIM // 2} pairs")
    lead = xa.shape[:-1]
    _check_broadcast("cos/sin", ca.shape[:-1], lead)
    if out is not None:
        out = _check_out(out, xa.shape)
    xk, ok = _kernel_view(xa)[0], None if out is None else _kernel_view(out)[0]
    rdt = _result_dtype(xk, ok)
    tdt = table_dtype(xk, ok, rdt)
    cv = _ready(ca, tdt)
    sv = _ready(sa, tdt)
    n = get_num_threads()

    def kernel(xv, target, cvv, svv):
        _core.rotate(xv, cvv, svv, target, il, inv, n, target.dtype == _U16)

    res = _run(kernel, xk, ok, rdt, [cv, sv])
    return out if out is not None else _as_given(res, xa)


def _check_broadcast(name: str, shape: Tuple[int, ...], lead: Tuple[int, ...]) -> None:
    """``shape`` must broadcast down to ``lead`` (the C glue relies on it)."""
    if shape == lead:
        return
    try:
        bshape = _broadcast_shape(shape, lead)
    except ValueError:
        raise ValueError(f"{name} leading shape {shape} does not broadcast against x's leading shape {lead}") from None
    if bshape != lead:
        raise ValueError(f"{name} leading shape {shape} broadcasts x's leading shape {lead} up to {bshape}; "
                         f"it may only broadcast down to it")


@_arrays.positions_entry(fast=_fast_positions)
def apply_rotary_positions(x: Any, positions: Any, inv_freq: Any, *, attention_factor: float = 1.0, interleaved: bool = False,
                           inverse: bool = False, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Fused rotary application from positions: no cos/sin table in memory.

    Parameters
    ----------
    x : ndarray, shape (..., D)
    positions : array_like of int or float
        Broadcasts against ``x.shape[:-1]``: ``(S, 1)`` for ``(B, S, H, D)``,
        ``(S,)`` for ``(B, H, S, D)``, ``(B, S, 1)`` for per-sequence position
        ids (packed batches, KV-cache offsets).
    inv_freq : array_like, shape (R,), ``2R <= D``
    attention_factor, interleaved, inverse, out
        As in :func:`cos_sin` and :func:`apply_rotary` (its Notes on
        interruption and memory hold here too).

    Examples
    --------
    >>> x = np.ones((3, 2, 8))          # (S, H, D)
    >>> y = ropescale.apply_rotary_positions(x, np.arange(3)[:, None], ropescale.inv_freq(8))
    >>> bool(np.allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1)))
    True
    """
    xa, theta, pos, scale, il, inv = _fused_inputs(x, positions, inv_freq, attention_factor, interleaved, inverse)
    _check_broadcast("positions", pos.shape, xa.shape[:-1])
    if out is not None:
        out = _check_out(out, xa.shape)
    xk, ok = _kernel_view(xa)[0], None if out is None else _kernel_view(out)[0]
    n = get_num_threads()

    # The C core orders the row axes so that rows sharing a position are
    # consecutive: each distinct position's cos/sin are made once.
    def kernel(xv, target, pv, tv):
        _core.rotate_positions(xv, pv, tv, scale, target, il, inv, n, target.dtype == _U16)

    res = _run(kernel, xk, ok, _result_dtype(xk, ok), [pos, theta])
    return out if out is not None else _as_given(res, xa)


# -- q and k in one pass --------------------------------------------------------
# One kernel call rotates q and k (rs_rotate_qk): each position's cos/sin are
# made once for both, and the call's fixed costs are paid once.  The bits are
# those of two apply_rotary_positions calls (tests/test_qk.py); whatever the
# joint kernel does not take (q and k of different dtypes or layouts that do
# not pair up, float x into a bfloat16 out) is done as exactly those two calls.

def _qk_outs(out: Any) -> Tuple[Any, Any]:
    if out is None:
        return None, None
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return out[0], out[1]
    raise TypeError(f"out must be None or a pair (out_q, out_k), got {type(out).__name__}")


def _joint_qk(q, k, positions, theta, scale, il, inv, oq, ok, pair_stream):
    """The joint kernel on NumPy kernel views, or None when it does not take these arrays
    (it then wrote nothing).  New outputs are made when ``oq``/``ok`` are None."""
    dt = q.dtype
    if k.dtype != dt or not (dt == _F32 or dt == _F16 or dt == _FLOAT64 or dt == _U16) \
            or (oq is not None and oq.dtype != dt) or (ok is not None and ok.dtype != dt):
        return None
    try:
        tq = np.empty(q.shape, dt) if oq is None else oq
        tk = np.empty(k.shape, dt) if ok is None else ok
        _core.rotate_qk(q, k, positions, theta, pair_stream, scale, tq, tk, il, inv,
                        _num_threads if _num_threads is not None else get_num_threads(), dt == _U16)
    except (TypeError, ValueError, MemoryError):
        return None
    return tq, tk


def _fast_qk(q, k, positions, inv_freq, attention_factor, interleaved, inverse, out, pair_stream=None):
    """apply_rotary_qk's common case (NumPy arrays of one float dtype) straight to the joint
    kernel, or None; the glue's checks stand behind every shortcut, as in _fast_positions (the
    dtypes too: q, k and the outputs of one kernel dtype, positions int64/float64, inv_freq
    float64; bfloat16 bits take the general path, which passes bf16=True)."""
    if type(q) is not np.ndarray or type(k) is not np.ndarray or type(positions) is not np.ndarray \
            or type(inv_freq) is not np.ndarray \
            or type(attention_factor) is not float or not 0.0 < attention_factor < math.inf \
            or not (interleaved is False or interleaved is True) or not (inverse is False or inverse is True):
        return None
    if out is None:
        try:
            oq, ok = np.empty(q.shape, q.dtype), np.empty(k.shape, k.dtype)
        except (ValueError, MemoryError, TypeError):
            return None
    elif type(out) is tuple and len(out) == 2 and type(out[0]) is np.ndarray and type(out[1]) is np.ndarray:
        oq, ok = out
    else:
        return None
    try:
        _core.rotate_qk(q, k, positions, inv_freq, pair_stream, attention_factor, oq, ok, interleaved, inverse,
                        _num_threads if _num_threads is not None else get_num_threads(), False)
    except (TypeError, ValueError):
        return None   # refused before writing anything (a MemoryError of the kernel propagates, as in _fast_rotary)
    return oq, ok


def _rotate_qk(q, k, positions, inv_freq, attention_factor, interleaved, inverse, out, pair_stream, one, joint=True):
    """The general path of apply_rotary_qk and Rope.apply_qk: every check of both rotations
    before either writes, then the joint kernel (if ``joint``), or ``one(x, out)`` twice (one
    rotation each)."""
    oq, ok = _qk_outs(out)
    views = []
    for name, x, o in (("q", q, oq), ("k", k, ok)):
        xa, kind, _ = _arrays.unwrap(name, x)
        xa, theta, pos, scale, il, inv = _fused_inputs(xa, _arrays._float_in("positions", positions),
                                                       _arrays._float_in("inv_freq", inv_freq), attention_factor,
                                                       interleaved, inverse, name)
        _check_broadcast("positions", pos.shape if pair_stream is None else pos.shape[1:], xa.shape[:-1])
        oa = None
        if o is not None:
            oa = _check_out(_arrays._out(o), xa.shape, "out_" + name)
        views.append((xa, kind, oa))
    (qa, qkind, oqa), (ka, kkind, oka) = views
    qv, kv = _kernel_view(qa)[0], _kernel_view(ka)[0]
    oqv = None if oqa is None else _kernel_view(oqa)[0]
    okv = None if oka is None else _kernel_view(oka)[0]
    ps = None if pair_stream is None else np.ascontiguousarray(pair_stream, dtype=np.int64)
    if joint and isinstance(qv, np.ndarray) and isinstance(kv, np.ndarray):
        res = _joint_qk(qv.view(np.ndarray), kv.view(np.ndarray), pos, theta, scale, il, inv,
                        None if oqv is None else oqv.view(np.ndarray),
                        None if okv is None else okv.view(np.ndarray), ps)
        if res is not None:
            if out is not None:
                return oq, ok
            return (_arrays._of_kind(_as_given(res[0], qa), qkind), _arrays._of_kind(_as_given(res[1], ka), kkind))
    # Two rotations.  An output that shares memory with the other input would
    # change it before its own rotation reads it: that input is copied first.
    if oqa is not None and np.shares_memory(oqa, ka):
        k = ka.copy()
    if oka is not None and np.shares_memory(oka, qa):
        q = qa.copy()
    rq = one(q, oq)
    rk = one(k, ok)
    return (oq, ok) if out is not None else (rq, rk)


def apply_rotary_qk(q: Any, k: Any, positions: Any, inv_freq: Any, *, attention_factor: float = 1.0,
                    interleaved: bool = False, inverse: bool = False, out: Any = None) -> Tuple[Any, Any]:
    """Rotate queries and keys at the same positions in one pass: ``(q_rot, k_rot)``.

    The same bits as ``apply_rotary_positions(q, ...)`` and
    ``apply_rotary_positions(k, ...)``, in one kernel call: each position's
    cos/sin are made once and rotate that token's query and key heads while
    they are in cache.  ``q`` and ``k`` may differ in one axis along which the
    positions repeat (the heads: GQA, MQA), and may be views of one packed
    ``(B, S, 3, H, D)`` array (``qkv[:, :, 0]``, ``qkv[:, :, 1]``).

    Parameters
    ----------
    q, k : ndarray, shape (..., D)
        One dtype and one ``D`` for the one-pass kernel (other pairs are
        rotated by two calls, with the same results).
    positions : array_like of int or float
        Broadcasts against both ``q.shape[:-1]`` and ``k.shape[:-1]``.
    inv_freq, attention_factor, interleaved, inverse
        As in :func:`apply_rotary_positions`.
    out : None or a pair ``(out_q, out_k)``
        Where to write; ``out=(q, k)`` works in place (also on the views of a
        packed qkv array).

    Examples
    --------
    >>> q = np.ones((2, 1, 8, 64), dtype=np.float32)      # (batch, seq, heads, head_dim)
    >>> k = np.ones((2, 1, 2, 64), dtype=np.float32)      # GQA: 2 key heads
    >>> pos = np.array([5, 9])[:, None, None]              # one position per sequence
    >>> qr, kr = ropescale.apply_rotary_qk(q, k, pos, ropescale.inv_freq(64))
    >>> bool(np.array_equal(kr, ropescale.apply_rotary_positions(k, pos, ropescale.inv_freq(64))))
    True
    """
    fast = _fast_qk(q, k, positions, inv_freq, attention_factor, interleaved, inverse, out)
    if fast is not None:
        return fast

    def one(x, o):
        return apply_rotary_positions(x, positions, inv_freq, attention_factor=attention_factor,
                                      interleaved=interleaved, inverse=inverse, out=o)

    return _rotate_qk(q, k, positions, inv_freq, attention_factor, interleaved, inverse, out, None, one)
