"""ropescale: RoPE context extension with a C core.

Scaled rotary frequencies for every published method (position interpolation,
NTK-aware base scaling, dynamic NTK, YaRN, Llama 3.1, LongRoPE, proportional),
exactly as model configs define them, and rotary embeddings applied to NumPy
arrays at memory speed.  See the README, docs/math.md and ``ropescale.reference``
for the math.

Examples
--------
>>> theta, attn = ropescale.scaled_inv_freq(128, 10000.0, {"rope_type": "ntk", "factor": 8.0})
>>> bool(np.isclose(ropescale.periods(theta)[-1], 8 * ropescale.periods(ropescale.inv_freq(128))[-1]))
True
>>> q = np.ones((4, 2, 128), dtype=np.float32)              # (seq, heads, head_dim)
>>> ropescale.apply_rotary_positions(q, np.arange(4)[:, None], theta).shape
(4, 2, 128)
"""
from .methods import ALIASES, METHODS
from ._freq import (
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
    apply_rotary_qk,
    cos_sin,
    get_num_threads,
    set_num_threads,
)
from ._rerotate import rebase, rerotate
from .rope import Rope
from .layers import LayerRopes
from .configs import layer_ropes
from .positions import packed_positions, self_extend_positions
from .analysis import RopeAnalysis, analyze, critical_dim, max_supported_length
from . import precision, reference

__version__ = "0.2.0"

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
    "apply_rotary_qk",
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
