"""ropescale.lint: each trap flagged with its reason and engines, clean configs stay clean, --fix keeps
Rope.from_hf identical, and the command line's exit statuses."""
import copy
import json
import os

import numpy as np
import pytest

import ropescale
from ropescale import lint as L
from ropescale.cli import main

DATA = os.path.join(os.path.dirname(__file__), "data", "configs")

pytestmark = pytest.mark.filterwarnings("ignore:scaling keys ignored")

LLAMA = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 500000.0,
         "max_position_embeddings": 131072,
         "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192}}
YARN = {"model_type": "qwen2", "hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 1e6,
        "max_position_embeddings": 131072,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
PHI3 = json.load(open(os.path.join(DATA, "phi-3-mini-128k-instruct.json")))


def with_(base, **changes):
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if key.startswith("rs_"):
            out["rope_scaling"][key[3:]] = value
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


# The curated configs: the flagged ones show the traps they really have; every other one is clean.
FLAGGED = {
    "gpt-oss-20b.json": ["yarn-truncate"],
    "gpt-oss.json": ["yarn-truncate"],
    "ministral-3-8b-base.json": ["v5-only", "mscale-pair-ignored"],
    "qwen2.5-7b-instruct-yarn.json": ["max-pos-mismatch"],
    "qwen3-vl-30b-a3b.json": ["v5-only"],
    "qwen3-vl-4b-instruct.json": ["v5-only"],
}


@pytest.mark.parametrize("fname", sorted(f for f in os.listdir(DATA) if f.endswith(".json")))
def test_curated_configs_flag_their_traps_and_nothing_else(fname):
    assert [f.code for f in L.lint(os.path.join(DATA, fname))] == FLAGGED.get(fname, [])


TRAPS = [
    ("mscale-without-all-dim", with_(YARN, rs_mscale=0.707)),
    ("mscale-pair-ignored", with_(YARN, rs_mscale=1.0, rs_mscale_all_dim=0.5)),
    ("attention-factor-dropped", with_(YARN, rs_attention_factor=1.0)),
    ("yarn-truncate", with_(YARN, rs_truncate=False)),
    ("missing-original", {**with_(YARN), "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
    ("v4-v5-disagree", {**LLAMA, "rope_parameters": {**LLAMA["rope_scaling"], "factor": 16.0,
                                                     "rope_theta": 500000.0}}),
    ("v4-v5-disagree", {**LLAMA, "rope_parameters": {**LLAMA["rope_scaling"], "rope_theta": 10000.0}}),
    ("v5-only", {**with_(LLAMA, rope_scaling=None, rope_theta=None),
                 "rope_parameters": {**LLAMA["rope_scaling"], "rope_theta": 500000.0}}),
    ("theta-missing", with_(PHI3, model_type="gemma3_text", rope_theta=None, rope_scaling=None,
                            original_max_position_embeddings=None, head_dim=256)),
    ("longrope-factor-length", {**PHI3, "rope_scaling": {**PHI3["rope_scaling"],
                                                         "long_factor": PHI3["rope_scaling"]["long_factor"][:-1]}}),
    ("max-pos-mismatch", with_(YARN, max_position_embeddings=32768)),
    ("partial-rotary-conflict", with_(LLAMA, partial_rotary_factor=0.5, rotary_pct=0.25)),
    ("unknown-key", with_(LLAMA, rs_low_freq_facter=1.0)),
]


def test_nested_text_config_is_linted_where_from_hf_reads_it():
    """Qwen2.5-Omni keeps its language model's rope at thinker_config.text_config: lint reads that block
    (its trap is flagged), not the outer config (whose missing rope_theta was a false warning)."""
    inner = with_(YARN, model_type="qwen2_5_omni_text", max_position_embeddings=32768)
    cfg = {"model_type": "qwen2_5_omni", "thinker_config": {"model_type": "qwen2_5_omni_thinker",
                                                            "text_config": inner}}
    assert [f.code for f in L.lint(cfg)] == [f.code for f in L.lint(inner)] == ["max-pos-mismatch"]
    fixed = L.fix(with_(cfg))
    assert "rope_parameters" in fixed["thinker_config"]["text_config"] and "rope_parameters" not in fixed


@pytest.mark.parametrize("code,config", TRAPS, ids=[t[0] for t in TRAPS])
def test_each_trap_is_flagged_with_its_reason_and_engines(code, config):
    found = [f for f in L.lint(config) if f.code == code]
    assert len(found) == 1, [f.code for f in L.lint(config)]
    f = found[0]
    check = L.CHECKS[code]
    assert f.severity == check.severity and f.engines == check.engines and f.message.startswith(check.reason)
    assert "\n" not in f.format()


def test_every_check_has_a_trap_test():
    assert {code for code, _ in TRAPS} == set(L.CHECKS)


def test_traps_are_absent_from_the_fixed_neighbours():
    # each trap's trigger, undone, is clean: the checks key on the trap, not on the method
    assert L.lint(YARN) == [] and L.lint(LLAMA) == []
    assert L.lint(with_(YARN, rs_attention_factor=float(ropescale.Rope.from_hf(YARN).attention_factor))) == []


def test_mscale_pair_equal_to_plain_formula_is_not_flagged():
    # mscale = 1, mscale_all_dim = 0: ratio 0.1 ln s + 1, which engines that read neither also use
    assert L.lint(with_(YARN, rs_mscale=1.0, rs_mscale_all_dim=0.0)) == []


# ---------------------------------------------------------------------------
# --fix
# ---------------------------------------------------------------------------

def _same(a, b):
    assert (a.method, a.base, a.dim, a.rotary_dim, a.interleaved, a.max_position_embeddings) == \
        (b.method, b.base, b.dim, b.rotary_dim, b.interleaved, b.max_position_embeddings)
    for n in (1, 2048, 4096, 4097, 8192, 32768, 131072, 262144):
        ta, aa = a.inv_freq_at(n)
        tb, ab = b.inv_freq_at(n)
        assert np.array_equal(ta, tb) and aa == ab, n
    assert a.softmax_scale == b.softmax_scale and a.query_temperature == b.query_temperature


REFUSED = {"glm-4-9b-chat.json"}  # θ from rope_ratio x base: a rope_theta block would double-count it


@pytest.mark.parametrize("fname", sorted(f for f in os.listdir(DATA) if f.endswith(".json")))
def test_fix_writes_v5_rope_parameters_with_identical_rope(fname):
    p = os.path.join(DATA, fname)
    if fname in REFUSED:
        with pytest.raises(ValueError, match="would change Rope.from_hf"):
            L.fix(p)
        return
    try:
        fixed = L.fix(p)
    except ValueError as e:
        assert "keyed by layer type" in str(e)
        return
    original = json.load(open(p))
    text = fixed.get("text_config", fixed)
    assert "rope_scaling" not in text and "rope_theta" not in text and "rope_parameters" in text
    assert text["rope_parameters"]["rope_theta"] == ropescale.Rope.from_hf(original).base
    _same(ropescale.Rope.from_hf(fixed), ropescale.Rope.from_hf(original))
    assert [f for f in L.lint(fixed) if f.code == "v4-v5-disagree"] == []
    assert fixed is not original and json.load(open(p)) == original  # the input is left alone


def test_fix_refuses_configs_with_errors():
    bad = TRAPS[[c for c, _ in TRAPS].index("v4-v5-disagree")][1]
    with pytest.raises(ValueError, match="v4-v5-disagree"):
        L.fix(bad)


# ---------------------------------------------------------------------------
# The command line.
# ---------------------------------------------------------------------------

def _file(tmp_path, config, name="config.json"):
    p = tmp_path / name
    p.write_text(json.dumps(config))
    return str(p)


def test_exit_status_clean_warnings_errors(tmp_path, capsys):
    assert main(["lint", _file(tmp_path, LLAMA)]) == 0
    assert "clean" in capsys.readouterr().out
    assert main(["lint", _file(tmp_path, with_(YARN, rs_truncate=False))]) == 1
    out = capsys.readouterr().out
    assert "warning: yarn-truncate" in out and "llama.cpp" in out
    err_cfg = TRAPS[[c for c, _ in TRAPS].index("partial-rotary-conflict")][1]
    assert main(["lint", _file(tmp_path, err_cfg), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)[0]["severity"] == "error"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", json.dumps({"rope_scaling": 3}),
                                     json.dumps({**LLAMA, "rope_theta": -1.0})])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, content):
    p = tmp_path / "c.json"
    p.write_text(content)
    assert main(["lint", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("ropescale: error:")


def test_missing_file_and_bad_flags_exit_2(tmp_path, capsys):
    assert main(["lint", str(tmp_path / "nope.json")]) == 2
    assert main(["lint", _file(tmp_path, LLAMA), "--out", "x.json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "--out needs --fix" in err


def test_cli_fix_writes_the_file_and_keeps_status(tmp_path, capsys):
    src = _file(tmp_path, json.load(open(os.path.join(DATA, "gpt-oss-20b.json"))))
    out = str(tmp_path / "fixed.json")
    assert main(["lint", src, "--fix", "--out", out]) == 1  # the warning stays: truncate is the model's choice
    fixed = json.load(open(out))
    assert fixed["rope_parameters"]["truncate"] is False and "rope_scaling" not in fixed
    _same(ropescale.Rope.from_hf(out), ropescale.Rope.from_hf(src))
    assert main(["lint", src, "--fix"]) == 1  # in place
    assert "rope_parameters" in json.load(open(src))
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_cli_fix_leaves_a_config_with_errors_untouched(tmp_path, capsys):
    bad = TRAPS[[c for c, _ in TRAPS].index("v4-v5-disagree")][1]
    p = _file(tmp_path, bad)
    before = open(p).read()
    assert main(["lint", p, "--fix"]) == 2
    assert open(p).read() == before
