"""The zoo oracle: ropescale's reading of each transformers model type against what its code computed.

``tests/data/zoo_golden.json.gz`` (written by ``tools/zoo.py``) holds, for every
model type of a transformers release that has a rotary module, its default
config and a YaRN x4 variant, with what the model's own code did: which layers
rotate, the rotated output of a probe vector at a few positions (this pins the
frequencies, the attention factor, the pairing and the rotary width at once),
inv_freq and attention scaling per rope, and the attention-side scales.

:func:`verdict` reads the row's config as a ``config.json`` (``layer_ropes``)
and says "agree", "disagree" (with what differs) or "refused" (with
ropescale's message).  ``tests/test_zoo.py`` holds the verdicts against
``docs/zoo.md`` and the README's figure; ``tools/zoo.py --report`` rewrites them.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from collections import Counter

import numpy as np

import ropescale

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "zoo_golden.json.gz")

#: Positions tools/zoo.py replays a model's query multiplier at (``QUERY_POSITIONS`` there).
QUERY_POSITIONS = [0, 1, 1000, 8190, 8191, 8192, 8193, 16383, 16384, 16385, 32767, 32768, 49151, 49152,
                   131071, 131072, 262143, 262144, 262145, 524288, 1048575, 1048576, 4194304]

#: Statuses of rows whose model transformers itself could not build or run from its defaults.
NOT_BUILT = ("config_error", "model_error", "rope_error", "variant_error", "probe_error")


def load(path=GOLDEN):
    import gzip
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    for row in data["rows"]:
        att = row.get("attention")
        if isinstance(att, dict):      # tools/zoo.py writes each distinct layer record once
            row["attention"] = [att["records"][i] for i in att["layers"]]
    return data


def _close(a, b, tol):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= tol))


def verdict(row, default_row=None):
    """``(kind, reasons)``: kind is "agree", "disagree", "refused" or "not built".

    ``default_row``: the same model type's default-config row, whose softmax factors are the
    model's own convention (some put ``1/sqrt(d)`` elsewhere): the YaRN row's factors are
    compared relative to them.
    """
    if row.get("status") in NOT_BUILT:
        return "not built", [row.get("error", row["status"])]
    if row.get("status") != "ok":
        return "no rope", []
    cfg = row["config"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lr = ropescale.layer_ropes(cfg)
    except (ValueError, TypeError) as e:
        return "refused", [str(e)]
    reasons = []
    n = row.get("num_layers")
    forward_ok = str(row.get("forward", "")).startswith("ok")
    if forward_ok and n is not None:
        if len(lr.layers) != n:
            reasons.append(f"layers: ropescale has {len(lr.layers)}, the model {n}")
        else:
            mine = [i for i, r in enumerate(lr.layers) if r is not None]
            theirs = row["rotating_layers"]
            if mine != theirs:
                only_mine = sorted(set(mine) - set(theirs))
                only_theirs = sorted(set(theirs) - set(mine))
                reasons.append(f"rotating layers differ: ropescale also rotates {only_mine[:6]}"
                               f"{'...' if len(only_mine) > 6 else ''}, the model also {only_theirs[:6]}")
    for key, rec in sorted(row.get("apply", {}).items()):
        if "error" in rec:
            continue
        i = rec["layer"]
        if i >= len(lr.layers) or lr.layers[i] is None:
            continue           # counted above
        rope = lr.layers[i]
        reasons += [f"layer {i} ({key}): {r}" for r in _compare_apply(rope, rec)]
        mine = lr.softmax_scales[i]
        want = _softmax_factor(row, default_row, i, mine)
        if want is not None and not math.isclose(mine, want, rel_tol=1e-6):
            reasons.append(f"layer {i}: softmax factor {mine:.6g}, the model {want:.6g}")
    reasons += _compare_query_scales(row, lr)
    return ("agree" if not reasons else "disagree"), reasons


def _softmax_factor(row, default_row, i, mine):
    """The factor the rope puts on the model's softmax scale at layer i (None: not measurable)."""
    att = row.get("attention") or []
    if i >= len(att) or "softmax_factor" not in att[i]:
        return None
    if row.get("curated"):
        # a published config: a factor the rope can put there (mscale_all_dim), or one ropescale claims,
        # must show; otherwise the model's own convention (Gemma's query_pre_attn_scalar) is not the rope's
        claimable = mine != 1.0 or "mscale_all_dim" in json.dumps(row.get("config"))
        return att[i]["softmax_factor"] if claimable else None
    if row["variant"] == "default":
        if _unscaled(row):
            return 1.0
        # a scaled default: the model's factor against 1/sqrt(d) is the rope's, for models that
        # take the usual 1/sqrt(d) (a claimed factor must show; an unclaimed one cannot be told
        # from a model's own convention)
        return att[i]["softmax_factor"] if mine != 1.0 else None
    base = (default_row or {}).get("attention") or []
    if i >= len(base) or "softmax_factor" not in base[i] or not _unscaled(default_row):
        return None
    return att[i]["softmax_factor"] / base[i]["softmax_factor"]


def _unscaled(row):
    return all(r.get("rope_type") in (None, "default") for r in (row.get("ropes") or {}).values())


def _output_order(rec):
    """The model's output feature order: at position 0 the rotation is the identity (times the
    attention factor), and the probe's features are all different, so sorting them shows where
    each input feature went (DeepSeek's interleaved apply returns its output half-split)."""
    x = _x_row(rec)
    y0 = np.asarray(rec["rotated"][0])
    if rec["positions"][0] != 0 or not np.all(np.diff(x) > 0):
        return None
    order = np.argsort(y0, kind="stable")
    return order if np.allclose(y0[order] / y0[order][0], x / x[0], rtol=1e-5) else None


def _x_row(rec):
    """The probe vector tools/zoo.py rotated: feature j is 1 + j/d (float32)."""
    d = rec["head_width"]
    return (1.0 + np.arange(d, dtype=np.float32) / np.float32(d)).astype(np.float64)


def _compare_apply(rope, rec):
    d = rec["head_width"]
    x = _x_row(rec)
    pos = np.asarray(rec["positions"])
    if d > rope.dim:
        return [f"the model rotates a head of {d} features, ropescale's rope has dim {rope.dim}"]
    xs = np.zeros((len(pos), rope.dim))
    xs[:, :d] = x
    try:
        y = rope.apply(xs, pos)[:, :d]
    except (ValueError, TypeError) as e:
        return [f"apply refused: {e}"]
    want = np.asarray(rec["rotated"], dtype=np.float64)
    tol = 2e-3 * max(1.0, float(np.max(np.abs(want))))
    order = _output_order(rec)
    if order is not None:
        # a fixed permutation of q's and k's features leaves every attention score as it is
        want = want[:, order]
    if _close(y, want, tol):
        return []
    out = []
    moved = rec.get("rotated_features")
    rd = rope.rotary_dim if not ropescale.methods.SPECS[rope.method].full_head_dim else \
        2 * int(np.count_nonzero(rope.inv_freq))
    if moved is not None and len(moved) != rd:
        out.append(f"rotary width {rd}, the model rotates {len(moved)} features")
    pairing = rec.get("pairing")
    if pairing in ("half", "interleaved") and (pairing == "interleaved") != rope.interleaved:
        out.append(f"pairing {'interleaved' if rope.interleaved else 'half'}, the model {pairing}")
    if not out:
        err = float(np.max(np.abs(y - want)))
        out.append(f"rotated probe differs by {err:.3g} (frequencies or attention factor)")
    return out


def _compare_query_scales(row, lr):
    """The factor on each layer's queries: the values the model's own multiplier function gave at
    ``QUERY_POSITIONS`` (Ministral 3's ``get_llama_4_attn_scale``, replayed by tools/zoo.py), and
    Llama 4's temperature tuning (inline in its attention) on the layers that switch it on and do not
    rotate, judged by its settings."""
    att = row.get("attention") or []
    out = []
    for i, a in enumerate(att):
        if i >= len(lr.layers):
            break
        mine = lr.query_temperatures[i]
        replayed = a.get("query_scale")
        if isinstance(replayed, list):
            got = lr.query_scale(i, QUERY_POSITIONS)
            if not np.allclose(got, replayed, rtol=1e-6, atol=0):
                j = int(np.argmax(np.abs(got - np.asarray(replayed))))
                out.append(f"layer {i}: query scale {got[j]:.6g} at position {QUERY_POSITIONS[j]}, "
                           f"the model {replayed[j]:.6g}")
                break
            continue
        theirs = bool(a.get("attn_temperature_tuning")) and not a.get("use_rope", True)
        if theirs != (mine is not None):
            out.append(f"layer {i}: query temperature {'on' if mine is not None else 'off'}, "
                       f"the model {'on' if theirs else 'off'}")
            break
        if theirs and (mine[0], mine[1]) != (a.get("floor_scale", mine[0]), a.get("attn_scale", mine[1])):
            out.append(f"layer {i}: query temperature (floor_scale, attn_scale) {mine[:2]}, the model "
                       f"{(a.get('floor_scale'), a.get('attn_scale'))}")
            break
    return out


def verdicts(data):
    """``{(model_type, variant): (kind, reasons)}`` for every row."""
    defaults = {r["model_type"]: r for r in data["rows"] if r["variant"] == "default"}
    return {(r["model_type"], r["variant"]): verdict(r, defaults.get(r["model_type"])) for r in data["rows"]}


def figure(data, vs=None):
    """The README's sentence: counts per variant among the types transformers builds from their defaults."""
    vs = verdicts(data) if vs is None else vs
    c0 = Counter(k for (mt, v), (k, _) in vs.items() if v == "default")
    built = {mt for (mt, v), (k, _) in vs.items() if v == "default" and k in ("agree", "disagree", "refused")}
    # the YaRN variant of the types whose default transformers builds (some refuse YaRN themselves)
    c1 = Counter(k for (mt, v), (k, _) in vs.items() if v == "yarn4" and mt in built)
    b1 = c1["agree"] + c1["disagree"] + c1["refused"]
    return (f"Of the {len(built)} transformers {data['transformers_version']} model types with a text rope that "
            f"transformers builds from their config defaults (on the meta device), ropescale agrees with {c0['agree']}, disagrees with "
            f"{c0['disagree']} and refuses {c0['refused']}; with YaRN x4 on their text rope, {c1['agree']} agree, "
            f"{c1['disagree']} disagree and {c1['refused']} are refused of the {b1} that transformers builds.")


def _one_line(text, n=160):
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= n else text[: n - 3] + "..."


def report(data, vs=None):
    """``docs/zoo.md``: the figure, then every model type with its verdicts and what differs or is missing."""
    vs = verdicts(data) if vs is None else vs
    types = sorted({mt for mt, _ in vs})
    lines = [
        "# ropescale against the transformers model zoo",
        "",
        "Written by `python tools/zoo.py --report` from `tests/data/zoo_golden.json.gz` (what each model type's own",
        f"code computes, transformers {data['transformers_version']}, torch {data['torch_version']}) and checked by",
        "`tests/test_zoo.py`: a change of any verdict fails the tests until this page is rewritten.",
        "",
        "For every model type of transformers whose modeling file has a rotary module, the walk builds the",
        "config class's defaults (and the same with YaRN x4 on the text rope; on the `full_attention` entry",
        "where the rope parameters are keyed by layer type), runs the model's forward on the `meta` device to",
        "see which layers call the rotation, and replays that call on the CPU with a probe vector.  ropescale",
        "reads the config as saved (`ropescale.layer_ropes`) and *agrees* when every layer rotates (or not)",
        "as the model does and rotates the probe to within float32 rounding at positions",
        f"{data['probe_positions']}, with the model's softmax factor and query scales; it *refuses* when it",
        "raises with a message saying what it cannot follow.",
        "",
        figure(data, vs),
        "",
    ]
    for kind, title in (("refused", "Refused"), ("disagree", "Disagreements (open)"),
                        ("not built", "Not built by transformers from their defaults on the meta device, or no text rope"), ("agree", "Agree")):
        rows = []
        for mt in types:
            got = {v: vs.get((mt, v)) for v in ("default", "yarn4")}
            if not any(g is not None and g[0] == kind for g in got.values()):
                continue
            why = next((g[1][0] for g in got.values() if g is not None and g[0] == kind and g[1]), "")
            cells = " / ".join(g[0] if g is not None else "-" for g in got.values())
            rows.append(f"| `{mt}` | {cells} | {_one_line(why)} |" if kind != "agree" else f"`{mt}`")
        if not rows:
            continue
        lines += [f"## {title} ({len(rows)})", ""]
        if kind == "agree":
            lines += [", ".join(rows), ""]
        else:
            lines += ["| model type | default / YaRN x4 | why |", "| --- | --- | --- |", *rows, ""]
    return "\n".join(lines)
