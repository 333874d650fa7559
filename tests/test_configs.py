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


# --------------------------------------------------------------- Rope is a value

import copy  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import warnings  # noqa: E402

from hypothesis import given, settings, strategies as st  # noqa: E402

from ropescale import methods, model_types, reference as ref  # noqa: E402


@pytest.mark.parametrize("attr, value", [("base", 5e5), ("dim", 64), ("scaling", {"rope_type": "ntk", "factor": 2.0}),
                                         ("method", "ntk"), ("inv_freq", np.ones(32)), ("attention_factor", 2.0),
                                         ("max_position_embeddings", 8192), ("anything", 1)])
def test_rope_refuses_every_attribute_assignment(attr, value):
    rope = ropescale.Rope(64, 1e4, {"rope_type": "linear", "factor": 2.0})
    before = rope.inv_freq.copy()
    with pytest.raises(AttributeError, match="immutable"):
        setattr(rope, attr, value)
    with pytest.raises(AttributeError, match="immutable"):
        delattr(rope, "base")
    assert np.array_equal(rope.inv_freq, before) and rope.base == 1e4 and rope.method == "linear"


def test_rope_hands_out_copies_and_read_only_frequencies():
    rope = ropescale.Rope(64, 1e4, {"rope_type": "linear", "factor": 2.0})
    rope.scaling["factor"] = 100.0
    assert rope.scaling["factor"] == 2.0 and rope.factor == 2.0
    with pytest.raises(ValueError):
        rope.inv_freq[0] = 5.0


def test_replace_recomputes_everything_derived_and_checks():
    rope = ropescale.Rope(64, 1e4, {"rope_type": "linear", "factor": 2.0}, max_position_embeddings=8192)
    r2 = rope.replace(base=5e5)
    np.testing.assert_array_equal(r2.inv_freq, ropescale.inv_freq(64, 5e5) / 2)
    assert r2.max_position_embeddings == 8192 and rope.base == 1e4
    r3 = rope.replace(scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048})
    assert r3.method == "yarn" and r3.attention_factor == pytest.approx(0.1 * math.log(4) + 1, rel=1e-15)
    assert rope.replace(max_position_embeddings=None).max_position_embeddings is None
    with pytest.raises(ValueError, match="base"):
        rope.replace(base=0.5)
    with pytest.raises(TypeError, match="rotary_dim"):
        rope.replace(rotary_dim=32)


@pytest.mark.parametrize("value, exc", [("2", TypeError), (True, TypeError), (0, ValueError), (-5, ValueError),
                                        (math.inf, ValueError), (10**400, ValueError), (2.0**60, ValueError)])
def test_max_position_embeddings_is_a_checked_constructor_argument(value, exc):
    with pytest.raises(exc, match="max_position_embeddings"):
        ropescale.Rope(64, max_position_embeddings=value)


def test_rope_survives_pickle_and_deepcopy_as_an_equal_value():
    rope = ropescale.Rope(64, 1e4, {"rope_type": "longrope", "factor": 4.0, "original_max_position_embeddings": 4096,
                                    "short_factor": [1.0] * 32, "long_factor": [4.0] * 32},
                          max_position_embeddings=16384)
    for other in (pickle.loads(pickle.dumps(rope)), copy.deepcopy(rope), copy.copy(rope)):
        assert other == rope and other is not rope
        np.testing.assert_array_equal(other.inv_freq_at(10000)[0], rope.inv_freq_at(10000)[0])
    assert rope != rope.replace(base=2e4)


# ------------------------------------------------- to_hf -> from_hf round trips

def _scaling_for(name, n_pairs, s, m_l, draw):
    spec = methods.SPECS[name]
    if spec.extend is None:
        return None
    sc = {"rope_type": name, **spec.extend(s, m_l, n_pairs)}
    if name == "longrope":
        sc["short_factor"] = draw(st.lists(st.floats(1.0, 4.0), min_size=n_pairs, max_size=n_pairs))
        sc["long_factor"] = draw(st.lists(st.floats(1.0, 64.0), min_size=n_pairs, max_size=n_pairs))
    if name == "yarn" and draw(st.booleans()):
        sc.update(beta_fast=draw(st.sampled_from([16.0, 32.0])), beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707)
    return sc


@st.composite
def ropes(draw):
    name = draw(st.sampled_from(ropescale.METHODS))
    dim = draw(st.sampled_from([16, 64, 80, 128]))
    prf = draw(st.sampled_from([None, 0.5, 0.25] if dim != 80 else [None, 0.4]))
    base = draw(st.sampled_from([1e4, 5e5, 1e6]))
    m_l = draw(st.sampled_from([2048, 4096, 8192]))
    s = draw(st.sampled_from([1.0, 2.0, 8.0, 32.0, 2.5]))
    rotary = dim if prf is None or methods.SPECS[name].full_head_dim else int(dim * prf)
    sc = _scaling_for(name, rotary // 2, s, m_l, draw)
    if prf is not None:
        sc = {**(sc or {}), "partial_rotary_factor": prf}
    max_pos = draw(st.sampled_from([None, m_l, int(m_l * s)]))
    return ropescale.Rope(dim, base, sc, max_position_embeddings=max_pos, interleaved=draw(st.booleans()))


@settings(max_examples=300, deadline=None)
@given(rope=ropes())
def test_to_hf_then_from_hf_reproduces_theta_and_attention_at_every_length(rope):
    back = ropescale.Rope.from_hf(json.loads(json.dumps(rope.to_hf())))
    assert back.method == rope.method and back.rotary_dim == rope.rotary_dim
    assert back.interleaved == rope.interleaved
    if rope.method != "dynamic":   # dynamic's max_position_embeddings is its trained length in HF
        assert back == rope
    m_l = rope.original_max_position_embeddings or 4096
    for seq_len in (None, 1, int(m_l) - 1, int(m_l), int(m_l) + 1, 2 * int(m_l), 16 * int(m_l)):
        t1, a1 = rope.inv_freq_at(seq_len)
        t2, a2 = back.inv_freq_at(seq_len)
        assert np.array_equal(t1, t2), (seq_len, rope)
        assert a1 == a2, (seq_len, rope)


def test_dynamic_round_trip_keeps_the_trained_length():
    # Regression: to_hf wrote max_position_embeddings = 32768, which from_hf (as HF does)
    # takes as dynamic NTK's trained length: theta' was 25x off at seq_len 16384.
    rope = ropescale.Rope(128).extend(32768, "dynamic", original_len=4096)
    back = ropescale.Rope.from_hf(rope.to_hf())
    for seq_len in (4096, 16384, 32768):
        np.testing.assert_array_equal(back.inv_freq_at(seq_len)[0], rope.inv_freq_at(seq_len)[0])
    want, _ = ref.scaled_inv_freq(128, 1e4, "dynamic", factor=8.0, original_max_position_embeddings=4096,
                                  seq_len=16384)
    np.testing.assert_allclose(back.inv_freq_at(16384)[0], want, rtol=1e-15)


def test_round_trip_matches_transformers_for_every_method():
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    for name in ropescale.METHODS:
        if name not in ROPE_INIT_FUNCTIONS or name == "proportional":
            continue
        rope = ropescale.Rope(64, 1e4).extend(16384, name, original_len=4096)
        hf = rope.to_hf()
        cfg = LlamaConfig(hidden_size=64 * 4, num_attention_heads=4, head_dim=64,
                          max_position_embeddings=hf.get("max_position_embeddings", 4096),
                          rope_parameters={**hf["rope_scaling"], "rope_theta": 1e4})
        for seq_len in (None, 8192, 16384):
            want, attn = ROPE_INIT_FUNCTIONS[name](cfg, "cpu", seq_len=seq_len)
            got, got_attn = ropescale.Rope.from_hf(hf).inv_freq_at(seq_len)
            # transformers computes in float32
            np.testing.assert_allclose(got, want.double().numpy(), rtol=3e-6, err_msg=f"{name} at {seq_len}")
            assert got_attn == pytest.approx(attn, rel=1e-6)
    del transformers, torch


# --------------------------------------------- config files: every value checked

def write(tmp_path, text, name="config.json"):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return str(p)


CFG = {"rope_theta": 1e4, "head_dim": 64, "max_position_embeddings": 4096}


@pytest.mark.parametrize("change, word", [
    ({"max_position_embeddings": "2"}, "max_position_embeddings"),
    ({"max_position_embeddings": True}, "max_position_embeddings"),
    ({"max_position_embeddings": 0}, "max_position_embeddings"),
    ({"max_position_embeddings": 10**400}, "max_position_embeddings"),
    ({"rope_theta": 10**400}, "rope_theta"),
    ({"rope_theta": "1e4"}, "rope_theta"),
    ({"head_dim": 10**400}, "head_dim"),
    ({"head_dim": 64.5}, "head_dim"),
    ({"rope_scaling": "linear"}, "rope_scaling"),
    ({"rope_scaling": ["linear", 2.0]}, "rope_scaling"),
    ({"rope_parameters": 3}, "rope_parameters"),
    ({"rope_scaling": {"rope_type": ["yarn"]}}, "rope_type"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 10**400}}, "factor"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0, "attention_factor": 10**400}}, "attention_factor"),
    ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0, "short_factor": ["1"] * 32,
                       "long_factor": [2.0] * 32}}, "short_factor"),
    ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0, "short_factor": [True] * 32,
                       "long_factor": [2.0] * 32}}, "short_factor"),
    ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0, "short_factor": [1.0] * 32,
                       "long_factor": [5e-324] * 32}}, "long_factor"),
    ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0, "original_max_position_embeddings": 0,
                       "short_factor": [1.0] * 32, "long_factor": [2.0] * 32}}, "original_max_position_embeddings"),
    ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0, "original_max_position_embeddings": 1,
                       "short_factor": [1.0] * 32, "long_factor": [2.0] * 32}}, "original_max_position_embeddings"),
    ({"original_max_position_embeddings": "4096", "rope_scaling": {"rope_type": "yarn", "factor": 2.0}},
     "original_max_position_embeddings"),
])
def test_config_values_go_through_the_api_checks_and_name_key_and_file(tmp_path, change, word):
    cfg = {**CFG, **change}
    with pytest.raises(ValueError, match=word):
        ropescale.Rope.from_hf(cfg)
    path = write(tmp_path, json.dumps(cfg))
    with pytest.raises(ValueError) as info:
        ropescale.Rope.from_hf(path)
    assert word in str(info.value) and path in str(info.value)


@pytest.mark.parametrize("text, word", [
    ('{"head_dim": 64, "max_position_embeddings": 1' + "0" * 5000 + "}", "JSON"),
    ("[" * 100_000 + "]" * 100_000, "JSON"),
    ("{not json", "JSON"),
    (b'{"head_dim": 64, "rope_theta": "\xff\xfe"}', "UTF-8"),
    ("[1, 2]", "config"),
])
def test_hostile_config_files_give_one_clear_value_error(tmp_path, text, word):
    path = write(tmp_path, text)
    with pytest.raises((ValueError, TypeError)) as info:
        ropescale.Rope.from_hf(path)
    assert word in str(info.value) and path in str(info.value)


def test_non_regular_and_oversized_files_are_refused_without_reading(tmp_path):
    fifo = str(tmp_path / "fifo.json")
    os.mkfifo(fifo)   # opening it for reading would block forever
    with pytest.raises(ValueError, match="not a regular file"):
        ropescale.Rope.from_hf(fifo)
    if os.path.exists("/dev/zero"):
        with pytest.raises(ValueError, match="not a regular file"):
            ropescale.Rope.from_hf("/dev/zero")
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(120 << 20)   # sparse: costs no disk
    with pytest.raises(ValueError, match=r"limit 4,194,304 bytes"):
        ropescale.Rope.from_hf(str(big))
    with pytest.raises(ValueError, match="not a regular file"):
        ropescale.Rope.from_hf(str(tmp_path))


def test_zero_beta_is_read_as_transformers_reads_it_with_a_warning():
    sc = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096, "beta_fast": 0}
    with pytest.warns(UserWarning, match="transformers"):
        got = ropescale.scaled_inv_freq(64, 1e4, sc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        want = ropescale.scaled_inv_freq(64, 1e4, {**sc, "beta_fast": 32.0})
    np.testing.assert_array_equal(got[0], want[0])


def test_repr_html_shows_unknown_keys_of_any_shape():
    with pytest.warns(UserWarning, match="ignored"):
        rope = ropescale.Rope(64, 1e4, {"rope_type": "linear", "factor": 2.0, "notes": ["a", "b"],
                                        "nested": {"x": [1, "y"]}})
    html = rope._repr_html_()
    assert "notes" in html and "nested" in html


# ------------------------------------------------ finite results or a clear error

def test_dynamic_with_a_huge_factor_is_the_original_rope_below_the_trained_length():
    sc = {"rope_type": "dynamic", "factor": 1e300, "original_max_position_embeddings": 4096}
    for seq_len in (None, 100, 4096):
        theta, attn = ropescale.scaled_inv_freq(64, 1e4, sc, seq_len=seq_len)
        np.testing.assert_array_equal(theta, ropescale.inv_freq(64, 1e4))
    with pytest.raises(ValueError, match="dynamic"):
        ropescale.scaled_inv_freq(64, 1e4, sc, seq_len=4097)


@pytest.mark.parametrize("call, word", [
    (lambda: ropescale.ntk_base(1e300, 128, 1e10), "overflows"),
    (lambda: ropescale.ntk_lambda(4, 1e300), "overflows"),
    (lambda: ropescale.scaled_inv_freq(64, 1e300, {"rope_type": "ntk", "factor": 1e10}), "ntk"),
    (lambda: ropescale.Rope(64, 10**400), "base"),
    (lambda: ropescale.cos_sin([1], [1.0], attention_factor=10**400), "attention_factor"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "linear", "factor": 10**400}), "factor"),
])
def test_overflowing_inputs_raise_value_error_naming_them(call, word):
    with pytest.raises(ValueError, match=word):
        call()


# ------------------------------------------- real configs: defaults, spellings, pairing

def _hf_inv_freq(model_type, cfg, seq_len=None):
    """inv_freq and attention factor as transformers computes them for a config dict."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = transformers.CONFIG_MAPPING[model_type](**cfg)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    params = config.rope_parameters
    layer_type = None
    if "full_attention" in params:
        params, layer_type = params["full_attention"], "full_attention"
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        base, prf = params["rope_theta"], params.get("partial_rotary_factor", 1.0)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        d = int(head_dim * prf)
        import torch
        inv = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.int64).double() / d))
        return inv.numpy(), 1.0
    inv, attn = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu", seq_len=seq_len, layer_type=layer_type)
    return inv.double().numpy(), attn


@pytest.mark.parametrize("model_type", sorted(model_types.MODEL_TYPES))
def test_model_type_defaults_are_transformers_defaults(model_type):
    transformers = pytest.importorskip("transformers")
    if model_type not in transformers.CONFIG_MAPPING:
        pytest.skip(f"{model_type} is not a transformers model type (remote code)")
    known = model_types.MODEL_TYPES[model_type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = transformers.CONFIG_MAPPING[model_type]()
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    params = getattr(config, "rope_parameters", None) or {}
    if params and all(isinstance(v, dict) for v in params.values()):   # keyed by layer type
        # the global layers' entry (dots3: indexed_attention), whatever order the dict has
        params = params.get("full_attention") or next(v for k, v in sorted(params.items()) if k != "sliding_attention")
    if known.rotary_dim is not None:     # GPT-J / CodeGen: an absolute rotary dim, fixed base 10000
        assert config.rotary_dim == known.rotary_dim and known.rope_theta == 10000.0
    else:
        assert params["rope_theta"] == known.rope_theta
        prf = params.get("partial_rotary_factor", 1.0)
        qk, hd = getattr(config, "qk_rope_head_dim", None), getattr(config, "head_dim", None)
        if known.partial_rotary_factor is None and isinstance(qk, int) and isinstance(hd, int) and qk == int(hd * prf):
            prf = 1.0       # Mistral 4: the factor of head_dim is qk_rope_head_dim, which ropescale rotates whole
        assert prf == (known.partial_rotary_factor or 1.0)
    if hasattr(config, "rope_interleave"):
        assert config.rope_interleave == known.interleaved
    # defaults a bare config resolves to (issue 11): head dim, layer count and layout, local base, NoPE, temperature
    if known.head_dim is not None:
        assert config.head_dim == known.head_dim
    if known.num_hidden_layers is not None:
        assert config.num_hidden_layers == known.num_hidden_layers
    if known.local_base is not None:
        assert config.rope_parameters["sliding_attention"]["rope_theta"] == known.local_base
    if known.layer_pattern is not None:
        key, interval, other = known.layer_pattern
        want = ["full_attention" if (i + 1) % interval == 0 else other for i in range(config.num_hidden_layers)]
        assert list(config.layer_types) == want
    if known.no_rope_interval is not None:
        assert config.no_rope_layer_interval == known.no_rope_interval
    if known.query_temperature is not None:
        assert config.attn_temperature_tuning and (config.floor_scale, config.attn_scale) == known.query_temperature


@pytest.mark.parametrize("model_type, cfg", [
    # Gemma 3 text configs as published omit rope_theta (transformers: 1e6 on global layers)
    ("gemma3_text", {"head_dim": 256, "hidden_size": 2560, "num_attention_heads": 8, "max_position_embeddings": 131072,
                     "rope_scaling": {"rope_type": "linear", "factor": 8.0}}),
    # GPT-NeoX / Pythia: rotary_pct and rotary_emb_base
    ("gpt_neox", {"hidden_size": 2048, "num_attention_heads": 8, "rotary_pct": 0.25, "rotary_emb_base": 10000,
                  "max_position_embeddings": 2048}),
    ("gpt_neox", {"hidden_size": 2048, "num_attention_heads": 8, "rotary_emb_base": 50000,
                  "max_position_embeddings": 2048}),            # rotary_pct absent: 0.25 by the class default
    ("phi", {"hidden_size": 2560, "num_attention_heads": 32, "max_position_embeddings": 2048}),
    ("glm", {"hidden_size": 4096, "num_attention_heads": 32, "head_dim": 128, "max_position_embeddings": 131072,
             "rope_theta": 10000.0}),
    ("olmo3", {"hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 65536}),
])
def test_from_hf_agrees_with_transformers_on_published_config_shapes(model_type, cfg):
    want, attn = _hf_inv_freq(model_type, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # a known model type: no "assuming 10000"
        rope = ropescale.Rope.from_hf({"model_type": model_type, **cfg})
    np.testing.assert_allclose(rope.inv_freq, want, rtol=3e-7)
    assert rope.attention_factor == pytest.approx(attn, rel=1e-7)


def test_gptj_rotary_dim_is_absolute_and_pairs_are_interleaved():
    # EleutherAI/gpt-j-6b's config.json names (transformers maps them with attribute_map)
    cfg = {"model_type": "gptj", "n_embd": 4096, "n_head": 16, "rotary_dim": 64, "n_positions": 2048}
    rope = ropescale.Rope.from_hf(cfg)
    assert rope.dim == 256 and rope.rotary_dim == 64 and rope.interleaved and rope.max_position_embeddings == 2048
    np.testing.assert_array_equal(rope.inv_freq, ropescale.inv_freq(64, 1e4))
    x = np.random.default_rng(0).standard_normal((3, 256))
    pos = np.arange(3)
    np.testing.assert_allclose(rope.apply(x, pos), ref.apply_rotary_positions(x, pos, rope.inv_freq, interleaved=True),
                               rtol=1e-12, atol=1e-12)
    assert not np.allclose(rope.apply(x, pos), rope.apply(x, pos, interleaved=False))


def test_chatglm_rope_ratio_multiplies_the_base_on_half_the_head_dim():
    # THUDM ChatGLM3-6B-32K: kv_channels 128, rope_ratio 50 -> base 500000, rotary on 64 dims, interleaved
    cfg = {"model_type": "chatglm", "hidden_size": 4096, "num_attention_heads": 32, "kv_channels": 128,
           "seq_length": 32768, "rope_ratio": 50}
    rope = ropescale.Rope.from_hf(cfg)
    assert rope.base == 500000.0 and rope.rotary_dim == 64 and rope.interleaved
    assert rope.max_position_embeddings == 32768
    assert ropescale.Rope.from_hf({**cfg, "kv_channels": 64}).rotary_dim == 32
    np.testing.assert_array_equal(rope.inv_freq, ropescale.inv_freq(64, 5e5))


@pytest.mark.parametrize("key, value, rotary", [("rotary_pct", 0.5, 32), ("rotary_emb_fraction", 0.25, 16),
                                                ("rotary_dim", 32, 32), ("partial_rotary_factor", 0.5, 32)])
def test_legacy_partial_rotary_spellings(key, value, rotary):
    rope = ropescale.Rope.from_hf({"head_dim": 64, "rope_theta": 1e4, key: value})
    assert rope.rotary_dim == rotary
    np.testing.assert_array_equal(rope.inv_freq, ropescale.inv_freq(rotary, 1e4))


def test_deepseek_rope_interleave_and_unknown_model_type_without_theta_is_refused():
    cfg = {"model_type": "deepseek_v3", "qk_rope_head_dim": 64, "rope_theta": 1e4, "rope_interleave": False}
    assert not ropescale.Rope.from_hf(cfg).interleaved
    assert ropescale.Rope.from_hf({**cfg, "rope_interleave": True}).interleaved
    assert ropescale.Rope.from_hf({k: v for k, v in cfg.items() if k != "rope_interleave"}).interleaved
    # issue 20: a model type ropescale does not know, without rope keys (Phi-4-mini-flash has no
    # rope at all), is refused instead of getting base 10000
    with pytest.raises(ValueError, match="model_type 'somethingnew'.*rope base is unknown"):
        ropescale.Rope.from_hf({"model_type": "somethingnew", "head_dim": 64})
    with pytest.warns(UserWarning, match="assuming 10000"):
        rope = ropescale.Rope.from_hf({"head_dim": 64})
    assert rope.base == 1e4 and not rope.interleaved


def test_llama4_scout_llama3_with_equal_band_factors_matches_transformers():
    # Llama-4-Scout-17B-16E text_config: llama3 with low_freq_factor == high_freq_factor == 1
    cfg = {"hidden_size": 5120, "num_attention_heads": 40, "head_dim": 128, "rope_theta": 500000.0,
           "max_position_embeddings": 10485760,
           "rope_scaling": {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 1.0,
                            "original_max_position_embeddings": 8192}}
    rope = ropescale.Rope.from_hf({"model_type": "llama4_text", **cfg})
    assert rope.interleaved and rope.method == "llama3"
    want, attn = _hf_inv_freq("llama4_text", cfg)
    np.testing.assert_allclose(rope.inv_freq, want, rtol=3e-7)
    # no pair is blended: each keeps theta or is divided by the factor, split at wavelength 8192
    theta = ropescale.inv_freq(128, 5e5)
    long = 2 * np.pi / theta > 8192
    np.testing.assert_array_equal(rope.inv_freq, np.where(long, theta / 16, theta))


# ------------------------------------- any config value: a Rope or one clear error

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.just(10**400),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=4), inner,
                                                                                 max_size=3)),
                           max_leaves=8)
TOP_KEYS = ["rope_theta", "head_dim", "hidden_size", "num_attention_heads", "max_position_embeddings",
            "original_max_position_embeddings", "partial_rotary_factor", "rotary_pct", "rotary_dim",
            "rotary_emb_base", "rope_ratio", "rope_interleave", "rope_scaling", "rope_parameters", "text_config",
            "model_type", "qk_rope_head_dim", "n_positions"]
SCALING_KEYS = sorted({k for spec in methods.SPECS.values() for k in spec.keys}
                      | {"rope_type", "type", "attention_factor", "partial_rotary_factor"})


@st.composite
def hostile_configs(draw):
    name = draw(st.sampled_from(ropescale.METHODS))
    sc = _scaling_for(name, 32, 4.0, 4096, draw) or {"rope_type": "default"}
    cfg = {"rope_theta": 1e4, "head_dim": 64, "max_position_embeddings": 16384, "rope_scaling": sc}
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            cfg[draw(st.sampled_from(TOP_KEYS))] = draw(JSON_VALUES)
        elif isinstance(cfg.get("rope_scaling"), dict):
            cfg["rope_scaling"] = {**cfg["rope_scaling"], draw(st.sampled_from(SCALING_KEYS)): draw(JSON_VALUES)}
    return cfg


@settings(max_examples=400, deadline=None)
@given(cfg=hostile_configs())
def test_any_config_value_gives_a_finite_rope_or_one_clear_error(cfg):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rope = ropescale.Rope.from_hf(cfg)
    except (ValueError, TypeError) as e:
        assert str(e) and "\n" not in str(e)
        return
    for seq_len in (None, 1, 4096, 65536):
        theta, attn = rope.inv_freq_at(seq_len)
        assert np.all(np.isfinite(theta)) and math.isfinite(attn) and attn > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = ropescale.Rope.from_hf(json.loads(json.dumps(rope.to_hf(), allow_nan=False)))
    np.testing.assert_array_equal(back.inv_freq_at(65536)[0], rope.inv_freq_at(65536)[0])


@pytest.mark.parametrize("cls_name, rotary, base, interleaved", [("GPTJConfig", 64, 1e4, True),
                                                                 ("GPTNeoXConfig", 24, 1e4, False),
                                                                 ("Gemma3TextConfig", 256, 1e6, False),
                                                                 ("CohereConfig", 128, 5e5, True)])
def test_transformers_config_objects_read_like_their_json(cls_name, rotary, base, interleaved):
    transformers = pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = getattr(transformers, cls_name)()
        rope = ropescale.Rope.from_hf(config)
        from_json = ropescale.Rope.from_hf(config.to_dict())
    assert (rope.rotary_dim, rope.base, rope.interleaved) == (rotary, base, interleaved)
    assert from_json == rope
    assert ("interleaved=True" in repr(rope)) == interleaved
