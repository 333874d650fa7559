"""Regenerate docs/eval.md's numbers and plots from the JSON files of `ropescale eval` runs.

Every number in docs/eval.md between ``<!-- eval:NAME -->`` and ``<!-- /eval:NAME -->``
markers is written here from the JSON in docs/, never typed.  A model's runs may
be split over several files (the loss pass and pass-key passes, made separately
on a busy machine); their cells are merged: the loss from the file that measured
it, the pass-key answers of every file pooled (a prompt measured twice -- same
length, depth and key -- counts once).

    python tools/eval_report.py            # rewrite docs/eval.md and the PNGs
    python tools/eval_report.py --check    # exit 1 if docs/eval.md is stale
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, Dict, List, Mapping, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
sys.path.insert(0, os.path.join(ROOT, "src"))

from ropescale import eval as ev  # noqa: E402
from ropescale.eval import report  # noqa: E402

#: The runs behind each model's section: (file in docs/, what it contributes).
RUNS = {
    "smollm2": ["eval-smollm2-loss.json", "eval-smollm2-passkey-window.json", "eval-smollm2-passkey-16k.json",
                "eval-smollm2.json", "eval-smollm2-depths.json"],
    "gemma3": ["eval-gemma3-loss.json", "eval-gemma3-passkey.json"],
}


def load(name: str) -> List[Dict[str, Any]]:
    out = []
    for f in RUNS[name]:
        path = os.path.join(DOCS, f)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            data["_file"] = f
            out.append(data)
    return out


def merge(runs: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """One result from several runs of one model: loss from the runs that have it, pass keys pooled."""
    base = next((r for r in runs if any(c.get("loss") for c in r["results"])), runs[0])
    trained = base["model"]["trained_length"]
    cells: Dict[tuple, Dict[str, Any]] = {}
    base_methods = base.get("methods") or [{"name": n, "scaling": None}
                                           for n in dict.fromkeys(c["method"] for c in base["results"])]
    methods: List[str] = [m["name"] for m in base_methods]
    fixed = {m["name"]: m.get("scaling") for m in base_methods}
    for r in runs:
        for m in r.get("methods") or [{"name": c["method"], "scaling": None} for c in r["results"]]:
            if m["name"] not in methods:
                methods.append(m["name"])
                fixed[m["name"]] = m.get("scaling")
        for c in r["results"]:
            key = (c["method"], c["length"])
            cell = cells.setdefault(key, {"method": c["method"], "length": c["length"], "factor": c["factor"],
                                          "scaling": c.get("scaling"), "same_as": c.get("same_as"),
                                          "layers": c.get("layers"), "passkey": None, "perplexity": None,
                                          "loss": None, "runs_from": []})
            if c.get("loss") and not cell["loss"]:
                cell["loss"], cell["perplexity"] = c["loss"], c.get("perplexity")
            elif c.get("perplexity") and not cell["perplexity"]:
                cell["perplexity"] = c["perplexity"]
            if c.get("passkey"):
                pk = cell["passkey"] or {"runs": []}
                seen = {(x["depth"], x["key"]) for x in pk["runs"]}
                for x in c["passkey"]["runs"]:
                    if (x["depth"], x["key"]) not in seen:
                        pk["runs"].append(dict(x, file=r["_file"]))
                        seen.add((x["depth"], x["key"]))
                k = sum(bool(x["correct"]) for x in pk["runs"])
                pk.update(found=k, n=len(pk["runs"]), accuracy=k / len(pk["runs"]))
                cell["passkey"] = pk
            if c.get("same_as") is None and not c.get("loss") and c.get("passkey"):
                pass
            if r["_file"] not in cell["runs_from"]:
                cell["runs_from"].append(r["_file"])
    lengths = sorted({L for _, L in cells})
    # a cell is "the same model as" another where the loss run says so (every method is unscaled in the window)
    for (m, L), c in cells.items():
        if L <= trained and m != methods[0] and not fixed.get(m):
            c["same_as"] = methods[0]
            src = cells.get((methods[0], L))
            if src:
                c["passkey"], c["loss"], c["perplexity"] = src["passkey"], src["loss"], src["perplexity"]
    task = dict(base.get("task") or dict(base["settings"], bucket=ev.DEFAULT_BUCKET, batch=ev.BATCH_TOKENS,
                                         ppl_tolerance=ev.DEFAULT_PPL_TOLERANCE))
    task["tasks"] = ["passkey", "perplexity"] if any(c["passkey"] for c in cells.values()) else task["tasks"]
    result = {"model": base["model"], "task": task, "lengths": lengths,
              "methods": [{"name": m, "scaling": fixed.get(m)} for m in methods if any(k[0] == m for k in cells)],
              "results": [cells[(m, L)] for m in methods for L in lengths if (m, L) in cells],
              "memory_estimate": base.get("memory_estimate")}
    result["verdicts"] = ev.verdicts(result)
    return result


# -- markdown pieces ------------------------------------------------------------
def md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def gib(b) -> str:
    return "n/a" if b is None else f"{b / 2**30:.2f} GiB"


def forwards(r: Mapping[str, Any]) -> str:
    """Forward passes a run made: one per loss window, one per pass-key prompt (decoding steps aside)."""
    n = {}
    for c in r["results"]:
        if c.get("same_as") is None:
            n[c["length"]] = n.get(c["length"], 0) + len(c.get("loss") or []) + len(((c.get("passkey") or {}).get("runs")) or [])
    return " + ".join(f"{k} × {L:,}" for L, k in sorted(n.items()) if k)


def runs_table(runs: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for r in runs:
        t = r.get("timings") or {}
        la = t.get("load_average") or [None, None]
        rows.append([f"`{r['_file']}`", f"`{r.get('command', '?')}`" + (" (stopped: partial)" if r.get("partial") else ""),
                     forwards(r),
                     f"{(t.get('total_seconds', 0) + t.get('load_seconds', 0)) / 60:.1f} min" if t else "n/a",
                     f"{t.get('cpu_seconds', 0) / 60:.1f} min" if t else "n/a",
                     f"{t.get('load_seconds', 0):.0f} s" if t else "n/a",
                     gib(t.get("peak_rss_bytes")) if t else "n/a",
                     " → ".join(f"{x:.1f}" for x in la if x is not None) or "n/a",
                     (r.get("versions") or {}).get("ropescale") or r.get("ropescale", "?")])
    return md_table(["file", "command", "forward passes (tokens)", "wall", "CPU (1 thread)", "loading", "peak RSS",
                     "load average", "ropescale"], rows)


def versions_line(runs: Sequence[Mapping[str, Any]]) -> str:
    seen: Dict[str, List[str]] = {}
    for r in runs:
        for k, v in (r.get("versions") or {}).items():
            if k == "platform" or v is None:
                continue
            if v not in seen.setdefault(k, []):
                seen[k].append(v)
    return ", ".join(f"{k} {' / '.join(v)}" for k, v in seen.items())


def passkey_table(result: Mapping[str, Any]) -> str:
    lengths = result["lengths"]
    trained = result["model"]["trained_length"]
    by = {(c["method"], c["length"]): c for c in result["results"]}
    head = ["method"] + [f"{L:,}" + (f" (×{L / trained:g})" if L > trained else "") for L in lengths]
    rows = []
    for m in result["methods"]:
        row = [m["name"]]
        for L in lengths:
            c = by.get((m["name"], L))
            if c is None or not c.get("passkey"):
                row.append("–")
            elif c.get("same_as"):
                row.append(f"= {c['same_as']}")
            else:
                k, n = c["passkey"]["found"], c["passkey"]["n"]
                lo, hi = ev.wilson(k, n)
                row.append(f"{k}/{n} [{lo:.2f}, {hi:.2f}]")
        rows.append(row)
    return md_table(head, rows)


def passkey_depths(result: Mapping[str, Any]) -> str:
    rows = []
    for c in result["results"]:
        if not c.get("passkey") or c.get("same_as"):
            continue
        per: Dict[float, List[bool]] = {}
        for x in c["passkey"]["runs"]:
            per.setdefault(x["depth"], []).append(bool(x["correct"]))
        rows.append([c["method"], f"{c['length']:,}"] + [
            f"{sum(per[d])}/{len(per[d])}" if d in per else "–" for d in (0.1, 0.5, 0.9)])
    return md_table(["method", "length", "depth 0.1", "depth 0.5", "depth 0.9"], rows)


def loss_table(result: Mapping[str, Any], text: int) -> str:
    longest = max(result["lengths"])
    trained = result["model"]["trained_length"]
    spans = report._coarse_spans(longest, trained)
    by = {(c["method"], c["length"]): c for c in result["results"]}
    rows = []
    for m in result["methods"]:
        c = by.get((m["name"], longest))
        entry = next((e for e in (c or {}).get("loss") or [] if e["text"] == text), None)
        if entry is None:
            continue
        row = [m["name"]]
        for a, b in spans:
            lo, hi = a // entry["batch"], -(-b // entry["batch"])
            ci = ev.mean_interval(entry["batch_nll"][lo:hi], entry["batch_tokens"][lo:hi])
            row.append(f"{ci['mean']:.3f} ± {(ci['hi'] - ci['lo']) / 2:.3f}")
        rows.append(row)
    return md_table(["method"] + [f"{a:,}–{b:,}" for a, b in spans], rows)


def significance(result: Mapping[str, Any], texts: Sequence[str], span=None, passkey: bool = True) -> str:
    rows = []
    for r in ev.comparisons(result, span=span):
        if r["same_model"]:
            continue
        if not passkey:
            r = dict(r, passkey=None)
        row = [f"{r['a']} − {r['b']}"]
        if not r["loss"]:
            row += ["–"] * len(texts)
        for d in r["loss"]:
            row.append(f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" + (" **significant**" if d["significant"] else ""))
        if r["passkey"]:
            p = r["passkey"]
            row.append(f"{p['difference']:+.2f} [{p['lo']:+.2f}, {p['hi']:+.2f}]" + (" **significant**" if p["significant"] else ""))
        elif passkey:
            row.append("–")
        rows.append(row)
    return md_table(["a − b"] + [f"loss, {t}" for t in texts] + (["pass key"] if passkey else []), rows)


def verdict_block(result: Mapping[str, Any]) -> str:
    return "```text\n" + "\n".join(ev.verdict_line(n, v, result["lengths"]) for n, v in result["verdicts"].items()) + "\n```"


def layers_table(result: Mapping[str, Any]) -> str:
    rows = []
    for c in result["results"]:
        if c.get("layers") and c["length"] == max(result["lengths"]):
            rows.append([c["method"]] + [", ".join(f"{k} {v}" for k, v in c["layers"][lt].items() if k != "rope_type")
                                         + f" ({c['layers'][lt]['rope_type']})" for lt in ("sliding_attention", "full_attention")])
    return md_table(["method", "sliding-attention layers", "full-attention layers"], rows)


def text_names(result: Mapping[str, Any]) -> List[str]:
    return [t["source"].split(" (")[0] + f" ({t['tokens']:,} tokens)" for t in result["task"].get("texts") or []]


def sections(name: str) -> Dict[str, str]:
    runs = load(name)
    if not runs:
        return {}
    result = merge(runs)
    texts = text_names(result)
    out = {f"{name}-runs": runs_table(runs), f"{name}-versions": versions_line(runs),
           f"{name}-texts": "\n".join(f"{i + 1}. `{t['source']}`: {t['tokens']:,} tokens"
                                      for i, t in enumerate(result["task"].get("texts") or [])),
           f"{name}-verdicts": verdict_block(result)}
    if any(c.get("passkey") for c in result["results"]):
        out[f"{name}-passkey"] = passkey_table(result)
        out[f"{name}-depths"] = passkey_depths(result)
    for t in range(len(texts)):
        out[f"{name}-loss{t + 1}"] = loss_table(result, t)
    out[f"{name}-significance"] = significance(result, texts)
    trained, longest = result["model"]["trained_length"], max(result["lengths"])
    if longest > trained:
        out[f"{name}-inside"] = significance(result, texts, span=(0, trained), passkey=False)
    if any(c.get("layers") for c in result["results"]):
        out[f"{name}-layers"] = layers_table(result)
    mem = result.get("memory_estimate") or {}
    out[f"{name}-memory"] = ", ".join(f"{int(L):,} tokens: {gib(b)}" for L, b in mem.items())
    return out, result


def budget_table() -> str:
    """What n keys per cell buy: the narrowest Wilson interval, and the smallest gap Newcombe calls significant."""
    rows = []
    for trials in (1, 2, 4, 10):
        n = 3 * trials
        lo, hi = ev.wilson(n, n)
        widths = min(ev.wilson(k, n)[1] - ev.wilson(k, n)[0] for k in range(n + 1))
        gap = min((a - b for a in range(n + 1) for b in range(a + 1)
                   if ev.proportion_difference(a, n, b, n)[0] > 0), default=None)
        rows.append([str(trials), str(n), f"{widths:.2f}", f"[{lo:.2f}, {hi:.2f}]",
                     f"{gap}/{n}" if gap is not None else "–"])
    return md_table(["--trials", "keys per cell (3 depths)", "narrowest 95 % interval", "all found", "smallest gap that can be significant"], rows)


def render(doc: str, parts: Mapping[str, str]) -> str:
    def repl(m):
        key = m.group(1)
        if key not in parts:
            return m.group(0)
        return f"<!-- eval:{key} -->\n{parts[key]}\n<!-- /eval:{key} -->"
    return re.sub(r"<!-- eval:([\w-]+) -->.*?<!-- /eval:\1 -->", repl, doc, flags=re.S)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if docs/eval.md differs from what the JSON gives")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    parts: Dict[str, str] = {"budget": budget_table()}
    for name in RUNS:
        got = sections(name)
        if not got:
            continue
        secs, result = got
        parts.update(secs)
        if not args.check and not args.no_plots:
            ev.plot(result, os.path.join(DOCS, f"eval-{name}.png"))
    path = os.path.join(DOCS, "eval.md")
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    new = render(doc, parts)
    if args.check:
        if new != doc:
            print("docs/eval.md is stale: run python tools/eval_report.py", file=sys.stderr)
            return 1
        return 0
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
