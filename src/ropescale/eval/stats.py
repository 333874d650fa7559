"""The statistics of ``ropescale eval`` (pure NumPy): block means of per-token losses and their intervals,
the paired difference of two methods, Wilson and Newcombe intervals of pass-key accuracies."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ._common import BATCH_TOKENS, DEFAULT_BUCKET, EvalError


def batch_means(nll: np.ndarray, batch: int = BATCH_TOKENS) -> Tuple[List[float], List[int]]:
    """Means and counts of consecutive ``batch``-token blocks of the per-position losses.

    ``nll[i]`` is the loss of window position ``i + 1`` (position 0 has no
    prediction), so block ``b`` holds positions ``b * batch .. (b + 1) * batch - 1``
    and the first block one token fewer.

    >>> ropescale.eval.batch_means(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), batch=2)
    ([1.0, 2.5, 4.5], [1, 2, 2])
    """
    padded = np.concatenate([[np.nan], np.asarray(nll, dtype=np.float64)])
    means, counts = [], []
    for s in range(0, len(padded), batch):
        block = padded[s:s + batch]
        block = block[~np.isnan(block)]
        if len(block):
            means.append(float(block.mean()))
            counts.append(int(len(block)))
    return means, counts


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (Cornish-Fisher expansion in 1/df; within 1e-3 of the exact value for df >= 3).

    >>> round(ropescale.eval.t_quantile(0.975, 10), 3)
    2.228
    """
    if df < 1:
        raise ValueError(f"df must be at least 1, got {df}")
    z = _normal_quantile(p)
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4


def _normal_quantile(p: float) -> float:
    from statistics import NormalDist
    return NormalDist().inv_cdf(p)


def mean_interval(means: Sequence[float], counts: Sequence[int], level: float = 0.95) -> Dict[str, float]:
    """Token-weighted mean of block means and its ``level`` interval (batch means, Student's t).

    Neighbouring tokens' losses are correlated, so treating tokens as
    independent would make the interval too narrow; means of 32-token blocks
    are close to independent, and their spread gives the interval.  One block
    gives no interval (``lo`` = ``hi`` = NaN).
    """
    m = np.asarray(means, dtype=np.float64)
    w = np.asarray(counts, dtype=np.float64)
    mean = float((m * w).sum() / w.sum())
    k = len(m)
    if k < 2:
        return {"mean": mean, "lo": float("nan"), "hi": float("nan"), "blocks": k, "tokens": int(w.sum())}
    half = t_quantile(0.5 + level / 2, k - 1) * float(m.std(ddof=1)) / math.sqrt(k)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "blocks": k, "tokens": int(w.sum())}


def position_buckets(means: Sequence[float], counts: Sequence[int], bucket: int = DEFAULT_BUCKET,
                     batch: int = BATCH_TOKENS) -> List[Dict[str, Any]]:
    """The loss-by-position curve: per ``bucket`` positions, the mean loss and its 95 % interval.

    ``means``/``counts`` are a window's block means (:func:`batch_means`);
    ``bucket`` must be a multiple of ``batch``.
    """
    bucket = int(bucket)
    if bucket <= 0 or bucket % batch:
        raise EvalError(f"--bucket must be a positive multiple of {batch} tokens, got {bucket}")
    per = bucket // batch
    out = []
    for i in range(0, len(means), per):
        ci = mean_interval(means[i:i + per], counts[i:i + per])
        out.append(dict(ci, start=i * batch, end=min((i + per) * batch, 1 + sum(counts))))
    return out


def paired_difference(a: Mapping[str, Any], b: Mapping[str, Any], start: int = 0,
                      end: Optional[int] = None) -> Dict[str, float]:
    """Mean loss of ``a`` minus ``b`` over positions ``start..end`` of the same window, with a 95 % interval.

    ``a`` and ``b`` are two methods' loss entries for the same text and
    window: the same tokens, so the difference is taken block by block and
    most of the text's own variation cancels.
    """
    if a["window"] != b["window"] or a["batch"] != b["batch"]:
        raise ValueError("paired_difference needs two losses over the same window")
    batch = a["batch"]
    lo, hi = start // batch, (len(a["batch_nll"]) if end is None else -(-end // batch))
    d = np.subtract(a["batch_nll"][lo:hi], b["batch_nll"][lo:hi])
    return mean_interval(d, a["batch_tokens"][lo:hi])


def wilson(k: int, n: int, level: float = 0.95) -> Tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``.

    >>> [round(v, 3) for v in ropescale.eval.wilson(3, 3)]
    [0.439, 1.0]
    """
    if n <= 0:
        return (0.0, 1.0)
    z = _normal_quantile(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # the bounds at k = 0 and k = n are exactly 0 and 1 (rounding would leave 1e-17)
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def proportion_difference(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> Tuple[float, float]:
    """Newcombe's interval for ``k1/n1 - k2/n2`` from the two Wilson intervals (his method 10)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, level)
    l2, u2 = wilson(k2, n2, level)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
