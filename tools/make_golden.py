#!/usr/bin/env python3
"""Regenerate tests/data/hf_golden.json from Hugging Face transformers.

This script is not needed at test time: the tests read the JSON it writes.
Rerun it by hand when the reference transformers version changes:

    pip install torch==2.13.0      # CPU build
    pip install transformers
    python tools/make_golden.py [--out tests/data/hf_golden.json]

For each case it builds the model's own config class from the subset of the
published config.json that the RoPE code reads (via AutoConfig.for_model, the
same path from_pretrained takes), then calls
``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS[rope_type]`` (or the
model's ``compute_default_rope_parameters`` for the plain "default" type) with
``device="cpu"`` and the case's ``seq_len``.  The result is cross-checked
against the model's own ``*RotaryEmbedding`` module, including its forward pass
for the seq_len-dependent types ("dynamic", "longrope"), so the golden values
are what a real model would use.

All inv_freq values are float32 (torch's default dtype), written as Python
floats with full repr, so they round-trip exactly.

It also writes tests/data/hf_golden_models.json (``--models-out``): for every
published config.json collected in tests/data/configs/ (provenance in
tests/data/configs/SOURCES.md) what the model's own transformers code computes:
per layer type the rope type, inv_freq and attention scaling (also after the
model's forward at several sequence lengths for "dynamic" and "longrope"), the
rotary width, how the model's apply function pairs features, cos/sin and the
rotated output of a fixed probe vector at a few positions (three position
streams for M-RoPE models), the softmax scale of its attention module, Llama 4's
per-layer NoPE flags and attention temperature tuning.  A config that
transformers cannot load or compute records the error message instead.
"""

import argparse
import copy
import importlib
import inspect
import json
import math
import os
import sys
import warnings

import torch
import transformers
from transformers import AutoConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, os.pardir, "tests", "data", "hf_golden.json")

# --------------------------------------------------------------------------
# Published config.json values.
# --------------------------------------------------------------------------

# microsoft/Phi-3-mini-128k-instruct, config.json on the "main" branch
# (the mid-2024 update; the April 2024 original had other factors and
# "type": "su").
PHI3_MINI_128K_LONG_FACTOR = [
    1.0700000524520874, 1.1200000047683716, 1.149999976158142, 1.4199999570846558,
    1.5699999332427979, 1.7999999523162842, 2.129999876022339, 2.129999876022339,
    3.009999990463257, 5.910000324249268, 6.950000286102295, 9.070000648498535,
    9.930000305175781, 10.710000038146973, 11.130000114440918, 14.609999656677246,
    15.409998893737793, 19.809999465942383, 37.279998779296875, 38.279998779296875,
    38.599998474121094, 40.12000274658203, 46.20000457763672, 50.940006256103516,
    53.66000747680664, 54.9373893737793, 56.89738845825195, 57.28738784790039,
    59.98738479614258, 60.86738586425781, 60.887386322021484, 61.71739196777344,
    62.91739273071289, 62.957393646240234, 63.41739273071289, 63.8173942565918,
    63.83739471435547, 63.897396087646484, 63.93739700317383, 64.06739807128906,
    64.11434936523438, 64.12435150146484, 64.15435028076172, 64.19435119628906,
    64.24435424804688, 64.57435607910156, 64.69000244140625, 64.76000213623047,
]
PHI3_MINI_128K_SHORT_FACTOR = [
    1.1, 1.1, 1.1, 1.3000000000000003,
    1.3500000000000003, 1.3500000000000003, 1.4000000000000004, 1.5500000000000005,
    2.000000000000001, 2.000000000000001, 2.000000000000001, 2.000000000000001,
    2.000000000000001, 2.000000000000001, 2.000000000000001, 2.000000000000001,
    2.000000000000001, 2.000000000000001, 2.000000000000001, 2.000000000000001,
    2.000000000000001, 2.000000000000001, 2.000000000000001, 2.000000000000001,
    2.000000000000001, 2.0500000000000007, 2.0500000000000007, 2.0500000000000007,
    2.0500000000000007, 2.0500000000000007, 2.0500000000000007, 2.1000000000000005,
    2.1000000000000005, 2.1500000000000004, 2.25, 2.25,
    2.25, 2.25, 2.25, 2.3999999999999995,
    2.4499999999999993, 2.499999999999999, 2.6999999999999984, 2.6999999999999984,
    2.7499999999999982, 2.799999999999998, 2.8999999999999977, 3.049999999999997,
]
assert len(PHI3_MINI_128K_LONG_FACTOR) == 48 and len(PHI3_MINI_128K_SHORT_FACTOR) == 48

LLAMA31_8B = {
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
}

# Qwen/Qwen2.5-7B-Instruct as shipped, plus the rope_scaling block its model
# card says to add for contexts beyond 32768 tokens.
QWEN25_7B_YARN = {
    "hidden_size": 3584,
    "num_attention_heads": 28,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rope_scaling": {
        "factor": 4.0,
        "original_max_position_embeddings": 32768,
        "type": "yarn",
    },
}

DEEPSEEK_V3 = {
    "hidden_size": 7168,
    "num_attention_heads": 128,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "max_position_embeddings": 163840,
    "rope_theta": 10000,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
}

GPT_OSS = {
    "hidden_size": 2880,
    "num_attention_heads": 64,
    "head_dim": 64,
    "max_position_embeddings": 131072,
    "rope_theta": 150000,
    "rope_scaling": {
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "factor": 32.0,
        "original_max_position_embeddings": 4096,
        "rope_type": "yarn",
        "truncate": False,
    },
}

PHI3_MINI_128K = {
    "hidden_size": 3072,
    "num_attention_heads": 32,
    "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rope_scaling": {
        "long_factor": PHI3_MINI_128K_LONG_FACTOR,
        "short_factor": PHI3_MINI_128K_SHORT_FACTOR,
        "type": "longrope",
    },
}

LLAMA2_7B = {
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rope_scaling": None,
}

# transformers' own Gemma4TextConfig defaults for full-attention layers
# (the only model in this transformers version that uses "proportional").
GEMMA4_TEXT = {
    "head_dim": 256,
    "global_head_dim": 512,
    "max_position_embeddings": 131072,
    "rope_parameters": {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {
            "rope_type": "proportional",
            "partial_rotary_factor": 0.25,
            "rope_theta": 1000000.0,
        },
    },
}


def with_(base, **changes):
    out = copy.deepcopy(base)
    out.update(copy.deepcopy(changes))
    return out


def with_scaling(base, **changes):
    out = copy.deepcopy(base)
    out["rope_scaling"] = dict(out["rope_scaling"])
    for k, v in changes.items():
        if v is None:
            out["rope_scaling"].pop(k, None)
        else:
            out["rope_scaling"][k] = v
    return out


# (name, model_type, config subset, seq_len[, layer_type])
CASES = [
    ("llama3.1-8b", "llama", LLAMA31_8B, None),
    ("qwen2.5-7b-instruct-yarn", "qwen2", QWEN25_7B_YARN, None),
    ("qwen2.5-7b-instruct-yarn-maxpos131072", "qwen2",
     with_(QWEN25_7B_YARN, max_position_embeddings=131072), None),
    ("deepseek-v3-yarn-mscale", "deepseek_v3", DEEPSEEK_V3, None),
    ("gpt-oss-yarn-truncate-false", "gpt_oss", GPT_OSS, None),
    # Not a published config: gpt-oss with the `truncate` key removed, to pin
    # down the default (True: floor/ceil of the correction range).
    ("gpt-oss-yarn-truncate-default", "gpt_oss", with_scaling(GPT_OSS, truncate=None), None),
    ("phi3-mini-128k-longrope", "phi3", PHI3_MINI_128K, None),
    ("phi3-mini-128k-longrope-seq4096", "phi3", PHI3_MINI_128K, 4096),
    ("phi3-mini-128k-longrope-seq4097", "phi3", PHI3_MINI_128K, 4097),
    ("phi3-mini-128k-longrope-seq8192", "phi3", PHI3_MINI_128K, 8192),
    # No "su" case: older Phi-3 configs spell the type "su", but in
    # transformers 5.x Phi3Config renames su->longrope only after
    # standardize_rope_params() has skipped copying the top-level
    # original_max_position_embeddings, so validation raises KeyError.
    ("llama2-7b-dynamic-f2", "llama",
     with_(LLAMA2_7B, rope_scaling={"type": "dynamic", "factor": 2.0}), None),
    ("llama2-7b-dynamic-f2-seq2048", "llama",
     with_(LLAMA2_7B, rope_scaling={"type": "dynamic", "factor": 2.0}), 2048),
    ("llama2-7b-dynamic-f2-seq4096", "llama",
     with_(LLAMA2_7B, rope_scaling={"type": "dynamic", "factor": 2.0}), 4096),
    ("llama2-7b-dynamic-f2-seq8192", "llama",
     with_(LLAMA2_7B, rope_scaling={"type": "dynamic", "factor": 2.0}), 8192),
    ("llama2-7b-dynamic-f2-seq16384", "llama",
     with_(LLAMA2_7B, rope_scaling={"type": "dynamic", "factor": 2.0}), 16384),
    ("llama2-7b-linear-f4", "llama",
     with_(LLAMA2_7B, rope_scaling={"type": "linear", "factor": 4.0}), None),
    ("llama2-7b-default", "llama", LLAMA2_7B, None),
    ("gemma4-full-attention-proportional", "gemma4_text", GEMMA4_TEXT, None, "full_attention"),
]

ROTARY_CLASSES = {
    "llama": ("llama", "LlamaRotaryEmbedding"),
    "qwen2": ("qwen2", "Qwen2RotaryEmbedding"),
    "deepseek_v3": ("deepseek_v3", "DeepseekV3RotaryEmbedding"),
    "gpt_oss": ("gpt_oss", "GptOssRotaryEmbedding"),
    "phi3": ("phi3", "Phi3RotaryEmbedding"),
    "gemma4_text": ("gemma4", "Gemma4TextRotaryEmbedding"),
}


def rotary_class(model_type):
    pkg, cls = ROTARY_CLASSES[model_type]
    mod = importlib.import_module(f"transformers.models.{pkg}.modeling_{pkg}")
    return getattr(mod, cls)


def build_config(model_type, subset):
    # Deep copy: transformers mutates the dicts it is given.
    return AutoConfig.for_model(model_type, **copy.deepcopy(subset))


def rope_params(config, layer_type):
    params = config.rope_parameters
    return params[layer_type] if layer_type is not None else params


def compute(config, seq_len, layer_type):
    rope_type = rope_params(config, layer_type)["rope_type"]
    kwargs = {"layer_type": layer_type} if layer_type is not None else {}
    if rope_type == "default":
        fn = rotary_class(config.model_type).compute_default_rope_parameters
    else:
        fn = ROPE_INIT_FUNCTIONS[rope_type]
    inv_freq, attention_factor = fn(config, device="cpu", seq_len=seq_len, **kwargs)
    return rope_type, inv_freq, float(attention_factor)


def _seq_dependent(rope_type):
    """Whether transformers recomputes this rope type's frequencies per forward: its
    ``dynamic_rope_update`` (modeling_rope_utils.py, 5.x) does for any type containing
    "dynamic" and for "longrope".  transformers' rule, not ropescale's (this tool does not
    import ropescale: it records what the models compute)."""
    return "dynamic" in rope_type or rope_type == "longrope"


def cross_check(config, seq_len, layer_type, inv_freq, attention_factor, rope_type):
    """Compare against the model's own rotary module (init + forward)."""
    emb = rotary_class(config.model_type)(config)
    prefix = f"{layer_type}_" if layer_type is not None else ""
    scaling_attr = f"{prefix}attention_scaling" if layer_type is not None else "attention_scaling"
    scaling = getattr(emb, scaling_attr)
    if seq_len is not None and _seq_dependent(rope_type):
        x = torch.zeros(1, seq_len, 2 * inv_freq.numel())
        position_ids = torch.arange(seq_len)[None]
        with torch.no_grad():
            emb(x, position_ids) if layer_type is None else emb(x, position_ids, layer_type)
        scaling = getattr(emb, scaling_attr)
    got = getattr(emb, f"{prefix}inv_freq")
    if not torch.equal(got, inv_freq):
        raise AssertionError(f"rotary module inv_freq differs (max abs diff {(got - inv_freq).abs().max()})")
    if float(scaling) != attention_factor:
        raise AssertionError(f"rotary module attention scaling {scaling} != {attention_factor}")


# --------------------------------------------------------------------------
# Published configs (tests/data/configs/*.json) -> hf_golden_models.json
# --------------------------------------------------------------------------

CONFIG_DIR = os.path.join(HERE, os.pardir, "tests", "data", "configs")
DEFAULT_MODELS_OUT = os.path.join(HERE, os.pardir, "tests", "data", "hf_golden_models.json")

# Not published configs: transformers' own config-class defaults for a model
# type, kept to pin down what a config that omits a key resolves to.
DEFAULTS_CASES = [
    ("gemma3-text-transformers-defaults", {"model_type": "gemma3_text"}),
    ("llama4-text-transformers-defaults", {"model_type": "llama4_text"}),
]

# Positions at which cos/sin and the rotated probe are recorded.  Kept small
# enough that float32 angles (as transformers forms them) stay within a few
# ulp of the float64 ones.
PROBE_POSITIONS = [0, 1, 7, 100, 4097]
# Three M-RoPE streams (temporal, height, width) that differ from each other,
# so every section's choice of stream is visible, and equal ones (text only).
MROPE_POSITIONS = [[0, 1, 2, 3, 7, 50], [0, 1, 5, 9, 7, 20], [0, 2, 3, 11, 7, 40]]
MROPE_TEXT_POSITIONS = [[0, 1, 2, 7, 100, 1000]] * 3


def _text_config(config):
    getter = getattr(config, "get_text_config", None)
    return getter() if getter is not None else config


def _modeling_module(text_config):
    return importlib.import_module(type(text_config).__module__.replace(".configuration_", ".modeling_"))


def _pick_class(module, suffix, prefix=None):
    names = [n for n in dir(module) if n.endswith(suffix) and "Vision" not in n and "Audio" not in n
             and isinstance(getattr(module, n), type)]
    if prefix is not None and prefix + suffix in names:
        return getattr(module, prefix + suffix)
    text = [n for n in names if n.endswith("Text" + suffix)]
    if len(text) == 1:
        return getattr(module, text[0])
    if len(names) == 1:
        return getattr(module, names[0])
    raise LookupError(f"no unique *{suffix} class in {module.__name__}: {names}")


def _split_cos_sin(model_type, emb):
    """The rotary module's output as (cos, sin) tensors of shape (..., positions, width)."""
    if torch.is_tensor(emb) and emb.is_complex():      # Llama 4, DeepSeek-V2: freqs_cis
        return emb.real, emb.imag
    a, b = emb
    if model_type in ("gptj", "codegen"):                # these return (sin, cos)
        return b, a
    return a, b


def _apply(module, text_config, emb, x):
    """Rotate x (1, n, R) with the model's own apply function; returns (1, n, R)."""
    mt = text_config.model_type
    if mt in ("gptj", "codegen"):
        sin, cos = emb
        return module.apply_rotary_pos_emb(x[:, :, None, :], sin, cos)[:, :, 0, :]
    if torch.is_tensor(emb) and emb.is_complex():
        if mt.startswith("llama4"):
            return module.apply_rotary_emb(x[:, :, None, :], x[:, :, None, :], emb)[0][:, :, 0, :]
        return module.apply_rotary_emb(x[:, None], x[:, None], emb)[0][:, 0]
    cos, sin = emb
    # DeepSeek-V3.2 has no rope_interleave key and rotates its MLA slice interleaved all the same
    # (its apply_rotary_pos_emb is the indexer's): the interleaved apply unless the config says no
    if getattr(text_config, "rope_interleave", True) and hasattr(module, "apply_rotary_pos_emb_interleave"):
        return module.apply_rotary_pos_emb_interleave(x[:, None], x[:, None], cos, sin)[0][:, 0]
    if list(inspect.signature(module.apply_rotary_pos_emb).parameters)[:3] == ["x", "cos", "sin"]:
        return module.apply_rotary_pos_emb(x[:, None], cos, sin)[:, 0]      # Gemma 4: one tensor at a time
    return module.apply_rotary_pos_emb(x[:, None], x[:, None], cos, sin)[0][:, 0]


def _pairing(module, text_config, emb_at_1, width):
    """Which input feature the first one is rotated with: "half" (NeoX) or "interleaved" (GPT-J).

    Judged on the inputs: feature j is the partner of feature 0 when both span
    the same plane of the output (DeepSeek-V3's interleaved apply returns its
    output in half-split order, so the output indices alone would mislead).
    Also returns the output features the first input feature spans.
    """
    def support(j):
        x = torch.zeros(1, 1, width)
        x[..., j] = 1.0
        y = _apply(module, text_config, emb_at_1, x)[0, 0]
        return frozenset(i for i in range(width) if abs(float(y[i])) > 1e-6)

    s0 = support(0)
    partners = [j for j in range(1, width) if support(j) == s0]
    pairing = {(1,): "interleaved", (width // 2,): "half"}.get(tuple(partners), f"other: {partners}")
    return pairing, sorted(s0)


def _rotary_width(rot, layer_type):
    prefix = f"{layer_type}_" if layer_type else ""
    inv = getattr(rot, prefix + "inv_freq", None)
    if inv is not None:
        return 2 * inv.numel()
    return int(rot.pos_embd_dim)                          # GPT-J / CodeGen keep a table only


def _forward(rot, x, position_ids, layer_type):
    with torch.no_grad():
        return rot(x, position_ids) if layer_type is None else rot(x, position_ids, layer_type)


def _floats(t):
    return [float(v) for v in t.reshape(-1).tolist()]


def _rope_record(module, rot_cls, text_config, layer_type):
    mt = text_config.model_type
    rot = rot_cls(text_config)
    prefix = f"{layer_type}_" if layer_type else ""
    width = _rotary_width(rot, layer_type)
    params = getattr(text_config, "rope_parameters", None)
    params = params.get(layer_type) if layer_type and params else params
    rec = {"rope_type": getattr(rot, "rope_type", None) if layer_type is None else rot.rope_type.get(layer_type),
           "rope_parameters": copy.deepcopy(params) if params is not None else None,
           "rotary_dim": width}
    inv = getattr(rot, prefix + "inv_freq", None)
    scaling = getattr(rot, prefix + "attention_scaling", None)
    if inv is not None:
        rec["inv_freq"] = _floats(inv)
        rec["attention_factor"] = float(scaling)
    else:
        # GPT-J / CodeGen: no buffer, the angles live in a sin/cos table; read the
        # angle of position 1 back from it (float64 atan2 of the float32 table).
        sin1, cos1 = rot.embed_positions[1].double().split(width // 2)
        rec["inv_freq_from_table"] = _floats(torch.atan2(sin1, cos1))
        rec["attention_factor"] = 1.0

    is_mrope = "mrope_section" in (params or {}) or hasattr(rot, "mrope_section")
    like = torch.zeros(1, 1, width)
    if is_mrope:
        rec["mrope_section"] = list(rot.mrope_section)
        rec["mrope_interleaved"] = bool((params or {}).get("mrope_interleaved", False))
        probes = {"streams": MROPE_POSITIONS, "text_only": MROPE_TEXT_POSITIONS}
    else:
        limit = getattr(rot, "max_positions", None)      # GPT-J / CodeGen: a finite table
        probes = {"positions": [p for p in PROBE_POSITIONS if limit is None or p < limit]}
    rec["probe"] = {}
    for key, pos in probes.items():
        pid = torch.tensor(pos)[:, None, :] if is_mrope else torch.tensor(pos)[None, :]
        emb = _forward(rot_cls(text_config), like, pid, layer_type)
        cos, sin = _split_cos_sin(mt, emb)
        n = len(pos[0]) if is_mrope else len(pos)
        x = (1.0 + torch.arange(width, dtype=torch.float32) / width).expand(1, n, width).contiguous()
        y = _apply(module, text_config, emb, x)
        rec["probe"][key] = {"position_ids": pos, "x_row": _floats(x[0, 0]),
                             "rotated": [_floats(r) for r in y.reshape(n, -1)]}
        if is_mrope:  # the section layout shows in which stream drives each pair
            rec["probe"][key]["cos"] = [_floats(c) for c in cos.reshape(n, -1)]
            rec["probe"][key]["sin"] = [_floats(c) for c in sin.reshape(n, -1)]
    pid1 = torch.ones(3, 1, 1, dtype=torch.long) if is_mrope else torch.ones(1, 1, dtype=torch.long)
    rec["pairing"], rec["output_plane_of_feature_0"] = _pairing(
        module, text_config, _forward(rot_cls(text_config), like, pid1, layer_type), width)

    if _seq_dependent(rec["rope_type"]) and inv is not None:
        orig = (params or {}).get("original_max_position_embeddings") or text_config.max_position_embeddings
        seq_lens = sorted({int(orig), int(orig) + 1, 2 * int(orig), int(text_config.max_position_embeddings)})
        rec["at_seq_len"] = []
        for seq_len in seq_lens:
            fresh = rot_cls(text_config)
            pos = torch.arange(seq_len)[None] if not is_mrope else torch.arange(seq_len)[None, None].expand(3, 1, -1)
            _forward(fresh, torch.zeros(1, seq_len, width), pos, layer_type)
            rec["at_seq_len"].append({"seq_len": seq_len, "inv_freq": _floats(getattr(fresh, prefix + "inv_freq")),
                                      "attention_factor": float(getattr(fresh, prefix + "attention_scaling"))})
    return rec


def _attention_records(module, rot_cls, text_config):
    """Softmax scale of layer 0's attention, and Llama 4's per-layer NoPE / temperature tuning."""
    prefix = rot_cls.__name__[: -len("RotaryEmbedding")]
    try:
        attn_cls = _pick_class(module, "Attention", prefix)
    except LookupError:        # Mllama: MllamaTextSelfAttention beside its cross-attention
        attn_cls = _pick_class(module, "SelfAttention", prefix + "Text")
    out = {}
    n_layers = getattr(text_config, "num_hidden_layers", None) or 1
    layers = range(n_layers) if text_config.model_type.startswith("llama4") else [0]
    per_layer = []
    with torch.device("meta"):                           # shapes only: nothing is allocated
        for i in layers:
            attn = attn_cls(text_config, layer_idx=i)
            per_layer.append(attn)
    a0 = per_layer[0]
    d = getattr(a0, "qk_head_dim", None) or getattr(a0, "head_dim", None) or a0.head_size
    out["softmax"] = {"scaling": float(a0.scaling), "qk_head_dim": int(d),
                      "factor_on_inv_sqrt_qk_head_dim": float(a0.scaling) * math.sqrt(d)}
    if text_config.model_type.startswith("llama4"):
        # Query multiplier on the NoPE layers, the expression transformers'
        # Llama4TextAttention.forward uses inline (no function to call for it).
        pos = torch.tensor([0, 8190, 8191, 8192, 100000, 1000000], dtype=torch.float32)
        out["layers"] = []
        for attn in per_layer:
            rec = {"use_rope": bool(attn.use_rope), "attn_temperature_tuning": attn.attn_temperature_tuning,
                   "floor_scale": attn.floor_scale, "attn_scale": attn.attn_scale}
            if attn.attn_temperature_tuning and not attn.use_rope:
                scales = torch.log1p(torch.floor((pos + 1.0) / attn.floor_scale)) * attn.attn_scale + 1.0
                rec["query_scale"] = {"positions": _floats(pos), "scale": _floats(scales)}
            out["layers"].append(rec)
    return out


def model_case(name, raw, source):
    case = {"name": name, "source": source, "config": copy.deepcopy(raw)}
    try:
        kwargs = copy.deepcopy({k: v for k, v in raw.items() if k != "model_type"})
        config = AutoConfig.for_model(raw["model_type"], **kwargs)
        text = _text_config(config)
        module = _modeling_module(text)
        rot_cls = _pick_class(module, "RotaryEmbedding")
        case["text_model_type"] = text.model_type
        try:
            case["head_dim"] = int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
        except Exception:  # noqa: BLE001 - Gemma 4: head_dim is per layer (per_layer_config), not one number
            case["head_dim"] = None
        layer_types = getattr(text, "layer_types", None)
        case["layer_types"] = list(layer_types) if layer_types else None
        rot = rot_cls(text)
        # Gemma-style modules keep one rope per layer type (rope_type is then a dict)
        per_type = sorted(rot.layer_types) if isinstance(getattr(rot, "rope_type", None), dict) else []
        if per_type:
            case["ropes"] = {lt: _rope_record(module, rot_cls, text, lt) for lt in per_type}
        else:
            case["ropes"] = {"default": _rope_record(module, rot_cls, text, None)}
        case.update(_attention_records(module, rot_cls, text))
    except Exception as e:  # record what transformers says, do not guess
        case["error"] = f"{type(e).__name__}: {e}"
    return case


def model_cases():
    cases = []
    for fname in sorted(os.listdir(CONFIG_DIR)):
        if fname.endswith(".json"):
            with open(os.path.join(CONFIG_DIR, fname)) as f:
                raw = json.load(f)
            cases.append(model_case(fname[:-5], raw, f"tests/data/configs/{fname}"))
    for name, raw in DEFAULTS_CASES:
        cases.append(model_case(name, raw, "transformers config-class defaults (not a published config)"))
    return cases


def _dump_compact(obj, indent=0):
    """JSON with one line per list of scalars (the float lists would otherwise be one number per line)."""
    pad = " " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f'{pad} {json.dumps(k)}: {_dump_compact(v, indent + 1)}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        items = [pad + " " + _dump_compact(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj)


def write_models(out_path):
    cases = model_cases()
    out = {"transformers_version": transformers.__version__, "torch_version": torch.__version__,
           "generator": "tools/make_golden.py", "cases": cases}
    with open(out_path, "w") as f:
        f.write(_dump_compact(out) + "\n")
    for c in cases:
        if "error" in c:
            print(f"{c['name']:40s} ERROR {c['error'][:90]}")
        else:
            kinds = ", ".join(f"{k}:{v['rope_type']}/{v['rotary_dim']}/{v['pairing']}" for k, v in c["ropes"].items())
            print(f"{c['name']:40s} {kinds}  softmax x{c['softmax']['factor_on_inv_sqrt_qk_head_dim']:.6g}")
    print(f"wrote {len(cases)} model cases to {out_path}")


def write_cases(out_path):
    cases = []
    print(f"{'name':44s} {'type':12s} {'seq_len':>7s} {'dim':>4s} {'attn_factor':>20s}  inv_freq[0], inv_freq[-1]")
    for entry in CASES:
        name, model_type, subset, seq_len = entry[:4]
        layer_type = entry[4] if len(entry) > 4 else None
        config = build_config(model_type, subset)
        rope_type, inv_freq, attention_factor = compute(config, seq_len, layer_type)
        cross_check(config, seq_len, layer_type, inv_freq, attention_factor, rope_type)
        assert inv_freq.dtype == torch.float32
        values = inv_freq.tolist()
        assert all(math.isfinite(v) for v in values)
        case = {
            "name": name,
            "model_type": model_type,
            "rope_type": rope_type,
            "config": copy.deepcopy(subset),
            "seq_len": seq_len,
            "dim": 2 * len(values),
            "inv_freq": values,
            "attention_factor": attention_factor,
        }
        if layer_type is not None:
            case["layer_type"] = layer_type
        cases.append(case)
        print(f"{name:44s} {rope_type:12s} {str(seq_len):>7s} {case['dim']:4d} {attention_factor!r:>20s}"
              f"  {values[0]!r}, {values[-1]!r}")

    out = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "generator": "tools/make_golden.py",
        "cases": cases,
    }
    out_path = os.path.abspath(out_path)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {out_path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--models-out", default=DEFAULT_MODELS_OUT)
    ap.add_argument("--only", choices=("all", "cases", "models"), default="all",
                    help="cases: hf_golden.json only; models: hf_golden_models.json only")
    args = ap.parse_args(argv)

    torch.set_default_dtype(torch.float32)
    transformers.logging.set_verbosity_error()
    warnings.simplefilter("ignore", FutureWarning)

    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    if args.only in ("all", "cases"):
        write_cases(args.out)
    if args.only in ("all", "models"):
        write_models(os.path.abspath(args.models_out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
