"""Reading a result of ``ropescale eval``: verdicts, paired comparisons, loss curves, the text table and the plot."""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ._common import BATCH_TOKENS, DEFAULT_BUCKET
from .stats import mean_interval, paired_difference, position_buckets, proportion_difference, wilson


def _pk_counts(pk: Mapping[str, Any]) -> Tuple[int, int]:
    if "n" in pk:
        return int(pk["found"]), int(pk["n"])
    runs = pk.get("runs")
    if runs:
        return sum(bool(r["correct"]) for r in runs), len(runs)
    return (1, 1) if pk["accuracy"] == 1.0 else (0, 1)


def _reference(result: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The unscaled model's cell at the longest tested length inside its trained window."""
    trained = result["model"]["trained_length"]
    inside = [c for c in result["results"] if c["length"] <= trained and (c["method"] == "none" or c["factor"] == 1.0)
              and not c.get("scaling")]
    return max(inside, key=lambda c: c["length"]) if inside else None


def verdicts(result: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per method: the longest length up to which every tested length holds, and why the next one fails.

    The reference is the unscaled model at the longest tested length inside
    its trained window.  A length *holds* when

    * pass key: the accuracy is not significantly below the reference's --
      Newcombe's 95 % interval of the difference (from the two Wilson
      intervals) reaches zero, so the keys found allow the model to retrieve
      as well as inside its window; and
    * perplexity: at most ``ppl_tolerance`` times the reference's.

    ``fails_at`` is the first length that does not hold and ``reason`` what
    failed there.
    """
    tol = result["task"]["ppl_tolerance"]
    ref = _reference(result)
    ref_ppl = ref["perplexity"]["value"] if ref and ref.get("perplexity") else None
    ref_pk = _pk_counts(ref["passkey"]) if ref and ref.get("passkey") else None
    out: Dict[str, Dict[str, Any]] = {}
    for m in [m["name"] for m in result["methods"]]:
        holds_to, failed, reason = None, None, None
        for c in sorted((c for c in result["results"] if c["method"] == m), key=lambda c: c["length"]):
            why = []
            if c.get("passkey") and ref_pk is not None:
                k, n = _pk_counts(c["passkey"])
                lo, hi = proportion_difference(k, n, *ref_pk)
                if hi < 0:
                    why.append(f"pass key {k}/{n} significantly below {ref_pk[0]}/{ref_pk[1]} in the window")
            if c.get("perplexity") and ref_ppl is not None and c["perplexity"]["value"] > tol * ref_ppl:
                why.append(f"perplexity {c['perplexity']['value']:.4g} > {tol:g} x {ref_ppl:.4g}")
            if why:
                failed, reason = c, "; ".join(why)
                break
            holds_to = c["length"]
        out[m] = {"holds_to": holds_to, "fails_at": failed["length"] if failed else None, "reason": reason,
                  "reference_ppl": ref_ppl, "reference_passkey": list(ref_pk) if ref_pk else None}
    return out


def comparisons(result: Mapping[str, Any], length: Optional[int] = None,
                span: Optional[Tuple[int, int]] = None) -> List[Dict[str, Any]]:
    """Every pair of methods at ``length`` (default the longest): paired loss differences and pass-key differences.

    Loss: per text, the mean loss of ``a`` minus ``b`` over the positions
    beyond the trained length (all positions if ``length`` is inside it),
    with its 95 % interval (:func:`paired_difference`); ``span = (start,
    end)`` takes other positions (e.g. ``(0, trained)``: what a method costs
    inside the window).  Pass key: accuracy of
    ``a`` minus ``b`` with Newcombe's 95 % interval.  ``significant`` says
    whether the interval excludes zero.
    """
    length = max(result["lengths"]) if length is None else length
    trained = result["model"]["trained_length"]
    start, end = span if span is not None else (trained if length > trained else 0, None)
    by = {c["method"]: c for c in result["results"] if c["length"] == length}
    names = [m["name"] for m in result["methods"] if m["name"] in by]
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ca, cb = by[a], by[b]
            row: Dict[str, Any] = {"a": a, "b": b, "length": length, "from": start, "to": end or length,
                                   "loss": [], "passkey": None}
            same = ca.get("same_as") == b or cb.get("same_as") == a or (
                ca.get("same_as") is not None and ca.get("same_as") == cb.get("same_as"))
            row["same_model"] = bool(same)
            for la, lb in zip(ca.get("loss") or [], cb.get("loss") or []):
                d = paired_difference(la, lb, start, end)
                row["loss"].append(dict(d, text=la["text"],
                                        significant=bool(not same and (d["lo"] > 0 or d["hi"] < 0))))
            if ca.get("passkey") and cb.get("passkey"):
                (k1, n1), (k2, n2) = _pk_counts(ca["passkey"]), _pk_counts(cb["passkey"])
                lo, hi = proportion_difference(k1, n1, k2, n2)
                row["passkey"] = {"difference": k1 / n1 - k2 / n2, "lo": lo, "hi": hi,
                                  "significant": bool(lo > 0 or hi < 0)}
            out.append(row)
    return out


def loss_curves(result: Mapping[str, Any], length: Optional[int] = None,
                bucket: Optional[int] = None) -> Dict[int, Dict[str, List[Dict[str, Any]]]]:
    """``{text index: {method: buckets}}``: the loss-by-position curves at ``length`` (default the longest)."""
    length = max(result["lengths"]) if length is None else length
    bucket = bucket or result["task"].get("bucket") or DEFAULT_BUCKET
    out: Dict[int, Dict[str, List[Dict[str, Any]]]] = {}
    for c in result["results"]:
        if c["length"] != length or not c.get("loss"):
            continue
        for entry in c["loss"]:
            out.setdefault(entry["text"], {})[c["method"]] = position_buckets(
                entry["batch_nll"], entry["batch_tokens"], bucket, entry["batch"])
    return out


def _pk_cell(pk: Mapping[str, Any]) -> str:
    k, n = _pk_counts(pk)
    lo, hi = wilson(k, n)
    return f"{k}/{n} [{lo:.2f}-{hi:.2f}]"


def _method_label(result: Mapping[str, Any], name: str) -> str:
    fixed = next((m["scaling"] for m in result["methods"] if m["name"] == name), None)
    return f"{name} (x{float(fixed['factor']):g})" if fixed and "factor" in fixed else name


def _aligned(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns of fixed width: the first (names) left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells):
        return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]).rstrip()
    return "\n".join(line(r) for r in [head, *rows])


def format_table(result: Mapping[str, Any]) -> str:
    """The results as text: the table, the verdicts, the loss by position and the significant differences."""
    table = _aligned
    lengths = result["lengths"]
    trained = result["model"]["trained_length"]
    names = [m["name"] for m in result["methods"]]
    by = {(c["method"], c["length"]): c for c in result["results"]}
    head = ["method"] + [f"{L:,}" + (f" (x{L / trained:g})" if L > trained else "") for L in lengths]
    rows = []
    for n in names:
        row = [_method_label(result, n)]
        for L in lengths:
            c = by[(n, L)]
            if c.get("same_as"):
                row.append(f"= {c['same_as']}")
                continue
            parts = []
            if c.get("passkey"):
                parts.append(_pk_cell(c["passkey"]))
            if c.get("perplexity"):
                parts.append(f"{c['perplexity']['value']:.2f}")
            row.append("  ".join(parts))
        rows.append(row)
    what = " / ".join(w for w, t in (("pass keys found [95 % interval]", "passkey"), ("perplexity", "perplexity"))
                      if t in result["task"]["tasks"])
    lines = [f"{what} by method and length (trained length {trained:,}; (xs) = the factor of the methods "
             f"scaled per length; = m: the same model as m there):", table(head, rows), ""]
    for n, v in result["verdicts"].items():
        lines.append(verdict_line(n, v, lengths))
    curves = loss_curves(result)
    texts = result["task"].get("texts") or []
    longest = max(lengths)
    for t, per_method in sorted(curves.items()):
        spans = _coarse_spans(longest, trained)
        src = texts[t]["source"].split(" (")[0] if t < len(texts) else f"text {t}"
        lines += ["", f"loss by position at {longest:,} tokens, text {t + 1} ({src}): mean nats per token "
                      f"over each span, +- half the 95 % interval"]
        head = ["method"] + [f"{a:,}-{b:,}" for a, b in spans]
        body = []
        for n in names:
            entry = next((e for e in by[(n, longest)].get("loss") or [] if e["text"] == t), None)
            if entry is None:
                continue
            row = [n]
            for a, b in spans:
                lo, hi = a // entry["batch"], -(-b // entry["batch"])
                ci = mean_interval(entry["batch_nll"][lo:hi], entry["batch_tokens"][lo:hi])
                half = (ci["hi"] - ci["lo"]) / 2
                row.append(f"{ci['mean']:.3f}" + ("" if math.isnan(half) else f"+-{half:.3f}"))
            body.append(row)
        lines.append(table(head, body))
    sig = [r for r in comparisons(result) if not r["same_model"]]
    if sig:
        lines += ["", f"differences at {longest:,} tokens (a - b, 95 % interval; * = significant):"]
        for r in sig:
            parts = []
            for d in r["loss"]:
                parts.append(f"loss{d['text'] + 1} {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
                             f"{'*' if d['significant'] else ''}")
            if r["passkey"]:
                pk = r["passkey"]
                parts.append(f"pass key {pk['difference']:+.2f} [{pk['lo']:+.2f}, {pk['hi']:+.2f}]"
                             f"{'*' if pk['significant'] else ''}")
            lines.append(f"  {r['a']} - {r['b']}: " + "; ".join(parts))
        if any(r["loss"] for r in sig) and longest > trained:
            lines.append(f"  (loss over positions {trained:,}-{longest - 1:,}, beyond the trained length)")
    mem = result.get("memory_estimate")
    if mem:
        lines.append("\nmemory estimate per length: "
                     + ", ".join(f"{int(L):,}: {b / 2**30:.2f} GiB" for L, b in mem.items()))
    return "\n".join(lines)


def _coarse_spans(length: int, trained: int) -> List[Tuple[int, int]]:
    """Up to 8 spans for the text table, with a boundary at the trained length when it is inside."""
    n = 8 if length >= 8 * BATCH_TOKENS else 1
    edges = sorted({int(round(length * i / n / BATCH_TOKENS)) * BATCH_TOKENS for i in range(n + 1)}
                   | ({trained} if 0 < trained < length and trained % BATCH_TOKENS == 0 else set()))
    return list(zip(edges[:-1], edges[1:]))


def verdict_line(name: str, v: Mapping[str, Any], lengths: Sequence[int]) -> str:
    if v["holds_to"] is None:
        return f"{name}: fails already at {v['fails_at']:,} tokens ({v.get('reason') or 'see the table'})"
    tail = (f"; fails at {v['fails_at']:,} ({v['reason']})" if v.get("reason") else f"; fails at {v['fails_at']:,}") \
        if v["fails_at"] else " (every length tested)"
    return f"{name}: holds to {v['holds_to']:,} tokens{tail}"


def plot(result: Mapping[str, Any], path: str) -> None:
    """Loss by position per method at the longest length (one panel per text), and pass-key accuracy."""
    from ..plot import _mpl
    Figure = _mpl()
    lengths = result["lengths"]
    names = [m["name"] for m in result["methods"]]
    by = {(c["method"], c["length"]): c for c in result["results"]}
    curves = loss_curves(result)
    has_pk = any(c.get("passkey") for c in result["results"])
    n = len(curves) + int(has_pk)
    fig = Figure(figsize=(6.0 * max(n, 1), 4.4), layout="constrained")
    axes = list(fig.subplots(1, max(n, 1), squeeze=False)[0])
    trained = result["model"]["trained_length"]
    longest = max(lengths)
    texts = result["task"].get("texts") or []
    styles = ("-", "--", ":", "-.")
    for t, per_method in sorted(curves.items()):
        ax = axes.pop(0)
        for i, name in enumerate(names):
            b = per_method.get(name)
            if b is None or by[(name, longest)].get("same_as"):
                continue
            x = [(q["start"] + q["end"]) / 2 for q in b]
            ax.plot(x, [q["mean"] for q in b], label=name, lw=1.2, linestyle=styles[i % 4], color=f"C{i}")
            ax.fill_between(x, [q["lo"] for q in b], [q["hi"] for q in b], alpha=0.2, color=f"C{i}", lw=0)
        if trained < longest:
            ax.axvline(trained, color="grey", lw=0.8)
            ax.text(trained, 0.98, " trained length", transform=ax.get_xaxis_transform(), va="top",
                    fontsize=8, color="grey")
        lows = [q["mean"] for nm, b in per_method.items() for q in b if nm != "none"] or [0]
        ax.set_ylim(top=max(lows) * 1.6 + 0.2, bottom=max(0.0, min(lows) - 0.5))
        ax.set_xlabel(f"position in the {longest:,}-token window")
        ax.set_ylabel(f"loss (nats per token), mean per {result['task'].get('bucket', DEFAULT_BUCKET)} positions")
        src = texts[t]["source"].split(" (")[0] if t < len(texts) else f"text {t + 1}"
        ax.set_title(f"Loss by position: {src} (95 % bands)", fontsize=10)
        ax.legend(fontsize=8)
    if has_pk:
        ax = axes.pop(0)
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            xs, ys, err = [], [], [[], []]
            for j, L in enumerate(lengths):
                pk = by[(name, L)].get("passkey")
                if not pk:
                    continue
                k, nn = _pk_counts(pk)
                lo, hi = wilson(k, nn)
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                ys.append(k / nn)
                err[0].append(k / nn - lo)
                err[1].append(hi - k / nn)
            ax.bar(xs, ys, width=width * 0.9, yerr=err, capsize=2, label=name, color=f"C{i}")
        ax.set_xticks(range(len(lengths)), [f"{L:,}" for L in lengths])
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("keys found (95 % Wilson interval)")
        ax.set_title("Pass-key accuracy", fontsize=10)
        ax.legend(fontsize=8)
    model = os.path.basename(str(result["model"].get("path", "")))
    fig.suptitle(f"ropescale eval: {model} (trained to {trained:,} tokens)", fontsize=10)
    fig.savefig(path, dpi=110)
