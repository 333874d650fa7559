"""Frequencies: theta, the period-matching solution and every scaling method.

The arithmetic runs in C (float64); this module validates and documents.
Keys and defaults of ``rope_scaling`` dicts follow HF transformers'
``modeling_rope_utils`` so that a model's ``config.json`` goes straight in.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from . import _checks, _core

#: The scaling methods ``scaled_inv_freq`` understands (``rope_type`` values).
METHODS = ("default", "linear", "ntk", "dynamic", "yarn", "llama3", "longrope", "proportional")

#: Other spellings found in published configs.
ALIASES = {"su": "longrope", "mistral_yarn": "yarn"}

_CODES = {
    "default": _core.DEFAULT,
    "linear": _core.LINEAR,
    "ntk": _core.NTK,
    "dynamic": _core.DYNAMIC,
    "yarn": _core.YARN,
    "llama3": _core.LLAMA3,
    "longrope": _core.LONGROPE,
    "proportional": _core.PROPORTIONAL,
}

_REQUIRED = {
    "default": (),
    "linear": ("factor",),
    "ntk": ("factor",),
    "dynamic": ("factor", "original_max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings"),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "longrope": ("short_factor", "long_factor", "original_max_position_embeddings"),
    "proportional": (),
}

_OPTIONAL = {
    "default": (),
    "linear": (),
    "ntk": (),
    "dynamic": (),
    "yarn": ("beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"),
    "llama3": (),
    "longrope": ("factor",),
    "proportional": ("factor",),
}

# Keys that may sit in a config's rope dict without being scaling parameters.
_PASSIVE = {"rope_type", "type", "rope_theta", "attention_factor", "partial_rotary_factor", "original_max_position_embeddings",
            "max_position_embeddings"}


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
    return _core.ntk_lambda(d, s)


def ntk_base(base: float, dim: int, factor: float) -> float:
    """The scaled base ``lambda * base`` (see :func:`ntk_lambda`).

    Examples
    --------
    >>> round(ropescale.ntk_base(10000.0, 128, 8.0))
    82685
    """
    b = _checks.real("base", base, above=1.0)
    return b * ntk_lambda(dim, factor)


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


def normalize_scaling(scaling: Optional[Mapping[str, Any]], dim: int) -> Tuple[str, dict]:
    """Check an HF-style ``rope_scaling`` dict; return ``(method, params)``.

    ``params`` holds every parameter the method uses, with defaults filled in,
    plus ``rotary_dim`` (``int(dim * partial_rotary_factor)``) and
    ``rotated_pairs`` (proportional only).
    """
    d = _checks.dim(dim)
    if scaling is None:
        return "default", {"rotary_dim": d}
    if not isinstance(scaling, Mapping):
        raise TypeError(f"scaling must be None or a dict like a config's rope_scaling, got {type(scaling).__name__}")
    if "rope_type" in scaling and "type" in scaling and scaling["rope_type"] != scaling["type"]:
        raise ValueError(f"scaling has rope_type={scaling['rope_type']!r} and type={scaling['type']!r}; give one")
    raw = scaling.get("rope_type", scaling.get("type", "default"))
    if not isinstance(raw, str):
        raise TypeError(f"scaling['rope_type'] must be a string, got {raw!r}")
    method = ALIASES.get(raw, raw)
    if method not in METHODS:
        raise ValueError(f"scaling['rope_type'] must be one of {', '.join(METHODS)} (or alias su), got {raw!r}")
    missing = [k for k in _REQUIRED[method] if scaling.get(k) is None]
    if method == "longrope" and scaling.get("factor") is None and scaling.get("attention_factor") is None:
        missing.append("factor (or attention_factor)")
    if missing:
        raise ValueError(f"scaling for rope_type {method!r} is missing required key(s): {', '.join(missing)}")
    known = set(_REQUIRED[method]) | set(_OPTIONAL[method]) | _PASSIVE
    unknown = sorted(set(scaling) - known)
    if unknown:
        warnings.warn(f"scaling keys ignored by rope_type {method!r}: {', '.join(map(str, unknown))}", stacklevel=3)

    p: dict = {}
    prf = _checks.real("scaling['partial_rotary_factor']", scaling.get("partial_rotary_factor", 1.0), above=0.0, at_most=1.0)
    if method == "proportional":
        p["rotary_dim"] = d
        p["rotated_pairs"] = int(prf * d) // 2
    else:
        rd = int(d * prf)
        if rd < 2 or rd % 2:
            raise ValueError(f"dim * partial_rotary_factor must give an even rotary dim >= 2, got int({d} * {prf}) = {rd}")
        p["rotary_dim"] = rd
    if scaling.get("factor") is not None:
        p["factor"] = _checks.real("scaling['factor']", scaling["factor"], at_least=1.0)
    if scaling.get("attention_factor") is not None:
        p["attention_factor"] = _checks.real("scaling['attention_factor']", scaling["attention_factor"], above=0.0)
    if method in ("ntk", "dynamic") and p["rotary_dim"] < 4:
        raise ValueError(f"rope_type {method!r} needs a rotary dim >= 4, got {p['rotary_dim']}")
    if "original_max_position_embeddings" in _REQUIRED[method]:
        p["original_max_position_embeddings"] = _checks.real(
            "scaling['original_max_position_embeddings']", scaling["original_max_position_embeddings"], at_least=1.0
        )
    if method == "yarn":
        bf = _checks.real("scaling['beta_fast']", scaling.get("beta_fast") or 32.0, above=0.0)
        bs = _checks.real("scaling['beta_slow']", scaling.get("beta_slow") or 1.0, above=0.0)
        if bf < bs:
            raise ValueError(f"scaling['beta_fast'] must be >= beta_slow, got beta_fast={bf} < beta_slow={bs}")
        p["beta_fast"], p["beta_slow"] = bf, bs
        for key in ("mscale", "mscale_all_dim"):
            if scaling.get(key) is not None:
                p[key] = _checks.real(f"scaling[{key!r}]", scaling[key], at_least=0.0)
        p["truncate"] = _checks.boolean("scaling['truncate']", scaling.get("truncate", True))
    if method == "llama3":
        lff = _checks.real("scaling['low_freq_factor']", scaling["low_freq_factor"], above=0.0)
        hff = _checks.real("scaling['high_freq_factor']", scaling["high_freq_factor"], above=0.0)
        if not lff < hff:
            raise ValueError(f"scaling['low_freq_factor'] must be < high_freq_factor, got {lff} >= {hff}")
        p["low_freq_factor"], p["high_freq_factor"] = lff, hff
    if method == "longrope":
        n = p["rotary_dim"] // 2
        for key in ("short_factor", "long_factor"):
            arr = _factor_list(f"scaling[{key!r}]", scaling[key], n)
            p[key] = arr
    return method, p


def _factor_list(name, value, n):
    if isinstance(value, (str, bytes)) or np.ndim(value) != 1:
        raise TypeError(f"{name} must be a list of {n} positive numbers, got {type(value).__name__}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a list of {n} positive numbers") from None
    if arr.shape != (n,):
        raise ValueError(f"{name} must have rotary_dim/2 = {n} entries, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must hold finite positive numbers, got {arr[~(np.isfinite(arr) & (arr > 0))][:3].tolist()}")
    return arr


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
    kw = {k: p[k] for k in ("factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
                            "attention_factor", "truncate", "low_freq_factor", "high_freq_factor",
                            "short_factor", "long_factor") if k in p}
    if "original_max_position_embeddings" in p:
        kw["original_max"] = p["original_max_position_embeddings"]
    if seq_len is not None:
        kw["seq_len"] = float(seq_len)
    if "rotated_pairs" in p:
        kw["rotated_pairs"] = p["rotated_pairs"]
    return _core.scaled_inv_freq(p["rotary_dim"], base, _CODES[method], **kw)


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
