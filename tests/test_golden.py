"""Compatibility with HF transformers on published configs.

tests/data/hf_golden.json holds what transformers computed (float32) for real
model configs; tools/make_golden.py regenerates it.  Agreement is judged at
relative 1e-6 (one float32 ulp is 6e-8 relative, plus the float32 pow).
"""
import json
import pathlib

import numpy as np
import pytest

import ropescale

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "hf_golden.json").read_text())
CASES = DATA["cases"]


def test_golden_data_covers_the_published_configs():
    names = {c["name"] for c in CASES}
    for needed in ("llama3.1-8b", "qwen2.5-7b-instruct-yarn", "deepseek-v3-yarn-mscale",
                   "gpt-oss-yarn-truncate-false", "phi3-mini-128k-longrope-seq8192", "llama2-7b-dynamic-f2-seq16384"):
        assert needed in names
    assert len({c["rope_type"] for c in CASES}) >= 7


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_rope_from_hf_matches_transformers(case):
    rope = ropescale.Rope.from_hf(case["config"])
    assert rope.method == case["rope_type"]
    theta, attn = rope.inv_freq_at(case["seq_len"])
    want = np.asarray(case["inv_freq"])
    assert theta.shape == want.shape
    np.testing.assert_allclose(theta, want, rtol=1e-6, atol=0)
    assert attn == pytest.approx(case["attention_factor"], rel=1e-12)


@pytest.mark.parametrize("case", [c for c in CASES if c["rope_type"] != "proportional"], ids=lambda c: c["name"])
def test_scaled_inv_freq_with_the_dict_as_resolved(case):
    """The plain function with the rope_scaling dict, once the trained length is in it."""
    cfg = case["config"]
    sc = dict(cfg.get("rope_scaling") or cfg.get("rope_parameters") or {})
    if not sc:
        sc = None
    else:
        method = sc.get("rope_type", sc.get("type"))
        if method == "dynamic":
            sc["original_max_position_embeddings"] = cfg["max_position_embeddings"]
        if "original_max_position_embeddings" in cfg:
            sc["original_max_position_embeddings"] = cfg["original_max_position_embeddings"]
        if method == "longrope" and "factor" not in sc:
            sc["factor"] = cfg["max_position_embeddings"] / sc["original_max_position_embeddings"]
    head = cfg.get("qk_rope_head_dim") or cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    theta, attn = ropescale.scaled_inv_freq(head, cfg["rope_theta"], sc, seq_len=case["seq_len"])
    np.testing.assert_allclose(theta, case["inv_freq"], rtol=1e-6, atol=0)
    assert attn == pytest.approx(case["attention_factor"], rel=1e-12)


def test_live_cross_check_with_installed_transformers():
    """Optional: recompute a few cases with the installed transformers."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    checked = 0
    for case in CASES:
        if case["rope_type"] in ("default", "proportional") or case["rope_type"] not in ROPE_INIT_FUNCTIONS:
            continue
        cfg = transformers.AutoConfig.for_model(case["model_type"], **case["config"])
        # No try/except: an error in transformers' own code is a failure to
        # explain (API drift included), not a reason to pass quietly.
        theta, attn = ROPE_INIT_FUNCTIONS[case["rope_type"]](cfg, "cpu", seq_len=case["seq_len"])
        ours = ropescale.Rope.from_hf(case["config"]).inv_freq_at(case["seq_len"])
        np.testing.assert_allclose(ours[0], theta.numpy(), rtol=1e-6)
        assert ours[1] == pytest.approx(float(attn), rel=1e-6)
        checked += 1
    assert checked >= 10
