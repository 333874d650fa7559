"""The methods added for issue 11: ntk_alpha (Hunyuan), ntk_mixed (vLLM's mixed_b), ntk_by_parts,
dynamic_yarn, and LongRoPE's short_mscale / long_mscale.

Each is checked against independent math (mpmath, the published formula) and, where
transformers implements it, against transformers' own code; the C core against
``ropescale.reference`` over lengths and dims.
"""
import math
import warnings

import numpy as np
import pytest

import ropescale
from ropescale import reference as ref

mpmath = pytest.importorskip("mpmath")
mpmath.mp.dps = 40


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def mp_theta(dim, base):
    return [mpmath.mpf(base) ** (-mpmath.mpf(2 * k) / dim) for k in range(dim // 2)]


# -- ntk_alpha -------------------------------------------------------------------

@pytest.mark.parametrize("dim, base, alpha", [(128, 1e4, 1000.0), (64, 5e5, 8.0), (16, 1e4, 1.5)])
def test_ntk_alpha_is_the_base_times_alpha_to_the_d_over_d_minus_2(dim, base, alpha):
    theta = ropescale.Rope(dim, base, {"rope_type": "ntk_alpha", "alpha": alpha}).inv_freq
    b = mpmath.mpf(base) * mpmath.mpf(alpha) ** (mpmath.mpf(dim) / (dim - 2))
    want = np.array([float(t) for t in mp_theta(dim, b)])
    assert rel(theta, want) <= 4e-16 * dim
    # the seed's lambda with s = alpha: the lowest pair's period is alpha times the original's
    assert ropescale.periods(theta)[-1] == pytest.approx(alpha * ropescale.periods(ropescale.inv_freq(dim, base))[-1],
                                                          rel=1e-12)


def test_ntk_alpha_matches_transformers_hunyuan_and_reads_hunyuans_config():
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.hunyuan_v1_dense import modeling_hunyuan_v1_dense as mod
    # rope block as Hunyuan's published configs write it: "dynamic" with a fixed alpha
    scaling = {"alpha": 1000.0, "beta_fast": 32, "beta_slow": 1, "factor": 1.0, "mscale": 1.0,
               "mscale_all_dim": 1.0, "type": "dynamic"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = transformers.HunYuanDenseV1Config(hidden_size=512, num_attention_heads=4, head_dim=128,
                                                num_hidden_layers=1, rope_theta=1e4, rope_scaling=dict(scaling),
                                                max_position_embeddings=32768)
        emb = mod.HunYuanDenseV1RotaryEmbedding(cfg)
        rope = ropescale.Rope.from_hf({"model_type": "hunyuan_v1_dense", "hidden_size": 512, "num_attention_heads": 4,
                                       "head_dim": 128, "rope_theta": 1e4, "rope_scaling": scaling,
                                       "max_position_embeddings": 32768})
    assert emb.rope_type == "ntk_alpha" and rope.method == "ntk_alpha"
    np.testing.assert_allclose(rope.inv_freq, emb.inv_freq.double().numpy(), rtol=1e-6, atol=0)
    assert rope.attention_factor == emb.attention_scaling == 1.0
    # to_hf writes it as the config did ("dynamic" with alpha), and reads back to the same rope
    out = rope.to_hf()
    assert out["rope_scaling"]["rope_type"] == "dynamic" and out["rope_scaling"]["alpha"] == 1000.0
    back = ropescale.Rope.from_hf(out)
    assert back.method == "ntk_alpha" and np.array_equal(back.inv_freq, rope.inv_freq)
    # independent of the sequence length (dynamic's length rule does not apply)
    assert np.array_equal(rope.inv_freq_at(10**6)[0], rope.inv_freq)


# -- ntk_mixed -------------------------------------------------------------------

@pytest.mark.parametrize("dim, factor, b", [(128, 8.0, 0.75), (64, 16.0, 0.5), (16, 2.0, 1.0), (96, 4.0, 2.0)])
def test_ntk_mixed_is_vllms_mixed_formula(dim, factor, b):
    theta = ropescale.Rope(dim, 1e4, {"rope_type": "ntk_mixed", "factor": factor, "mixed_b": b}).inv_freq
    a = mpmath.log(factor) / mpmath.mpf(dim // 2) ** b
    want = np.array([float(t / mpmath.exp(a * mpmath.mpf(k + 1) ** b)) for k, t in enumerate(mp_theta(dim, 1e4))])
    assert rel(theta, want) <= 4e-16 * dim
    # the lowest pair is divided by exactly s (its period is s times the original's)
    assert theta[-1] == pytest.approx(ropescale.inv_freq(dim)[-1] / factor, rel=1e-14)


def test_vllm_ntk_with_mixed_b_in_a_config_is_ntk_mixed():
    rope = ropescale.Rope.from_hf({"head_dim": 64, "rope_theta": 1e4,
                                   "rope_scaling": {"rope_type": "ntk", "factor": 4.0, "mixed_b": 0.75}})
    assert rope.method == "ntk_mixed"
    assert rope.to_hf()["rope_scaling"]["rope_type"] == "ntk"
    assert ropescale.Rope.from_hf(rope.to_hf()) == rope


# -- ntk_by_parts ----------------------------------------------------------------

@pytest.mark.parametrize("dim, base, m_l, s, fast, slow", [(128, 1e4, 4096, 8.0, 32.0, 1.0),
                                                          (64, 5e5, 8192, 4.0, 16.0, 2.0),
                                                          (128, 1e6, 32768, 16.0, 32.0, 1.0)])
def test_ntk_by_parts_blends_linearly_in_turns_within_the_trained_context(dim, base, m_l, s, fast, slow):
    rope = ropescale.Rope(dim, base, {"rope_type": "ntk_by_parts", "factor": s, "beta_fast": fast,
                                      "beta_slow": slow, "original_max_position_embeddings": m_l})
    want = []
    for t in mp_theta(dim, base):
        r = m_l * t / (2 * mpmath.pi)
        g = min(max((r - slow) / (fast - slow), 0), 1)
        want.append(float((1 - g) * t / s + g * t))
    assert rel(rope.inv_freq, want) <= 4e-16 * dim
    theta = ropescale.inv_freq(dim, base)
    turns = m_l * theta / (2 * math.pi)
    assert np.array_equal(rope.inv_freq[turns >= fast], theta[turns >= fast])       # kept
    np.testing.assert_allclose(rope.inv_freq[turns <= slow], theta[turns <= slow] / s, rtol=1e-15)  # interpolated
    assert rope.attention_factor == 1.0


# -- dynamic_yarn ----------------------------------------------------------------

def test_dynamic_yarn_is_transformers_yarn_at_the_current_length_and_the_original_rope_before():
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    rope = ropescale.Rope(128, 1e4, {"rope_type": "dynamic_yarn", "original_max_position_embeddings": 4096})
    assert np.array_equal(rope.inv_freq_at(4096)[0], ropescale.inv_freq(128)) and rope.inv_freq_at(100)[1] == 1.0
    for seq_len in (6000, 32768, 100000):
        s = seq_len / 4096
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = transformers.LlamaConfig(hidden_size=1024, num_attention_heads=8, rope_theta=1e4,
                                           max_position_embeddings=seq_len,
                                           rope_scaling={"rope_type": "yarn", "factor": s,
                                                         "original_max_position_embeddings": 4096})
            inv, attn = ROPE_INIT_FUNCTIONS["yarn"](cfg, "cpu")
        theta, a = rope.inv_freq_at(seq_len)
        np.testing.assert_allclose(theta, inv.double().numpy(), rtol=1e-6, atol=0)
        assert a == pytest.approx(attn, rel=1e-12) and a == pytest.approx(0.1 * math.log(s) + 1, rel=1e-15)


def test_dynamic_yarn_cos_sin_takes_the_length_from_the_positions():
    rope = ropescale.Rope(64, 1e4, {"rope_type": "dynamic_yarn", "original_max_position_embeddings": 64})
    pos = np.arange(256)
    c, _ = rope.cos_sin(pos, dtype=np.float64)
    theta, attn = rope.inv_freq_at(256)
    want_c, _ = ref.cos_sin(pos, theta, attn)
    np.testing.assert_allclose(c, want_c, rtol=0, atol=1e-15)


# -- C against the reference over lengths and dims --------------------------------

@pytest.mark.parametrize("scaling", [
    {"rope_type": "ntk_alpha", "alpha": 3.0},
    {"rope_type": "ntk_mixed", "factor": 8.0, "mixed_b": 0.75},
    {"rope_type": "ntk_by_parts", "factor": 8.0, "original_max_position_embeddings": 512},
    {"rope_type": "dynamic_yarn", "original_max_position_embeddings": 512, "beta_fast": 16.0},
    {"rope_type": "longrope", "factor": 4.0, "original_max_position_embeddings": 512, "short_mscale": 1.1,
     "long_mscale": 1.3, "short_factor": "S", "long_factor": "L"},
], ids=lambda s: s["rope_type"])
@pytest.mark.parametrize("dim", [4, 16, 96])
def test_new_methods_c_core_equals_reference(scaling, dim):
    sc = dict(scaling)
    if sc.get("short_factor") == "S":
        sc["short_factor"] = list(np.linspace(1, 2, dim // 2))
        sc["long_factor"] = list(np.linspace(2, 8, dim // 2))
    rope = ropescale.Rope(dim, 1e4, sc)
    p = {k: v for k, v in sc.items() if k != "rope_type"}
    for seq_len in (None, 100, 512, 513, 4096):
        theta, attn = rope.inv_freq_at(seq_len)
        want, want_attn = ref.scaled_inv_freq(dim, 1e4, sc["rope_type"], seq_len=seq_len, **p)
        assert rel(theta, want) <= 1e-15
        assert attn == pytest.approx(want_attn, rel=1e-15)


# -- LongRoPE short_mscale / long_mscale -------------------------------------------

def test_longrope_mscales_match_transformers_phimoe():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.phimoe import modeling_phimoe as mod
    n = 16
    scaling = {"rope_type": "longrope", "short_factor": list(np.linspace(1.0, 1.5, n)),
               "long_factor": list(np.linspace(1.0, 6.0, n)), "short_mscale": 1.243, "long_mscale": 1.31,
               "original_max_position_embeddings": 64}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = transformers.PhimoeConfig(hidden_size=128, num_attention_heads=4, num_hidden_layers=1,
                                        rope_theta=1e4, max_position_embeddings=256, rope_scaling=dict(scaling))
        emb = mod.PhimoeRotaryEmbedding(cfg)
        rope = ropescale.Rope.from_hf(cfg.to_dict())
    for length in (32, 200):
        pos = torch.arange(length)[None]
        cos, sin = emb(torch.zeros(1, dtype=torch.float32), pos)
        cos, sin = cos[0, :, :n].double().numpy(), sin[0, :, :n].double().numpy()
        c, s = rope.cos_sin(np.arange(length), dtype=np.float64)
        # the amplitude is the branch's mscale
        np.testing.assert_allclose(np.hypot(c, s), np.hypot(cos, sin), rtol=1e-6)
        if length <= 64:
            # transformers' PhimoeRotaryEmbedding.forward recomputes inv_freq without seq_len, so it
            # keeps the short factors at every length (only the mscale switches); ropescale and vLLM
            # switch the factors too.  Compare the angles where both use the short ones.
            np.testing.assert_allclose(c, cos, atol=2e-6 * length, rtol=0)
            np.testing.assert_allclose(s, sin, atol=2e-6 * length, rtol=0)
    assert rope.inv_freq_at(32)[1] == 1.243 and rope.inv_freq_at(200)[1] == 1.31


def test_longrope_mscale_wins_over_attention_factor_only_on_its_branch():
    sc = {"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4,
          "original_max_position_embeddings": 64, "factor": 4.0, "attention_factor": 1.7, "long_mscale": 1.2}
    rope = ropescale.Rope(8, 1e4, sc)
    assert rope.inv_freq_at(32)[1] == 1.7 and rope.inv_freq_at(100)[1] == 1.2


# -- bad input -----------------------------------------------------------------

@pytest.mark.parametrize("scaling, exc, word", [
    ({"rope_type": "ntk_alpha"}, ValueError, "alpha"),
    ({"rope_type": "ntk_alpha", "alpha": 0.0}, ValueError, "alpha"),
    ({"rope_type": "ntk_alpha", "alpha": float("nan")}, ValueError, "alpha"),
    ({"rope_type": "ntk_alpha", "alpha": "8"}, TypeError, "alpha"),
    ({"rope_type": "ntk_alpha", "alpha": 1e300}, ValueError, "overflow"),
    ({"rope_type": "ntk_mixed", "factor": 4.0}, ValueError, "mixed_b"),
    ({"rope_type": "ntk_mixed", "factor": 4.0, "mixed_b": -1.0}, ValueError, "mixed_b"),
    ({"rope_type": "ntk_mixed", "factor": 0.5, "mixed_b": 1.0}, ValueError, "factor"),
    ({"rope_type": "ntk_by_parts", "factor": 4.0}, ValueError, "original_max_position_embeddings"),
    ({"rope_type": "ntk_by_parts", "factor": 4.0, "original_max_position_embeddings": 4096, "beta_fast": 1.0},
     ValueError, "beta_fast"),
    ({"rope_type": "dynamic_yarn"}, ValueError, "original_max_position_embeddings"),
    ({"rope_type": "dynamic_yarn", "original_max_position_embeddings": 64, "beta_slow": 64.0}, ValueError,
     "beta_fast"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [1.0] * 4,
      "original_max_position_embeddings": 64, "short_mscale": 0.0}, ValueError, "short_mscale"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [1.0] * 4,
      "original_max_position_embeddings": 64, "long_mscale": True}, TypeError, "long_mscale"),
])
def test_bad_parameters_of_the_new_methods_raise_naming_them(scaling, exc, word):
    with pytest.raises(exc, match=word):
        ropescale.Rope(8, 1e4, scaling)
