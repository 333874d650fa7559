"""Rows of ``ropescale.model_types.MODEL_TYPES`` against the modeling code they cite.

The zoo (``tests/test_zoo.py``) checks every model type's *default* config as
transformers saves it; these tests check the rules a saved config does not
exercise: configs written the transformers 4 way (a flat ``rope_scaling``),
keys switched on by a published config, and refusals.
"""
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
