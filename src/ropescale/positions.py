"""Position builders: position ids for methods that change positions, not frequencies.

The frequencies of a :class:`ropescale.Rope` are fixed per model; these build
the ``positions`` array that :meth:`Rope.apply` / :meth:`Rope.cos_sin` take.

- :func:`packed_positions`: several documents packed into one row (varlen /
  ``cu_seqlens`` attention): every document starts at position 0.
- :func:`self_extend_positions`: Self-Extend's grouped positions (Jin et al.
  2024, "LLM Maybe LongLM: Self-Extend LLM Context Window Without Tuning",
  arXiv:2401.01325; code: github.com/datamllab/LongLM).

Formulas and sources: ``docs/methods-extra.md``.
"""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from . import _checks

__all__ = ["packed_positions", "self_extend_positions"]


def _int_vector(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and arr.size == 0):
        raise TypeError(f"{name} must be a 1-D sequence of integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr.astype(np.int64)


def packed_positions(cu_seqlens: Any = None, *, lengths: Any = None, document_ids: bool = False):
    """Positions of documents packed into one sequence: ``0 .. n_i - 1`` for each document.

    Give exactly one of ``cu_seqlens`` (cumulative offsets ``[0, n_0, n_0 + n_1,
    ...]``, as flash-attention's varlen functions take them) or ``lengths``
    (``[n_0, n_1, ...]``).  Empty documents are allowed.

    Returns an int64 array of ``sum(n_i)`` positions, and with
    ``document_ids=True`` also the index of each token's document.

    Examples
    --------
    >>> ropescale.packed_positions([0, 3, 5, 9]).tolist()
    [0, 1, 2, 0, 1, 0, 1, 2, 3]
    >>> pos, doc = ropescale.packed_positions(lengths=[2, 0, 3], document_ids=True)
    >>> pos.tolist(), doc.tolist()
    ([0, 1, 0, 1, 2], [0, 0, 2, 2, 2])
    """
    if (cu_seqlens is None) == (lengths is None):
        raise TypeError("packed_positions takes exactly one of cu_seqlens or lengths")
    if cu_seqlens is not None:
        cu = _int_vector("cu_seqlens", cu_seqlens)
        if cu.size == 0 or cu[0] != 0:
            raise ValueError(f"cu_seqlens must start at 0, got {_checks._show(np.asarray(cu_seqlens).tolist())}")
        n = np.diff(cu)
        if np.any(n < 0):
            i = int(np.argmax(n < 0))
            raise ValueError(f"cu_seqlens must be non-decreasing, got {int(cu[i])} then {int(cu[i + 1])} "
                             f"at index {i + 1}")
    else:
        n = _int_vector("lengths", lengths)
        if np.any(n < 0):
            raise ValueError(f"lengths must be >= 0, got {int(n[np.argmax(n < 0)])}")
    if n.sum() > 2**40:
        raise ValueError(f"the packed sequence has {int(n.sum())} tokens; at most 2**40 are allowed")
    starts = np.repeat(np.cumsum(n) - n, n)
    pos = np.arange(int(n.sum()), dtype=np.int64) - starts
    if document_ids:
        return pos, np.repeat(np.arange(n.size, dtype=np.int64), n)
    return pos


def self_extend_positions(positions: Any, group_size: int, window: int) -> Tuple[np.ndarray, np.ndarray]:
    """Self-Extend's grouped positions ``(query, key)`` for the grouped attention.

    Self-Extend computes two attentions from one model: *neighbour*
    attention with the ordinary positions, used where ``0 <= i - j < window``,
    and *grouped* attention, used for the farther keys, with

    - key positions ``floor(t / G)``,
    - query positions ``floor(t / G) + window - floor(window / G)``,

    so that the grouped relative distance ``floor(i/G) - floor(j/G) + window -
    floor(window/G)`` continues the neighbour distances beyond the window and
    grows ``G`` times slower.  Rotate q and k with these positions for the
    grouped scores (with any :class:`Rope`), and merge the two score matrices
    by ``i - j < window``.

    Parameters
    ----------
    positions : array of int
        The ordinary positions (any shape), >= 0.
    group_size : int
        ``G`` >= 1 (the paper's group size; 1 gives the ordinary positions).
    window : int
        Neighbour window ``w_n`` >= 0.

    Returns
    -------
    (query_positions, key_positions) : int64 arrays of ``positions``' shape.

    Examples
    --------
    >>> q, k = ropescale.self_extend_positions(np.arange(10), group_size=4, window=4)
    >>> q.tolist()
    [3, 3, 3, 3, 4, 4, 4, 4, 5, 5]
    >>> k.tolist()
    [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    """
    g = _checks.integer("group_size", group_size, minimum=1)
    w = _checks.integer("window", window, minimum=0)
    p = np.asarray(positions)
    if p.dtype == object or p.dtype.kind not in "iu":
        raise TypeError(f"positions must be an integer array, got dtype {p.dtype}")
    if p.size and p.min() < 0:
        raise ValueError(f"positions must be >= 0, got {int(p.min())}")
    p = p.astype(np.int64)
    key = p // g
    return key + (w - w // g), key

