"""Per-pair analysis of a scaled rope: periods, rotations, regimes, YaRN range, critical dimension.

Everything here is derived from the frequencies the C core computes; the
formulas are stated next to each quantity (see also docs/math.md).

Notation: ``d`` rotary dimension, ``b`` base, ``k = 0 .. d/2 - 1`` pair index,
``theta_k = b**(-2k/d)`` the original frequency, ``theta'_k`` the scaled one,
``m_l`` the trained context length, ``m`` the target length, ``s`` the
method's ``factor``.  Periods and lengths are in tokens (positions).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from . import _checks
from ._freq import inv_freq, periods, yarn_correction_range
from .layers import LayerRopes
from .rope import _UPPER, Rope

__all__ = ["RopeAnalysis", "analyze", "critical_dim", "max_supported_length", "REGIMES"]

#: The regime labels :func:`analyze` gives pairs, in order of increasing stretch.
REGIMES = ("extrapolate", "blend", "interpolate", "static")

# Relative tolerance for "theta' equals theta" and "theta' equals theta / s":
# the methods compute these exactly up to a few float64 roundings.
_RTOL = 1e-9


def critical_dim(dim: int, base: float, original_len: float) -> int:
    """Index of the first pair whose period exceeds the trained context ``original_len``.

    Pairs ``k < critical_dim`` complete at least one full rotation within the
    trained context, so training saw every angle they can take; pairs from
    ``critical_dim`` on never did.  This is the critical dimension of Liu et
    al., "Scaling Laws of RoPE-based Extrapolation" (2023, arXiv:2310.05209),
    counted in pairs: their ``d_extra = 2 * ceil((d/2) * log_b(m_l / 2 pi))``
    features equals ``2 * critical_dim`` (except when ``m_l`` is exactly a
    period, where this function, counting ``T_k <= m_l``, gives one more).

    Computed as the number of pairs with ``T_k = 2 pi b**(2k/d) <= original_len``
    (periods grow with ``k``), so the result lies in ``[0, dim // 2]``;
    ``dim // 2`` means every pair completes a rotation.

    Parameters
    ----------
    dim : int
        Rotary dimension ``d`` (positive, even).
    base : float
        ``rope_theta`` (> 1).
    original_len : float
        Trained context length ``m_l`` in tokens (> 0).

    Returns
    -------
    int
        A pair index (multiply by 2 for a feature count).

    Examples
    --------
    >>> ropescale.analysis.critical_dim(128, 10000.0, 4096)
    46
    >>> ropescale.analysis.critical_dim(128, 500000.0, 8192)   # Llama 3
    35
    """
    d = _checks.dim(dim)
    m_l = _checks.real("original_len", original_len, above=0.0)
    return int(np.count_nonzero(periods(inv_freq(d, base)) <= m_l))


def max_supported_length(dim: int, base: float, original_len: float, new_base: float) -> float:
    """Extrapolation bound of base scaling: ``T_extra = 2 pi * new_base**(2 k_c / d)``.

    Liu et al., "Scaling Laws of RoPE-based Extrapolation" (2023,
    arXiv:2310.05209), Theorem 2: a model trained at ``original_len`` tokens
    with base ``base`` and fine-tuned with a larger base ``new_base`` attends
    reliably up to the period, under ``new_base``, of its critical pair
    ``k_c = critical_dim(dim, base, original_len)`` (``d_extra / d = 2 k_c / d``
    in the paper's notation).  Beyond it the critical pair meets angles it
    never saw.  Returns ``inf`` when every pair completes a rotation in
    training (``k_c == dim // 2``).

    Parameters
    ----------
    dim : int
        Rotary dimension ``d``.
    base : float
        Base the model was trained with (> 1).
    original_len : float
        Trained context length in tokens (> 0).
    new_base : float
        The scaled base (``>= base``), e.g. :func:`ropescale.ntk_base`.

    Returns
    -------
    float
        A length in tokens.

    Examples
    --------
    >>> new = ropescale.ntk_base(10000.0, 128, 8.0)     # NTK-aware 4k -> 32k
    >>> round(ropescale.analysis.max_supported_length(128, 10000.0, 4096, new))
    21507
    """
    d = _checks.dim(dim)
    b = _checks.real("base", base, above=1.0)
    nb = _checks.real("new_base", new_base, at_least=b)
    kc = critical_dim(d, b, original_len)
    if kc >= d // 2:
        return math.inf
    return 2.0 * math.pi * nb ** (2.0 * kc / d)


def _regimes(theta: np.ndarray, theta_scaled: np.ndarray, factor: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        stretch = theta / theta_scaled
    regime = np.full(theta.shape, "blend", dtype="<U11")
    regime[np.abs(stretch - 1.0) <= _RTOL] = "extrapolate"
    if factor > 1.0:
        interp = (np.abs(stretch - factor) <= _RTOL * factor) & (regime != "extrapolate")
        regime[interp] = "interpolate"
    regime[theta_scaled == 0] = "static"
    return regime


class RopeAnalysis:
    """What a scaling does to each frequency pair of a rope (returned by :func:`analyze`).

    Scalars
    -------
    method : str
        The rope's ``rope_type``.
    dim, rotary_dim : int
        Head dimension ``D`` and rotary dimension ``d``.
    base : float
        ``rope_theta``.
    factor : float
        The scaling's ``factor`` ``s`` (1 when it names none).
    attention_factor : float
        Multiplier of cos/sin (YaRN, LongRoPE temperature) at ``target_len``.
    original_len, target_len : float
        Trained context ``m_l`` and target context ``m``, in tokens.
    yarn_range : (float, float)
        :func:`ropescale.yarn_correction_range` for ``(d, b, m_l)`` with
        ``beta_fast=32, beta_slow=1`` whatever the method, for comparison.
    critical_dim : int
        :func:`critical_dim` ``(d, b, m_l)``: first pair whose original period
        exceeds ``m_l``.
    extrapolation_bound : float
        ``period_after[critical_dim]`` in tokens (``inf`` if there is no
        critical pair).  For ``ntk`` this is :func:`max_supported_length`.

    Arrays (one entry per pair, shape ``(n_pairs,)``)
    -------------------------------------------------
    k : int64
        Pair index.
    theta, theta_scaled : float64
        ``theta_k = b**(-2k/d)`` and ``theta'_k`` (radians per token);
        ``dynamic`` and ``longrope`` are evaluated at ``seq_len = ceil(target_len)``.
    stretch : float64
        ``theta_k / theta'_k = period_after / period_before`` (``inf`` where
        ``theta'_k = 0``).
    period_before, period_after : float64
        ``2 pi / theta_k`` and ``2 pi / theta'_k`` in tokens.
    rotations_original : float64
        ``original_len / period_before``: full turns pair ``k`` makes within
        the trained context.
    rotations_target : float64
        ``target_len / period_after``: full turns within the target context
        under scaling (0 where ``theta'_k = 0``).
    regime : str (``<U11``)
        ``'extrapolate'`` where ``theta' == theta``, ``'interpolate'`` where
        ``theta' == theta / s`` (only when ``s > 1``), ``'static'`` where
        ``theta' == 0`` (pairs ``proportional`` leaves unrotated), ``'blend'``
        otherwise; equality is to a relative ``1e-9``.  Consequences:
        ``default`` extrapolates everywhere, ``linear`` interpolates
        everywhere; ``ntk`` extrapolates pair 0 (``lambda**0 = 1``),
        interpolates exactly the last pair (period matching:
        ``stretch = lambda**((d-2)/d) = s``) and blends the pairs between,
        progressively (``stretch_k = lambda**(2k/d)``); ``dynamic`` at the
        target length stretches the last pair by ``s*m/m_l - (s - 1)`` (not
        ``s``), so every pair but 0 blends; ``yarn`` and ``llama3``
        extrapolate high frequencies, interpolate low ones and blend between.

    Examples
    --------
    >>> a = ropescale.analyze(ropescale.Rope(64).extend(16384, "linear", original_len=4096))
    >>> a.counts
    {'interpolate': 32}
    >>> a.period_after.shape
    (32,)
    """

    method: str
    dim: int
    rotary_dim: int
    base: float
    factor: float
    attention_factor: float
    original_len: float
    target_len: float
    yarn_range: Tuple[float, float]
    critical_dim: int
    extrapolation_bound: float
    k: np.ndarray
    theta: np.ndarray
    theta_scaled: np.ndarray
    stretch: np.ndarray
    period_before: np.ndarray
    period_after: np.ndarray
    rotations_original: np.ndarray
    rotations_target: np.ndarray
    regime: np.ndarray

    _ARRAYS = ("k", "theta", "theta_scaled", "stretch", "period_before", "period_after",
               "rotations_original", "rotations_target", "regime")
    _SCALARS = ("method", "dim", "rotary_dim", "base", "factor", "attention_factor", "original_len",
                "target_len", "yarn_range", "critical_dim", "extrapolation_bound")

    def __init__(self, **fields: Any):
        for name in self._SCALARS + self._ARRAYS:
            setattr(self, name, fields[name])
        for name in self._ARRAYS:
            getattr(self, name).setflags(write=False)

    @property
    def n_pairs(self) -> int:
        """Number of frequency pairs (``rotary_dim // 2``)."""
        return int(self.k.shape[0])

    @property
    def counts(self) -> Dict[str, int]:
        """Number of pairs in each regime (regimes that occur, in :data:`REGIMES` order)."""
        return {r: int(np.count_nonzero(self.regime == r)) for r in REGIMES if np.any(self.regime == r)}

    # -- text ------------------------------------------------------------
    def summary(self) -> str:
        """A few lines: the model, the lengths, the YaRN range and the critical pair."""
        lo, hi = self.yarn_range
        kc = self.critical_dim
        crit = (f"pair {kc} (period {self.period_before[kc]:.5g} -> {self.period_after[kc]:.5g} tokens)"
                if kc < self.n_pairs else "none: every pair completes a rotation in training")
        counts = ", ".join(f"{n} {r}" for r, n in self.counts.items())
        return "\n".join([
            f"method {self.method}: rotary dim {self.rotary_dim} of {self.dim}, base {self.base:g}, "
            f"factor {self.factor:g}, attention factor {self.attention_factor:.6g}",
            f"context {self.original_len:g} -> {self.target_len:g} tokens",
            f"YaRN correction range (beta 32/1): pairs {lo:g} .. {hi:g}",
            f"critical dim: {crit}",
            f"regimes: {counts}",
        ])

    def table(self, pairs: Optional[Sequence[int]] = None) -> str:
        """Fixed-width text table, one row per pair (``pairs`` selects rows; default all).

        Examples
        --------
        >>> a = ropescale.Rope(8).extend(32768, "ntk", original_len=4096).analyze()
        >>> print(a.table())
        k  theta    theta'  period (tok)  period' (tok)  rot(orig)  rot(target)  regime
        0      1         1        6.2832         6.2832      651.9       5215.2  extrapolate
        1    0.1      0.05        62.832         125.66      65.19       260.76  blend
        2   0.01    0.0025        628.32         2513.3      6.519       13.038  blend
        3  0.001  0.000125        6283.2         50,265     0.6519       0.6519  interpolate
        """
        rows = _rows(self, pairs)
        head = ("k", "theta", "theta'", "period (tok)", "period' (tok)", "rot(orig)", "rot(target)", "regime")
        body = [(str(k), f"{self.theta[k]:.5g}", f"{self.theta_scaled[k]:.5g}", _tokens(self.period_before[k]),
                 _tokens(self.period_after[k]), f"{self.rotations_original[k]:.5g}",
                 f"{self.rotations_target[k]:.5g}", str(self.regime[k])) for k in rows]
        return format_table(head, body)

    def __str__(self) -> str:
        return self.summary() + "\n\n" + self.table()

    def __repr__(self) -> str:
        return (f"RopeAnalysis(method={self.method!r}, rotary_dim={self.rotary_dim}, base={self.base:g}, "
                f"factor={self.factor:g}, original_len={self.original_len:g}, target_len={self.target_len:g}, "
                f"yarn_range={self.yarn_range}, critical_dim={self.critical_dim}, regimes={self.counts})")

    def to_dict(self) -> Dict[str, Any]:
        """Plain Python types (lists of floats; ``inf`` stays ``float('inf')``).

        Examples
        --------
        >>> d = ropescale.Rope(8).extend(16384, "linear", original_len=4096).analyze().to_dict()
        >>> d["regime"]
        ['interpolate', 'interpolate', 'interpolate', 'interpolate']
        >>> sorted(d)[:4]
        ['attention_factor', 'base', 'critical_dim', 'dim']
        """
        out: Dict[str, Any] = {}
        for name in self._SCALARS:
            v = getattr(self, name)
            out[name] = list(v) if isinstance(v, tuple) else v
        for name in self._ARRAYS:
            out[name] = getattr(self, name).tolist()
        return out

    def _repr_html_(self) -> str:
        from ._display import analysis_html
        return analysis_html(self)


def _rows(a: RopeAnalysis, pairs: Optional[Sequence[int]]):
    if pairs is None:
        return range(a.n_pairs)
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
        raise TypeError(f"pairs must be a sequence of pair indices, got {type(pairs).__name__}")
    rows = [_checks.integer("pairs[i]", k, minimum=-a.n_pairs, maximum=a.n_pairs - 1) for k in pairs]
    return [k % a.n_pairs for k in rows]


def _tokens(v: float) -> str:
    """A length in tokens: 5 significant digits when small, grouped integers up to 1e7."""
    if not math.isfinite(v):
        return "inf"
    if v < 1e4:
        return f"{v:.5g}"
    if v < 1e7:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def format_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """Right-aligned fixed-width columns (the last column left-aligned if it holds words)."""
    cols = list(zip(head, *body)) if body else [(h,) for h in head]
    widths = [max(len(c) for c in col) for col in cols]
    last_left = bool(body) and not any(ch.isdigit() for ch in str(body[0][-1]))

    def line(cells):
        parts = [c.rjust(w) for c, w in zip(cells[:-1], widths[:-1])]
        parts.append(cells[-1].ljust(widths[-1]) if last_left else cells[-1].rjust(widths[-1]))
        return "  ".join(parts).rstrip()

    return "\n".join([line(head)] + [line(r) for r in body])


def _resolve_lengths(rope, target_len, original_len) -> Tuple[float, float]:
    if original_len is None:
        original_len = rope.original_max_position_embeddings
    if original_len is None:
        mp = getattr(rope, "max_position_embeddings", None)
        if mp is not None:
            original_len = float(mp) / rope.factor
    if original_len is None:
        raise ValueError("original_len is required: this rope does not know its trained context length "
                         "(its scaling names no original_max_position_embeddings and it has no max_position_embeddings)")
    m_l = _checks.real("original_len", original_len, above=0.0)
    if target_len is None:
        mp = getattr(rope, "max_position_embeddings", None)
        mp = None if mp is None else _checks.real("rope.max_position_embeddings", mp, above=0.0)
        target_len = mp if mp is not None and mp > m_l else m_l * rope.factor
    m = _checks.real("target_len", target_len, above=0.0)
    return m_l, m


def analyze(rope: Any, target_len: Optional[float] = None, original_len: Optional[float] = None) -> RopeAnalysis:
    """Compare a rope's scaled frequencies with its original ones, pair by pair.

    Parameters
    ----------
    rope : Rope or LayerRopes
        Any rope (any method; the original frequencies are
        ``inv_freq(rope.rotary_dim, rope.base)``).  For the
        :class:`ropescale.LayerRopes` of a per-layer model, the result is
        ``{layer_type: RopeAnalysis or None}`` (None: no rope on those layers).
    target_len : float, optional
        Target context ``m`` in tokens.  Default: the rope's
        ``max_position_embeddings`` when it exceeds ``original_len``
        (:meth:`Rope.extend` sets it to its target, :meth:`Rope.from_hf` to
        the config's), else ``original_len * factor``.  ``dynamic`` and
        ``longrope`` frequencies are taken at ``seq_len = ceil(target_len)``.
    original_len : float, optional
        Trained context ``m_l`` in tokens.  Default: the scaling's
        ``original_max_position_embeddings``, else
        ``rope.max_position_embeddings / factor`` (set by
        :meth:`Rope.extend` and :meth:`Rope.from_hf`); ``ValueError`` if
        neither is known.

    Returns
    -------
    RopeAnalysis
        float64 arrays of shape ``(rotary_dim // 2,)`` (see its docstring for
        each field, its units and the precise definition of ``regime``),
        ``.table()``, ``.to_dict()`` and an HTML table in Jupyter.

    Examples
    --------
    >>> a = ropescale.analysis.analyze(ropescale.Rope(128).extend(32768, "yarn", original_len=4096))
    >>> a.yarn_range, a.critical_dim
    ((20.0, 46.0), 46)
    >>> a.counts
    {'extrapolate': 21, 'blend': 25, 'interpolate': 18}
    >>> float(a.stretch[-1]), round(float(a.period_after[0]), 4)
    (8.0, 6.2832)
    >>> ntk = ropescale.Rope(128).extend(32768, "ntk", original_len=4096).analyze()
    >>> str(ntk.regime[0]), str(ntk.regime[1]), str(ntk.regime[-1])
    ('extrapolate', 'blend', 'interpolate')
    """
    if isinstance(rope, LayerRopes):   # a per-layer model: {layer_type: RopeAnalysis or None}
        return rope.analyze(target_len=target_len, original_len=original_len)
    if not isinstance(rope, Rope):
        raise TypeError(f"rope must be a ropescale.Rope (or the LayerRopes of ropescale.layer_ropes), "
                        f"got {type(rope).__name__}")
    m_l, m = _resolve_lengths(rope, target_len, original_len)
    if m > 2.0**53:
        raise ValueError(f"target_len must be <= 2**53 tokens, got {m:.6g}")
    d = rope.rotary_dim
    theta = inv_freq(d, rope.base)
    theta_scaled, attn = rope.inv_freq_at(seq_len=int(math.ceil(m)))
    theta_scaled = np.array(theta_scaled, dtype=np.float64)
    if theta_scaled.shape != theta.shape:  # pragma: no cover - guards a library invariant
        raise ValueError(f"rope gives {theta_scaled.shape[0]} frequencies for rotary dim {d}")
    s = float(rope.factor)
    p_before = periods(theta)
    p_after = periods(theta_scaled)
    with np.errstate(divide="ignore"):
        stretch = theta / theta_scaled
    kc = critical_dim(d, rope.base, m_l)
    return RopeAnalysis(
        method=rope.method,
        dim=rope.dim,
        rotary_dim=d,
        base=rope.base,
        factor=s,
        attention_factor=float(attn),
        original_len=m_l,
        target_len=m,
        yarn_range=tuple(float(v) for v in yarn_correction_range(d, rope.base, max(m_l, 1.0))),
        critical_dim=kc,
        extrapolation_bound=float(p_after[kc]) if kc < d // 2 else math.inf,
        k=np.arange(d // 2, dtype=np.int64),
        theta=theta,
        theta_scaled=theta_scaled,
        stretch=stretch,
        period_before=p_before,
        period_after=p_after,
        rotations_original=m_l / p_before,
        rotations_target=m / p_after,
        regime=_regimes(theta, theta_scaled, s),
    )


_UPPER["analyze"] = analyze
