# Type stubs for ropescale._core, the CPython/NumPy glue in _core.c.
# Internal API: the public, validated functions live in ropescale._freq and
# ropescale._rotary.  Kept in sync with the PyMethodDef table in _core.c by
# tests/test_methods_registry.py.
from typing import Optional, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Method names indexed by code (csrc/methods.def).
METHOD_NAMES: Tuple[str, ...]
#: The keyword parameters scaled_inv_freq accepts (fields of rs_scaling).
SCALING_PARAMS: Tuple[str, ...]
#: rotate_streams' limits: streams (RS_MAX_STREAMS) and pairs (RS_PAIR_BLOCK).
MAX_STREAMS: int
PAIR_BLOCK: int

# Method codes for scaled_inv_freq, one per line of csrc/methods.def
# (DEFAULT, LINEAR, ...): declared by this catch-all so that a new method
# needs no line here.
def __getattr__(name: str) -> int: ...

# Positions as the Python layer passes them: native int64 or float64 (the
# glue reads either and checks every value: finite, |p| <= 2**52,
# |p * inv_freq| <= MAX_ANGLE).
Positions = Union[NDArray[np.int64], NDArray[np.float64]]


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
    /,
    *,
    factor: float = ...,
    original_max: float = ...,
    seq_len: float = ...,
    beta_fast: float = ...,
    beta_slow: float = ...,
    mscale: float = ...,
    mscale_all_dim: float = ...,
    attention_factor: float = ...,
    low_freq_factor: float = ...,
    high_freq_factor: float = ...,
    short_mscale: float = ...,
    long_mscale: float = ...,
    alpha: float = ...,
    mixed_b: float = ...,
    truncate: bool = True,
    rotated_pairs: int = 0,
    short_factor: Optional[ArrayLike] = None,
    long_factor: Optional[ArrayLike] = None,
) -> Tuple[NDArray[np.float64], float]: ...
def rotate(
    x: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    out: np.ndarray,
    interleaved: bool,
    inverse: bool,
    n_threads: int,
    bf16: bool = False,  # x and out hold bfloat16 bits as uint16
    refuse_full: bool = False,  # ValueError when sin's last row reads as cat(h, h) (tables._refuse_full)
    /,
) -> np.ndarray: ...
def rotate_positions(
    x: np.ndarray,
    positions: Positions,
    inv_freq: NDArray[np.float64],
    scale: float,
    out: np.ndarray,
    interleaved: bool,
    inverse: bool,
    n_threads: int,
    bf16: bool = False,  # x and out hold bfloat16 bits as uint16
    /,
) -> np.ndarray: ...
def cos_sin(
    positions: Positions,
    inv_freq: NDArray[np.float64],
    scale: float,
    cos: np.ndarray,
    sin: np.ndarray,
    n_threads: int,
    bf16: bool = False,  # cos and sin are uint16, filled with bfloat16 bits
    /,
) -> None: ...
def rotate_streams(
    x: np.ndarray,
    positions: Positions,  # (k, ...): k <= 8 streams, the rest broadcasting against x's rows
    inv_freq: NDArray[np.float64],  # at most 256 pairs
    pair_stream: NDArray[np.int64],
    scale: float,
    out: np.ndarray,
    interleaved: bool,
    inverse: bool,
    n_threads: int,
    bf16: bool = False,
    /,
) -> np.ndarray: ...
def rotate_qk(
    q: np.ndarray,
    k: np.ndarray,  # q's dtype and head_dim; its shape q's but for one axis (the heads)
    positions: Positions,  # broadcasting against both; (k, ...) streams with pair_stream
    inv_freq: NDArray[np.float64],
    pair_stream: Optional[NDArray[np.int64]],  # None: plain positions
    scale: float,
    out_q: np.ndarray,
    out_k: np.ndarray,
    interleaved: bool,
    inverse: bool,
    n_threads: int,
    bf16: bool = False,
    /,
) -> Tuple[np.ndarray, np.ndarray]: ...
def cos_sin_streams(
    positions: Positions,
    inv_freq: NDArray[np.float64],
    pair_stream: NDArray[np.int64],
    scale: float,
    cos: np.ndarray,
    sin: np.ndarray,
    n_threads: int,
    /,
) -> None: ...
def from_dlpack(capsule: object, name: str, /) -> Tuple[np.ndarray, bool]: ...  # (view, is_bf16)
def thread_split(nbytes: int, fused: bool, n: int, /) -> int: ...  # threads a rotation of nbytes would run on now
def _test_split(mode: int, /) -> None: ...  # tests only: 0 measured, 1 split from 64 KiB, 2 one thread
def _set_spin(ns: int, /) -> int: ...  # the pool's spin before sleeping (ns; < 0 default); returns the previous
def simd_name() -> str: ...  # 'avx512', 'avx2+f16c', 'avx2', 'f16c' or 'portable'
def _test_simd_cap(level: int, /) -> None: ...  # tests only: 0 any, 1 baseline, 2 AVX2, 3 AVX-512
def _test_fail_alloc(nth: int, /) -> None: ...  # tests only: the nth C-core allocation from now fails
