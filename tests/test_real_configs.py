"""ropescale against transformers on real published config.json files.

tests/data/configs/ holds the rope-relevant part of published configs (where
each came from: tests/data/configs/SOURCES.md); tests/data/hf_golden_models.json
holds what the models' own transformers code computes for them
(``tools/make_golden.py --only models``).  Each test below checks one thing
ropescale derives from a config against that record: the frequencies θ' and
attention factor (rtol 1e-6: one float32 ulp plus the float32 pow transformers
uses), the same after the model's forward at other sequence lengths, the rotary
width, the rotation of a probe vector (which also pins the feature pairing),
the M-RoPE stream layout, the softmax scale and Llama 4's per-layer NoPE and
query temperature.

What ropescale does not handle yet is listed in ``GAPS``: those tests are
``xfail(strict=True)`` with the reason naming what is missing, so a fix that
forgets to update the list fails as XPASS.
"""
import json
import math
import pathlib
import warnings

import numpy as np
import pytest

import ropescale

DATA = pathlib.Path(__file__).parent / "data"
GOLDEN = json.loads((DATA / "hf_golden_models.json").read_text())
CASES = {c["name"]: c for c in GOLDEN["cases"]}
LOADED = {n: c for n, c in CASES.items() if "error" not in c}

# --------------------------------------------------------------------------
# What ropescale does not do yet (issue 11).  Keys: (case, check[, detail]).
# --------------------------------------------------------------------------
GAPS: dict = {}


def _gap(case, check, detail=None):
    return GAPS.get((case, check, detail)) or GAPS.get((case, check))


def _params(cases, check, details):
    """pytest params (case, detail) with the strict xfail marker where GAPS lists one."""
    out = []
    for name in cases:
        for detail in details(CASES[name]):
            reason = _gap(name, check, detail)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(name, detail, id=f"{name}-{detail}", marks=marks))
    return out


def _from_hf(case, layer_type=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if layer_type is None:
            return ropescale.Rope.from_hf(CASES[case]["config"])
        return ropescale.Rope.from_hf(CASES[case]["config"], layer_type=layer_type)


def _global_key(case):
    """The rope from_hf(config) means today: the only one, or the full-attention one."""
    ropes = CASES[case]["ropes"]
    return "default" if "default" in ropes else "full_attention"


def _golden_inv_freq(rec):
    return np.asarray(rec["inv_freq"] if "inv_freq" in rec else rec["inv_freq_from_table"])


# --------------------------------------------------------------------------
# The data itself
# --------------------------------------------------------------------------

def test_golden_data_is_from_transformers_and_covers_the_collected_configs():
    assert GOLDEN["transformers_version"] and GOLDEN["generator"] == "tools/make_golden.py"
    files = {p.stem for p in (DATA / "configs").glob("*.json")}
    recorded = {c["name"] for c in GOLDEN["cases"] if c["source"].startswith("tests/data/configs/")}
    assert files == recorded
    for name in files:
        on_disk = json.loads((DATA / "configs" / f"{name}.json").read_text())
        assert CASES[name]["config"] == on_disk, f"{name}: config changed since the golden data was made"
    sources = (DATA / "configs" / "SOURCES.md").read_text()
    for name in files:
        assert f"`{name}.json`" in sources, f"{name}.json has no row in SOURCES.md"


def test_configs_transformers_cannot_load_record_its_error():
    errors = {n: c["error"] for n, c in CASES.items() if "error" in c}
    assert set(errors) == {"chatglm3-6b", "glm-4-9b-chat", "internlm3-8b-instruct"}
    for name in errors:
        assert ("internlm3" if name.startswith("internlm3") else "chatglm") in errors[name]


# --------------------------------------------------------------------------
# Frequencies and attention factor
# --------------------------------------------------------------------------

@pytest.mark.parametrize("case, layer_type", _params(LOADED, "inv_freq", lambda c: [_global_key(c["name"])]))
def test_inv_freq_and_attention_factor_match_transformers(case, layer_type):
    """θ' and the attention factor of from_hf(config): the model's only rope, or its
    full-attention one where layers differ."""
    rec = CASES[case]["ropes"][layer_type]
    rope = _from_hf(case)
    theta, attn = rope.inv_freq_at(None)
    want = _golden_inv_freq(rec)
    assert theta.shape == want.shape
    np.testing.assert_allclose(theta, want, rtol=1e-6, atol=0)
    assert attn == pytest.approx(rec["attention_factor"], rel=1e-12)


def _layered(c):
    return sorted(c["ropes"]) if "default" not in c["ropes"] else []


@pytest.mark.parametrize("case, layer_type", _params(LOADED, "layer_type", _layered))
def test_from_hf_per_layer_type_matches_transformers(case, layer_type):
    rec = CASES[case]["ropes"][layer_type]
    theta, attn = _from_hf(case, layer_type).inv_freq_at(None)
    np.testing.assert_allclose(theta, _golden_inv_freq(rec), rtol=1e-6, atol=0)
    assert attn == pytest.approx(rec["attention_factor"], rel=1e-12)


def _seq_lens(c):
    return [s["seq_len"] for rec in c["ropes"].values() for s in rec.get("at_seq_len", [])]


@pytest.mark.parametrize("case, seq_len", _params(LOADED, "seq_len", _seq_lens))
def test_length_dependent_frequencies_match_the_model_forward(case, seq_len):
    """LongRoPE / dynamic NTK as the model's rotary module has them after a forward of seq_len tokens."""
    rec = CASES[case]["ropes"][_global_key(case)]
    at = next(s for s in rec["at_seq_len"] if s["seq_len"] == seq_len)
    theta, attn = _from_hf(case).inv_freq_at(seq_len)
    np.testing.assert_allclose(theta, at["inv_freq"], rtol=1e-6, atol=0)
    assert attn == pytest.approx(at["attention_factor"], rel=1e-12)


@pytest.mark.parametrize("case, layer_type", _params(LOADED, "rotary_dim", lambda c: [_global_key(c["name"])]))
def test_rotary_dim_matches_transformers(case, layer_type):
    assert _from_hf(case).rotary_dim == CASES[case]["ropes"][layer_type]["rotary_dim"]


# --------------------------------------------------------------------------
# Applying it: pairing, partial rotary, attention factor, M-RoPE
# --------------------------------------------------------------------------

def _model_order(rec, y):
    """ropescale keeps the input's feature order; DeepSeek-V3's interleaved apply returns
    half-split order.  Put our output in the model's order to compare."""
    width = y.shape[-1]
    plane = rec["output_plane_of_feature_0"]
    if rec["pairing"] == "interleaved" and plane == [0, width // 2]:
        return np.concatenate([y[..., 0::2], y[..., 1::2]], axis=-1)
    return y


def _probe_keys(c):
    rec = c["ropes"][_global_key(c["name"])]
    return [k for k in rec["probe"] if k != "streams"]




@pytest.mark.parametrize("case, probe", _params(LOADED, "apply", _probe_keys))
def test_apply_rotates_a_probe_as_the_models_apply_function_does(case, probe):
    """Rope.apply with its defaults on the rotated features, against the model's apply_* function
    (cos/sin from its rotary module, attention factor included).  Interleaved models fail here
    until Rope knows the model's pairing."""
    rec = CASES[case]["ropes"][_global_key(case)]
    p = rec["probe"][probe]
    pos = np.asarray(p["position_ids"][0] if probe == "text_only" else p["position_ids"])
    want = np.asarray(p["rotated"])
    x = np.broadcast_to(np.asarray(p["x_row"], dtype=np.float64), want.shape).copy()
    rope = _from_hf(case)
    y = _model_order(rec, rope.apply(x, pos))
    # transformers forms position * inv_freq in float32, ropescale in float64: the angles
    # differ by up to one float32 ulp of position * θ (<= position * eps32), which moves each
    # rotated pair by that angle times its length and the attention factor.
    eps = float(np.finfo(np.float32).eps)
    pair = math.sqrt(2) * np.abs(x).max() * max(1.0, rec["attention_factor"])
    atol = (eps * (1.5 * pos + 8.0) * pair)[:, None]
    np.testing.assert_array_less(np.abs(y - want), np.broadcast_to(atol, want.shape))


def _mrope(c):
    return ["streams"] if "streams" in c["ropes"][_global_key(c["name"])]["probe"] else []


@pytest.mark.parametrize("case, probe", _params(LOADED, "mrope", _mrope))
def test_mrope_streams_select_the_sections_as_transformers(case, probe):
    """cos/sin for three different position streams: which stream drives each rotary pair is the
    model's section layout (Qwen2.5-VL chunked, Qwen3-VL interleaved)."""
    rec = CASES[case]["ropes"][_global_key(case)]
    p = rec["probe"][probe]
    half = rec["rotary_dim"] // 2
    want_cos = np.asarray(p["cos"])[:, :half]
    want_sin = np.asarray(p["sin"])[:, :half]
    cos, sin = _from_hf(case).cos_sin(np.asarray(p["position_ids"]), dtype=np.float64)
    np.testing.assert_allclose(cos, want_cos, rtol=0, atol=1e-5)
    np.testing.assert_allclose(sin, want_sin, rtol=0, atol=1e-5)


def test_mrope_layouts_recorded_are_chunked_and_interleaved():
    """The golden data shows both layouts: Qwen3-VL's interleaved sections differ from chunked."""
    chunked = LOADED["qwen2.5-vl-7b-instruct"]["ropes"]["default"]
    inter = LOADED["qwen3-vl-4b-instruct"]["ropes"]["default"]
    assert chunked["mrope_section"] == [16, 24, 24] and not chunked["mrope_interleaved"]
    assert inter["mrope_section"] == [24, 20, 20] and inter["mrope_interleaved"]
    # with equal streams both reduce to plain RoPE: every pair at the same position
    for rec in (chunked, inter):
        p = rec["probe"]["text_only"]
        theta = np.asarray(rec["inv_freq"])
        pos = np.asarray(p["position_ids"][0])
        half = rec["rotary_dim"] // 2
        np.testing.assert_allclose(np.asarray(p["cos"])[:, :half], np.cos(pos[:, None] * theta), atol=1e-4)


# --------------------------------------------------------------------------
# Attention-side scales
# --------------------------------------------------------------------------

def _softmax_cases():
    out = []
    for n, c in LOADED.items():
        params = c["ropes"][_global_key(n)].get("rope_parameters") or {}
        if params.get("mscale_all_dim"):
            out.append(n)
    return out


@pytest.mark.parametrize("case", _softmax_cases())
def test_softmax_scale_matches_the_models_attention(case):
    """MLA models (DeepSeek) multiply 1/sqrt(d_qk) by mscale(factor, mscale_all_dim)^2; Ministral 3,
    which also sets mscale_all_dim, does not: the per-layer scales follow the model type."""
    want = CASES[case]["softmax"]["factor_on_inv_sqrt_qk_head_dim"]
    scales = ropescale.layer_ropes(CASES[case]["config"]).softmax_scales
    assert scales and all(s == pytest.approx(want, rel=1e-12) for s in scales)


def _layer_cases():
    return [n for n, c in LOADED.items() if c.get("layer_types") or c.get("layers")]


@pytest.mark.parametrize("case", _layer_cases())
def test_layer_ropes_follow_the_models_layer_layout(case):
    c = CASES[case]
    layers = ropescale.layer_ropes(c["config"])
    per_layer = layers["layers"] if isinstance(layers, dict) and "layers" in layers else layers[1]
    if c.get("layers"):                                  # Llama 4: NoPE layers carry no rope
        assert [r is not None for r in per_layer] == [layer["use_rope"] for layer in c["layers"]]
    else:
        assert len(per_layer) == len(c["layer_types"])
        for i, (lt, rope) in enumerate(zip(c["layer_types"], per_layer)):
            if lt == "linear_attention":                 # Qwen3-Next: no attention, no rope
                assert rope is None
                continue
            if rope is None:
                # NoPE layers (EXAONE 4's global layers, AFMoE's full ones): the rotary module has no
                # record of which layers use it, the model's forward does
                row = _forward_rows()[case]
                assert str(row.get("forward", "")).startswith("ok") and i not in row["rotating_layers"], i
                continue
            want = c["ropes"][lt] if lt in c["ropes"] else c["ropes"]["default"]
            np.testing.assert_allclose(rope.inv_freq_at(None)[0], _golden_inv_freq(want), rtol=1e-6)


@pytest.mark.parametrize("case", [n for n, c in LOADED.items() if c.get("layers")])
def test_query_scale_matches_llama4_temperature_tuning(case):
    c = CASES[case]
    nope = next(layer for layer in c["layers"] if "query_scale" in layer)
    pos = np.asarray(nope["query_scale"]["positions"])
    got = _from_hf(case).query_scale(pos)
    np.testing.assert_allclose(got, nope["query_scale"]["scale"], rtol=1e-6)


def test_llama4_golden_has_nope_layers_and_temperature_tuning():
    c = LOADED["llama4-text-transformers-defaults"]
    flags = [layer["use_rope"] for layer in c["layers"]]
    assert flags.count(False) == len(flags) // 4 and flags[3] is False
    scale = c["layers"][3]["query_scale"]
    # below floor_scale the multiplier is exactly 1; it grows like log(position)
    assert scale["scale"][0] == 1.0 and scale["scale"][-1] > scale["scale"][-2] > 1.0
    assert math.isclose(scale["scale"][2], 1 + 0.1 * math.log(2), rel_tol=1e-6)


# --------------------------------------------------------------------------
# The whole model's forward on each curated config (tools/zoo.py --configs)
# --------------------------------------------------------------------------

ZOO_ROWS = DATA / "configs_zoo.json.gz"
#: Curated configs transformers itself cannot build (remote-code types it does not ship).
NOT_BUILT = {"chatglm3-6b", "glm-4-9b-chat"}
#: Curated subsets that give no layer count: ``layer_ropes`` refuses them (``Rope.from_hf`` reads them,
#: and the tests above check its rope against the rotary module).
NO_LAYER_COUNT = {"llama-2-7b", "llama-3.1-8b", "phi-3-mini-128k-instruct"}
#: Curated configs whose forward on the meta device stops early, so that only the layers before the
#: stop are compared (layer 0's rotation, or none): why it stops.
FORWARD_STOPS = {
    "gpt-oss": "the MoE block returns (hidden, router logits), which the probe's identity feed-forward does not",
    "gpt-oss-20b": "the MoE block returns (hidden, router logits), which the probe's identity feed-forward does not",
    "qwen2-vl-7b-instruct": "the subset leaves out num_key_value_heads: the class default does not divide the heads",
    "qwen2.5-vl-7b-instruct": "the subset leaves out num_key_value_heads: the class default does not divide the heads",
    "qwen2.5-7b-instruct-yarn": "the subset leaves out num_key_value_heads: the class default does not fit",
    "qwen3-0.6b": "the subset leaves out num_key_value_heads: the class default does not fit",
    "internlm3-8b-instruct": "dynamic NTK reads max(position_ids) with .item(), which the meta device has not",
}


def _zoo_rows():
    import _zoo
    return _zoo, _zoo.load(str(ZOO_ROWS))


def _forward_rows():
    return {r["variant"]: r for r in _zoo_rows()[1]["rows"]}


def test_every_curated_config_went_through_its_models_forward_as_published():
    _, data = _zoo_rows()
    rows = {r["variant"]: r for r in data["rows"]}
    files = {p.stem: json.loads(p.read_text()) for p in (DATA / "configs").glob("*.json")}
    assert set(rows) == set(files) and data["transformers_version"] == GOLDEN["transformers_version"]
    for name, row in rows.items():
        assert row["config"] == files[name], f"{name}: config changed since tools/zoo.py --configs recorded it"


def test_curated_configs_agree_with_the_models_forward_layer_by_layer():
    """Which layers rotate, the rotated probe (θ', attention factor, pairing, width), the softmax
    factor and the query scales, from the model built on the meta device with the config as
    published: each curated config agrees, or transformers cannot build it, or it is listed above
    with why the comparison is partial."""
    _zoo, data = _zoo_rows()
    whole = []
    for row in data["rows"]:
        name = row["variant"]
        kind, reasons = _zoo.verdict(row)
        if name in NOT_BUILT:
            assert kind == "not built", (name, kind, reasons)
            continue
        if name in NO_LAYER_COUNT:
            assert kind == "refused" and "number of layers is unknown" in reasons[0], (name, kind, reasons)
            continue
        assert kind == "agree", (name, reasons)
        forward_ok = str(row.get("forward", "")).startswith("ok")
        assert forward_ok == (name not in FORWARD_STOPS), (name, row.get("forward"))
        if forward_ok:
            assert row["rotating_layers"] and row["apply"], name      # the forward was seen rotating
            whole.append(name)
    # 29 of the 41 agree over the whole forward, every new family among them
    assert len(whole) == len(data["rows"]) - len(NOT_BUILT) - len(NO_LAYER_COUNT) - len(FORWARD_STOPS) == 29
    assert {"deepseek-v3.2", "exaone-4.0-32b", "gemma-4-26b-a4b", "gemma-4-e2b", "llama-3.2-11b-vision",
            "llama-4-maverick-17b-128e", "trinity-nano-preview", "ministral-3-8b-base"} <= set(whole)
