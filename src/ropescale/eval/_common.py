"""What every part of ``ropescale eval`` shares: its error, its defaults and the checks of lengths and depths."""
from __future__ import annotations


import numpy as np


DEFAULT_DEPTHS = (0.1, 0.5, 0.9)
#: Keys per depth of the default run (sized to about 20 minutes on two cores; docs/eval.md).
DEFAULT_TRIALS = 1
#: Tokens scored for perplexity at the end of every window.
DEFAULT_SCORE_TOKENS = 512
#: A cell "holds" when it retrieves every key and its perplexity is at most
#: this multiple of the unscaled model's in-window perplexity.
DEFAULT_PPL_TOLERANCE = 1.2
#: Refuse lengths beyond this (positions this large are not a real use of a
#: CPU harness, and a typo such as 1e9 should not start an allocation).
MAX_LENGTH = 1 << 21
_INSTALL = 'pip install ".[eval]" in a ropescale clone (torch, transformers, gguf, accelerate)'


class EvalError(ValueError):
    """Bad input to the evaluation: reported on one line, exit status 2."""


def _length(v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise EvalError(f"lengths must be integers, got {v!r}")
    if not 0 < v <= MAX_LENGTH:
        raise EvalError(f"--lengths: each length must be in 1..{MAX_LENGTH} tokens, got {v}")
    return int(v)


def _depth(v) -> float:
    try:
        d = float(v)
    except (TypeError, ValueError):
        raise EvalError(f"--depths: each depth must be a number in [0, 1], got {v!r}") from None
    if not 0.0 <= d <= 1.0:
        raise EvalError(f"--depths: each depth must be in [0, 1], got {v!r}")
    return d


#: Tokens per batch mean stored in the JSON: the unit of the intervals.
BATCH_TOKENS = 32
#: Positions per point of the loss-by-position curve.
DEFAULT_BUCKET = 256


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
