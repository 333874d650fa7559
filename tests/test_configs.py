"""Rope.from_hf across model families that name things differently."""
import json
import types

import numpy as np
import pytest

import ropescale


def test_duck_typed_config_object():
    cfg = types.SimpleNamespace(rope_theta=1e6, hidden_size=4096, num_attention_heads=32, head_dim=None,
                                max_position_embeddings=32768, rope_scaling=None)
    rope = ropescale.Rope.from_hf(cfg)
    assert (rope.dim, rope.base, rope.method) == (128, 1e6, "default")
    np.testing.assert_array_equal(rope.inv_freq, ropescale.inv_freq(128, 1e6))


def test_mistral_explicit_head_dim_wins_over_hidden_size():
    # Mistral-Nemo: hidden 5120, 32 heads, but head_dim 128 (not 160)
    cfg = {"rope_theta": 1e6, "hidden_size": 5120, "num_attention_heads": 32, "head_dim": 128,
           "max_position_embeddings": 1024000}
    assert ropescale.Rope.from_hf(cfg).dim == 128


def test_phi3_su_alias_and_top_level_original_length():
    sf, lf = [1.0] * 48, [2.0] * 48
    cfg = {"rope_theta": 10000.0, "hidden_size": 3072, "num_attention_heads": 32,
           "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
           "rope_scaling": {"type": "su", "short_factor": sf, "long_factor": lf}}
    rope = ropescale.Rope.from_hf(cfg)
    assert rope.method == "longrope" and rope.original_max_position_embeddings == 4096
    # factor = 131072 / 4096 = 32 drives the attention factor sqrt(1 + ln 32 / ln 4096)
    assert rope.attention_factor == pytest.approx((1 + np.log(32) / np.log(4096)) ** 0.5, rel=1e-15)
    theta_long, _ = rope.inv_freq_at(5000)
    np.testing.assert_allclose(theta_long, ropescale.inv_freq(96) / 2, rtol=1e-15)


def test_deepseek_rotary_dim_is_qk_rope_head_dim():
    cfg = {"rope_theta": 10000, "hidden_size": 7168, "num_attention_heads": 128, "qk_rope_head_dim": 64,
           "qk_nope_head_dim": 128, "max_position_embeddings": 163840,
           "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                            "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}}
    rope = ropescale.Rope.from_hf(cfg)
    assert rope.dim == 64 and rope.method == "yarn" and rope.attention_factor == 1.0


def test_rope_parameters_of_newer_configs():
    cfg = {"hidden_size": 2048, "num_attention_heads": 16, "max_position_embeddings": 131072,
           "rope_parameters": {"rope_type": "yarn", "rope_theta": 500000.0, "factor": 4.0,
                               "original_max_position_embeddings": 32768}}
    rope = ropescale.Rope.from_hf(cfg)
    assert (rope.dim, rope.base, rope.method) == (128, 500000.0, "yarn")
    assert "rope_theta" not in rope.scaling


def test_gemma_nested_rope_parameters_pick_full_attention():
    cfg = {"head_dim": 256, "global_head_dim": 512, "max_position_embeddings": 131072,
           "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                               "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                                  "rope_theta": 1e6}}}
    rope = ropescale.Rope.from_hf(cfg)
    assert rope.dim == 512 and rope.method == "proportional" and rope.base == 1e6
    assert np.count_nonzero(rope.inv_freq) == 64


def test_text_config_of_multimodal_models(tmp_path):
    cfg = {"architectures": ["X"], "text_config": {"rope_theta": 1e6, "head_dim": 64, "num_attention_heads": 8,
                                                   "hidden_size": 512, "max_position_embeddings": 8192}}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    assert ropescale.Rope.from_hf(p).base == 1e6


def test_to_hf_round_trip_keeps_partial_rotary_and_scaling():
    rope = ropescale.Rope(80, 10000.0, {"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.4})
    d = rope.to_hf()
    assert d["partial_rotary_factor"] == 0.4 and d["rope_scaling"]["rope_type"] == "linear"
    back = ropescale.Rope.from_hf(json.loads(json.dumps(d)))
    np.testing.assert_array_equal(back.inv_freq, rope.inv_freq)
    assert back.rotary_dim == 32


@pytest.mark.parametrize("method", ["linear", "ntk", "dynamic", "yarn", "llama3"])
def test_extend_gives_the_target_length(method):
    base = ropescale.Rope(128, 10000.0)
    ext = base.extend(32768, method, original_len=4096)
    assert ext.method == method and ext.factor == 8.0
    if method in ("linear", "ntk", "yarn", "llama3"):
        # the lowest-frequency pair is interpolated: period x 8
        assert ext.periods[-1] == pytest.approx(8 * base.periods[-1], rel=1e-12)
    with pytest.raises(ValueError, match="target_len"):
        base.extend(1000, method, original_len=4096)
