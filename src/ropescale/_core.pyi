# Type stubs for ropescale._core, the CPython/NumPy glue in _core.c.
# Internal API: the public, validated functions live in ropescale._freq and
# ropescale._rotary.  Keep in sync with the PyMethodDef table in _core.c.
from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Method codes for scaled_inv_freq (rs_method in csrc/ropescale.h).
DEFAULT: int
LINEAR: int
NTK: int
DYNAMIC: int
YARN: int
LLAMA3: int
LONGROPE: int
PROPORTIONAL: int

#: Largest |position * inv_freq| (radians) whose reduction modulo 2 pi is exact.
MAX_ANGLE: float

def inv_freq(dim: int, base: float, /) -> NDArray[np.float64]: ...
def ntk_lambda(dim: int, factor: float, /) -> float: ...
def yarn_range(
    dim: int, base: float, original_max: float, beta_fast: float, beta_slow: float, truncate: bool, /
) -> Tuple[float, float]: ...
def scaled_inv_freq(
    dim: int,
    base: float,
    method: int,
    factor: float = ...,
    original_max: float = ...,
    seq_len: float = ...,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    mscale: float = ...,
    mscale_all_dim: float = ...,
    attention_factor: float = ...,
    truncate: bool = True,
    low_freq_factor: float = ...,
    high_freq_factor: float = ...,
    short_factor: Optional[ArrayLike] = None,
    long_factor: Optional[ArrayLike] = None,
    rotated_pairs: int = 0,
) -> Tuple[NDArray[np.float64], float]: ...
def rotate(
    x: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    out: np.ndarray,
    interleaved: bool,
    inverse: bool,
    n_threads: int,
    /,
) -> np.ndarray: ...
def rotate_positions(
    x: np.ndarray,
    positions: NDArray[np.float64],
    inv_freq: NDArray[np.float64],
    scale: float,
    out: np.ndarray,
    interleaved: bool,
    inverse: bool,
    n_threads: int,
    /,
) -> np.ndarray: ...
def cos_sin(
    positions: NDArray[np.float64],
    inv_freq: NDArray[np.float64],
    scale: float,
    cos: np.ndarray,
    sin: np.ndarray,
    n_threads: int,
    /,
) -> None: ...
def sincos_exact(t: float, theta: float, /) -> Tuple[float, float]: ...
def simd_name() -> str: ...
def _test_fail_alloc(nth: int, /) -> None: ...  # tests only: the nth C-core allocation from now fails
