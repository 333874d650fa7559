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
"""

import argparse
import copy
import importlib
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


def cross_check(config, seq_len, layer_type, inv_freq, attention_factor, rope_type):
    """Compare against the model's own rotary module (init + forward)."""
    emb = rotary_class(config.model_type)(config)
    prefix = f"{layer_type}_" if layer_type is not None else ""
    scaling_attr = f"{prefix}attention_scaling" if layer_type is not None else "attention_scaling"
    scaling = getattr(emb, scaling_attr)
    if seq_len is not None and rope_type in ("dynamic", "longrope"):
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    torch.set_default_dtype(torch.float32)
    transformers.logging.set_verbosity_error()
    warnings.simplefilter("ignore", FutureWarning)

    cases = []
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
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
    out_path = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
