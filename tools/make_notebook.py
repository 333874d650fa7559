#!/usr/bin/env python3
"""Write examples/plan_4k_to_32k.ipynb (nbformat 4) from the cells below.

The notebook is generated so that its code stays reviewable as plain Python.
Writing it executes it in a fresh Jupyter kernel (nbclient) and keeps the
outputs, figures included, so it reads on a code host; tests/test_notebook.py
executes it again and checks that its cells match this script (``--check``
compares the sources, not the outputs, which vary with library versions).

    python tools/make_notebook.py            # write and execute the notebook
    python tools/make_notebook.py --check    # exit 1 if the cells are stale
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, os.pardir, "examples", "plan_4k_to_32k.ipynb")

# (kind, tags, source).  Cells tagged "plot" need matplotlib.
CELLS = [
    ("markdown", [], """\
# Planning a 4k → 32k context extension

A model trained on 4,096 tokens must serve 32,768 (`s = 8`). RoPE context
extension changes only the rotary *frequencies* θ'; this notebook uses
`ropescale` to

1. define the model's rotary embedding from its config,
2. solve the period-matching base (NTK-aware scaling),
3. compare linear, NTK, dynamic NTK, YaRN and Llama 3.1 scaling pair by pair,
4. plot the periods and the attention score against distance,
5. apply the chosen rope to random queries and keys and check the
   relative-position property,
6. export the `rope_scaling` block for the model's `config.json`, and
7. check what vLLM, SGLang, llama.cpp and MLX-LM compute from such a config."""),
    ("code", [], """\
import json

import numpy as np

import ropescale
from ropescale.analysis import analyze, critical_dim, max_supported_length"""),
    ("markdown", [], """\
## 1. The model

A Llama-2-7B-like config: 32 heads of 128 features (`hidden_size / num_attention_heads`),
`rope_theta` 10,000, trained on 4,096 tokens. `Rope.from_hf` also takes a path to a
`config.json`."""),
    ("code", [], """\
config = {
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "rope_theta": 10000.0,
    "max_position_embeddings": 4096,
}
rope = ropescale.Rope.from_hf(config)
original_len, target_len = 4096, 32768
rope"""),
    ("markdown", [], """\
## 2. Period matching

Base scaling replaces the base `b` by `λb` with `λ = s^(d/(d−2))`, chosen so that the
lowest-frequency pair gets exactly the period linear interpolation would give it
(`s` times its original period), while pair 0 keeps its period."""),
    ("code", [], """\
d, b = rope.rotary_dim, rope.base
s = target_len / original_len
lam = ropescale.ntk_lambda(d, s)
new_base = ropescale.solve_base(d, b, original_len, target_len)
ntk_periods = ropescale.periods(ropescale.inv_freq(d, new_base))
linear_lowest = s * rope.periods[-1]
rel_err = abs(ntk_periods[-1] - linear_lowest) / linear_lowest
print(f"s = {s:g}, lambda = {lam:.6f}, new base = {new_base:,.1f}")
print(f"lowest pair: ntk period {ntk_periods[-1]:,.1f} vs s x original {linear_lowest:,.1f} (rel. error {rel_err:.1e})")
assert rel_err < 1e-12
assert np.isclose(ntk_periods[0], rope.periods[0])"""),
    ("markdown", [], """\
## 3. Compare the methods

`Rope.extend` builds each method's `rope_scaling` for the target length (the trained
length comes from the config). The analysis lists, per pair, the periods before and
after, how many full turns the pair makes in the trained and the target context, and
its regime: *extrapolate* (θ' = θ), *interpolate* (θ' = θ/s) or *blend*."""),
    ("code", [], """\
methods = ["linear", "ntk", "dynamic", "yarn", "llama3"]
extended = {m: rope.extend(target_len, m) for m in methods}
analyses = {m: analyze(r, target_len=target_len) for m, r in extended.items()}
for m, a in analyses.items():
    print(f"{m:8s} attention factor {a.attention_factor:.4f}  regimes {a.counts}")"""),
    ("code", [], """\
yarn = analyses["yarn"]
print(yarn.summary())
print()
print(yarn.table(pairs=range(0, yarn.n_pairs, 6)))"""),
    ("code", [], """\
analyses["yarn"]   # the full table, as HTML in Jupyter"""),
    ("markdown", [], """\
The **critical pair** is the first whose original period exceeds the trained context:
pairs from there on never completed a rotation in training (Liu et al., *Scaling Laws of
RoPE-based Extrapolation*, 2023). For base scaling, the paper's extrapolation bound is
the critical pair's period under the new base."""),
    ("code", [], """\
kc = critical_dim(d, b, original_len)
bound = max_supported_length(d, b, original_len, new_base)
print(f"critical pair {kc}: original period {rope.periods[kc]:,.0f} tokens > {original_len}")
print(f"NTK with base {new_base:,.0f}: bound {bound:,.0f} tokens (target {target_len:,})")
for m, a in analyses.items():
    print(f"  {m:8s} critical pair period after scaling: {a.extrapolation_bound:,.0f} tokens")
assert bound == analyses["ntk"].extrapolation_bound"""),
    ("markdown", [], """\
## 4. Plots

Per-pair periods on a log scale, with the trained and target contexts; then the
attention score `<Ro(q, mθ'), Ro(k, nθ')>` against the distance `m − n` for `q = k = 1`
(the score includes YaRN's attention factor, squared)."""),
    ("code", ["plot"], """\
%matplotlib inline
from ropescale.plot import plot_attention, plot_periods

fig = plot_periods({"default": rope, **extended}, original_len=original_len, target_len=target_len)
fig"""),
    ("code", ["plot"], """\
fig = plot_attention({"default": rope, "ntk": extended["ntk"], "yarn": extended["yarn"]},
                     target_len, original_len=original_len, target_len=target_len)
fig"""),
    ("markdown", [], """\
## 5. Apply to queries and keys

Rotate random queries and keys (shape `(seq, heads, head_dim)`) at their positions with
the YaRN rope. Attention logits must depend only on the relative position `m − n`:
shifting every position by the same offset leaves them unchanged."""),
    ("code", [], """\
chosen = extended["yarn"]
rng = np.random.default_rng(0)
seq, heads = 64, 4
q = rng.standard_normal((seq, heads, d))
k = rng.standard_normal((seq, heads, d))
pos = np.arange(seq)

def logits(offset):
    qr = chosen.apply(q, (pos + offset)[:, None])      # positions broadcast over heads
    kr = chosen.apply(k, (pos + offset)[:, None])
    return np.einsum("mhd,nhd->hmn", qr, kr)

base_logits = logits(0)
for offset in (1000, 30000):
    diff = np.max(np.abs(logits(offset) - base_logits)) / np.max(np.abs(base_logits))
    print(f"offset {offset:>6}: max relative change in logits {diff:.1e}")
    assert diff < 1e-9"""),
    ("code", [], """\
# float32 activations, as in a model: same property, to float32 accuracy
q32, k32 = q.astype(np.float32), k.astype(np.float32)
far = 30000
l0 = np.einsum("mhd,nhd->hmn", chosen.apply(q32, pos[:, None]), chosen.apply(k32, pos[:, None]))
l1 = np.einsum("mhd,nhd->hmn", chosen.apply(q32, (pos + far)[:, None]), chosen.apply(k32, (pos + far)[:, None]))
print("float32 max relative change:", float(np.max(np.abs(l1 - l0)) / np.max(np.abs(l0))))
assert np.allclose(l0, l1, rtol=0, atol=1e-4 * np.max(np.abs(l0)))"""),
    ("markdown", [], """\
## 6. Export

The `rope_scaling` block to put in the extended model's `config.json` (with
`max_position_embeddings` set to the target length)."""),
    ("code", [], """\
print(json.dumps(chosen.to_hf(), indent=2))
assert ropescale.Rope.from_hf(chosen.to_hf()).scaling["factor"] == s"""),
    ("markdown", [], """\
## 7. Will every engine serve it the same way?

The same `config.json` is read by transformers, vLLM, SGLang, llama.cpp and MLX-LM,
each by its own rules (`docs/parity.md` lists them with the source each was read
from). `ropescale.parity.compare` puts each engine's frequencies and scales beside
transformers'. First the block exported above: a plain YaRN block, read alike by all
five."""),
    ("code", [], """\
import ropescale.lint
import ropescale.parity

planned = {**chosen.to_hf(), "model_type": "llama"}
report = ropescale.parity.compare(planned, lengths=[original_len, target_len])
print(report.format())
assert report.differences == []"""),
    ("markdown", [], """\
A real config where they part: gpt-oss-20b (YaRN ×32 with `truncate: false`, the rope
keys of the published `config.json`). transformers and vLLM keep the fractional YaRN
correction range; llama.cpp and MLX-LM always round it, so the pairs at the ends of
the ramp turn at other speeds. `ropescale lint` flags the setting before it ships."""),
    ("code", [], """\
gpt_oss = {"model_type": "gpt_oss", "head_dim": 64, "hidden_size": 2880, "num_attention_heads": 64,
           "max_position_embeddings": 131072, "rope_theta": 150000,
           "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                            "original_max_position_embeddings": 4096, "truncate": False}}
report = ropescale.parity.compare(gpt_oss, lengths=[4096, 131072])
print(report.format())
assert {d.engine for d in report.differences} == {"llama.cpp", "mlx-lm"}
worst = max(d.max_angle_error for d in report.differences)
print(f"largest angle error at 131072 tokens: {worst:.1f} rad")
for finding in ropescale.lint.lint(gpt_oss):
    print(finding.format())"""),
]


def _source(text):
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def notebook():
    cells = []
    for i, (kind, tags, text) in enumerate(CELLS):
        cell = {"cell_type": kind, "id": f"cell-{i:02d}", "metadata": {"tags": tags} if tags else {},
                "source": _source(text)}
        if kind == "code":
            cell["execution_count"] = None
            cell["outputs"] = []
        cells.append(cell)
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def render():
    return json.dumps(notebook(), indent=1, ensure_ascii=False) + "\n"


def executed(nb, timeout=600):
    """``nb`` run top to bottom in a fresh python3 kernel, with its outputs."""
    import nbclient
    import nbformat

    import ropescale

    # The kernel imports the ropescale this process imported (a checkout's
    # src/ or site-packages), whatever its working directory.
    here = os.path.dirname(os.path.dirname(os.path.abspath(ropescale.__file__)))
    paths = [here] + [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    node = nbformat.reads(json.dumps(nb), as_version=4)
    nbclient.NotebookClient(node, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(OUT))}}).execute()
    return json.loads(nbformat.writes(node))


def sources(nb):
    """What the generator decides: cell kinds, ids, tags and code, not outputs."""
    return [(c["cell_type"], c["id"], c.get("metadata", {}).get("tags", []), "".join(c["source"]))
            for c in nb["cells"]]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the notebook's cells differ from this script")
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    if args.check:
        try:
            with open(args.out, encoding="utf-8") as f:
                same = sources(json.load(f)) == sources(notebook())
        except (OSError, ValueError, KeyError):
            same = False
        if not same:
            print(f"{args.out} is stale: run python tools/make_notebook.py", file=sys.stderr)
        return 0 if same else 1
    nb = executed(notebook())
    nb["metadata"] = notebook()["metadata"]          # no kernel-version noise
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
