"""ropescale against every model type of transformers (``tests/data/zoo_golden.json.gz``, see ``tests/_zoo.py``).

Offline: each row's verdict (agree / disagree / refused) must be the one
``docs/zoo.md`` lists, and the README must state the figure computed here.  A
change in ropescale that fixes or breaks a family fails here until
``python tools/zoo.py --report`` rewrites the list, so the published figure is
always the measured one.  With transformers installed, model types that have a
rotary module but no golden row fail too, so an upgrade surfaces new families.
"""
import os
import pathlib

import pytest

import _zoo

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "zoo.md"
README = ROOT / "README.md"

DATA = _zoo.load() if os.path.exists(_zoo.GOLDEN) else None
pytestmark = pytest.mark.skipif(DATA is None, reason="tests/data/zoo_golden.json.gz is missing")


@pytest.fixture(scope="module")
def verdicts():
    return _zoo.verdicts(DATA)


def test_docs_list_the_verdict_of_every_model_type(verdicts):
    want = _zoo.report(DATA, verdicts)
    have = DOCS.read_text(encoding="utf-8") if DOCS.exists() else ""
    assert have == want, ("docs/zoo.md is not the measured verdicts of ropescale on tests/data/zoo_golden.json.gz: "
                          "run `python tools/zoo.py --report` and review the diff")


def test_readme_states_the_measured_figure(verdicts):
    sentence = _zoo.figure(DATA, verdicts)
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert sentence in text, f"README.md must state the measured figure: {sentence}"


def test_refusals_name_what_is_missing(verdicts):
    for (mt, variant), (kind, reasons) in verdicts.items():
        if kind == "refused":
            assert reasons and len(reasons[0]) > 20, (mt, variant, reasons)


@pytest.mark.parametrize("row", [r for r in (DATA or {}).get("rows", []) if r.get("status") == "ok"
                                 and r["model_type"] in ("llama", "mistral", "qwen2", "gemma3", "deepseek_v3",
                                                         "llama4", "olmo3", "phi3")],
                         ids=lambda r: f"{r['model_type']}-{r['variant']}")
def test_the_oracle_catches_a_wrong_frequency(row):
    # the verdict can fail: the same row with its probe output nudged (what a wrong base or
    # attention factor does) disagrees
    import copy
    bad = copy.deepcopy(row)
    for rec in bad["apply"].values():
        if "rotated" in rec:
            rec["rotated"][3] = [v * 1.01 for v in rec["rotated"][3]]
    assert _zoo.verdict(bad)[0] == "disagree"


def test_every_transformers_model_type_with_a_rotary_module_has_a_golden_row():
    pytest.importorskip("transformers")
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import zoo
    finally:
        sys.path.pop(0)
    have = {r["model_type"] for r in DATA["rows"]}
    missing = [mt for mt in zoo.model_types() if mt not in have and zoo.has_rotary_class(mt)]
    installed = transformers_version()
    if missing and installed != DATA["transformers_version"]:
        # another release: its new families are listed (pytest -rs), not a failure of everyone's CI
        pytest.skip(f"transformers {installed} has model types with a rotary module that the golden data "
                    f"(transformers {DATA['transformers_version']}) lacks; run tools/zoo.py: {missing}")
    assert not missing, f"model types of transformers without a golden row (run tools/zoo.py): {missing}"


def transformers_version():
    import transformers
    return transformers.__version__


def test_query_multipliers_are_replayed_where_the_model_has_one_and_the_oracle_catches_them():
    # Ministral 3 / Mistral 4 call get_llama_4_attn_scale in every layer; tools/zoo.py replays it at
    # QUERY_POSITIONS.  Ignoring it (0.2.0, and 0.3 until it was read) is a disagreement.
    import copy
    import numpy as np
    assert DATA["query_positions"] == _zoo.QUERY_POSITIONS
    rows = [r for r in DATA["rows"] if r["model_type"] in ("ministral3", "mistral4") and r["variant"] == "default"]
    assert len(rows) == 2
    for row in rows:
        scales = [a["query_scale"] for a in row["attention"]]
        assert len(scales) == row["num_layers"] and max(max(s) for s in scales) > 1.3
        assert _zoo.verdict(row)[0] == "agree"
        bad = copy.deepcopy(row)
        for a in bad["attention"]:
            a["query_scale"] = list(np.ones(len(_zoo.QUERY_POSITIONS)))
        kind, reasons = _zoo.verdict(bad)
        assert kind == "disagree" and "query scale" in reasons[0]


def test_a_stack_run_several_times_is_numbered_by_its_layer_calls():
    # HRM runs its two stacks of 16 layers 8 times: num_hidden_layers (128) counts the calls, each a
    # cache slot, each rotating; the walk once found no list of 128 layers and recorded none rotating
    rows = [r for r in DATA["rows"] if r["model_type"] == "hrm_text"]
    assert rows and all(r["layer_calls"] == "forward order" for r in rows)
    for row in rows:
        assert row["rotating_layers"] == list(range(row["num_layers"])) and _zoo.verdict(row)[0] == "agree"
