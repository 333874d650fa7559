"""ropescale: RoPE context extension with a C core.

Scaled rotary frequencies for every published method (position interpolation,
NTK-aware base scaling, dynamic NTK, YaRN, Llama 3.1, LongRoPE, proportional),
exactly as model configs define them, and rotary embeddings applied to NumPy
arrays at memory speed.  See the README and ``ropescale.reference`` for the math.
"""
from ._freq import (
    ALIASES,
    METHODS,
    inv_freq,
    ntk_base,
    ntk_lambda,
    periods,
    scaled_inv_freq,
    solve_base,
    solve_factor,
    yarn_correction_range,
)
from ._rotary import (
    MAX_ANGLE,
    apply_rotary,
    apply_rotary_positions,
    cos_sin,
    get_num_threads,
    set_num_threads,
)
from ._rerotate import rebase, rerotate
from .rope import Rope
from .layers import LayerRopes, layer_ropes
from .positions import packed_positions, self_extend_positions
from .analysis import RopeAnalysis, analyze, critical_dim, max_supported_length
from . import precision, reference

__version__ = "0.1.0"

__all__ = [
    "ALIASES",
    "MAX_ANGLE",
    "METHODS",
    "LayerRopes",
    "Rope",
    "RopeAnalysis",
    "analyze",
    "critical_dim",
    "max_supported_length",
    "apply_rotary",
    "apply_rotary_positions",
    "cos_sin",
    "get_num_threads",
    "inv_freq",
    "layer_ropes",
    "ntk_base",
    "ntk_lambda",
    "packed_positions",
    "periods",
    "precision",
    "rebase",
    "reference",
    "rerotate",
    "scaled_inv_freq",
    "self_extend_positions",
    "set_num_threads",
    "solve_base",
    "solve_factor",
    "yarn_correction_range",
]
