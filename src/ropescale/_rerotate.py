"""Moving keys that are already rotated: re-rotation to new positions, rebasing to new frequencies.

A KV cache stores keys rotated by ``t * theta``.  Evicting tokens (attention
sinks, sliding windows), shifting a context (llama.cpp's context shift) or
changing the frequencies (dynamic NTK as the sequence grows, LongRoPE's
short -> long switch) asks for keys rotated by another angle.  The usual
ways -- undo the old rotation and apply the new one, or rotate by a float32
``delta * theta`` -- round cos/sin twice per move and let the angle error of
float32 grow with the position, so repeated moves drift.

Here the *difference* angle is formed exactly and rotated once:

* :func:`rerotate`: ``(to - from) * theta``.  Integer positions give an
  exact integer delta; float positions give ``to - from`` as an unevaluated
  sum ``d + e`` of two doubles (Knuth's two-sum), so no rounding is lost.
* :func:`rebase`: ``t * (theta' - theta)``, with ``theta' - theta`` again an
  exact two-sum ``h + l``.

``d * theta`` (or ``t * h``) goes through the same exact product and
reduction as every other angle in ropescale (``csrc/angle.c``).  The rest,
``e * theta`` (or ``t * l``), is below ``2**-19`` radians; when it is not zero
it is added by the angle-addition formula on float64 cos/sin rows before the
single rounding to the compute type.  So each move costs one rounding of the
stored keys and no angle error: after ``n`` moves the keys differ from one
direct rotation by a random walk of ``n`` roundings, not by ``n`` angle errors.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import _arrays, _checks, _core
from ._rotary import (
    _U16,
    MAX_ANGLE,
    _as_given,
    _bfloat16,
    _broadcast_shape,
    _check_out,
    _kernel_view,
    _refuse_masked,
    _result_dtype,
    _run,
    apply_rotary,
    cos_sin,
    get_num_threads,
    table_dtype,
)

__all__ = ["rerotate", "rebase"]

_INT64 = np.dtype(np.int64)
_FLOAT64 = np.dtype(np.float64)
_MAX_POSITION = 2.0**52


def _keys(k: Any) -> np.ndarray:
    """``k`` as a float array of shape (..., D), D even; TypeError for integer or object keys."""
    if isinstance(k, (str, bytes)) or k is None:
        raise TypeError(f"k must be a float array of keys (..., D), got {type(k).__name__}")
    _refuse_masked("k", k)
    arr = k if isinstance(k, np.ndarray) else _checks.asarray("k", k)
    dt = arr.dtype
    if type(arr) is _arrays.BF16Bits:  # torch/JAX bfloat16, as bits
        pass
    elif not ((dt.kind == "f" and dt.itemsize in (2, 4, 8)) or (_bfloat16() is not None and dt == _bfloat16())):
        raise TypeError(f"k must be a float16, float32 or float64 array (bfloat16 with ml_dtypes), got dtype {dt}")
    if arr.ndim == 0:
        raise ValueError("k must have at least one axis (..., D), got a 0-d array")
    if arr.shape[-1] % 2:
        raise ValueError(f"k's last axis D must be even, got D={arr.shape[-1]}")
    return arr


def _named_theta(name: str, value: Any) -> np.ndarray:
    """Frequencies as a finite, non-empty, contiguous float64 1-D array; errors name ``name``."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a 1-D array of frequencies, got {type(value).__name__}")
    _refuse_masked(name, value)
    t = _checks.asarray(name, value)
    if t.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a 1-D array of real numbers, got dtype {t.dtype}")
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {t.shape}")
    t = np.require(t, dtype=np.float64, requirements=["C", "A"])
    bad = ~(np.abs(t) <= 1e300)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} must be finite (and |{name}| <= 1e300), got {t[i]!r} at index {i}")
    return t


def _named_positions(name: str, value: Any, lead: Tuple[int, ...]) -> np.ndarray:
    """Positions as native int64 or float64, finite, ``|p| <= 2**52``, broadcasting down to ``lead``."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be an array of integers or floats, got {type(value).__name__}")
    _refuse_masked(name, value)
    p = value if isinstance(value, np.ndarray) else _checks.asarray(name, value)
    dt = p.dtype
    if dt.kind not in "iuf":
        raise TypeError(f"{name} must be integers or real numbers, got dtype {dt}")
    if p.size:
        if dt.kind == "f":
            bad = ~np.isfinite(p)
            if bad.any():
                raise ValueError(f"{name} must be finite, got {p.reshape(-1)[int(np.argmax(bad.reshape(-1)))]!r}")
        big = max(abs(int(p.max())), abs(int(p.min()))) if dt.kind in "iu" else float(np.abs(p).max())
        if big > _MAX_POSITION:
            raise ValueError(f"{name} must satisfy |position| <= 2**52, got {big!r}")
    if p.shape != lead:
        try:
            ok = _broadcast_shape(p.shape, lead) == lead
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{name} of shape {p.shape} must broadcast to k's leading shape {lead} "
                             f"(k is (..., D); e.g. (S, 1) for a (B, S, H, D) cache)")
    return np.require(p, dtype=_INT64 if dt.kind in "iu" else _FLOAT64, requirements=["A"])


def _two_sum(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``a + b = s + e`` exactly, ``s = fl(a + b)`` (Knuth's two-sum; float64 arrays)."""
    s = np.asarray(a + b)
    bb = s - a
    e = np.asarray((a - (s - bb)) + (b - bb))
    return s, e


def _check_angles(name: str, t: np.ndarray, theta: np.ndarray) -> None:
    """Every |t * theta| within the exact reduction range, with a message naming ``name``."""
    if t.size == 0:
        return
    tmax = float(np.abs(t).max()) if t.dtype.kind == "f" else float(max(abs(int(t.max())), abs(int(t.min()))))
    fmax = float(np.abs(theta).max())
    if tmax > _MAX_POSITION:
        raise ValueError(f"{name} must satisfy |{name}| <= 2**52, got {tmax!r}")
    if tmax * fmax > MAX_ANGLE:
        raise ValueError(f"{name} times the frequencies must stay within 2**34 radians for exact angles; "
                         f"got max |{name}| {tmax!r} with max frequency {fmax!r}")


def _corrected_tables(t: np.ndarray, t_lo: Optional[np.ndarray], theta: np.ndarray,
                      theta_lo: Optional[np.ndarray], scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """float64 cos/sin of ``(t + t_lo) * theta`` or ``t * (theta + theta_lo)``, times ``scale``.

    ``t * theta`` is exact (ropescale's own tables); the rest,
    ``delta = t_lo * theta`` or ``t * theta_lo``, is below ``2**-19`` radians, so
    ``cos delta = 1 - delta**2/2`` and ``sin delta = delta`` are exact to
    float64 (the next terms are below ``2**-59``) and the angle-addition
    formula joins the two.
    """
    c0, s0 = cos_sin(t, theta, dtype=np.float64)
    # rerotate has only t_lo, rebase only theta_lo (the 2**-19 bound is per term)
    if t_lo is not None:
        delta = t_lo[..., None] * theta
    else:
        delta = t.astype(np.float64)[..., None] * theta_lo
    cd = 1.0 - 0.5 * delta * delta
    c = c0 * cd - s0 * delta
    s = s0 * cd + c0 * delta
    if scale != 1.0:
        c *= scale
        s *= scale
    return c, s


def _rotate(ka: np.ndarray, out: Optional[np.ndarray], t: np.ndarray, t_lo: Optional[np.ndarray],
            theta: np.ndarray, theta_lo: Optional[np.ndarray], scale: float, interleaved: bool) -> np.ndarray:
    """Rotate ``ka`` by ``(t + t_lo) * (theta + theta_lo)``, cos/sin scaled by ``scale``; all validated."""
    xk, ok = _kernel_view(ka)[0], None if out is None else _kernel_view(out)[0]
    rdt = _result_dtype(xk, ok)
    if t_lo is None and theta_lo is None:
        # The exact product and reduction of the fused kernel cover the angle:
        # no table in memory, one cos/sin row per distinct position.
        n = get_num_threads()

        def kernel(xv, target, pv):
            _core.rotate_positions(xv, pv, theta, scale, target, interleaved, False, n, target.dtype == _U16)

        res = _run(kernel, xk, ok, rdt, [t])
        return out if out is not None else _as_given(res, ka)
    c, s = _corrected_tables(t, t_lo, theta, theta_lo, scale)
    tdt = table_dtype(xk, ok, rdt)
    # the undecorated function: ka may be bfloat16 bits (BF16Bits), kept as they are
    return apply_rotary.__wrapped__(ka, c.astype(tdt), s.astype(tdt), interleaved=interleaved, out=out)


@_arrays.any_kind
def rerotate(k: Any, from_positions: Any, to_positions: Any, inv_freq: Any, *, interleaved: bool = False,
             out: Optional[np.ndarray] = None) -> np.ndarray:
    """Move keys rotated at ``from_positions`` to ``to_positions``: one rotation by ``(to - from) * inv_freq``.

    The delta angle is formed exactly in float64 and reduced once, so cos/sin
    are rounded once and the keys once per call, whatever the positions (up to
    ``|delta * inv_freq| <= 2**34`` radians).  Repeated moves add no angle
    error: only the rounding of the stored keys accumulates.

    Parameters
    ----------
    k : ndarray, shape (..., D), float16/32/64 or bfloat16 (ml_dtypes, torch, JAX)
        Keys rotated with ``inv_freq`` (e.g. a KV cache ``(B, S, H, D)``).
        Never modified unless it is ``out``.
    from_positions, to_positions : array_like of int or float
        The positions the keys were rotated at and the ones they move to.
        Each broadcasts against ``k.shape[:-1]`` like the positions of
        :func:`apply_rotary_positions` (``(S, 1)`` for ``(B, S, H, D)``).
        Integers give an exact delta; floats are subtracted exactly (two-sum).
    inv_freq : array_like, shape (R,), ``2R <= D``
        The frequencies the keys were rotated with; features ``2R..D-1`` pass
        through (partial rotary).
    interleaved : bool
        Pairing, as in :func:`apply_rotary`.
    out : ndarray, optional
        ``out=k`` works in place (the usual use on a cache).

    Returns
    -------
    ndarray of ``k``'s shape and dtype (``out``'s when given).

    Raises
    ------
    TypeError, ValueError
        Before anything is written: non-float keys, positions that are not
        finite, do not broadcast, or whose delta leaves the exact range.

    Examples
    --------
    >>> theta = ropescale.inv_freq(8)
    >>> k = ropescale.apply_rotary_positions(np.ones((5, 1, 8)), np.arange(5)[:, None], theta)
    >>> moved = ropescale.rerotate(k[3:], np.arange(3, 5)[:, None], np.arange(1, 3)[:, None], theta)
    >>> bool(np.allclose(moved, k[1:3]))
    True
    """
    ka = _keys(k)
    il = _checks.boolean("interleaved", interleaved)
    theta = _named_theta("inv_freq", inv_freq)
    r, d = theta.shape[0], ka.shape[-1]
    if 2 * r > d:
        raise ValueError(f"len(inv_freq) (R={r}) must satisfy 2R <= D, k's last axis (D={d})")
    lead = ka.shape[:-1]
    f = _named_positions("from_positions", from_positions, lead)
    t = _named_positions("to_positions", to_positions, lead)
    if out is not None:
        out = _check_out(out, ka.shape)
    lo = None
    if f.dtype == _INT64 and t.dtype == _INT64:
        delta = np.asarray(np.subtract(t, f))  # |t|, |f| <= 2**52: no int64 overflow
    else:
        delta, lo = _two_sum(t.astype(np.float64), -f.astype(np.float64))
        if not lo.any():
            lo = None
    _check_angles("to_positions - from_positions", delta, theta)
    return _rotate(ka, out, delta, lo, theta, None, 1.0, il)


@_arrays.any_kind
def rebase(k: Any, positions: Any, inv_freq_from: Any, inv_freq_to: Any, *, attention_factor: float = 1.0,
           interleaved: bool = False, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Turn keys rotated with ``inv_freq_from`` into keys rotated with ``inv_freq_to`` at the same positions.

    One rotation by ``positions * (inv_freq_to - inv_freq_from)``, the
    difference of frequencies formed exactly (two-sum) and the angle reduced
    once: the dynamic-NTK base change as a sequence grows, or LongRoPE's
    switch from short to long factors, applied to a cache.  See
    :meth:`Rope.rebase_cache` for both from a model's rope.

    Parameters
    ----------
    k : ndarray, shape (..., D)
        Keys rotated with ``inv_freq_from`` at ``positions``.
    positions : array_like of int or float
        Broadcasts against ``k.shape[:-1]`` as in :func:`apply_rotary_positions`.
    inv_freq_from, inv_freq_to : array_like, shape (R,), ``2R <= D``
        Old and new frequencies, of the same length.
    attention_factor : float
        Multiplies the rotated pairs once: the ratio of the new attention
        factor to the old one when they differ (1 for dynamic NTK and LongRoPE).
    interleaved, out
        As in :func:`rerotate`.

    Examples
    --------
    >>> old, new = ropescale.inv_freq(8, 10000.0), ropescale.inv_freq(8, 40000.0)
    >>> pos = np.arange(6)[:, None]
    >>> k = ropescale.apply_rotary_positions(np.ones((6, 2, 8)), pos, old)
    >>> bool(np.allclose(ropescale.rebase(k, pos, old, new),
    ...                  ropescale.apply_rotary_positions(np.ones((6, 2, 8)), pos, new)))
    True
    """
    ka = _keys(k)
    il = _checks.boolean("interleaved", interleaved)
    scale = _checks.real("attention_factor", attention_factor, above=0.0)
    th_from = _named_theta("inv_freq_from", inv_freq_from)
    th_to = _named_theta("inv_freq_to", inv_freq_to)
    if th_from.shape != th_to.shape:
        raise ValueError(f"inv_freq_from and inv_freq_to must have the same length, "
                         f"got {th_from.shape[0]} and {th_to.shape[0]}")
    r, d = th_to.shape[0], ka.shape[-1]
    if 2 * r > d:
        raise ValueError(f"len(inv_freq_to) (R={r}) must satisfy 2R <= D, k's last axis (D={d})")
    pos = _named_positions("positions", positions, ka.shape[:-1])
    if out is not None:
        out = _check_out(out, ka.shape)
    hi, lo = _two_sum(th_to, -th_from)
    if not lo.any():
        lo = None
    # The old and new angles must lie in the exact range as well as their difference.
    _check_angles("positions", pos, np.maximum(np.maximum(np.abs(th_from), np.abs(th_to)), np.abs(hi)))
    return _rotate(ka, out, pos, None, hi, lo, scale, il)
