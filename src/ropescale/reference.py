"""Pure-NumPy reference implementation of ropescale, written for clarity.

This module is the oracle the C core is tested against and the place to read
the mathematics (stated in full, with sources, in docs/math.md).  It is not
fast and does no argument checking beyond what NumPy does: the public functions
in :mod:`ropescale` validate.  Every function computes in float64.

Notation: ``d`` rotary dimension, ``b`` base, ``k`` pair index, ``t``
position, ``m_l`` trained context (``original_max_position_embeddings``),
``s`` the extension factor.

Examples
--------
>>> from ropescale import reference as ref
>>> theta = ref.inv_freq(8, 10000.0)               # b^(-2k/d)
>>> theta.tolist()
[1.0, 0.1, 0.01, 0.001]
>>> lin, attn = ref.scaled_inv_freq(8, 10000.0, "linear", factor=4.0)
>>> bool(np.all(lin == theta / 4)), attn
(True, 1.0)
>>> y = ref.apply_rotary_positions(np.array([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]), 3, theta)
>>> bool(np.isclose(y[0], np.cos(3.0)) and np.isclose(y[4], np.sin(3.0)))
True
"""
from __future__ import annotations

import math

import numpy as np

# Only the method names (for dispatch): nothing here computes through the C core.
from .methods import (AXIAL, DYNAMIC, DYNAMIC_YARN, LINEAR, LLAMA3, LONGROPE, NTK, NTK_ALPHA, NTK_BY_PARTS,
                      NTK_MIXED, PROPORTIONAL, UNSCALED, YARN)

__all__ = [
    "inv_freq",
    "ntk_lambda",
    "ntk_base",
    "periods",
    "yarn_mscale",
    "yarn_correction_range",
    "scaled_inv_freq",
    "exact_product",
    "cos_sin",
    "apply_rotary",
    "apply_rotary_positions",
]


def inv_freq(dim, base=10000.0):
    """theta_k = base^(-2k/d) for k = 0 .. d/2 - 1."""
    k = np.arange(dim // 2, dtype=np.float64)
    return np.power(float(base), -(2.0 * k) / dim)


def ntk_lambda(dim, factor):
    """Solve 2 pi (lam b)^((d-2)/d) = s 2 pi b^((d-2)/d) for lam: lam = s^(d/(d-2))."""
    return float(factor) ** (dim / (dim - 2))


def ntk_base(base, dim, factor):
    return float(base) * ntk_lambda(dim, factor)


def periods(theta):
    """Period 2 pi / theta of each pair (inf where theta is 0)."""
    theta = np.asarray(theta, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 2.0 * math.pi / theta


def yarn_mscale(scale, mscale=1.0):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_correction_range(dim, base, original_max, beta_fast=32.0, beta_slow=1.0, truncate=True):
    """Pair indices [lo, hi] between which YaRN blends interpolation and extrapolation.

    c(r) = d ln(m_l / (2 pi r)) / (2 ln b) is the pair index that makes r full
    turns within the trained context.
    """

    def c(rotations):
        return dim * math.log(original_max / (rotations * 2 * math.pi)) / (2 * math.log(base))

    lo, hi = c(beta_fast), c(beta_slow)
    if truncate:
        lo, hi = math.floor(lo), math.ceil(hi)
    return max(lo, 0), min(hi, dim - 1)


def scaled_inv_freq(dim, base, method, **p):
    """theta' and the attention factor for one method; ``p`` holds its parameters.

    ``dim`` is the rotary dimension (the full head dimension for
    ``proportional``).  Parameter names are those of HF ``rope_scaling`` dicts;
    absent optional ones take HF's defaults (``beta_fast``/``beta_slow`` read
    as ``value or default``, as HF does), and ``seq_len`` may be given.  For
    ``proportional``, ``rotated_pairs`` defaults to
    ``int(partial_rotary_factor * dim) // 2``.
    """
    theta = inv_freq(dim, base)
    s = p.get("factor")
    attn = 1.0
    if method == UNSCALED:
        out = theta
    elif method == LINEAR:
        out = theta / s
    elif method == NTK:
        out = inv_freq(dim, ntk_base(base, dim, s))
    elif method == DYNAMIC:
        m_l = p["original_max_position_embeddings"]
        seq_len = p.get("seq_len")
        length = seq_len if seq_len is not None and seq_len > m_l else m_l
        new_base = base * (s * length / m_l - (s - 1)) ** (dim / (dim - 2))
        out = inv_freq(dim, new_base)
    elif method == YARN:
        m_l = p["original_max_position_embeddings"]
        truncate = p.get("truncate")
        lo, hi = yarn_correction_range(
            dim, base, m_l, p.get("beta_fast") or 32.0, p.get("beta_slow") or 1.0, True if truncate is None else truncate
        )
        if lo == hi:
            hi += 0.001
        ramp = np.clip((np.arange(dim // 2) - lo) / (hi - lo), 0.0, 1.0)
        out = theta / s * ramp + theta * (1.0 - ramp)
        mscale, mscale_all = p.get("mscale"), p.get("mscale_all_dim")
        if p.get("attention_factor") is not None:
            attn = p["attention_factor"]
        elif mscale and mscale_all:
            attn = yarn_mscale(s, mscale) / yarn_mscale(s, mscale_all)
        else:
            attn = yarn_mscale(s)
    elif method == LLAMA3:
        m_l = p["original_max_position_embeddings"]
        lff, hff = p["low_freq_factor"], p["high_freq_factor"]
        wavelen = 2 * math.pi / theta
        u = (m_l / wavelen - lff) / (hff - lff)
        out = np.where(
            wavelen > m_l / lff, theta / s, np.where(wavelen < m_l / hff, theta, (1 - u) * theta / s + u * theta)
        )
    elif method == LONGROPE:
        m_l = p["original_max_position_embeddings"]
        seq_len = p.get("seq_len")
        key = "long_factor" if seq_len is not None and seq_len > m_l else "short_factor"
        out = theta / np.asarray(p[key], dtype=np.float64)
        if p.get("attention_factor") is not None:
            attn = p["attention_factor"]
        elif s is None or s <= 1:
            attn = 1.0
        else:
            attn = math.sqrt(1 + math.log(s) / math.log(m_l))
        # PhiMoE: the branch's own mscale, when given, wins over both
        mscale = p.get("long_mscale" if key == "long_factor" else "short_mscale")
        if mscale is not None:
            attn = mscale
    elif method == PROPORTIONAL:
        n_rot = p.get("rotated_pairs")
        if n_rot is None:
            n_rot = int(p.get("partial_rotary_factor", 1.0) * dim) // 2
        out = theta.copy()
        if s is not None:
            out[:n_rot] = out[:n_rot] / s
        out[n_rot:] = 0.0
    elif method == NTK_ALPHA:
        out = inv_freq(dim, base * p["alpha"] ** (dim / (dim - 2)))
    elif method == NTK_MIXED:
        b = p["mixed_b"]
        a = math.log(s) / (dim / 2) ** b
        out = theta / np.exp(a * np.arange(1, dim // 2 + 1, dtype=np.float64) ** b)
    elif method == NTK_BY_PARTS:
        out = _ntk_by_parts(theta, s, p["original_max_position_embeddings"], p.get("beta_fast", 32.0),
                            p.get("beta_slow", 1.0))
    elif method == DYNAMIC_YARN:
        m_l = p["original_max_position_embeddings"]
        seq_len = p.get("seq_len")
        if seq_len is None or seq_len <= m_l:
            out = theta
        else:
            q = {k: v for k, v in p.items() if k in ("beta_fast", "beta_slow", "truncate", "attention_factor")}
            return scaled_inv_freq(dim, base, YARN, factor=seq_len / m_l, original_max_position_embeddings=m_l, **q)
    elif method == AXIAL:
        half = inv_freq(dim // 2, base)       # each axis: a rope of dim d/2
        out = np.concatenate([half, half])
    else:
        raise ValueError(f"unknown method {method!r}")
    if method not in (YARN, LONGROPE) and p.get("attention_factor") is not None:  # theirs read it above
        attn = p["attention_factor"]
    return np.asarray(out, dtype=np.float64), float(attn)


def _ntk_by_parts(theta, s, m_l, beta_fast, beta_slow):
    """NTK-by-parts: gamma = clip((r - beta_slow) / (beta_fast - beta_slow), 0, 1) with r = m_l / wavelength
    (turns within the trained context); theta' = (1 - gamma) theta / s + gamma theta."""
    r = m_l * theta / (2 * math.pi)
    gamma = np.clip((r - beta_slow) / (beta_fast - beta_slow), 0.0, 1.0)
    return (1 - gamma) * theta / s + gamma * theta


def _split(a):
    """Veltkamp's split a = hi + lo, hi holding the top 26 significant bits."""
    big = 134217729.0 * a  # 2**27 + 1
    hi = big - (big - a)
    return hi, a - hi


def exact_product(t, theta):
    """(p, e) with p + e == t * theta exactly: p the float64 product, e its
    rounding error (Dekker's product; NumPy does one rounding per operation).
    Valid for |t|, |theta| below ~1e300 (the split must not overflow)."""
    t = np.asarray(t, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    p = t * theta
    th, tl = _split(t)
    bh, bl = _split(theta)
    e = ((th * bh - p) + th * bl + tl * bh) + tl * bl
    return p, e


def cos_sin(positions, theta, attention_factor=1.0):
    """cos and sin of t * theta_k (float64, shape positions.shape + (len(theta),)).

    The angle is the exact product of the two doubles, kept as p + e
    (:func:`exact_product`).  cos/sin of the double p come from the C
    library in ``np.longdouble`` (64-bit significand on x86, which reduces
    the argument exactly), and e (at most half an ulp of p) is added by the
    angle-addition formula.  The result is float64-accurate at any position
    the API accepts (|t * theta| <= 2**34), e.g. ~1e-19 before the final
    rounding at t = 2**31 on x86.  Where long double is plain double (MSVC,
    Apple arm64) the same steps give about 1 ulp of float64.
    """
    t = np.asarray(positions, dtype=np.float64)
    th = np.asarray(theta, dtype=np.float64)
    p, e = exact_product(t[..., None], th)
    p, e = p.astype(np.longdouble), e.astype(np.longdouble)
    cp, sp, ce, se = np.cos(p), np.sin(p), np.cos(e), np.sin(e)
    a = np.longdouble(attention_factor)
    return (a * (cp * ce - sp * se)).astype(np.float64), (a * (sp * ce + cp * se)).astype(np.float64)


def apply_rotary(x, cos, sin, interleaved=False, inverse=False):
    """Rotate each pair of x's first 2R features by the angle whose cos/sin are given.

    Half-split pairs (x[k], x[k+R]) (HF ``rotate_half``) unless ``interleaved``,
    which pairs (x[2k], x[2k+1]).  ``inverse`` rotates by the negative angle.
    Computes in float64; returns float64.
    """
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(cos, dtype=np.float64)
    s = np.asarray(sin, dtype=np.float64)
    if inverse:
        s = -s
    r = c.shape[-1]
    out = x.copy()
    if interleaved:
        a, b = x[..., 0 : 2 * r : 2], x[..., 1 : 2 * r : 2]
        out[..., 0 : 2 * r : 2] = a * c - b * s
        out[..., 1 : 2 * r : 2] = b * c + a * s
    else:
        a, b = x[..., :r], x[..., r : 2 * r]
        out[..., :r] = a * c - b * s
        out[..., r : 2 * r] = b * c + a * s
    return out


def apply_rotary_positions(x, positions, theta, attention_factor=1.0, interleaved=False, inverse=False):
    """The fused form: cos/sin of positions[..., None] * theta, then :func:`apply_rotary`."""
    c, s = cos_sin(positions, theta, attention_factor)
    return apply_rotary(x, c, s, interleaved=interleaved, inverse=inverse)
