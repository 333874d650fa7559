"""ropescale.hf.patch on tiny, randomly initialised transformers models (no download).

The oracle is transformers itself: a model built natively with rope method X
must give the same logits as the same weights built with the default rope and
patched to X by ropescale.
"""
import copy
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import ropescale  # noqa: E402
import ropescale.hf as rhf  # noqa: E402
from ropescale.torch import RotaryEmbedding  # noqa: E402

VOCAB = 61
TRAINED = 32  # max_position_embeddings of the tiny models
SEQ = 48      # longer than TRAINED, so dynamic and longrope take their long branch


def _common(**kw):
    d = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
             intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=TRAINED)
    d.update(kw)
    return d


def _arch(name):
    """(config class, model class, extra config kwargs) of one architecture."""
    t = transformers
    table = {
        "llama": (t.LlamaConfig, t.LlamaForCausalLM, {}),
        "mistral": (t.MistralConfig, t.MistralForCausalLM, {"sliding_window": None}),
        "qwen2": (t.Qwen2Config, t.Qwen2ForCausalLM, {}),
        "qwen3": (t.Qwen3Config, t.Qwen3ForCausalLM, {"head_dim": 16}),
        "phi3": (t.Phi3Config, t.Phi3ForCausalLM, {"pad_token_id": 0, "original_max_position_embeddings": 16}),
        "gemma2": (t.Gemma2Config, t.Gemma2ForCausalLM, {"head_dim": 16}),
        "gemma3": (t.Gemma3TextConfig, t.Gemma3ForCausalLM, {"head_dim": 16, "sliding_window": 8,
                                                              "layer_types": ["sliding_attention", "full_attention"]}),
        "deepseek_v3": (t.DeepseekV3Config, t.DeepseekV3ForCausalLM, {"kv_lora_rank": 16, "q_lora_rank": 16,
                                                                       "qk_rope_head_dim": 16, "qk_nope_head_dim": 16,
                                                                       "v_head_dim": 16, "n_routed_experts": 2,
                                                                       "num_experts_per_tok": 1, "first_k_dense_replace": 1,
                                                                       "n_group": 1, "topk_group": 1,
                                                                       "moe_intermediate_size": 16, "num_key_value_heads": 4}),
        "gpt_oss": (t.GptOssConfig, t.GptOssForCausalLM, {"head_dim": 16, "num_local_experts": 2,
                                                           "num_experts_per_tok": 1, "sliding_window": 8,
                                                           "layer_types": ["sliding_attention", "full_attention"]}),
    }
    return table[name]


ARCHS = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3", "gpt_oss", "deepseek_v3"]


def _rope_parameters(arch, params):
    """rope_parameters for a config: per layer type for Gemma 3 (the local rope stays default)."""
    if arch == "gemma3":
        return {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}, "full_attention": params}
    return params


def build(arch, params=None, seed=0):
    cfg_cls, model_cls, extra = _arch(arch)
    if params is None:
        params = {"rope_type": "default", "rope_theta": 10000.0}
    try:
        cfg = cfg_cls(**_common(**extra), rope_parameters=_rope_parameters(arch, dict(params)))
    except Exception as e:  # transformers' own validation: this architecture does not offer the method
        if "rope" not in str(e):
            raise
        pytest.skip(f"transformers' {cfg_cls.__name__} refuses rope_parameters {params}: {str(e)[-120:]}")
    torch.manual_seed(seed)
    return model_cls(cfg).eval()


def same_weights(arch, params, like):
    model = build(arch, params)
    model.load_state_dict(like.state_dict())
    return model


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


IDS = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1))
HEAD = 16  # head dim of every tiny model (64 / 4)


def _methods():
    r = HEAD // 2
    long_f = [1.0 + 0.5 * k for k in range(r)]
    short_f = [1.0 + 0.05 * k for k in range(r)]
    return {
        "linear": {"rope_type": "linear", "factor": 4.0},
        "dynamic": {"rope_type": "dynamic", "factor": 4.0},
        "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 8.0,
                 "beta_slow": 1.0},
        "yarn_untruncated": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                             "truncate": False},
        "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 16},
        "proportional": {"rope_type": "proportional", "partial_rotary_factor": 0.5, "factor": 2.0},
        "longrope": {"rope_type": "longrope", "short_factor": short_f, "long_factor": long_f,
                     "original_max_position_embeddings": 16, "factor": 4.0},
    }


METHODS = _methods()


def _with_theta(params):
    return {"rope_theta": 10000.0, **params}


# -- patched-with-X == native X -----------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_patched_logits_equal_native_logits(arch, method):
    params = _with_theta(METHODS[method])
    base = build(arch)
    native = same_weights(arch, params, base)
    patched = copy.deepcopy(base)
    names = rhf.patch(patched, dict(METHODS[method]))
    assert names and all(isinstance(patched.get_submodule(n), RotaryEmbedding) for n in names)
    want, got = logits(native, IDS), logits(patched, IDS)
    before = logits(base, IDS)
    assert not torch.allclose(before, want, rtol=1e-5, atol=1e-6), "the method must change the logits"
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
def test_patched_ntk_equals_native_with_scaled_base(arch):
    factor = 4.0
    lam = ropescale.ntk_lambda(HEAD, factor)
    native = same_weights(arch, {"rope_type": "default", "rope_theta": 10000.0 * lam}, build(arch))
    patched = build(arch)
    rhf.patch(patched, {"rope_type": "ntk", "factor": factor})
    torch.testing.assert_close(logits(patched, IDS), logits(native, IDS), rtol=1e-5, atol=1e-5)
    params = patched.config.rope_parameters
    if arch == "gemma3":
        params = params["full_attention"]
    assert params["rope_type"] == "default" and math.isclose(params["rope_theta"], 10000.0 * lam, rel_tol=1e-15)


def test_gemma3_patch_leaves_sliding_layers_rope_alone():
    model = build("gemma3")
    rhf.patch(model, {"rope_type": "linear", "factor": 4.0})
    emb = model.model.rotary_emb
    assert emb.ropes["full_attention"].method == "linear"
    assert emb.ropes["sliding_attention"].method == "default"
    assert model.config.rope_parameters["sliding_attention"] == {"rope_type": "default", "rope_theta": 10000.0}


# -- the three ways to say what to patch to -----------------------------------
def test_rope_dict_and_method_target_give_the_same_model():
    want = logits(same_weights("llama", _with_theta({"rope_type": "yarn", "factor": 4.0,
                                                    "original_max_position_embeddings": TRAINED}), build("llama")), IDS)
    by_tuple, by_dict, by_rope = build("llama"), build("llama"), build("llama")
    rhf.patch(by_tuple, ("yarn", 4 * TRAINED))
    rhf.patch(by_dict, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": TRAINED})
    rhf.patch(by_rope, ropescale.Rope(HEAD, 10000.0, {"rope_type": "yarn", "factor": 4.0,
                                                      "original_max_position_embeddings": TRAINED}))
    for m in (by_tuple, by_dict, by_rope):
        torch.testing.assert_close(logits(m, IDS), want, rtol=1e-5, atol=1e-5)
    assert by_tuple.config.max_position_embeddings == 4 * TRAINED


def test_save_pretrained_round_trips(tmp_path):
    model = build("llama")
    rhf.patch(model, ("yarn", 4 * TRAINED))
    model.save_pretrained(tmp_path)
    with open(tmp_path / "config.json") as f:
        saved = json.load(f)
    rope = ropescale.Rope.from_hf(saved)
    assert rope.method == "yarn" and rope.factor == 4.0
    np.testing.assert_array_equal(rope.inv_freq, model.model.rotary_emb.ropes[None].inv_freq)
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded.model.rotary_emb).__name__ == "LlamaRotaryEmbedding"
    torch.testing.assert_close(logits(reloaded, IDS), logits(model, IDS), rtol=1e-5, atol=1e-5)


def test_patch_again_replaces_the_ropescale_module():
    model = build("llama")
    rhf.patch(model, {"rope_type": "linear", "factor": 2.0})
    rhf.patch(model, {"rope_type": "linear", "factor": 4.0})
    native = same_weights("llama", _with_theta({"rope_type": "linear", "factor": 4.0}), build("llama"))
    torch.testing.assert_close(logits(model, IDS), logits(native, IDS), rtol=1e-5, atol=1e-5)


# -- precision at long context ------------------------------------------------
def _nearest_float32(value):
    mpmath = pytest.importorskip("mpmath")
    c = np.float32(float(value))
    best = min((np.nextafter(c, np.float32(-2)), c, np.nextafter(c, np.float32(2))),
               key=lambda v: abs(mpmath.mpf(float(v)) - value))
    return best


def test_tables_at_a_million_are_correctly_rounded_where_transformers_are_not():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 200
    position = 10**6
    model = build("llama")
    ids = torch.tensor([[position]])
    x = torch.zeros(1, 1)
    native_cos, _ = model.model.rotary_emb(x, ids)
    rhf.patch(model, {"rope_type": "linear", "factor": 1.0})
    cos, sin = model.model.rotary_emb(x, ids)
    theta = model.model.rotary_emb.ropes[None].inv_freq
    r = theta.shape[0]
    exact_cos = [mpmath.cos(position * mpmath.mpf(float(t))) for t in theta]
    exact_sin = [mpmath.sin(position * mpmath.mpf(float(t))) for t in theta]
    for k in range(r):
        assert cos[0, 0, k].item() == _nearest_float32(exact_cos[k])
        assert sin[0, 0, k].item() == _nearest_float32(exact_sin[k])
        assert cos[0, 0, k + r].item() == cos[0, 0, k].item()
    native_err = max(abs(float(native_cos[0, 0, k]) - float(exact_cos[k])) for k in range(r))
    assert native_err > 1e-3  # float32 t * theta is off by radians' hundredths at this position


# -- refusals -----------------------------------------------------------------
class _InterleavedRotary(torch.nn.Module):
    """A rotary module with an inv_freq buffer but repeat_interleave'd tables (not transformers' layout)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.register_buffer("inv_freq", torch.tensor(ropescale.inv_freq(HEAD), dtype=torch.float32),
                             persistent=False)

    def forward(self, x, position_ids):
        f = position_ids[..., None].float() * self.inv_freq
        emb = torch.repeat_interleave(f, 2, dim=-1)
        return emb.cos(), emb.sin()


def test_refuses_a_rotary_module_with_another_layout_and_changes_nothing():
    model = build("llama")
    model.model.rotary_emb = _InterleavedRotary(model.config)
    before = copy.deepcopy(model.config.to_dict())
    with pytest.raises(ValueError, match=r"cannot replace model\.rotary_emb \(_InterleavedRotary\).*neither.*not changed"):
        rhf.patch(model, {"rope_type": "linear", "factor": 2.0})
    assert isinstance(model.model.rotary_emb, _InterleavedRotary)
    assert model.config.to_dict() == before


def test_refuses_a_model_without_rotary_module():
    with pytest.raises(ValueError, match="found no rotary module"):
        rhf.patch(torch.nn.Linear(2, 2), {"rope_type": "linear", "factor": 2.0})


@pytest.mark.parametrize("bad, exc, match", [
    ("yarn", TypeError, "scaling must be"),
    (("yarn",), TypeError, "scaling must be"),
    (("yarn", 8), ValueError, "target_len must be >="),
    ({"rope_type": "nope", "factor": 2.0}, ValueError, "nope"),
])
def test_bad_scaling_is_refused_before_anything_changes(bad, exc, match):
    model = build("llama")
    with pytest.raises(exc, match=match):
        rhf.patch(model, bad)
    assert type(model.model.rotary_emb).__name__ == "LlamaRotaryEmbedding"
    assert model.config.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}


def test_rope_with_other_dims_is_refused():
    with pytest.raises(ValueError, match="dim=32"):
        rhf.patch(build("llama"), ropescale.Rope(32, 10000.0))


def test_not_a_module_is_refused():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        rhf.patch({"config": 1}, ("yarn", 64))


def _blocks(text, fence):
    import re

    return re.findall(rf"```{fence}\n(.*?)```", text, flags=re.S)


def test_frameworks_doc_examples_run(tmp_path):
    """docs/frameworks.md's examples, in order, in one namespace (the GGUF one reads a file written here)."""
    import pathlib

    gguf = pytest.importorskip("gguf")
    root = pathlib.Path(__file__).resolve().parents[1]
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_head_count(4)
    w.add_embedding_length(256)
    w.add_context_length(4096)
    w.add_rope_freq_base(500000.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    namespace = {"path": str(tmp_path / "m.gguf")}
    blocks = _blocks((root / "docs" / "frameworks.md").read_text(encoding="utf-8"), "python")
    assert len(blocks) >= 5
    for block in blocks:
        exec(compile(block, "docs/frameworks.md", "exec"), namespace)
    assert namespace["found"].rope.base == 500000.0 and namespace["found"].pairing == "interleaved"
    assert namespace["y"].shape == (8, 64)


def test_readme_framework_lines_run(tmp_path):
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Coming from transformers / flash-attn / vLLM", 1)[1]
    import re

    lines = re.findall(r"^\* `([^`]+)`: ", section.split("\n## ", 1)[0], flags=re.M)
    assert len(lines) == 6
    block = "\n".join(lines) + "\n"
    import ropescale.torch  # noqa: F401  (the lines use ropescale.torch / .hf as attributes)

    model = build("llama")
    rope = ropescale.Rope(HEAD, 10000.0)
    x = torch.randn(3, 4, HEAD, requires_grad=True)
    cos, sin = ropescale.cos_sin(torch.arange(3)[:, None], rope.inv_freq)
    gguf_file = tmp_path / "model.gguf"
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(gguf_file), "llama")
    w.add_head_count(4)
    w.add_embedding_length(64)
    w.add_rope_freq_base(10000.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    namespace = {"ropescale": ropescale, "rope": rope, "q_tensor": torch.randn(3, 4, HEAD),
                 "pos_tensor": torch.arange(3)[:, None], "cos": cos, "sin": sin, "x": x, "model": model}
    import os
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(block, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert isinstance(namespace["q_rot"], torch.Tensor) and namespace["y"].requires_grad
    assert namespace["rope"].base == 10000.0 and model.config.rope_parameters["rope_type"] == "yarn"


def test_a_refused_patch_leaves_even_dynamic_state_alone():
    """The probe runs on a copy: a dynamic module called at position 100 would otherwise keep its grown frequencies."""
    model = build("llama", _with_theta(METHODS["dynamic"]))
    model.extra_rotary = _InterleavedRotary(model.config)  # a second, foreign module, probed after model.rotary_emb
    rotary = model.model.rotary_emb
    before = (rotary.max_seq_len_cached, rotary.inv_freq.clone())
    with pytest.raises(ValueError, match="cannot replace"):
        rhf.patch(model, {"rope_type": "linear", "factor": 2.0})
    assert model.model.rotary_emb is rotary
    assert rotary.max_seq_len_cached == before[0] and torch.equal(rotary.inv_freq, before[1])


# -- patching again starts from the loaded model (property) ---------------------------
_hyp = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_PATCHES = st.tuples(st.sampled_from(["linear", "yarn", "dynamic", "llama3", "ntk"]),
                     st.sampled_from([64, 128, 1024, 4096]))


class TestPatchIsIdempotent:
    """Any sequence of patches leaves the model as one patch with the last scaling on the loaded model would."""

    @staticmethod
    def _state(model):
        emb = model.model.rotary_emb
        return emb.ropes, model.config.rope_parameters, model.config.max_position_embeddings

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_PATCHES, min_size=2, max_size=4))
    def test_a_sequence_of_patches_equals_the_last_one_alone(self, patches):
        model = build("llama")
        for p in patches:
            rhf.patch(model, p)
        once = build("llama")
        rhf.patch(once, patches[-1])
        assert self._state(model) == self._state(once)

    @pytest.mark.parametrize("scaling", [("linear", 1024), {"rope_type": "yarn", "factor": 4.0},
                                         ropescale.Rope(HEAD, 10000.0, {"rope_type": "linear", "factor": 4.0})])
    def test_the_same_patch_twice_is_the_same_patch(self, scaling):
        model, once = build("llama"), build("llama")
        rhf.patch(model, scaling)
        rhf.patch(model, scaling)
        rhf.patch(once, scaling)
        assert self._state(model) == self._state(once)
        torch.testing.assert_close(logits(model, IDS), logits(once, IDS), rtol=0, atol=0)

    def test_linear_1024_then_4096_is_factor_128(self):
        model = build("llama")
        rhf.patch(model, ("linear", 1024))
        assert model.model.rotary_emb.ropes[None].factor == 1024 / TRAINED
        rhf.patch(model, ("linear", 4096))
        assert model.model.rotary_emb.ropes[None].factor == 4096 / TRAINED


def test_a_rotary_module_under_two_names_is_replaced_under_both():
    model = build("llama", seed=3)
    model.model.layers[0].self_attn.rotary_alias = model.model.rotary_emb  # reachable twice
    names = rhf.patch(model, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16})
    assert sorted(names) == ["model.layers.0.self_attn.rotary_alias", "model.rotary_emb"]
    assert model.model.layers[0].self_attn.rotary_alias is model.model.rotary_emb
    assert isinstance(model.model.rotary_emb, RotaryEmbedding)


def test_layer_types_on_a_model_without_layer_types_is_refused_and_changes_nothing():
    model = build("llama")
    before = copy.deepcopy(model.config.to_dict())
    with pytest.raises(ValueError, match=r"layer_types=\['full_attention'\] was given, but model\.rotary_emb"):
        rhf.patch(model, ("yarn", 128), layer_types=["full_attention"])
    assert type(model.model.rotary_emb).__name__ == "LlamaRotaryEmbedding"
    assert model.config.to_dict() == before
