"""Plots for planning a context extension (needs matplotlib: ``pip install ".[plot]"`` in a ropescale clone).

Both functions draw on a new :class:`matplotlib.figure.Figure` (not through
``pyplot``, so nothing global is touched and Jupyter shows the returned figure
once) or on the ``ax`` you pass, and return the Figure.

Ropes can be given as :class:`ropescale.Rope` objects, as method names (any
of :data:`ropescale.METHODS`, built with :meth:`Rope.extend` from
``Rope(dim, base)`` for ``original_len -> target_len``), or as a dict
``{label: rope or name}``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from . import _checks
from .analysis import analyze
from .methods import SPECS, UNSCALED, canonical, report_methods
from .rope import Rope

__all__ = ["plot_periods", "plot_attention", "attention_scores", "build_ropes"]

#: Methods drawn when no rope is given (those of ``ropescale report``).
DEFAULT_METHODS = report_methods()

# One color per method in every figure (from the method table), so plots can
# be compared side by side.
_COLORS = {name: spec.color for name, spec in SPECS.items() if spec.color is not None}
_SPARE = ("tab:cyan", "tab:olive", "black", "tab:gray")
# Reference lines: trained context, target context.
_TRAINED = {"color": "black", "linestyle": ":", "linewidth": 1.0}
_TARGET = {"color": "0.35", "linestyle": "-.", "linewidth": 1.0}


def _style(rope, used, *, width):
    if rope.method == UNSCALED:
        return {"color": "0.45", "linestyle": "--", "linewidth": width}
    color = _COLORS.get(rope.method)
    if color is None or color in used:
        # a second rope of a method (e.g. a model's own config): a color no method uses
        color = next((c for c in _SPARE if c not in used), None)
        used.add(color)
        return {"color": color, "linewidth": width, "linestyle": "-."}
    used.add(color)
    return {"color": color, "linewidth": width}


def _mpl():
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "ropescale.plot needs matplotlib, which is not installed; "
            "install the plot extra: pip install \".[plot]\" in a ropescale clone"
        ) from e
    return Figure


def _figure_and_axes(ax, figsize=(7.0, 4.2)):
    Figure = _mpl()
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot()
    if not hasattr(ax, "figure") or not hasattr(ax, "plot"):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    return ax.figure, ax


def build_ropes(ropes: Any = (), *, dim: int = 128, base: float = 10000.0,
                original_len: Optional[float] = None, target_len: Optional[float] = None) -> Dict[str, Rope]:
    """Resolve ropes, method names or a ``{label: ...}`` dict into ``{label: Rope}``.

    Method names are built as ``Rope(dim, base)`` (``"default"``) or
    ``Rope(dim, base).extend(target_len, name, original_len=original_len)``
    (which fills each method's own keys, e.g. ``llama3`` gets
    ``low_freq_factor=1, high_freq_factor=4``).  With no ropes,
    all of :data:`DEFAULT_METHODS` are built.

    Examples
    --------
    >>> rs = ropescale.plot.build_ropes(["default", "ntk"], original_len=4096, target_len=32768)
    >>> {k: (v.method, v.factor) for k, v in rs.items()}
    {'default': ('default', 1.0), 'ntk': ('ntk', 8.0)}
    """
    if isinstance(ropes, (str, Rope)):
        ropes = [ropes]
    items: List[Tuple[Optional[str], Any]]
    if isinstance(ropes, Mapping):
        items = [(str(k), v) for k, v in ropes.items()]
    else:
        items = [(None, v) for v in ropes]
    if not items:
        items = [(None, m) for m in DEFAULT_METHODS]
    out: Dict[str, Rope] = {}
    for label, value in items:
        if isinstance(value, Rope):
            rope = value
        elif isinstance(value, str):
            if SPECS[canonical(value, "method name")].extend is None:
                rope = Rope(dim, base)
            else:
                if original_len is None or target_len is None:
                    raise ValueError(f"original_len and target_len are required to build method {value!r} from its name")
                rope = Rope(dim, base).extend(target_len, value, original_len=original_len)
        else:
            raise TypeError(f"ropes must be Rope objects, method names or a dict of them, got {type(value).__name__}")
        name = label or (value if isinstance(value, str) else rope.method)
        unique, i = name, 2
        while unique in out:
            unique, i = f"{name} ({i})", i + 1
        out[unique] = rope
    return out


def _lengths(ropes: Dict[str, Rope], original_len, target_len) -> Tuple[float, float]:
    if original_len is not None and target_len is not None:
        return (_checks.real("original_len", original_len, above=0.0), _checks.real("target_len", target_len, above=0.0))
    for rope in ropes.values():
        if rope.method != UNSCALED:
            a = analyze(rope, target_len=target_len, original_len=original_len)
            return a.original_len, a.target_len
    raise ValueError("original_len and target_len are required: no rope here knows its trained context")


def plot_periods(*ropes: Any, original_len: Optional[float] = None, target_len: Optional[float] = None,
                 dim: int = 128, base: float = 10000.0, ax: Any = None, title: Optional[str] = None):
    """Per-pair periods (tokens, log scale) of several methods, with the trained and target contexts.

    Parameters
    ----------
    *ropes : Rope, method name, or one dict ``{label: Rope or name}``
        What to draw (default: every method of :data:`DEFAULT_METHODS`).
    original_len, target_len : float
        Trained and target context in tokens: horizontal reference lines, and
        the lengths names are built for.  Taken from the first scaled rope
        when omitted.  ``dynamic`` is drawn at ``target_len``.
    dim, base : int, float
        Head dimension and base of ropes built from names.
    ax : matplotlib Axes, optional
        Draw there instead of on a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        x: pair index ``k``; y: period ``2 pi / theta'_k`` in tokens.  A
        dotted vertical line marks the critical pair (first pair whose
        original period exceeds ``original_len``).

    Examples
    --------
    >>> fig = ropescale.plot.plot_periods("default", "ntk", "yarn", original_len=4096, target_len=32768)
    >>> ax = fig.axes[0]
    >>> ax.get_yscale(), [t.get_text() for t in ax.get_legend().get_texts()][:3]
    ('log', ['default', 'ntk', 'yarn'])
    """
    fig, axes = _figure_and_axes(ax)
    items = ropes[0] if len(ropes) == 1 and isinstance(ropes[0], Mapping) else ropes
    rs = build_ropes(items, dim=dim, base=base, original_len=original_len, target_len=target_len)
    m_l, m = _lengths(rs, original_len, target_len)
    crit = None
    used: set = set()
    for label, rope in rs.items():
        a = analyze(rope, target_len=m, original_len=m_l)
        y = np.where(np.isfinite(a.period_after), a.period_after, np.nan)
        axes.plot(a.k, y, label=label, **_style(rope, used, width=1.6))
        if crit is None:
            crit = a.critical_dim if a.critical_dim < a.n_pairs else None
    axes.set_yscale("log")
    axes.axhline(m_l, **_TRAINED)
    axes.axhline(m, **_TARGET)
    x_text = axes.get_xlim()[0]
    axes.annotate(f"trained context {m_l:,.0f}", (x_text, m_l), xytext=(4, 3), textcoords="offset points",
                  color=_TRAINED["color"], fontsize=8)
    axes.annotate(f"target context {m:,.0f}", (x_text, m), xytext=(4, 3), textcoords="offset points",
                  color=_TARGET["color"], fontsize=8)
    if crit is not None:
        axes.axvline(crit, color="0.6", linewidth=0.8, linestyle=":")
        axes.annotate(f"critical pair {crit}", (crit, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                      textcoords="offset points", color="0.35", fontsize=8)
    axes.set_xlabel("pair index k")
    axes.set_ylabel("period 2\u03c0/\u03b8\u2032 (tokens)")
    axes.set_title(title if title is not None else f"RoPE periods per pair, {m_l:,.0f} \u2192 {m:,.0f} tokens")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return fig


def _probe_vector(vector: Any, d: int, seed: int) -> np.ndarray:
    if isinstance(vector, str):
        if vector == "ones":
            return np.ones(d)
        if vector == "random":
            return np.random.default_rng(seed).standard_normal(d)
        raise ValueError(f"vector must be 'ones', 'random' or an array of shape ({d},), got {vector!r}")
    v = np.asarray(vector, dtype=np.float64)
    if v.shape != (d,):
        raise ValueError(f"vector must have shape ({d},) (the head dim), got {v.shape}")
    return v


def attention_scores(rope: Rope, distances: Any, vector: Any = "ones", *, seed: int = 0,
                     seq_len: Optional[int] = None) -> np.ndarray:
    """``<Ro(q, m theta'), Ro(k, n theta')> / <q, k>`` for ``m - n`` in ``distances`` and ``q = k``.

    Rotations go through :meth:`Rope.apply`, so the attention factor is
    included as in a model: squared, on the rotated features only (features
    past the rotary dim pass through).  ``n = 0`` and ``m`` = the distance,
    which is enough because the score depends only on ``m - n``.

    Parameters
    ----------
    rope : Rope
    distances : array_like of int, shape (N,)
        Non-negative relative positions ``m - n`` (tokens).
    vector : ``"ones"``, ``"random"`` or array of shape ``(rope.dim,)``
        ``q = k``: all ones; a standard normal vector drawn with ``seed``;
        or the given vector.
    seq_len : int, optional
        Sequence length for ``dynamic``/``longrope`` (default ``max(distances) + 1``).

    Returns
    -------
    numpy.ndarray
        float64, shape ``(N,)``; 1 at distance 0 when the attention factor is 1.

    Examples
    --------
    >>> s = ropescale.plot.attention_scores(ropescale.Rope(64), [0, 1, 100])
    >>> s.round(3)          # mean of cos(distance * theta_k) over the 32 pairs
    array([1.   , 0.966, 0.559])
    """
    if not isinstance(rope, Rope):
        raise TypeError(f"rope must be a ropescale.Rope, got {type(rope).__name__}")
    dist = np.asarray(distances)
    if dist.dtype.kind not in "iu" or dist.ndim != 1:
        raise TypeError(f"distances must be a 1-D array of integers, got dtype {dist.dtype} and shape {dist.shape}")
    if dist.size and dist.min() < 0:
        raise ValueError(f"distances must be >= 0, got {int(dist.min())}")
    q = _probe_vector(vector, rope.dim, seed)
    if seq_len is None and dist.size:
        seq_len = int(dist.max()) + 1
    k_rot = rope.apply(q[None, :], np.zeros(1, dtype=np.int64), seq_len=seq_len)[0]
    norm = float(q @ q)
    out = np.empty(dist.shape[0], dtype=np.float64)
    chunk = 4096
    for start in range(0, dist.shape[0], chunk):
        pos = dist[start:start + chunk]
        q_rot = rope.apply(np.broadcast_to(q, (pos.shape[0], rope.dim)), pos, seq_len=seq_len)
        out[start:start + chunk] = q_rot @ k_rot / norm
    return out


def plot_attention(ropes: Any, max_distance: int, *, vector: Any = "ones", seed: int = 0,
                   original_len: Optional[float] = None, target_len: Optional[float] = None,
                   dim: int = 128, base: float = 10000.0, num: Optional[int] = None,
                   logx: bool = True, ax: Any = None, title: Optional[str] = None):
    """Attention score ``<Ro(q, m theta'), Ro(k, n theta')>`` against the distance ``m - n``.

    For ``q = k`` (``vector="ones"``, the long-term-decay picture of the RoPE
    paper, or a fixed random vector), normalised by ``<q, k>``: see
    :func:`attention_scores`.  The score includes the squared attention factor
    of YaRN/LongRoPE.  ``dynamic`` is evaluated at ``seq_len = max_distance + 1``.

    Parameters
    ----------
    ropes : Rope, method name, list of them, or dict ``{label: Rope or name}``
    max_distance : int
        Largest ``m - n`` drawn, in tokens.
    vector, seed
        See :func:`attention_scores`.
    original_len, target_len, dim, base
        For ropes built from names (see :func:`build_ropes`); the two lengths
        are also drawn as vertical lines when given.
    num : int, optional
        Number of distances drawn: geometrically spaced from 1 when ``logx``
        (default 4,000), else evenly spaced from 0 (default every integer
        distance, at most 50,000).
    logx : bool
        Logarithmic distance axis (default), which shows the short-range
        decay and the long-range behaviour in one picture.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = ropescale.plot.plot_attention(["default", "yarn"], 8192, original_len=4096, target_len=16384, dim=64)
    >>> len(fig.axes[0].get_lines()) >= 2
    True
    """
    fig, axes = _figure_and_axes(ax)
    maxd = _checks.integer("max_distance", max_distance, minimum=1)
    if num is None:
        n = min(maxd + 1, 4000 if logx else 50_000)
    else:
        n = _checks.integer("num", num, minimum=2)
    if _checks.boolean("logx", logx):
        dist = np.unique(np.round(np.geomspace(1, maxd, n)).astype(np.int64))
    else:
        dist = np.unique(np.round(np.linspace(0, maxd, n)).astype(np.int64))
    rs = build_ropes(ropes, dim=dim, base=base, original_len=original_len, target_len=target_len)
    used: set = set()
    for label, rope in rs.items():
        style = _style(rope, used, width=0.9)
        style["linestyle"] = "-"
        if rope.method != UNSCALED:
            style["alpha"] = 0.85
        axes.plot(dist, attention_scores(rope, dist, vector, seed=seed, seq_len=maxd + 1), label=label, **style)
    for length, ref, text in ((original_len, _TRAINED, "trained"), (target_len, _TARGET, "target")):
        if length is not None and 0 < float(length) <= maxd:
            color = ref["color"]
            axes.axvline(float(length), **ref)
            axes.annotate(f"{text} {float(length):,.0f}", (float(length), 0.0), xycoords=("data", "axes fraction"),
                          xytext=(-3, 4), textcoords="offset points", color=color, fontsize=8, ha="right")
    if logx:
        axes.set_xscale("log")
    axes.axhline(0.0, color="0.7", linewidth=0.6)
    axes.set_xlabel("relative distance m \u2212 n (tokens)")
    what = "q = k = ones" if isinstance(vector, str) and vector == "ones" else "q = k (fixed vector)"
    axes.set_ylabel(f"score / \u27e8q, k\u27e9  ({what})")
    axes.set_title(title if title is not None else "Attention score against distance")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="upper right")
    return fig
