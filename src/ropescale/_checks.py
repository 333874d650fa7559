"""Argument checks shared by the public functions.

Every message names the argument, shows the value and says what is allowed,
so that a typo in a training script is found at the call, not as a NaN later.
"""
from __future__ import annotations

import math
import numbers
import operator
import warnings

import numpy as np

#: Largest head or rotary dimension accepted (a table of dim/2 float64 values
#: must fit comfortably in memory).
MAX_DIM = 1 << 24


def _show(value):
    text = " ".join(repr(value).split())  # one line, even for an array
    return text if len(text) <= 60 else text[:57] + "..."


def integer(name, value, *, minimum=None, maximum=None, even=False):
    """A Python int from an int-like value (bool refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        kind = "a positive even integer" if even else "an integer"
        raise TypeError(f"{name} must be {kind}, got {_show(value)} of type {type(value).__name__}")
    v = operator.index(value)
    if even and (v <= 0 or v % 2):
        raise ValueError(f"{name} must be a positive even integer, got {v}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {_show(v)}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {_show(v)}")
    return v


def dim(value, name="dim"):
    return integer(name, value, even=True, maximum=MAX_DIM)


def real(name, value, *, above=None, at_least=None, at_most=None, allow_none=False):
    """A finite Python float, with optional bounds (above: strict)."""
    if value is None and allow_none:
        return None
    if type(value) is float and math.isfinite(value) and (above is None or value > above) \
            and (at_least is None or value >= at_least) and (at_most is None or value <= at_most):
        return value  # the common case, checked without the general path below
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {_show(value)} of type {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:  # an int beyond float64, e.g. 10**400
        raise ValueError(f"{name} must be finite, got {_show(value)} (beyond float64)") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if above is not None and not v > above:
        raise ValueError(f"{name} must be > {above}, got {v}")
    if at_least is not None and not v >= at_least:
        raise ValueError(f"{name} must be >= {at_least}, got {v}")
    if at_most is not None and not v <= at_most:
        raise ValueError(f"{name} must be <= {at_most}, got {v}")
    return v


def boolean(name, value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {_show(value)}")


# NumPy < 1.24 makes an object array from ragged nesting (with this warning)
# where newer NumPy raises ValueError; both become the same ValueError here.
_RAGGED_WARNING = getattr(getattr(np, "exceptions", np), "VisibleDeprecationWarning", DeprecationWarning)


def asarray(name, value):
    """np.asarray, with NumPy's complaint about ragged nesting naming the argument."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", _RAGGED_WARNING)
            return np.asarray(value)
    except (ValueError, TypeError, _RAGGED_WARNING) as e:
        raise ValueError(f"{name} must be a rectangular array of numbers: {e}") from None
