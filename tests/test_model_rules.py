"""Rows of ``ropescale.model_types.MODEL_TYPES`` against the modeling code they cite.

The zoo (``tests/test_zoo.py``) checks every model type's *default* config as
transformers saves it; these tests check the rules a saved config does not
exercise: configs written the transformers 4 way (a flat ``rope_scaling``),
keys switched on by a published config, and refusals.
"""
import json
import math
import warnings

import numpy as np
import pytest

import ropescale
from ropescale import model_types


def _transformers_ropes(model_type, cfg):
    """``{layer_type: inv_freq}`` of the model's own rotary module for ``cfg``."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    import importlib
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = transformers.AutoConfig.for_model(model_type, **cfg)
    text = config.get_text_config()
    mod = importlib.import_module(type(text).__module__.replace(".configuration_", ".modeling_"))
    cls = next(getattr(mod, n) for n in dir(mod) if n.endswith("RotaryEmbedding") and "Vision" not in n)
    rot = cls(text)
    if isinstance(rot.rope_type, dict):
        return {lt: getattr(rot, f"{lt}_inv_freq").double().numpy() for lt in rot.rope_type}, text
    return {None: rot.inv_freq.double().numpy()}, text


def test_olmo3_flat_rope_scaling_scales_only_the_full_attention_layers():
    # OLMo 3's published config.json: a flat YaRN rope_scaling (transformers' convert_rope_params_to_dict
    # puts it on full_attention only); 0.2.0 applied it to the sliding layers too (inv_freq 7x off)
    cfg = {"hidden_size": 4096, "num_attention_heads": 32, "num_hidden_layers": 8, "max_position_embeddings": 65536,
           "rope_theta": 500000.0, "rope_scaling": {"rope_type": "yarn", "factor": 8.0,
                                                    "original_max_position_embeddings": 8192,
                                                    "attention_factor": 1.2079441541679836}}
    want, text = _transformers_ropes("olmo3", cfg)
    lr = ropescale.layer_ropes({"model_type": "olmo3", **cfg})
    assert list(lr.layer_types) == list(text.layer_types)
    for lt, inv in want.items():
        np.testing.assert_allclose(lr.by_type[lt].inv_freq, inv, rtol=3e-7, err_msg=lt)
    assert lr.by_type["sliding_attention"].method == ropescale.methods.UNSCALED
    assert lr.by_type["full_attention"].method == "yarn"


@pytest.mark.parametrize("model_type", ["exaone4", "exaone_moe", "kolibri1"])
def test_exaone4_global_layers_are_nope_only_with_a_sliding_window(model_type):
    base = {"model_type": model_type, "num_hidden_layers": 8, "hidden_size": 64, "num_attention_heads": 2,
            "rope_theta": 1e6, "layer_types": ["sliding_attention"] * 3 + ["full_attention"]
            + ["sliding_attention"] * 3 + ["full_attention"]}
    slid = ropescale.layer_ropes({**base, "sliding_window": 4096})
    assert [r is not None for r in slid.layers] == [True, True, True, False] * 2
    plain = ropescale.layer_ropes({**base, "sliding_window": None, "layer_types": ["full_attention"] * 8})
    assert all(r is not None for r in plain.layers)


def test_mllama_cross_attention_layers_do_not_rotate():
    cfg = {"model_type": "mllama_text_model", "num_hidden_layers": 10, "hidden_size": 64, "num_attention_heads": 2,
           "cross_attention_layers": [1, 7]}
    lr = ropescale.layer_ropes(cfg)
    assert [i for i, r in enumerate(lr.layers) if r is None] == [1, 7]
    with pytest.raises(ValueError, match="cross_attention_layers"):
        ropescale.layer_ropes({**cfg, "cross_attention_layers": [12]})


def test_an_unknown_model_type_without_rope_keys_is_refused_not_given_base_10000():
    # Phi-4-mini-flash (remote code) has no rope: 0.2.0 read it as base 10000
    with pytest.raises(ValueError, match="phi4flash"):
        ropescale.Rope.from_hf({"model_type": "phi4flash", "hidden_size": 2560, "num_attention_heads": 40})


def test_every_row_cites_a_file_that_transformers_ships():
    transformers = pytest.importorskip("transformers")
    import os
    root = os.path.dirname(transformers.__file__)
    for mt, row in model_types.MODEL_TYPES.items():
        if row.source:
            path = row.source.split(" ")[0].rstrip(":,")
            assert os.path.exists(os.path.join(root, path)), f"{mt}: {row.source}"


def test_llama4_query_temperature_is_on_the_nope_layers_only():
    # Llama4TextAttention: attn_temperature_tuning and not use_rope (0.2.0 gave the rotating layers 1.069 at 8191)
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from transformers.models.llama4.modeling_llama4 import Llama4TextAttention
    cfg = transformers.Llama4TextConfig(num_hidden_layers=8, hidden_size=64, num_attention_heads=2,
                                        num_key_value_heads=2, head_dim=32)
    lr = ropescale.layer_ropes({"model_type": "llama4_text", "num_hidden_layers": 8, "hidden_size": 64,
                                "num_attention_heads": 2, "head_dim": 32})
    with torch.device("meta"):
        attn = [Llama4TextAttention(cfg, i) for i in range(8)]
    pos = np.array([0, 8190, 8191, 100000])
    for i, a in enumerate(attn):
        tuned = bool(a.attn_temperature_tuning and not a.use_rope)
        assert (lr.query_temperatures[i] is not None) == tuned, i
        want = np.log1p(np.floor((pos + 1.0) / a.floor_scale)) * a.attn_scale + 1.0 if tuned else np.ones(4)
        np.testing.assert_allclose(lr.query_scale(i, pos), want, rtol=1e-12)


# -- attention-side scales: query multiplier and softmax factor --------------------------------

def _modeling_source(model_type):
    """The text of a transformers model type's modeling files ('' when it has none)."""
    transformers = pytest.importorskip("transformers")
    import os
    from transformers.models.auto.configuration_auto import model_type_to_module_name
    folder = os.path.join(os.path.dirname(transformers.__file__), "models", model_type_to_module_name(model_type))
    if not os.path.isdir(folder):
        return ""
    parts = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("modeling_") and name.endswith(".py"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                parts.append(f.read())
    return "\n".join(parts)


def _text_types_whose_code(needle):
    transformers = pytest.importorskip("transformers")
    return sorted(mt for mt in transformers.CONFIG_MAPPING if "vision" not in mt and needle in _modeling_source(mt))


def test_the_types_with_a_query_multiplier_are_those_whose_code_reads_llama_4_scaling_beta():
    # a new family reading the key (or one that stops) fails here until its row says so
    theirs = _text_types_whose_code("llama_4_scaling_beta")
    mine = sorted(mt for mt, row in model_types.MODEL_TYPES.items() if row.query_beta)
    assert theirs == mine and "ministral3" in mine


def test_the_types_with_the_mla_softmax_factor_are_those_whose_code_calls_yarn_apply_mscale():
    # Mistral 4 and LongCat-Flash apply it and had no row before (their softmax_scale read 1)
    transformers = pytest.importorskip("transformers")
    theirs = _text_types_whose_code("yarn_apply_mscale(")
    mine = sorted(mt for mt, row in model_types.MODEL_TYPES.items() if row.mla_softmax
                  and mt in transformers.CONFIG_MAPPING)
    assert theirs == mine and {"mistral4", "longcat_flash", "deepseek_v3"} <= set(mine)


def _tf_query_scale(model_type, cfg, positions):
    """transformers' own multiplier for ``cfg`` as its config class reads it: get_llama_4_attn_scale
    with the rope parameters' llama_4_scaling_beta and original_max_position_embeddings, as the
    attention's forward calls it."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    import importlib
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = transformers.AutoConfig.for_model(model_type, **cfg).get_text_config()
    mod = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    rp = config.rope_parameters
    out = mod.get_llama_4_attn_scale(torch.tensor([positions]), rp.get("llama_4_scaling_beta"),
                                     rp.get("original_max_position_embeddings"))
    return out.reshape(-1).double().numpy(), rp


def _ministral3_published():
    import json
    import pathlib
    path = pathlib.Path(__file__).parent / "data" / "configs" / "ministral-3-8b-base.json"
    return json.loads(path.read_text())


def _mistral4_defaults():
    transformers = pytest.importorskip("transformers")
    from transformers.models.mistral4.configuration_mistral4 import Mistral4Config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {**Mistral4Config().to_dict(), "model_type": "mistral4"}


def _around_multiples(original):
    ks = [1, 2, 3, 7, 16, 64]
    return sorted({0, 1, original // 2} | {k * original + d for k in ks for d in (-1, 0, 1)})


@pytest.mark.parametrize("model_type, make", [("ministral3", _ministral3_published), ("mistral4", _mistral4_defaults)])
def test_query_multiplier_is_transformers_get_llama_4_attn_scale(model_type, make):
    # Ministral 3 (published config) and Mistral 4 (its config class's defaults): every layer's queries
    # times 1 + beta ln(1 + floor(p / original)); 0.2.0 and 0.3 so far ignored the key with a warning
    cfg = make()
    cfg = {k: v for k, v in cfg.items() if k != "model_type"}
    original = int(cfg["rope_parameters"]["original_max_position_embeddings"])
    pos = np.array(_around_multiples(original))
    want, rp = _tf_query_scale(model_type, cfg, pos.tolist())
    assert want.max() > 1.4 and want.min() == 1.0          # the probe reaches several steps
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # the key is read, not "ignored" any more
        rope = ropescale.Rope.from_hf({"model_type": model_type, **cfg})
        lr = ropescale.layer_ropes({"model_type": model_type, **cfg})
    assert rope.query_temperature == (float(rp["original_max_position_embeddings"]), rp["llama_4_scaling_beta"], 0.0)
    # transformers forms p / original in float32: equal here, where original is a power of two
    np.testing.assert_allclose(rope.query_scale(pos), want, rtol=2e-7, atol=0)
    assert len(lr.layers) == cfg["num_hidden_layers"] and all(r is not None for r in lr.layers)
    for i in range(len(lr.layers)):
        np.testing.assert_allclose(lr.query_scale(i, pos), want, rtol=2e-7, atol=0)


def test_query_multiplier_steps_at_the_length_transformers_fills_in_when_the_rope_omits_it():
    # a YaRN block without original_max_position_embeddings: transformers' config class fills in
    # max_position_embeddings, and get_llama_4_attn_scale steps at that
    cfg = {"head_dim": 128, "num_hidden_layers": 2, "max_position_embeddings": 65536,
           "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "llama_4_scaling_beta": 0.1}}
    pos = np.array(_around_multiples(65536))
    want, rp = _tf_query_scale("ministral3", cfg, pos.tolist())
    assert rp["original_max_position_embeddings"] == 65536 and want.max() > 1.4
    rope = ropescale.Rope.from_hf({"model_type": "ministral3", **cfg})
    np.testing.assert_allclose(rope.query_scale(pos), want, rtol=2e-7, atol=0)


def test_query_multiplier_is_refused_where_transformers_cannot_form_it():
    cfg = {k: v for k, v in _ministral3_published().items()}
    rp = {k: v for k, v in cfg["rope_parameters"].items() if k != "llama_4_scaling_beta"}
    with pytest.raises(ValueError, match="llama_4_scaling_beta"):
        ropescale.Rope.from_hf({**cfg, "rope_parameters": rp})
    # an unscaled rope has no original length to step at
    with pytest.raises(ValueError, match="original_max_position_embeddings"):
        ropescale.Rope.from_hf({**cfg, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6,
                                                           "llama_4_scaling_beta": 0.1}})


def test_a_family_that_does_not_read_llama_4_scaling_beta_drops_it_quietly():
    # Mistral-Large-3's text model is DeepSeek-V3 code, which never reads the key
    assert "llama_4_scaling_beta" not in _modeling_source("deepseek_v3")
    cfg = {"model_type": "deepseek_v3", "qk_rope_head_dim": 64, "num_hidden_layers": 2, "max_position_embeddings": 294912,
           "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 36.0, "original_max_position_embeddings": 8192,
                               "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lr = ropescale.layer_ropes(cfg)
    assert lr.query_temperatures == (None, None)
    np.testing.assert_array_equal(lr.query_scale(0, [10**6]), [1.0])


def _attention_softmax_factor(model_type, rope_parameters):
    """``scaling * sqrt(qk head dim)`` of the model's own attention module (layer 0, on the meta
    device) for its default text config with ``rope_parameters``, and that text config as saved."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    import importlib
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = transformers.CONFIG_MAPPING[model_type]()
        text = config.get_text_config(decoder=True)
        d = text.to_dict()
        old = d.get("rope_parameters") or {}
        keep = {k: old[k] for k in ("partial_rotary_factor", "rope_theta") if k in old}
        d.update(rope_parameters={**keep, **rope_parameters}, max_position_embeddings=163840)
        text = type(text).from_dict(d)
    mod = importlib.import_module(type(text).__module__.replace(".configuration_", ".modeling_"))
    for name in sorted(n for n in dir(mod) if n.endswith(("Attention", "MLA"))):
        cls = getattr(mod, name)
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                attn = cls(text, 0)
        except Exception:  # noqa: BLE001 - not a decoder attention of this config
            continue
        s, dim = getattr(attn, "scaling", None), getattr(attn, "qk_head_dim", None) or getattr(attn, "head_dim", None)
        if isinstance(s, float) and isinstance(dim, int):
            return s * dim ** 0.5, json.loads(text.to_json_string(use_diff=False))
    pytest.fail(f"{model_type}: no attention class with a scaling")


_YARN_MSCALE = {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "mscale": 1.0,
                "mscale_all_dim": 1.0, "beta_fast": 32.0, "beta_slow": 1.0, "llama_4_scaling_beta": 0.1}


@pytest.mark.parametrize("model_type", ["deepseek_v2", "deepseek_v3", "mistral4", "longcat_flash", "minicpm3",
                                        "glm4_moe_lite", "mistral_large4", "ministral3", "llama", "qwen2", "mistral"])
def test_softmax_scale_from_a_config_is_what_the_models_attention_uses(model_type):
    # Rope.from_hf(...).softmax_scale gave mscale(40, 1)**2 = 1.87 for every YaRN rope with mscale_all_dim
    # (Ministral 3 included, whose attention keeps 1/sqrt(d)), and 1 for Mistral 4 / LongCat, which apply it
    want, saved = _attention_softmax_factor(model_type, _YARN_MSCALE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rope = ropescale.Rope.from_hf(saved)
        lr = ropescale.layer_ropes(saved)
    assert rope.softmax_scale == pytest.approx(want, rel=1e-12)
    assert all(s == pytest.approx(want, rel=1e-12) for s in lr.softmax_scales)
    assert (want > 1.5) == bool(model_types.MODEL_TYPES.get(model_type, model_types.ModelDefaults()).mla_softmax)


def test_a_bare_rope_applies_the_deepseek_softmax_rule_unless_told_otherwise():
    import pickle
    yarn = {k: v for k, v in _YARN_MSCALE.items() if k != "llama_4_scaling_beta"}
    bare = ropescale.Rope(64, 1e4, yarn)
    want = (0.1 * math.log(40.0) + 1.0) ** 2
    assert bare.softmax_mscale and bare.softmax_scale == pytest.approx(want, rel=1e-15)
    off = bare.replace(softmax_mscale=False)
    assert off.softmax_scale == 1.0 and off != bare and "softmax_mscale=False" in repr(off)
    assert pickle.loads(pickle.dumps(off)) == off and off.extend(327680).softmax_scale == 1.0
    # without mscale_all_dim the rule changes nothing: equal ropes
    assert ropescale.Rope(64, softmax_mscale=False) == ropescale.Rope(64)
    with pytest.raises(TypeError, match="softmax_mscale"):
        ropescale.Rope(64, softmax_mscale="no")


def test_the_query_multiplier_survives_to_hf_and_back():
    cfg = _ministral3_published()
    rope = ropescale.Rope.from_hf(cfg)
    back = ropescale.Rope.from_hf({"model_type": "ministral3", **rope.to_hf()})
    np.testing.assert_array_equal(back.inv_freq, rope.inv_freq)
    assert back.query_temperature == rope.query_temperature == (16384.0, 0.1, 0.0)
    assert back.softmax_scale == rope.softmax_scale == 1.0
    lr = ropescale.layer_ropes(cfg)
    again = ropescale.layer_ropes({"model_type": "ministral3", **lr.to_hf()})
    assert again.query_temperatures == lr.query_temperatures and again.softmax_scales == lr.softmax_scales
