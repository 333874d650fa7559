"""Model knowledge: what each transformers ``model_type`` implies for its rope.

One row per model type, each citing the transformers modeling or configuration
file it encodes (transformers 5.25 unless the row says otherwise).  The config
reader (:mod:`ropescale.configs`) reads this table; nothing else lists model
types.  ``tests/test_configs.py`` checks every row against the installed
transformers, and ``tests/test_zoo.py`` checks the reader against every model
type of it (``tests/data/zoo_golden.json``, written by ``tools/zoo.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

__all__ = ["ModelDefaults", "MODEL_TYPES", "NOPE_LAYER_TYPES", "LEGACY_KEYS"]


@dataclass(frozen=True)
class ModelDefaults:
    """The rope a ``model_type`` has when its config.json omits the keys.

    Values are those of transformers' configuration class for the type
    (``default_theta``, the ``partial_rotary_factor`` / ``rotary_pct`` /
    ``rotary_dim`` defaults) and the pairing of its modeling code (half-split
    ``rotate_half`` on ``(x[k], x[k+R])``, or interleaved ``(x[2k], x[2k+1])``:
    ``rotate_every_two``, ``x[..., 0::2]`` with ``repeat_interleave``d
    cos/sin, or a complex view of consecutive pairs).  Source: transformers
    5.x, ``models/<type>/configuration_<type>.py`` and ``modeling_<type>.py``;
    ``tests/test_configs.py`` checks every row against the installed
    transformers.
    """

    rope_theta: float = 10000.0
    partial_rotary_factor: Optional[float] = None
    #: Absolute rotary dim when the config gives none (GPT-J, CodeGen).
    rotary_dim: Optional[int] = None
    interleaved: bool = False
    #: ``head_dim`` and ``num_hidden_layers`` when the config gives neither
    #: (a bare ``{"model_type": ...}`` resolves to the class defaults).
    head_dim: Optional[int] = None
    num_hidden_layers: Optional[int] = None
    #: Layer layout when the config has no ``layer_types``: layer ``i`` is
    #: ``full_attention`` when ``(i + 1) % interval == 0``, else ``other``;
    #: ``(config key of the interval, its default, other)``.  None: all full.
    layer_pattern: Optional[Tuple[Optional[str], int, str]] = None
    #: Base of the ``sliding_attention`` layers (Gemma 3: ``rope_local_base_freq``).
    local_base: Optional[float] = None
    #: Layer types whose attention does not rotate (Cohere 2's full layers).
    nope_types: Tuple[str, ...] = ()
    #: Llama 4: NoPE every ``no_rope_layer_interval`` layers and query temperature
    #: tuning ``(floor_scale, attn_scale)`` on by default.
    no_rope_interval: Optional[int] = None
    query_temperature: Optional[Tuple[float, float]] = None
    #: M-RoPE ``(mrope_section, interleaved)`` the modeling code uses when the
    #: rope dict gives no section (Qwen2-VL chunked [16, 24, 24], Qwen3-VL
    #: interleaved [24, 20, 20]: ``modeling_<type>.py``, ``rope_parameters.get``).
    mrope: Optional[Tuple[Tuple[int, ...], bool]] = None
    #: Layer types a flat (transformers 4 style) ``rope_scaling`` applies to; the others
    #: rotate unscaled (at ``rope_local_base_freq`` when the config gives one).  Empty: all.
    #: OLMo 3 / Gemma 3: ``convert_rope_params_to_dict`` updates only the full_attention entry.
    flat_scaling_types: Tuple[str, ...] = ()
    #: ``(config key, layer types)``: when the key is set (not null), those layer types do
    #: not rotate (EXAONE 4: global attention is NoPE when ``sliding_window`` is set).
    nope_types_if: Optional[Tuple[str, Tuple[str, ...]]] = None
    #: Config key that, when true, makes the ``nope_types`` rotate after all (Cohere2-MoE's ``force_rope``).
    nope_unless: Optional[str] = None
    #: Config key listing layer indices whose attention does not rotate (Mllama's
    #: cross-attention layers, ``cross_attention_layers``).
    nope_layers_key: Optional[str] = None
    #: Config key of a per-layer list whose 0 entries mark NoPE layers (Muse: ``layer_rope_theta``).
    nope_where_zero: Optional[str] = None
    #: Config key of the repeating block pattern of a hybrid (RecurrentGemma's ``block_types``):
    #: ``"attention"`` blocks rotate, the others have no attention.
    block_types_key: Optional[str] = None
    #: Config keys the modeling code does not read though the config carries them
    #: (MiniMax-M3-VL's ``rotary_dim``: its rotary width comes from the rope parameters).
    ignored_keys: Tuple[str, ...] = ()
    #: Where the language model's config sits inside this type's config, when not at ``text_config``
    #: (Qwen2.5-Omni: ``thinker_config`` -> ``text_config``).
    text_config_path: Tuple[str, ...] = ()
    #: Why ropescale cannot follow this model type: a refusal with this reason.
    unsupported: str = ""
    #: Whether the attention multiplies its softmax scale by ``mscale(s, mscale_all_dim)**2``
    #: (``Rope.softmax_scale``): MLA models call transformers' ``yarn_apply_mscale``; others do not.
    mla_softmax: bool = False
    #: Whether the attention multiplies its queries by ``1 + beta * ln(1 + floor(p / original))`` with
    #: ``beta = rope_parameters["llama_4_scaling_beta"]`` and ``original`` the rope parameters'
    #: ``original_max_position_embeddings`` (transformers' ``get_llama_4_attn_scale``; it fails without
    #: them).  Elsewhere the key is not read: a known type without this flag drops it as its model does.
    query_beta: bool = False
    #: Whether the modeling code rotates with a fixed table whatever the config's rope dict says
    #: (GPT-J, CodeGen): a scaled rope dict is refused, since the model would ignore it.
    fixed_rope: bool = False
    #: The modeling file the row encodes (transformers 5.25), its citation.
    source: str = ""


_HALF, _INTERLEAVED = ModelDefaults(), ModelDefaults(interleaved=True)

#: ``model_type`` -> defaults; a type not listed with no ``rope_theta`` is assumed
#: 10000 with a warning.  Layer types no model rotates in: :data:`NOPE_LAYER_TYPES`.
MODEL_TYPES: Dict[str, ModelDefaults] = {
    **{t: _HALF for t in ("llama", "mistral", "qwen2_moe", "qwen3", "qwen3_moe", "gemma",
                          "phi3", "olmo", "olmo2", "falcon", "starcoder2", "granite", "chameleon")},
    **{t: ModelDefaults(1e6) for t in ("mixtral", "gemma3n_text", "phimoe", "minimax")},
    **{t: ModelDefaults(1e6, mrope=((16, 24, 24), False)) for t in ("qwen2_vl", "qwen2_vl_text")},
    **{t: ModelDefaults(5e5, mrope=((24, 20, 20), True))
       for t in ("qwen3_vl", "qwen3_vl_text", "qwen3_vl_moe", "qwen3_vl_moe_text")},
    # Gemma3TextConfig: sliding layers at rope_local_base_freq (10000), one full layer in 6.
    **{t: ModelDefaults(1e6, head_dim=256, num_hidden_layers=26, local_base=1e4,
                        layer_pattern=("sliding_window_pattern", 6, "sliding_attention"))
       for t in ("gemma3", "gemma3_text")},
    "gemma2": ModelDefaults(head_dim=256, num_hidden_layers=26, layer_pattern=(None, 2, "sliding_attention")),
    "qwen2": ModelDefaults(num_hidden_layers=32),
    **{t: ModelDefaults(1e6, num_hidden_layers=80, mrope=((16, 24, 24), False))
       for t in ("qwen2_5_vl", "qwen2_5_vl_text")},
    "qwen3_next": ModelDefaults(partial_rotary_factor=0.25,
                                layer_pattern=("full_attention_interval", 4, "linear_attention")),
    **{t: ModelDefaults(5e5) for t in ("exaone", "bitnet")},
    # Cross-attention layers apply no rope (MllamaTextCrossAttention has none; the text-only
    # forward skips them): models/mllama/modeling_mllama.py.
    **{t: ModelDefaults(5e5, nope_layers_key="cross_attention_layers", source="models/mllama/modeling_mllama.py")
       for t in ("mllama", "mllama_text_model")},
    # A flat rope_scaling is the full_attention layers' only (convert_rope_params_to_dict);
    # one full layer in 4 by default.
    "olmo3": ModelDefaults(5e5, layer_pattern=(None, 4, "sliding_attention"), flat_scaling_types=("full_attention",),
                           source="models/olmo3/configuration_olmo3.py"),
    # Global layers are NoPE when sliding_window is set: `if self.sliding_window is None or
    # self.is_sliding: apply_rotary_pos_emb(...)` in the attention's forward.
    **{t: ModelDefaults(nope_types_if=("sliding_window", ("full_attention",)),
                        layer_pattern=("sliding_window_pattern", 4, "sliding_attention"),
                        source=f"models/{t}/modeling_{t}.py")
       for t in ("exaone4", "exaone_moe")},
    "kolibri1": ModelDefaults(nope_types_if=("sliding_window", ("full_attention",)),
                              source="models/kolibri1/modeling_kolibri1.py"),
    # The decoder passes position_embeddings only to sliding_attention layers.
    "lara_mini": ModelDefaults(nope_types=("full_attention",), source="models/lara_mini/modeling_lara_mini.py"),
    # Only the sliding-window layers rotate (`if self.is_local_attention: apply_rotary_pos_emb`,
    # `if self.sliding_window is not None: ...`).
    "afmoe": ModelDefaults(nope_types=("full_attention",), source="models/afmoe/modeling_afmoe.py"),
    "flint": ModelDefaults(nope_types=("full_attention",), source="models/flint/modeling_flint.py"),
    # Sliding layers rotate, full ones only with force_rope; rotate_half on x[0::2], x[1::2]
    # with repeat_interleaved cos/sin.
    "cohere2_moe": ModelDefaults(interleaved=True, nope_types=("full_attention",), nope_unless="force_rope",
                                 source="models/cohere2_moe/modeling_cohere2_moe.py"),
    # MLA attention rotates q/k's rope slice with apply_rotary_pos_emb_interleave (x[0::2], x[1::2])
    # whatever the config says; only the indexer is half-split.
    **{t: ModelDefaults(interleaved=True, mla_softmax=True, source=f"models/{t}/modeling_{t}.py")
       for t in ("deepseek_v32", "axk2", "glm_moe_dsa", "hy_v4")},
    **{t: ModelDefaults(interleaved=True, mla_softmax=True, source="models/hy_v4_vl/modeling_hy_v4_vl.py")
       for t in ("hy_v4_vl", "hy_v4_vl_text")},
    # apply_rotary_pos_emb_interleave on the MLA rope slice
    **{t: ModelDefaults(interleaved=True, mla_softmax=True, source="models/mistral_large4/modeling_mistral_large4.py")
       for t in ("mistral_large4", "mistral_large4_text")},
    "openai_privacy_filter": ModelDefaults(1.5e5, interleaved=True,
                                           source="models/openai_privacy_filter/modeling_openai_privacy_filter.py"),
    # The decoder passes position_embeddings only where layer_rope_theta[i] != 0.
    **{t: ModelDefaults(5e5, nope_where_zero="layer_rope_theta", source="models/muse_spark/modeling_muse_spark.py")
       for t in ("muse_spark", "muse_spark_text")},
    **{t: ModelDefaults(nope_where_zero="layer_rope_theta", source="models/muse_glimmer/modeling_muse_glimmer.py")
       for t in ("muse_glimmer", "muse_glimmer_text")},
    # Two stacks of num_layers_per_stack layers run H_cycles * (L_cycles + 1) times: num_hidden_layers counts
    # those layer calls (one cache slot each, the config class rewrites it), and every call rotates.
    "hrm_text": ModelDefaults(source="models/hrm_text/modeling_hrm_text.py"),
    # Recurrent blocks have no attention; the pattern repeats over the layers.
    "recurrent_gemma": ModelDefaults(partial_rotary_factor=0.5, block_types_key="block_types",
                                     source="models/recurrent_gemma/modeling_recurrent_gemma.py"),
    # Reads partial_rotary_factor from the rope parameters, not the config's rotary_dim.
    **{t: ModelDefaults(5e6, ignored_keys=("rotary_dim",), source="models/minimax_m3_vl/modeling_minimax_m3_vl.py")
       for t in ("minimax_m3_vl", "minimax_m3_vl_text")},
    # rotate_half returns (x2, -x1): the rotation is by -theta, a direction Rope does not have.
    "nanochat": ModelDefaults(unsupported="its rotate_half returns (x2, -x1), so it rotates by -theta; a Rope "
                              "rotates by +theta (apply(..., inverse=True) gives nanochat's rotation)",
                              source="models/nanochat/modeling_nanochat.py"),
    # rotate_half stacks (-x[1::2], x[0::2]) with repeat_interleaved cos/sin: consecutive pairs
    **{t: ModelDefaults(5e5, interleaved=True, source="models/blt/modeling_blt.py")
       for t in ("blt", "blt_local_encoder", "blt_local_decoder", "blt_global_transformer")},
    # MLA-style rope slice through apply_rotary_pos_emb_interleave on both layer types
    **{t: ModelDefaults(8e7, partial_rotary_factor=0.25, interleaved=True,
                        source="models/dots3_note/modeling_dots3_note.py") for t in ("dots3_note", "dots3_note_text")},
    # The thinker's language model holds the rope (Qwen2_5OmniThinkerConfig.text_config).
    **{t: ModelDefaults(1e6, text_config_path=("thinker_config", "text_config"), source=f"models/{t}/configuration_{t}.py")
       for t in ("qwen2_5_omni", "qwen3_omni_moe")},
    # rotate_half_llm on x[0::2], x[1::2]
    **{t: ModelDefaults(interleaved=True, source="models/glm_ocr/modeling_glm_ocr.py") for t in ("glm_ocr", "glm_ocr_text")},
    "bailing_hybrid": ModelDefaults(6e6, interleaved=True, mla_softmax=True, source="models/bailing_hybrid/modeling_bailing_hybrid.py"),
    # rotate_half on x[0::2], x[1::2], cos/sin repeat_interleaved: consecutive pairs.
    "ernie4_5_moe": ModelDefaults(5e5, interleaved=True, source="models/ernie4_5_moe/modeling_ernie4_5_moe.py"),
    **{t: ModelDefaults(5e5, interleaved=True, source="models/ernie4_5_vl_moe/modeling_ernie4_5_vl_moe.py")
       for t in ("ernie4_5_vl_moe", "ernie4_5_vl_moe_text")},
    "smollm3": ModelDefaults(2e6),
    "gpt_oss": ModelDefaults(1.5e5, num_hidden_layers=36, layer_pattern=(None, 2, "sliding_attention")),
    "apertus": ModelDefaults(1.2e7),
    "helium": ModelDefaults(1e5, interleaved=True),
    "ernie4_5": ModelDefaults(5e5, interleaved=True),
    "cohere": ModelDefaults(5e5, interleaved=True),
    # Cohere2: one full layer in sliding_window_pattern (4), and only sliding layers rotate.
    "cohere2": ModelDefaults(interleaved=True, layer_pattern=("sliding_window_pattern", 4, "sliding_attention"),
                             nope_types=("full_attention",)),
    # Llama4TextConfig: a NoPE layer every 4, attention temperature tuning on.
    **{t: ModelDefaults(5e5, interleaved=True, head_dim=128, num_hidden_layers=48, no_rope_interval=4,
                        query_temperature=(8192.0, 0.1)) for t in ("llama4", "llama4_text")},
    # Every layer's rotated queries times 1 + beta ln(1 + floor(p / original)) (get_llama_4_attn_scale).
    "ministral3": ModelDefaults(1e6, query_beta=True, source="models/ministral3/modeling_ministral3.py"),
    # MLA with the same query multiplier; softmax scale x mscale**2 (yarn_apply_mscale in the attention's
    # __init__); the pairing follows rope_interleave (default True in the config class).
    "mistral4": ModelDefaults(interleaved=True, mla_softmax=True, query_beta=True,
                              source="models/mistral4/modeling_mistral4.py"),
    # MLA: softmax scale x mscale**2 (yarn_apply_mscale in the attention's __init__);
    # apply_rotary_pos_emb_interleave whatever the config says.
    "longcat_flash": ModelDefaults(1e7, interleaved=True, mla_softmax=True,
                                   source="models/longcat_flash/modeling_longcat_flash.py"),
    # MLA: q/k's rope slice interleaved (rope_interleave, default True), softmax scale x mscale**2
    # (yarn_apply_mscale in the attention's __init__).
    **{t: ModelDefaults(interleaved=True, mla_softmax=True, source=f"models/{t}/modeling_{t}.py")
       for t in ("deepseek_v2", "deepseek_v3", "axk1", "glm4_moe_lite", "youtu")},
    **{t: ModelDefaults(mla_softmax=True, source=f"models/{t}/modeling_{t}.py") for t in ("minicpm3",)},
    "glm": ModelDefaults(partial_rotary_factor=0.5, interleaved=True),
    "glm4": ModelDefaults(partial_rotary_factor=0.5, interleaved=True),
    "phi": ModelDefaults(partial_rotary_factor=0.5),
    "persimmon": ModelDefaults(partial_rotary_factor=0.5),
    "nemotron": ModelDefaults(partial_rotary_factor=0.5),
    "stablelm": ModelDefaults(partial_rotary_factor=0.25),
    "gpt_neox": ModelDefaults(partial_rotary_factor=0.25),
    "gpt_neox_japanese": ModelDefaults(partial_rotary_factor=1.0),
    # create_sinusoidal_positions(max_positions, rotary_dim): base 10000, no rope_parameters read.
    **{t: ModelDefaults(rotary_dim=64, interleaved=True, fixed_rope=True, source=f"models/{t}/modeling_{t}.py")
       for t in ("gptj", "codegen")},
    # ChatGLM 2/3 and GLM-4 (remote code, THUDM's modeling_chatglm.py): rotary on
    # half the head dim, interleaved, base 10000 * rope_ratio.
    "chatglm": ModelDefaults(partial_rotary_factor=0.5, interleaved=True),
}

#: Layer types without rotary attention in any model (Qwen3-Next's linear
#: attention, Mamba / convolution blocks of hybrids).
NOPE_LAYER_TYPES = frozenset({"linear_attention", "mamba", "conv", "mamba2", "recurrent"})

#: Legacy spellings ``Rope.from_hf`` reads when the standard key is absent:
#: standard key -> the older keys, in order of preference.  ``rotary_dim`` is
#: absolute (rotary features), the others are fractions of the head dim.
#: ``rope_ratio`` (ChatGLM) multiplies the base instead.
LEGACY_KEYS: Dict[str, Tuple[str, ...]] = {
    "rope_theta": ("rotary_emb_base",),                          # GPT-NeoX, Pythia
    "partial_rotary_factor": ("rotary_pct", "rotary_emb_fraction"),  # GPT-NeoX; flash-attn style configs
    # transformers' attribute_map of GPT-J / CodeGen / GPT-2 style configs; ChatGLM's names
    "hidden_size": ("n_embd",),
    "num_attention_heads": ("n_head",),
    "max_position_embeddings": ("n_positions", "seq_length"),
    "num_hidden_layers": ("n_layer", "num_layers"),
    "head_dim": ("kv_channels",),
}
