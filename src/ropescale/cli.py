"""The ``ropescale`` command (also ``python -m ropescale``).

``ropescale [report] [options]`` plans a context extension: the period-matching
base, the YaRN correction range, the critical pair and each method's per-pair
periods.  ``ropescale bench`` runs ``bench/bench.py --quick`` from a source
checkout (benchmarks are not part of the installed package).  Errors in arguments
or input files exit with status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import textwrap
import warnings
from typing import Any, Dict, List, Optional, Sequence

from . import __version__
from ._freq import ntk_lambda, yarn_correction_range
from .analysis import analyze, format_table
from .methods import BASE_SCALING, METHODS, SPECS, UNSCALED, YARN, report_methods
from .configs import layer_ropes
from .rope import Rope

__all__ = ["main", "report_data", "REPORT_METHODS"]

#: The methods ``ropescale report`` compares (``report`` in the method table).
REPORT_METHODS = report_methods()
# The methods --method takes: every context extension of the table (not layouts such as axial).
_EXTENSIONS = [m for m in METHODS[1:] if not SPECS[m].layout_only]

_DESCRIPTION = textwrap.fill(
    "Plan a RoPE context extension.  With no arguments, reports on a default model (head dim 128, base 10000) "
    "extended from 4096 to 32768 tokens: the base-scaling factor lambda = s^(d/(d-2)) and new base, the "
    "period-matching check, the YaRN correction range, the critical pair, and per-pair periods (tokens) under "
    f"{', '.join(REPORT_METHODS)}, each built by Rope.extend for the extension ratio s = target / original "
    "(length-dependent methods at the target length).  --method picks one of: "
    f"{', '.join(_EXTENSIONS)}.", 79) + "\n"

_EPILOG = """\
commands:
  report (default)  the report above; options as listed
  bench [ARGS]      from a source checkout: python bench/bench.py ARGS (default --quick)
  precision         cos/sin error of common rope implementations vs position (ropescale precision --help)
  eval              pass key and perplexity on a real model (ropescale eval --help)
  parity CONFIG     what transformers, vLLM, SGLang, llama.cpp, MLX-LM compute from it (ropescale parity --help)
  lint CONFIG       rope settings engines read differently; exit 0 clean, 1 warnings, 2 errors

examples:
  ropescale
  ropescale --dim 64 --base 500000 --original 8192 --target 131072
  ropescale --hf path/to/config.json --method yarn --json
  ropescale --gguf model.gguf --target 32768
  ropescale --plot periods.png
"""


class UsageError(Exception):
    """Bad arguments or input: reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(f"{message} (see {self.prog} --help)")


def _positive_int(name):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {v}")
        if v > 2**53:
            raise argparse.ArgumentTypeError(f"{name} must be <= 2**53, got {text[:20]}{'...' if len(text) > 20 else ''}")
        return v
    return parse


def _real(name):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{name} must be finite, got {text!r}")
        return v
    return parse


def _report_parser(prog: str) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=_DESCRIPTION, epilog=_EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=_positive_int("--dim"), default=None,
                   help="head dimension (default 128)")
    p.add_argument("--base", type=_real("--base"), default=None,
                   help="rope_theta (default 10000)")
    p.add_argument("--original", type=_positive_int("--original"), default=None, metavar="N",
                   help="trained context length in tokens (default 4096, or the --hf model's)")
    p.add_argument("--target", type=_positive_int("--target"), default=None, metavar="N",
                   help="target context length in tokens (default: 8 x original, or the --hf model's "
                        "extended length when it has one)")
    p.add_argument("--method", choices=_EXTENSIONS, default=None, metavar="M",
                   help=f"report only this method (and {UNSCALED}); one of " + ", ".join(_EXTENSIONS))
    p.add_argument("--hf", metavar="CONFIG", default=None,
                   help="read head dim, base and context from a Hugging Face config.json")
    p.add_argument("--gguf", metavar="FILE", default=None,
                   help="read head dim, base, scaling and context from a llama.cpp GGUF file")
    p.add_argument("--plot", metavar="FILE", default=None,
                   help="also save a plot of the periods (needs matplotlib: pip install \".[plot]\" in a ropescale clone)")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.add_argument("--version", action="version", version=f"ropescale {__version__}")
    return p


# -- report -------------------------------------------------------------------
def _model(args) -> Dict[str, Any]:
    """The base (unscaled) rope and the two lengths, from flags or a config."""
    model_rope = found = None
    source = args.hf if args.hf is not None else args.gguf
    if source is not None:
        flag = "--hf" if args.hf is not None else "--gguf"
        if args.hf is not None and args.gguf is not None:
            raise UsageError("pass --hf or --gguf, not both")
        if args.dim is not None or args.base is not None:
            raise UsageError(f"{flag} reads dim and base from the model; do not combine it with --dim/--base")
        if args.hf is not None:
            model_rope = Rope.from_hf(args.hf)
            max_pos = getattr(model_rope, "max_position_embeddings", None)
        else:
            from .gguf import read
            found = read(args.gguf)
            model_rope, max_pos = found.rope, found.context_length
        prf = (model_rope.scaling or {}).get("partial_rotary_factor")
        base_rope = Rope(model_rope.dim, model_rope.base, {"partial_rotary_factor": prf} if prf is not None else None)
        if args.original is None and model_rope.method != UNSCALED and model_rope.factor > 1 \
                and model_rope.original_max_position_embeddings is None:
            # e.g. Gemma 3 27B (linear x8, 131072): its context length is already the extended one,
            # and planning from it would extend the model a second time
            extended = "" if max_pos is None else f" to {max_pos:,} tokens"
            raise UsageError(f"{source}: the model is already extended ({model_rope.method} x{model_rope.factor:g} in "
                             f"its config){extended}, and the config does not give its length before the extension "
                             f"(original_max_position_embeddings): pass --original N, that length, to plan from it")
        original = args.original or model_rope.original_max_position_embeddings or max_pos
        if original is None:
            raise UsageError(f"{source}: the model gives no context length; pass --original N")
        if args.target is not None:
            target = args.target
        elif model_rope.method != UNSCALED and max_pos is not None and max_pos > original:
            target = max_pos
        elif model_rope.method != UNSCALED and model_rope.factor > 1:
            target = original * model_rope.factor
        else:
            target = 8 * original
    else:
        base_rope = Rope(128 if args.dim is None else args.dim, 10000.0 if args.base is None else args.base)
        original = args.original or 4096
        target = args.target or 8 * original
    original, target = float(original), float(target)
    if target < original:
        raise UsageError(f"--target ({target:g}) must be >= --original ({original:g})")
    layers = layers_data(args.hf) if args.hf is not None else \
        (None if found is None or found.sliding is None else _gguf_layers(found))
    return {"base_rope": base_rope, "model_rope": model_rope, "original": original, "target": target,
            "layers": layers}


def _rope_row(rope: Rope) -> Dict[str, Any]:
    return {"base": rope.base, "method": rope.method, "rotary_dim": rope.rotary_dim, "factor": rope.factor,
            "attention_factor": rope.attention_factor, "softmax_scale": rope.softmax_scale}


def _gguf_layers(found: Any) -> Dict[str, Any]:
    """The per-layer part of the report for a GGUF file with sliding-window layers (counts when it gives them)."""
    rows = []
    for lt, rope in (("sliding_attention", found.sliding), ("full_attention", found.rope)):
        count = "?" if found.layer_types is None else sum(t == lt for t in found.layer_types)
        rows.append({"layer_type": lt, "layers": count, "rope": _rope_row(rope)})
    return {"layout": "llama.cpp", "types": rows, "query_temperature": None}


def layers_data(config: Any) -> Optional[Dict[str, Any]]:
    """The report's per-layer part for a config: one row per layer type (None for one rope on every layer).

    Each row: the layer type, how many layers have it, and its rope's base,
    method, rotary dim, factor, attention factor (on cos/sin) and softmax scale
    (on ``1/sqrt(d_qk)``), or ``"rope": None`` for layers that do not rotate.
    Also the query temperature (Llama 4) when the model has one.

    Examples
    --------
    >>> cfg = {"model_type": "gemma3_text", "rope_theta": 1e6, "rope_local_base_freq": 1e4,
    ...        "head_dim": 256, "num_hidden_layers": 12}
    >>> [(r["layer_type"], r["layers"], r["rope"]["base"]) for r in ropescale.cli.layers_data(cfg)["types"]]
    [('sliding_attention', 10, 10000.0), ('full_attention', 2, 1000000.0)]
    """
    try:
        lr = layer_ropes(config)
    except ValueError:
        return None  # the layer count is unknown: the report is about the one rope from_hf reads
    if len(lr.by_type) == 1 and all(r is not None for r in lr.layers):
        return None
    rows = []
    for lt, rope in lr.by_type.items():
        row: Dict[str, Any] = {"layer_type": lt, "layers": sum(t == lt for t in lr.layer_types)}
        nope = sum(t == lt and r is None for t, r in zip(lr.layer_types, lr.layers))
        if rope is not None and nope:
            row["nope_layers"] = nope
        row["rope"] = None if rope is None else _rope_row(rope)
        rows.append(row)
    ropes = [r for r in lr.by_type.values() if r is not None]
    qt = ropes[0].query_temperature if ropes else None
    return {"layout": lr.layout, "types": rows,
            "query_temperature": None if qt is None else {"floor_scale": qt[0], "attn_scale": qt[1], "offset": qt[2]}}


def _format_layers(info: Dict[str, Any]) -> List[str]:
    lines = ["", f"Layers by type ({info['layout']} layout):"]
    body = []
    for row in info["types"]:
        rope = row["rope"]
        count = f"{row['layers']}" + (f" ({row['nope_layers']} NoPE)" if row.get("nope_layers") else "")
        if rope is None:
            body.append([row["layer_type"], count, "-", "no rope", "-", "-", "-", "-"])
        else:
            body.append([row["layer_type"], count, f"{rope['base']:g}", rope["method"], str(rope["rotary_dim"]),
                         f"{rope['factor']:g}", f"{rope['attention_factor']:.6g}", f"{rope['softmax_scale']:.6g}"])
    lines.append(format_table(["layer type", "layers", "base", "method", "rotary", "factor", "attn factor",
                               "softmax scale"], body))
    qt = info.get("query_temperature")
    if qt is not None:
        lines.append(f"Query temperature tuning on NoPE layers: 1 + {qt['attn_scale']:g} ln(1 + floor((p+"
                     f"{qt['offset']:g}) / {qt['floor_scale']:g}))")
    return lines


def _extended(base_rope: Rope, method: str, original: float, target: float) -> Rope:
    if SPECS[method].extend is None:
        return base_rope
    return base_rope.extend(target, method, original_len=original)


def _pair_subset(n: int, marks: Dict[int, str]) -> List[int]:
    step = max(1, n // 8)
    ks = set(range(0, n, step)) | {n - 1} | {k for k in marks if 0 <= k < n}
    return sorted(ks)


def _num(v: float) -> Optional[float]:
    """JSON-safe float: non-finite values become null."""
    v = float(v)
    return v if math.isfinite(v) else None


def _count(v: float):
    """A length in tokens for JSON: an int when it is one."""
    v = float(v)
    return int(v) if v.is_integer() else v


def report_data(dim: int = 128, base: float = 10000.0, original_len: float = 4096, target_len: float = 32768,
                methods: Sequence[str] = REPORT_METHODS, *, model: Optional[Rope] = None,
                base_rope: Optional[Rope] = None) -> Dict[str, Any]:
    """The numbers ``ropescale report`` prints, as a dict (what ``--json`` writes).

    Periods are in tokens.  ``model`` adds a column for a configured rope (e.g.
    read with :meth:`Rope.from_hf`); ``base_rope`` replaces ``Rope(dim, base)``
    (to keep a partial rotary factor).

    Examples
    --------
    >>> r = ropescale.cli.report_data()
    >>> round(r["ntk"]["lambda"], 5), round(r["ntk"]["new_base"])
    (8.26846, 82685)
    >>> r["ntk"]["relative_error"] < 1e-12, r["critical_dim"], r["yarn_correction_range"]
    (True, 46, [20.0, 46.0])
    >>> r["pairs"]
    [0, 8, 16, 20, 24, 32, 40, 46, 48, 56, 63]
    """
    rope0 = base_rope if base_rope is not None else Rope(dim, base)
    d, b = rope0.rotary_dim, rope0.base
    m_l, m = float(original_len), float(target_len)
    if not m >= m_l:
        raise ValueError(f"target_len ({m:g}) must be >= original_len ({m_l:g})")
    s = m / m_l
    lam = ntk_lambda(d, s)
    if not math.isfinite(lam * b):
        raise ValueError(f"base scaling overflows float64: base {b:g} * lambda {lam:g} (lower --base or the ratio)")
    columns: Dict[str, Rope] = {}
    for method in methods:
        columns[method] = _extended(rope0, method, m_l, m)
    if model is not None and model.method != UNSCALED:
        columns[f"model ({model.method})"] = model
    analyses = {name: analyze(r, target_len=m, original_len=m_l) for name, r in columns.items()}
    ntk = analyses.get(BASE_SCALING) or analyze(_extended(rope0, BASE_SCALING, m_l, m), target_len=m,
                                                 original_len=m_l)
    p_ntk, p_lin = float(ntk.period_after[-1]), s * float(ntk.period_before[-1])
    lo, hi = yarn_correction_range(d, b, max(m_l, 1.0))
    kc = ntk.critical_dim
    n = d // 2
    marks: Dict[int, str] = {}
    for k, text in ((int(lo), f"{YARN} lo"), (int(math.ceil(hi)), f"{YARN} hi"), (kc, "critical")):
        if 0 <= k < n:
            marks[k] = f"{marks[k]}, {text}" if k in marks else text
    pairs = _pair_subset(n, marks)
    return {
        "model": {"dim": rope0.dim, "rotary_dim": d, "base": b, "original_len": _count(m_l), "target_len": _count(m),
                  "extension_ratio": s, "method": model.method if model is not None else None,
                  "model_factor": model.factor if model is not None and model.method != UNSCALED else None},
        BASE_SCALING: {"lambda": lam, "new_base": lam * b, "lowest_period_ntk": p_ntk,
                "lowest_period_linear": p_lin, "relative_error": abs(p_ntk - p_lin) / p_lin},
        "yarn_correction_range": [float(lo), float(hi)],
        "critical_dim": kc,
        "critical_period": _num(ntk.period_before[kc]) if kc < n else None,
        "pairs": pairs,
        "marks": {str(k): v for k, v in sorted(marks.items())},
        "periods": {name: [_num(a.period_after[k]) for k in pairs] for name, a in analyses.items()},
        "attention_factor": {name: a.attention_factor for name, a in analyses.items()},
        "regimes": {name: a.counts for name, a in analyses.items()},
        "scaling": {name: (r.scaling if r.scaling is None else {k: (v.tolist() if hasattr(v, "tolist") else v)
                                                                for k, v in r.scaling.items()})
                    for name, r in columns.items()},
    }


def _column_format(values: Sequence[Optional[float]]):
    """One number format for a whole column of periods (tokens).

    Fixed point with one decimal while the column's largest value has at most
    ten digits; scientific for every entry of a column that goes beyond.
    """
    finite = [v for v in values if v is not None]
    big = bool(finite) and max(finite) >= 1e10

    def fmt(v: Optional[float]) -> str:
        if v is None:
            return "inf"
        return f"{v:.4e}" if big else f"{v:,.1f}"
    return fmt


def _format_report(r: Dict[str, Any], source: Optional[str]) -> str:
    md, nt = r["model"], r[BASE_SCALING]
    d = md["rotary_dim"]
    rot = f" (rotary {d})" if d != md["dim"] else ""
    src = f" from {source}" if source else ""
    lines = [
        f"RoPE extension plan{src}: head dim {md['dim']}{rot}, base {md['base']:g}",
        f"  trained context (original)     {md['original_len']:,} tokens",
        f"  target context                 {md['target_len']:,} tokens",
        f"  extension ratio s              {md['extension_ratio']:g}  (target / original: every method "
        f"column is planned for it)",
    ]
    if md["model_factor"] is not None:
        lines.append(f"  the model's own factor         {md['model_factor']:g}  ({md['method']} in the config: "
                     f"the 'model ({md['method']})' column)")
    lines += [
        "",
        f"Base scaling by period matching ({BASE_SCALING}):",
        f"  lambda = s^(d/(d-2))           {nt['lambda']:.6f}",
        f"  new base = lambda * b          {nt['new_base']:,.2f}",
        f"  lowest pair period, {BASE_SCALING:<11s}{nt['lowest_period_ntk']:,.2f} tokens",
        f"  s x original lowest period     {nt['lowest_period_linear']:,.2f} tokens",
        f"  relative error                 {nt['relative_error']:.2e}",
        "",
    ]
    lo, hi = r["yarn_correction_range"]
    lines.append(f"YaRN correction range (beta_fast 32, beta_slow 1): pairs {lo:g} .. {hi:g}")
    kc = r["critical_dim"]
    if r["critical_period"] is None:
        lines.append(f"Critical dim: none (every pair completes a rotation within {md['original_len']:,} tokens)")
    else:
        lines.append(f"Critical dim: pair {kc} (first pair whose period, {r['critical_period']:,.0f} tokens, "
                     f"exceeds {md['original_len']:,}; {2 * kc} of {d} rotary features rotate fully in training)")
    names = list(r["periods"])
    notes = [SPECS[name].report_note for name in names if name in SPECS and SPECS[name].report_note]
    lines += ["", "Per-pair periods in tokens" + (f" ({'; '.join(notes)})" if notes else "") + ":"]
    head = ["k"] + names + ["note"]
    formats = {name: _column_format(r["periods"][name]) for name in names}
    body = []
    for i, k in enumerate(r["pairs"]):
        body.append([str(k)] + [formats[name](r["periods"][name][i]) for name in names]
                    + [r["marks"].get(str(k), "")])
    lines.append(format_table(head, body))
    attn = {name: a for name, a in r["attention_factor"].items() if a != 1.0}
    if attn:
        lines.append("")
        lines.append("Attention factor (multiplies cos and sin): "
                     + ", ".join(f"{name} {a:.6g}" for name, a in attn.items()))
    return "\n".join(lines)


# Formats matplotlib writes without extra packages; a name without a suffix gets .png.
_PLOT_FORMATS = ("png", "pdf", "svg", "eps", "ps")


def _plot_path(path: str) -> str:
    """The file --plot writes: the name given, with .png added when it has no suffix (and is no existing file)."""
    if not path or not os.path.basename(path) or os.path.basename(path).startswith("."):
        raise UsageError(f"--plot needs a file name such as periods.png, got {path!r}")
    if os.path.isdir(path):
        raise UsageError(f"--plot: {path!r} is a folder; give a file name such as periods.png")
    root, ext = os.path.splitext(path)
    if not ext and os.path.exists(path):
        return path  # e.g. a device: written as PNG under its own name
    if not ext:
        path = path + ".png"
    elif ext[1:].lower() not in _PLOT_FORMATS:
        raise UsageError(f"--plot: cannot write {ext!r} files; use one of "
                         + ", ".join("." + f for f in _PLOT_FORMATS))
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"--plot: folder {folder!r} does not exist")
    return path


def _need_matplotlib() -> None:
    """--plot without matplotlib: one line before any work, not a traceback after it."""
    try:
        import matplotlib  # noqa: F401  (optional: the plot extra)
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install \".[plot]\" in a ropescale clone") from None


def _save_plot(path: str, columns: Dict[str, Rope], original: float, target: float) -> None:
    import io
    try:
        from .plot import plot_periods
        fig = plot_periods(columns, original_len=original, target_len=target)
    except ImportError as e:
        raise UsageError(f"--plot: {e}") from None
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format=os.path.splitext(path)[1][1:].lower() or "png")
    # Written and closed here, so that a full disk or an unwritable file is an
    # error (exit 2), not a success message over a truncated file.
    try:
        with open(path, "wb") as f:
            f.write(buf.getvalue())
    except OSError as e:
        raise UsageError(f"--plot: cannot write {path!r}: {e.strerror or e}") from None


def _report(args, prog: str) -> int:
    m = _model(args)
    methods = REPORT_METHODS if args.method is None else (UNSCALED, args.method)
    r = report_data(methods=methods, original_len=m["original"], target_len=m["target"],
                    model=m["model_rope"], base_rope=m["base_rope"])
    plot_path = None if args.plot is None else _plot_path(args.plot)
    if plot_path is not None:
        _need_matplotlib()
    if plot_path is not None:
        columns = {name: _extended(m["base_rope"], name, m["original"], m["target"]) for name in methods}
        if m["model_rope"] is not None and m["model_rope"].method != UNSCALED:
            columns[f"model ({m['model_rope'].method})"] = m["model_rope"]
        _save_plot(plot_path, columns, m["original"], m["target"])
    if m["layers"] is not None:
        r["layers"] = m["layers"]
    model_rope = m["model_rope"]
    if model_rope is not None and model_rope.softmax_scale != 1.0:
        r["softmax_scale"] = model_rope.softmax_scale
    qt = None if model_rope is None else model_rope.query_temperature
    if qt is not None and m["layers"] is None:      # one rope on every layer (Ministral 3's llama_4_scaling_beta)
        r["query_scale"] = {"floor_scale": qt[0], "attn_scale": qt[1], "offset": qt[2]}
    if args.json:
        if args.hf is not None or args.gguf is not None:
            r["source"] = args.hf if args.hf is not None else args.gguf
        print(json.dumps(r, indent=2, allow_nan=False))
    else:
        text = _format_report(r, args.hf if args.hf is not None else args.gguf)
        if "softmax_scale" in r:
            text += (f"\nSoftmax scale (on 1/sqrt(d_qk), the attention applies it; not in cos/sin): "
                     f"{r['softmax_scale']:.6g}")
        if "query_scale" in r:
            q = r["query_scale"]
            p = f"(p + {q['offset']:g})" if q["offset"] else "p"
            text += (f"\nQuery scale (on every layer's queries, the attention applies it): "
                     f"1 + {q['attn_scale']:g} ln(1 + floor({p} / {q['floor_scale']:g}))")
        if m["layers"] is not None:
            text += "\n" + "\n".join(_format_layers(m["layers"]))
        print(text)
        if plot_path is not None:
            print(f"\nPlot saved to {plot_path}")
    return 0


# -- bench --------------------------------------------------------------------
def _bench_script() -> Optional[str]:
    """bench/bench.py of the checkout (or unpacked sdist) this ropescale runs from, or of the cwd."""
    here = os.path.dirname(os.path.abspath(__file__))
    for root in (os.path.join(here, os.pardir, os.pardir), os.getcwd()):
        path = os.path.normpath(os.path.join(root, "bench", "bench.py"))
        if os.path.isfile(path):
            return path
    return None


def _bench(args: List[str]) -> int:
    """Run ``bench/bench.py`` (default ``--quick``): benchmarks are not installed with the package."""
    script = _bench_script()
    if script is None:
        print("ropescale bench: the benchmarks live in bench/ of a source checkout or sdist, not in the "
              "installed package; run it from there (python bench/bench.py --quick)", file=sys.stderr)
        return 1
    return subprocess.call([sys.executable, script] + (args or ["--quick"]))


# -- entry point --------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None, prog: str = "ropescale") -> int:
    """Run the command line; returns the exit status (0 ok, 1 bench unavailable, 2 bad input).

    Examples
    --------
    >>> ropescale.cli.main(["--dim", "127"])
    2
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = "report"
    if args_list and args_list[0] in ("report", "bench", "precision", "eval", "parity", "lint"):
        command = args_list.pop(0)
    if command == "eval":  # parses its own arguments; needs the eval extra only when run
        from . import eval as _eval
        return _eval.main(args_list, prog=f"{prog} eval")
    try:
        if command == "bench":
            return _bench(args_list)
        if command == "precision":
            from . import precision
            p = _Parser(prog=f"{prog} precision", description=precision.__doc__.split("\n\n")[0])
            precision.add_arguments(p)
            args = p.parse_args(args_list)
            if args.plot is not None:
                _need_matplotlib()
            return precision.run_cli(args)
        if command in ("parity", "lint"):  # floor 6: rules per engine, traps per config
            from . import lint, parity
            module = parity if command == "parity" else lint
            p = _Parser(prog=f"{prog} {command}", description=module.__doc__.split("\n\n")[0])
            module.add_arguments(p)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # lint reports what matters; the rest is noise here
                return module.run_cli(p.parse_args(args_list))
        # Warnings (e.g. an assumed rope_theta) become one line each on stderr, after the report.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            status = _report(_report_parser(prog).parse_args(args_list), prog)
        for w in caught:
            print(f"{prog}: warning: {_one_line(w.message)}", file=sys.stderr)
        return status
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. ``| head``) went away: stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (ValueError, TypeError, OSError) as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
