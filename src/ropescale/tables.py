"""cos/sin tables in every framework's layout.

ropescale (like flash-attn's ``apply_rotary_emb``) uses *half-width* tables:
``cos[..., k] = cos(t * theta_k)`` for the ``R`` pairs, shape ``(..., R)``.
The other conventions a training or serving script meets:

=====================  ============================================  ===================
convention             shape, content                                functions
=====================  ============================================  ===================
ropescale, flash-attn  ``(..., R)`` each                             (native)
transformers (HF)      ``(..., 2R)`` each, ``cat(c, c)``             :func:`to_full`, :func:`from_full`
vLLM                   one ``(N, 2R)`` cache, ``cat(cos, sin)``      :func:`to_vllm`, :func:`from_vllm`
angles                 ``(..., R)`` float64 ``t * theta_k``          :func:`angles`, :func:`from_angles`
=====================  ============================================  ===================

Every function takes and returns NumPy arrays or torch tensors (the kind that
came in).  :func:`ropescale.apply_rotary` takes ``layout="full"`` to read an
HF table directly, and refuses a full-width table passed as half-width (which
would rotate the wrong features of a partial-rotary head).
"""
from __future__ import annotations

import sys
from typing import Any, Optional, Tuple

import numpy as np

from . import _checks
from ._arrays import _float_in

LAYOUTS = ("half", "full")


def _is_torch(a: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(a, torch.Tensor)


def _cat(a: Any, b: Any) -> Any:
    if _is_torch(a):
        return sys.modules["torch"].cat((a, b), dim=-1)
    return np.concatenate((np.asarray(a), np.asarray(b)), axis=-1)


def _width(name: str, a: Any) -> int:
    shape = tuple(a.shape) if hasattr(a, "shape") else np.shape(a)
    if len(shape) == 0:
        raise ValueError(f"{name} must have a last axis of table entries, got a 0-d array")
    return shape[-1]


def _halves_equal(a: Any) -> bool:
    h = _width("table", a) // 2
    if _is_torch(a):
        return bool(sys.modules["torch"].equal(a[..., :h], a[..., h:]))
    a = np.asarray(a)
    return bool(np.array_equal(a[..., :h], a[..., h:]))


def to_full(cos: Any, sin: Any) -> Tuple[Any, Any]:
    """Half-width ``(..., R)`` tables to transformers' full-width ``cat(c, c)`` ``(..., 2R)``.

    Examples
    --------
    >>> c, s = ropescale.cos_sin(np.arange(3), ropescale.inv_freq(8))
    >>> fc, fs = ropescale.tables.to_full(c, s)
    >>> fc.shape
    (3, 8)
    """
    return _cat(cos, cos), _cat(sin, sin)


def from_full(cos: Any, sin: Any) -> Tuple[Any, Any]:
    """transformers' full-width ``(..., 2R)`` tables to half-width ``(..., R)`` (views, no copy).

    Raises ``ValueError`` when the width is odd or the two halves differ (the
    table is not ``cat(c, c)``).

    Examples
    --------
    >>> c, s = ropescale.cos_sin(np.arange(3), ropescale.inv_freq(8))
    >>> hc, hs = ropescale.tables.from_full(*ropescale.tables.to_full(c, s))
    >>> bool(np.array_equal(hc, c))
    True
    """
    for name, a in (("cos", cos), ("sin", sin)):
        w = _width(name, a)
        if w % 2:
            raise ValueError(f"{name} is not a full-width (cat(c, c)) table: its last axis {w} is odd")
        if not _halves_equal(a):
            raise ValueError(f"{name} is not a full-width (cat(c, c)) table: its two halves differ; "
                             f"pass it as a half-width table (layout='half')")
    r = _width("cos", cos) // 2
    return cos[..., :r], sin[..., :r]


def to_vllm(cos: Any, sin: Any) -> Any:
    """Half-width tables for positions ``0..N-1`` to vLLM's ``cos_sin_cache`` ``(N, 2R) = cat(cos, sin)``.

    Examples
    --------
    >>> c, s = ropescale.cos_sin(np.arange(5), ropescale.inv_freq(8))
    >>> ropescale.tables.to_vllm(c, s).shape
    (5, 8)
    """
    if tuple(cos.shape) != tuple(sin.shape):
        raise ValueError(f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    return _cat(cos, sin)


def from_vllm(cache: Any) -> Tuple[Any, Any]:
    """vLLM's ``cos_sin_cache`` ``(N, 2R)`` to half-width ``(cos, sin)`` tables ``(N, R)`` (views).

    Examples
    --------
    >>> c, s = ropescale.cos_sin(np.arange(5), ropescale.inv_freq(8))
    >>> c2, s2 = ropescale.tables.from_vllm(ropescale.tables.to_vllm(c, s))
    >>> bool(np.array_equal(s2, s))
    True
    """
    w = _width("cache", cache)
    if w % 2:
        raise ValueError(f"cache must be cat(cos, sin) with an even last axis, got {w}")
    return cache[..., : w // 2], cache[..., w // 2:]


def angles(positions: Any, inv_freq: Any) -> np.ndarray:
    """The angle table ``positions[..., None] * inv_freq`` in float64, shape ``positions.shape + (R,)``.

    Examples
    --------
    >>> ropescale.tables.angles(np.arange(3), [1.0, 0.5])
    array([[0. , 0. ],
           [1. , 0.5],
           [2. , 1. ]])
    """
    p = np.asarray(_float_in("positions", positions), dtype=np.float64)
    t = np.asarray(_float_in("inv_freq", inv_freq), dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"inv_freq must be 1-D, got shape {t.shape}")
    return p[..., None] * t


def from_angles(angle: Any, *, attention_factor: float = 1.0, dtype: Any = np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """Half-width ``(cos, sin)`` of a float64 angle table, times ``attention_factor``, rounded once to ``dtype``.

    Angles above ``2**34`` radians lose their fractional part in float64
    itself: form them with :func:`ropescale.cos_sin` instead, which reduces
    ``t * theta`` exactly.

    Examples
    --------
    >>> c, s = ropescale.tables.from_angles(np.array([0.0, np.pi / 2]), dtype=np.float64)
    >>> c.round(12).tolist(), s.tolist()
    ([1.0, 0.0], [0.0, 1.0])
    """
    a = np.asarray(angle, dtype=np.float64)
    scale = _checks.real("attention_factor", attention_factor, above=0.0)
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"dtype must be a float dtype, got {dt}")
    return (np.cos(a) * scale).astype(dt), (np.sin(a) * scale).astype(dt)


def half_tables(cos: np.ndarray, sin: np.ndarray, layout: Optional[str]) -> Tuple[np.ndarray, np.ndarray]:
    """The half-width tables ``apply_rotary`` computes with, for its ``layout`` argument.

    ``layout=None`` reads half-width tables but refuses one whose rows are
    ``cat(c, c)``: transformers' full-width table given to a partial-rotary
    head (``2R`` features rotated where the model rotates ``R``) would
    otherwise be applied to the wrong features without any error.  One row is
    inspected (the last), so the check costs O(R).
    """
    if layout is None:
        _refuse_full(sin)
        return cos, sin
    if layout == "half":
        return cos, sin
    check_layout(layout)
    return from_full(cos, sin)


def _refuse_full(sin: np.ndarray) -> None:
    # Only a row of a realistic width, stored (not broadcast along the pairs)
    # and not constant: a constant row is ambiguous (position 0, test tables)
    # and harmless to read either way; a real rope row varies across pairs.
    if sin.ndim == 0:
        return
    w = sin.shape[-1]
    if w < 4 or w % 2 or w > 1 << 16 or sin.size == 0 or sin.strides[-1] == 0:
        return
    row = sin[(-1,) * (sin.ndim - 1)]
    data = row.tobytes()
    half = len(data) // 2
    item = row.itemsize
    if data[:half] == data[half:] and data[:half] != data[:item] * (half // item):
        raise full_width_error(w)


def full_width_error(width: int) -> ValueError:
    """The one message for a full-width table given where half-width was expected."""
    return ValueError(f"sin looks like a full-width table (its rows are cat(s, s), transformers' layout, last axis "
                      f"{width}); pass layout='full', or convert it with ropescale.tables.from_full, or pass "
                      f"layout='half' if it really is half-width")


def check_layout(layout: Optional[str]) -> None:
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be 'half' (ropescale / flash-attn tables, (..., R)) or 'full' "
                         f"(transformers' cat(c, c), (..., 2R)), got {layout!r}")
