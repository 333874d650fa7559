"""HTML for Jupyter: ``Rope._repr_html_`` and ``RopeAnalysis._repr_html_``.

Plain HTML tables with inline styles only (no scripts, no CSS classes), so
they render the same in Jupyter, VS Code and static exports.  Every value is
escaped.
"""
from __future__ import annotations

import html
import math
from typing import Any, Iterable, Sequence, Tuple

import numpy as np

__all__ = ["rope_html", "analysis_html"]

_TABLE = 'style="border-collapse:collapse;font-family:monospace;font-size:12px"'
_CELL = 'style="padding:1px 8px;text-align:right;border-bottom:1px solid #ddd"'
_KEY = 'style="padding:1px 8px;text-align:left;font-weight:bold;border-bottom:1px solid #ddd"'

_REGIME_COLORS = {"extrapolate": "#e8f1fb", "blend": "#fdf3e1", "interpolate": "#e9f6ea", "static": "#eeeeee"}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(v: float, digits: int = 5) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if not math.isfinite(v):
        return "inf" if v > 0 else str(v)
    return f"{v:.{digits}g}"


def _kv_table(items: Iterable[Tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><td {_KEY}>{_e(k)}</td><td {_CELL}>{_e(v)}</td></tr>" for k, v in items)
    return f"<table {_TABLE}>{rows}</table>"


def _short(v: Any) -> str:
    if isinstance(v, (list, tuple, np.ndarray)):
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):  # not a list of numbers (an unknown key): show it as text
            text = repr(v)
            return text if len(text) <= 60 else text[:57] + "..."
        if arr.ndim != 1:
            return repr(v)[:60]
        if arr.size > 4:
            return f"[{arr.size} values, {_num(arr.min(), 4)} .. {_num(arr.max(), 4)}]"
        return "[" + ", ".join(_num(x) for x in arr) + "]"
    if isinstance(v, float):
        return _num(v, 8)
    return str(v)


def rope_html(rope: Any) -> str:
    """An HTML summary of a :class:`ropescale.Rope`: parameters, scaling and period range.

    Examples
    --------
    >>> html = ropescale.Rope(128, 10000.0, {"rope_type": "ntk", "factor": 8.0})._repr_html_()
    >>> html.startswith("<div") and "ntk" in html and "factor" in html
    True
    """
    p = np.asarray(rope.periods)
    finite = p[np.isfinite(p)]
    items = [
        ("method", rope.method),
        ("head dim", rope.dim),
        ("rotary dim", rope.rotary_dim),
        ("base (rope_theta)", _num(rope.base, 8)),
    ]
    if rope.scaling:
        for k, v in rope.scaling.items():
            if k not in ("rope_type", "type"):
                items.append((k, _short(v)))
    items.append(("attention factor", _num(rope.attention_factor, 8)))
    if finite.size:
        items.append(("periods (tokens)", f"{_num(finite.min())} .. {_num(finite.max())}"))
    mp = getattr(rope, "max_position_embeddings", None)
    if mp is not None:
        items.append(("max_position_embeddings", mp))
    items.append(("pairing", "interleaved (2k, 2k+1)" if getattr(rope, "interleaved", False) else "half-split (k, k+R)"))
    title = f"<b>Rope</b> ({_e(rope.method)})"
    return f'<div style="display:inline-block">{title}{_kv_table(items)}</div>'


def _pair_rows(n: int, limit: int = 64) -> Sequence[int]:
    if n <= limit:
        return range(n)
    step = -(-n // limit)
    return sorted(set(range(0, n, step)) | {n - 1})


def analysis_html(a: Any) -> str:
    """An HTML report of a :class:`ropescale.analysis.RopeAnalysis`: summary and per-pair table.

    Rows are colored by regime; at most 64 pairs are listed (evenly spaced, last
    pair included) and the table scrolls.

    Examples
    --------
    >>> a = ropescale.Rope(64).extend(16384, "yarn", original_len=4096).analyze()
    >>> html = a._repr_html_()
    >>> html.count("<tr") - 1 - 7           # one row per pair after the header and summary
    32
    """
    lo, hi = a.yarn_range
    kc = a.critical_dim
    crit = f"pair {kc}" if kc < a.n_pairs else "none (every pair rotates in training)"
    summary = _kv_table([
        ("method", a.method),
        ("rotary dim / head dim", f"{a.rotary_dim} / {a.dim}"),
        ("base, factor", f"{_num(a.base, 8)}, {_num(a.factor)}"),
        ("context (tokens)", f"{_num(a.original_len, 8)} \u2192 {_num(a.target_len, 8)}"),
        ("attention factor", _num(a.attention_factor, 6)),
        ("YaRN range (\u03b2 32/1)", f"pairs {_num(lo)} .. {_num(hi)}"),
        ("critical dim", crit),
    ])
    head = ("k", "\u03b8", "\u03b8'", "period", "period'", "rot. original", "rot. target", "regime")
    th = "".join(f"<th {_CELL}>{_e(h)}</th>" for h in head)
    body = []
    for k in _pair_rows(a.n_pairs):
        reg = str(a.regime[k])
        mark = ' style="outline:1px solid #c00"' if k == kc else ""
        cells = (str(k), _num(a.theta[k]), _num(a.theta_scaled[k]), _num(a.period_before[k]),
                 _num(a.period_after[k]), _num(a.rotations_original[k]), _num(a.rotations_target[k]), reg)
        tds = "".join(f"<td {_CELL}>{_e(c)}</td>" for c in cells)
        body.append(f'<tr{mark} bgcolor="{_REGIME_COLORS.get(reg, "#ffffff")}">{tds}</tr>')
    pairs = (f'<div style="max-height:320px;overflow:auto;margin-top:6px">'
             f"<table {_TABLE}><tr>{th}</tr>{''.join(body)}</table></div>")
    note = ("<small>periods in tokens; \u03b8 in radians per token; "
            "the critical pair is outlined in red</small>")
    return f'<div style="display:inline-block"><b>RopeAnalysis</b>{summary}{pairs}{note}</div>'
