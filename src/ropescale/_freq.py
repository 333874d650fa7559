"""Frequencies: theta, the period-matching solution and every scaling method.

The arithmetic runs in C (float64); this module validates and documents.
The methods themselves, their keys and defaults, are the table in
:mod:`ropescale.methods`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from . import _checks, _core

# The method table and the rope_scaling checks live in .methods (ropescale.METHODS and
# ropescale.ALIASES come from there).
from .methods import normalize_scaling
from .methods import CODES as _CODES
from .methods import core_params as _core_params


def inv_freq(dim: int, base: float = 10000.0) -> np.ndarray:
    """Original RoPE frequencies ``theta_k = base**(-2k/dim)``, ``k = 0 .. dim/2 - 1``.

    Parameters
    ----------
    dim : int
        Rotary dimension (positive, even).
    base : float
        ``rope_theta``, finite and > 1.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(dim // 2,)``, radians per position.

    Examples
    --------
    >>> import ropescale
    >>> ropescale.inv_freq(8, 10000.0)
    array([1.   , 0.1  , 0.01 , 0.001])
    """
    d = _checks.dim(dim)
    b = _checks.real("base", base, above=1.0)
    return _core.inv_freq(d, b)


def ntk_lambda(dim: int, factor: float) -> float:
    """Base multiplier of RoPE base scaling: ``lambda = factor**(dim/(dim-2))``.

    It solves the period-matching equation
    ``2 pi (lambda b)**((d-2)/d) = s * 2 pi b**((d-2)/d)``: the lowest-frequency
    pair gets exactly the period linear interpolation gives it.

    Examples
    --------
    >>> round(ropescale.ntk_lambda(128, 8.0), 6)
    8.268462
    """
    d = _checks.dim(dim)
    if d < 4:
        raise ValueError(f"dim must be >= 4 for base scaling (d - 2 > 0), got {d}")
    s = _checks.real("factor", factor, at_least=1.0)
    lam = _core.ntk_lambda(d, s)
    if not math.isfinite(lam):
        raise ValueError(f"factor**(dim/(dim-2)) overflows float64 for factor={s:g}, dim={d}")
    return lam


def ntk_base(base: float, dim: int, factor: float) -> float:
    """The scaled base ``lambda * base`` (see :func:`ntk_lambda`).

    Examples
    --------
    >>> round(ropescale.ntk_base(10000.0, 128, 8.0))
    82685
    """
    b = _checks.real("base", base, above=1.0)
    new_base = b * ntk_lambda(dim, factor)
    if not math.isfinite(new_base):
        raise ValueError(f"ntk_base: base * factor**(dim/(dim-2)) overflows float64 for base={b:g}, dim={dim}, "
                         f"factor={factor!r}")
    return new_base


def periods(inv_freq: Any) -> np.ndarray:
    """Period of each pair in positions, ``2 pi / theta`` (``inf`` where theta is 0).

    Examples
    --------
    >>> ropescale.periods([1.0, 0.5]).round(4)
    array([ 6.2832, 12.5664])
    """
    theta = _checks.asarray("inv_freq", inv_freq)
    if theta.dtype.kind not in "fiu":
        raise TypeError(f"inv_freq must be a 1-D array of real numbers, got dtype {theta.dtype}")
    if theta.ndim != 1:
        raise ValueError(f"inv_freq must be 1-D, got shape {theta.shape}")
    theta = theta.astype(np.float64)
    if not np.all(np.isfinite(theta)) or np.any(theta < 0):
        raise ValueError("inv_freq must hold finite, non-negative frequencies")
    with np.errstate(divide="ignore"):
        return (2.0 * math.pi) / theta


def solve_base(dim: int, base: float, original_len: float, target_len: float) -> float:
    """The base that gives the lowest-frequency pair the period linear interpolation would.

    Inverts the period-matching equation for a planned extension from
    ``original_len`` to ``target_len`` tokens: ``base * (target/original)**(d/(d-2))``.

    Examples
    --------
    >>> round(ropescale.solve_base(128, 10000.0, 4096, 32768))
    82685
    """
    m_l = _checks.real("original_len", original_len, above=0.0)
    m = _checks.real("target_len", target_len, above=0.0)
    if m < m_l:
        raise ValueError(f"target_len must be >= original_len ({m_l:g}), got {m:g}")
    return ntk_base(base, dim, m / m_l)


def solve_factor(dim: int, base: float, new_base: float) -> float:
    """The extension factor ``s`` whose base scaling gives ``new_base``: inverse of :func:`ntk_base`.

    Examples
    --------
    >>> round(ropescale.solve_factor(128, 10000.0, 82685.0), 3)
    8.0
    """
    d = _checks.dim(dim)
    b = _checks.real("base", base, above=1.0)
    nb = _checks.real("new_base", new_base, at_least=b)
    return (nb / b) ** ((d - 2) / d)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention scale ``0.1 * mscale * ln(factor) + 1`` (1 for ``factor <= 1``): the one
    formula the package's readers and cross-engine checks evaluate in Python (the C core has its own)."""
    return 1.0 if factor <= 1.0 else 0.1 * mscale * math.log(factor) + 1.0


def seq_len_arg(seq_len):
    if seq_len is None:
        return None
    return _checks.integer("seq_len", seq_len, minimum=0, maximum=2**53)


def scaled_inv_freq(dim: int, base: float, scaling: Optional[Mapping[str, Any]], *, seq_len: Optional[int] = None) -> Tuple[np.ndarray, float]:
    """Scaled frequencies ``theta'`` and the attention factor for a ``rope_scaling`` dict.

    Parameters
    ----------
    dim : int
        Head dimension; the rotary dimension is ``int(dim * partial_rotary_factor)``
        (``partial_rotary_factor`` from ``scaling``, default 1).
    base : float
        ``rope_theta``.
    scaling : dict or None
        ``{"rope_type": ..., ...}`` as in a model's ``config.json``
        (``type`` is accepted for ``rope_type``).  ``rope_type`` is one of
        :data:`METHODS`; ``ntk`` is static base scaling with
        ``base * factor**(d/(d-2))``.
    seq_len : int, optional
        Current sequence length: drives ``dynamic`` and the short/long choice
        of ``longrope``.

    Returns
    -------
    (numpy.ndarray, float)
        float64 frequencies of shape ``(rotary_dim // 2,)`` (``(dim // 2,)``
        for ``proportional``) and the factor that multiplies cos and sin.

    Examples
    --------
    >>> theta, attn = ropescale.scaled_inv_freq(64, 10000.0, {"rope_type": "linear", "factor": 4.0})
    >>> bool(np.allclose(theta * 4, ropescale.inv_freq(64)))
    True
    >>> round(ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "yarn", "factor": 4.0,
    ...       "original_max_position_embeddings": 4096})[1], 4)
    1.1386
    """
    b = _checks.real("base", base, above=1.0)
    method, p = normalize_scaling(scaling, dim)
    return scaled_from_params(method, p, b, seq_len_arg(seq_len))


def scaled_from_params(method: str, p: Mapping[str, Any], base: float, seq_len: Optional[int] = None) -> Tuple[np.ndarray, float]:
    """The C computation for already-checked ``(method, params)`` from :func:`normalize_scaling`.

    For callers that keep a checked rope (``Rope``), so that a length-dependent
    method does not re-check its dict at every sequence length.
    """
    return _core.scaled_inv_freq(p["rotary_dim"], base, _CODES[method], **_core_params(p, seq_len))


def yarn_correction_range(dim: int, base: float, original_max_position_embeddings: float,
                          beta_fast: float = 32.0, beta_slow: float = 1.0, truncate: bool = True) -> Tuple[float, float]:
    """Pair indices ``(lo, hi)`` of YaRN's ramp: pairs below ``lo`` keep theta, above ``hi`` are interpolated.

    Examples
    --------
    >>> ropescale.yarn_correction_range(128, 10000.0, 4096)
    (20.0, 46.0)
    """
    d = _checks.dim(dim)
    b = _checks.real("base", base, above=1.0)
    m_l = _checks.real("original_max_position_embeddings", original_max_position_embeddings, at_least=1.0)
    bf = _checks.real("beta_fast", beta_fast, above=0.0)
    bs = _checks.real("beta_slow", beta_slow, above=0.0)
    if bf < bs:
        raise ValueError(f"beta_fast must be >= beta_slow, got {bf} < {bs}")
    return _core.yarn_range(d, b, m_l, bf, bs, _checks.boolean("truncate", truncate))
