"""Per-layer RoPE (layer_ropes, from_hf(layer_type=...)) and the attention-side scales.

The layouts are checked against transformers' own configuration classes (the
definition of how ``layer_types`` / ``no_rope_layers`` are derived), the
frequencies against its rope init functions; the real published configs are
in tests/test_real_configs.py.
"""
import math
import warnings

import numpy as np
import pytest

import ropescale
from ropescale import reference as ref

GEMMA3 = {"model_type": "gemma3_text", "rope_theta": 1e6, "rope_local_base_freq": 1e4, "head_dim": 128,
          "num_hidden_layers": 12, "max_position_embeddings": 131072,
          "rope_scaling": {"rope_type": "linear", "factor": 8.0}}
V5 = {"head_dim": 64, "max_position_embeddings": 32768,
      "layer_types": ["sliding_attention", "full_attention"] * 3,
      "rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 5e5,
                                             "original_max_position_embeddings": 8192},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}
LLAMA4 = {"model_type": "llama4_text", "num_hidden_layers": 8, "head_dim": 128, "rope_theta": 5e5,
          "max_position_embeddings": 131072,
          "rope_scaling": {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 1.0,
                           "original_max_position_embeddings": 8192}}
QWEN3_NEXT = {"model_type": "qwen3_next", "num_hidden_layers": 8, "head_dim": 256, "rope_theta": 1e7,
              "partial_rotary_factor": 0.25}


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


# -- layouts ------------------------------------------------------------------

def test_gemma3_sliding_layers_use_the_unscaled_local_base_and_full_layers_the_scaled_global_one():
    lr = ropescale.layer_ropes(GEMMA3)
    assert lr.layout == "rope_local_base_freq"
    assert lr.layer_types == tuple(["sliding_attention"] * 5 + ["full_attention"]) * 2
    full, sliding = lr.by_type["full_attention"], lr.by_type["sliding_attention"]
    np.testing.assert_allclose(full.inv_freq, ref.inv_freq(128, 1e6) / 8.0, rtol=1e-15)
    np.testing.assert_allclose(sliding.inv_freq, ref.inv_freq(128, 1e4), rtol=1e-15)
    assert [r.base for r in lr.layers] == [1e4] * 5 + [1e6] + [1e4] * 5 + [1e6]
    assert ropescale.Rope.from_hf(GEMMA3) == full
    assert ropescale.Rope.from_hf(GEMMA3, layer_type="sliding_attention") == sliding


def test_v5_rope_parameters_keyed_by_layer_type_give_each_type_its_own_rope():
    lr = ropescale.layer_ropes(V5)
    assert lr.layout == "rope_parameters"
    assert lr.by_type["full_attention"].method == "yarn" and lr.by_type["full_attention"].base == 5e5
    assert lr.by_type["sliding_attention"].method == "default" and lr.by_type["sliding_attention"].base == 1e4
    assert ropescale.Rope.from_hf(V5).method == "yarn"   # None: the full-attention rope
    assert [r.method for r in lr.layers] == ["default", "yarn"] * 3


def test_llama4_nope_layers_carry_no_rope_and_the_rest_the_scaled_one():
    lr = _quiet(ropescale.layer_ropes, LLAMA4)
    assert [r is not None for r in lr.layers] == [True, True, True, False] * 2
    assert lr.layer_types == ("chunked_attention",) * 3 + ("full_attention",) + ("chunked_attention",) * 3 \
        + ("full_attention",)
    assert lr.by_type["full_attention"] is None
    with pytest.raises(ValueError, match="no rotary embedding"):
        _quiet(ropescale.Rope.from_hf, LLAMA4, layer_type="full_attention")
    # an explicit no_rope_layers wins over the interval
    lr2 = _quiet(ropescale.layer_ropes, {**LLAMA4, "no_rope_layers": [1, 0, 1, 1, 1, 1, 1, 0]})
    assert [r is not None for r in lr2.layers] == [True, False, True, True, True, True, True, False]


def test_qwen3_next_linear_attention_layers_have_no_rope():
    lr = ropescale.layer_ropes(QWEN3_NEXT)
    assert lr.layer_types == ("linear_attention",) * 3 + ("full_attention",) + ("linear_attention",) * 3 \
        + ("full_attention",)
    assert [r is None for r in lr.layers] == [True, True, True, False] * 2
    assert lr.by_type["full_attention"].rotary_dim == 64


def test_a_model_without_layer_differences_has_one_rope_on_every_layer():
    cfg = {"hidden_size": 4096, "num_attention_heads": 32, "num_hidden_layers": 4, "rope_theta": 1e4}
    lr = ropescale.layer_ropes(cfg)
    assert lr.layout == "flat" and set(lr.by_type) == {"full_attention"}
    assert all(r is lr.layers[0] for r in lr.layers) and lr.layers[0] == ropescale.Rope(128)


@pytest.mark.parametrize("model_type, kwargs", [
    ("gemma2", {"num_hidden_layers": 7}),
    ("gemma3_text", {"num_hidden_layers": 13}),
    ("gemma3_text", {"num_hidden_layers": 9, "sliding_window_pattern": 3}),
    ("gpt_oss", {"num_hidden_layers": 5}),
    ("cohere2", {"num_hidden_layers": 9}),
    ("qwen3_next", {"num_hidden_layers": 10, "full_attention_interval": 5}),
    ("llama4_text", {"num_hidden_layers": 10}),
    ("llama4_text", {"num_hidden_layers": 10, "no_rope_layer_interval": 3}),
    ("llama4_text", {"num_hidden_layers": 6, "attention_chunk_size": None}),
])
def test_layer_layout_derived_as_transformers_config_classes_derive_it(model_type, kwargs):
    transformers = pytest.importorskip("transformers")
    cfg = _quiet(transformers.CONFIG_MAPPING[model_type], **kwargs)
    ours = {"model_type": model_type, "head_dim": 64, "rope_theta": 1e4, **kwargs}
    lr = _quiet(ropescale.layer_ropes, ours)
    assert list(lr.layer_types) == list(cfg.layer_types)
    if model_type.startswith("llama4"):
        assert [r is not None for r in lr.layers] == [bool(f) for f in cfg.no_rope_layers]
    if model_type == "cohere2":   # only sliding layers rotate (Cohere2Attention)
        assert [r is not None for r in lr.layers] == [t == "sliding_attention" for t in cfg.layer_types]


def test_gemma3_bare_config_resolves_to_transformers_class_defaults_per_layer_type():
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: F401
    cfg = _quiet(transformers.CONFIG_MAPPING["gemma3_text"])
    lr = ropescale.layer_ropes({"model_type": "gemma3_text"})
    assert list(lr.layer_types) == list(cfg.layer_types)
    for lt, params in cfg.rope_parameters.items():
        rope = lr.by_type[lt]
        assert rope.dim == cfg.head_dim and rope.base == params["rope_theta"]


# -- to_hf round trip -----------------------------------------------------------

@pytest.mark.parametrize("cfg", [GEMMA3, V5, LLAMA4, QWEN3_NEXT,
                                 {"model_type": "cohere2", "num_hidden_layers": 8, "head_dim": 64},
                                 {"model_type": "gemma3_text"}], ids=["gemma3", "v5", "llama4", "qwen3next",
                                                                      "cohere2", "gemma3-bare"])
def test_to_hf_writes_the_layout_it_read_and_reads_back_to_the_same_layers(cfg):
    lr = _quiet(ropescale.layer_ropes, cfg)
    out = lr.to_hf()
    if lr.layout == "rope_parameters":
        assert set(out["rope_parameters"]) == {t for t, r in lr.by_type.items() if r is not None}
        assert "rope_theta" not in out and "rope_scaling" not in out
    else:
        assert "rope_parameters" not in out
    again = _quiet(ropescale.layer_ropes, out)   # no model_type: everything is in the keys
    assert again.layer_types == lr.layer_types and again.layout == lr.layout
    assert again.layers == lr.layers


# -- bad input ------------------------------------------------------------------

@pytest.mark.parametrize("call, exc, word", [
    (lambda: ropescale.Rope.from_hf(GEMMA3, layer_type=3), TypeError, "layer_type"),
    (lambda: ropescale.Rope.from_hf(GEMMA3, layer_type="chunked_attention"), ValueError, "layer_type"),
    (lambda: ropescale.Rope.from_hf(QWEN3_NEXT, layer_type="linear_attention"), ValueError, "linear_attention"),
    (lambda: ropescale.layer_ropes({"head_dim": 64, "rope_theta": 1e4}), ValueError, "num_hidden_layers"),
    (lambda: ropescale.layer_ropes({**GEMMA3, "layer_types": "sliding"}), ValueError, "layer_types"),
    (lambda: ropescale.layer_ropes({**GEMMA3, "layer_types": []}), ValueError, "layer_types"),
    (lambda: ropescale.layer_ropes({**LLAMA4, "no_rope_layers": [1, 2]}), ValueError, "no_rope_layers"),
    (lambda: ropescale.layer_ropes({**LLAMA4, "no_rope_layers": [1, 0, 1]}), ValueError, "no_rope_layers"),
    (lambda: ropescale.layer_ropes({**LLAMA4, "no_rope_layer_interval": 0}), ValueError, "no_rope_layer_interval"),
    (lambda: ropescale.layer_ropes({**V5, "layer_types": ["chunked_attention"]}), ValueError, "chunked_attention"),
    (lambda: ropescale.layer_ropes({**GEMMA3, "rope_local_base_freq": 0.5}), ValueError, "rope_local_base_freq"),
    (lambda: ropescale.layer_ropes({**GEMMA3, "sliding_window_pattern": "6"}), ValueError,
     "sliding_window_pattern"),
    (lambda: ropescale.layer_ropes({**LLAMA4, "attn_temperature_tuning": "yes"}), ValueError,
     "attn_temperature_tuning"),
    (lambda: ropescale.layer_ropes({**LLAMA4, "floor_scale": 0}), ValueError, "floor_scale"),
    (lambda: ropescale.layer_ropes(42), TypeError, "config"),
    (lambda: ropescale.Rope(64, query_temperature=(8192.0,)), TypeError, "query_temperature"),
    (lambda: ropescale.Rope(64, query_temperature=(-1.0, 0.1)), ValueError, "floor_scale"),
    (lambda: ropescale.Rope(64).query_scale(np.array([1.0, np.nan])), ValueError, "positions"),
    (lambda: ropescale.Rope(64).query_scale(np.array(["a"])), TypeError, "positions"),
    (lambda: ropescale.Rope(64).query_scale([-1]), ValueError, "positions"),
])
def test_bad_layer_input_raises_naming_it(call, exc, word):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc, match=word):
            call()


def test_layer_ropes_of_a_path_names_the_file(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{"head_dim": 64, "num_hidden_layers": 2, "layer_types": 5, "rope_theta": 1e4}')
    with pytest.raises(ValueError, match=r"config .*config.json: .*layer_types"):
        ropescale.layer_ropes(str(p))


# -- attention-side scales -------------------------------------------------------

@pytest.mark.parametrize("factor, mscale, mscale_all_dim", [(40.0, 1.0, 1.0), (16.0, 0.707, 0.707), (4.0, 1.0, 0.5),
                                                            (1.0, 1.0, 1.0)])
def test_softmax_scale_is_deepseeks_mscale_squared(factor, mscale, mscale_all_dim):
    rope = ropescale.Rope(64, 1e4, {"rope_type": "yarn", "factor": factor, "mscale": mscale,
                                    "mscale_all_dim": mscale_all_dim, "original_max_position_embeddings": 4096})
    m = 0.1 * mscale_all_dim * math.log(factor) + 1.0 if factor > 1 else 1.0
    assert rope.softmax_scale == pytest.approx(m * m, rel=1e-15)


def test_softmax_scale_matches_transformers_deepseek_attention():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as mod
    cfg = _quiet(transformers.DeepseekV3Config, num_hidden_layers=1, hidden_size=256, num_attention_heads=2,
                 q_lora_rank=None, kv_lora_rank=32, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32,
                 rope_scaling={"rope_type": "yarn", "factor": 32.0, "mscale": 0.8, "mscale_all_dim": 0.9,
                               "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1})
    attn = mod.DeepseekV3Attention(cfg, layer_idx=0)
    rope = _quiet(ropescale.Rope.from_hf, cfg.to_dict())
    assert attn.scaling * math.sqrt(48) == pytest.approx(rope.softmax_scale, rel=1e-12)


@pytest.mark.parametrize("scaling", [None, {"rope_type": "linear", "factor": 4.0},
                                     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
                                     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                                      "mscale": 1.0, "mscale_all_dim": 0.0}])
def test_softmax_scale_is_one_without_mscale_all_dim(scaling):
    assert ropescale.Rope(64, 1e4, scaling).softmax_scale == 1.0


def test_query_scale_is_llama4_temperature_tuning_and_ones_without_it():
    pos = np.array([[0, 8190, 8191], [16383, 100000, 10**6]])
    rope = ropescale.Rope(128, query_temperature=(8192.0, 0.1))
    want = np.array([[1 + 0.1 * math.log1p(math.floor((p + 1) / 8192)) for p in row] for row in pos.tolist()])
    got = rope.query_scale(pos)
    assert got.shape == pos.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-15)
    np.testing.assert_array_equal(ropescale.Rope(128).query_scale(pos), np.ones(pos.shape))
    # from a config: on by default for Llama 4, off when the config says so, absent elsewhere
    assert _quiet(ropescale.Rope.from_hf, LLAMA4).query_temperature == (8192.0, 0.1, 1.0)
    assert _quiet(ropescale.Rope.from_hf, {**LLAMA4, "attn_temperature_tuning": False}).query_temperature is None
    assert _quiet(ropescale.Rope.from_hf, {**LLAMA4, "attn_temperature_tuning": 4, "floor_scale": 100,
                                          "attn_scale": 0.5}).query_temperature == (100.0, 0.5, 1.0)
    assert ropescale.Rope.from_hf(GEMMA3).query_temperature is None


def test_query_temperature_survives_replace_pickle_equality_and_to_hf():
    import pickle
    rope = _quiet(ropescale.Rope.from_hf, LLAMA4)
    assert pickle.loads(pickle.dumps(rope)) == rope
    assert rope.replace(query_temperature=None) != rope
    assert rope.replace(base=1e6).query_temperature == (8192.0, 0.1, 1.0)
    out = _quiet(ropescale.layer_ropes, LLAMA4).to_hf()
    assert out["attn_temperature_tuning"] is True and out["floor_scale"] == 8192.0


# -- analyze and the report ------------------------------------------------------

def test_layer_ropes_analyze_gives_each_rope_type_its_own_analysis():
    lr = ropescale.layer_ropes(GEMMA3)
    a = lr.analyze()
    assert set(a) == {"sliding_attention", "full_attention"}
    assert a["full_attention"].method == "linear" and a["full_attention"].original_len == 131072 / 8
    assert a["sliding_attention"].base == 1e4 and a["sliding_attention"].method == "default"
    q = ropescale.layer_ropes(QWEN3_NEXT).analyze(target_len=8192, original_len=4096)
    assert q["linear_attention"] is None and q["full_attention"].rotary_dim == 64


def test_report_shows_each_layer_type_and_the_softmax_scale(tmp_path, capsys):
    import json
    from ropescale import cli
    path = tmp_path / "gemma3.json"
    path.write_text(json.dumps(GEMMA3))
    # Gemma 3's config is already extended (linear x8) without saying from what: the report asks for it
    assert cli.main(["--hf", str(path), "--json"]) == 2 and "--original N" in capsys.readouterr().err
    assert cli.main(["--hf", str(path), "--json", "--original", "16384"]) == 0
    r = json.loads(capsys.readouterr().out)
    rows = {row["layer_type"]: row for row in r["layers"]["types"]}
    assert rows["sliding_attention"]["layers"] == 10 and rows["sliding_attention"]["rope"]["base"] == 1e4
    assert rows["full_attention"]["rope"]["method"] == "linear" and rows["full_attention"]["rope"]["factor"] == 8.0
    assert cli.main(["--hf", str(path), "--original", "16384"]) == 0
    out = capsys.readouterr().out
    assert "sliding_attention" in out and "Layers by type" in out
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"model_type": "deepseek_v3", "qk_rope_head_dim": 64, "rope_theta": 1e4,
                              "max_position_embeddings": 163840,
                              "rope_scaling": {"type": "yarn", "factor": 40.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                                               "original_max_position_embeddings": 4096}}))
    assert cli.main(["--hf", str(ds), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["softmax_scale"] == pytest.approx((0.1 * math.log(40) + 1) ** 2) and "layers" not in r
    lm = tmp_path / "llama4.json"
    lm.write_text(json.dumps(LLAMA4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["--hf", str(lm)]) == 0
    out = capsys.readouterr().out
    assert "no rope" in out and "Query temperature" in out


def test_readme_per_layer_example_runs():
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Per-layer ropes, attention-side scales"):]
    block = re.search(r"```py\n(.*?)```", section, flags=re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["pos"].tolist() == [0, 1, 2, 0, 1]
    assert namespace["sliding"].base == 1e4 and namespace["q_pos"][-1] == 15 // 4 + 8 - 8 // 4


def test_analyze_takes_a_per_layer_model():
    a = ropescale.analyze(ropescale.layer_ropes(QWEN3_NEXT), target_len=8192, original_len=4096)
    assert a["linear_attention"] is None and a["full_attention"].rotary_dim == 64
    with pytest.raises(TypeError, match="LayerRopes"):
        ropescale.analyze({"full_attention": None})
