"""The ``ropescale`` command (also ``python -m ropescale``).

``ropescale [report] [options]`` plans a context extension: the period-matching
base, the YaRN correction range, the critical pair and each method's per-pair
periods.  ``ropescale bench`` runs the quick benchmark.  Errors in arguments
or input files exit with status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from . import __version__
from ._freq import ntk_lambda, yarn_correction_range
from .analysis import analyze, format_table
from .rope import Rope

__all__ = ["main", "report_data", "REPORT_METHODS"]

#: The methods ``ropescale report`` compares.
REPORT_METHODS = ("default", "linear", "ntk", "dynamic", "yarn", "llama3")

_DESCRIPTION = """\
Plan a RoPE context extension.  With no arguments, reports on a default model
(head dim 128, base 10000) extended from 4096 to 32768 tokens: the base-scaling
factor lambda = s^(d/(d-2)) and new base, the period-matching check, the YaRN
correction range, the critical pair, and per-pair periods (tokens) under
default, linear, ntk, dynamic (at the target length), yarn and llama3
(low_freq_factor 1, high_freq_factor 4).
"""

_EPILOG = """\
commands:
  report (default)  the report above; options as listed
  bench             run the quick benchmark (ropescale bench --help)
  eval              pass key and perplexity on a real model (ropescale eval --help)

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
    p.add_argument("--method", choices=REPORT_METHODS[1:], default=None, metavar="M",
                   help="report only this method (and default); one of " + ", ".join(REPORT_METHODS[1:]))
    p.add_argument("--hf", metavar="CONFIG", default=None,
                   help="read head dim, base and context from a Hugging Face config.json")
    p.add_argument("--gguf", metavar="FILE", default=None,
                   help="read head dim, base, scaling and context from a llama.cpp GGUF file")
    p.add_argument("--plot", metavar="FILE", default=None,
                   help="also save a plot of the periods (needs matplotlib: pip install 'ropescale[plot]')")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.add_argument("--version", action="version", version=f"ropescale {__version__}")
    return p


def _bench_parser(prog: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"{prog} bench", description="Run ropescale's quick benchmark and print its rows.")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    return p


# -- report -------------------------------------------------------------------
def _model(args) -> Dict[str, Any]:
    """The base (unscaled) rope and the two lengths, from flags or a config."""
    model_rope = None
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
        original = args.original or model_rope.original_max_position_embeddings or max_pos
        if original is None:
            raise UsageError(f"{source}: the model gives no context length; pass --original N")
        if args.target is not None:
            target = args.target
        elif model_rope.method != "default" and max_pos is not None and max_pos > original:
            target = max_pos
        elif model_rope.method != "default" and model_rope.factor > 1:
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
    return {"base_rope": base_rope, "model_rope": model_rope, "original": original, "target": target}


def _extended(base_rope: Rope, method: str, original: float, target: float) -> Rope:
    if method == "default":
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
    columns: Dict[str, Rope] = {}
    for method in methods:
        columns[method] = _extended(rope0, method, m_l, m)
    if model is not None and model.method != "default":
        columns[f"model ({model.method})"] = model
    analyses = {name: analyze(r, target_len=m, original_len=m_l) for name, r in columns.items()}
    ntk = analyses.get("ntk") or analyze(_extended(rope0, "ntk", m_l, m), target_len=m, original_len=m_l)
    p_ntk, p_lin = float(ntk.period_after[-1]), s * float(ntk.period_before[-1])
    lo, hi = yarn_correction_range(d, b, max(m_l, 1.0))
    kc = ntk.critical_dim
    n = d // 2
    marks: Dict[int, str] = {}
    for k, text in ((int(lo), "yarn lo"), (int(math.ceil(hi)), "yarn hi"), (kc, "critical")):
        if 0 <= k < n:
            marks[k] = f"{marks[k]}, {text}" if k in marks else text
    pairs = _pair_subset(n, marks)
    return {
        "model": {"dim": rope0.dim, "rotary_dim": d, "base": b, "original_len": m_l, "target_len": m,
                  "factor": s, "method": model.method if model is not None else None},
        "ntk": {"lambda": lam, "new_base": lam * b, "lowest_period_ntk": p_ntk,
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


def _fmt_tokens(v: Optional[float]) -> str:
    if v is None:
        return "inf"
    if v < 1e4:
        return f"{v:.5g}"
    if v < 1e9:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def _format_report(r: Dict[str, Any], source: Optional[str]) -> str:
    md, nt = r["model"], r["ntk"]
    d = md["rotary_dim"]
    rot = f" (rotary {d})" if d != md["dim"] else ""
    src = f" from {source}" if source else ""
    lines = [
        f"RoPE extension plan{src}: head dim {md['dim']}{rot}, base {md['base']:g}, "
        f"{md['original_len']:,.0f} -> {md['target_len']:,.0f} tokens (s = {md['factor']:g})",
        "",
        "Base scaling by period matching (ntk):",
        f"  lambda = s^(d/(d-2))           {nt['lambda']:.6f}",
        f"  new base = lambda * b          {nt['new_base']:,.2f}",
        f"  lowest pair period, ntk        {nt['lowest_period_ntk']:,.2f} tokens",
        f"  s x original lowest period     {nt['lowest_period_linear']:,.2f} tokens",
        f"  relative error                 {nt['relative_error']:.2e}",
        "",
    ]
    lo, hi = r["yarn_correction_range"]
    lines.append(f"YaRN correction range (beta_fast 32, beta_slow 1): pairs {lo:g} .. {hi:g}")
    kc = r["critical_dim"]
    if r["critical_period"] is None:
        lines.append(f"Critical dim: none (every pair completes a rotation within {md['original_len']:,.0f} tokens)")
    else:
        lines.append(f"Critical dim: pair {kc} (first pair whose period, {r['critical_period']:,.0f} tokens, "
                     f"exceeds {md['original_len']:,.0f}; {2 * kc} of {d} rotary features rotate fully in training)")
    names = list(r["periods"])
    notes = [text for name, text in (("dynamic", "dynamic at the target length"),
                                     ("llama3", "llama3 low_freq_factor 1, high_freq_factor 4")) if name in names]
    lines += ["", "Per-pair periods in tokens" + (f" ({'; '.join(notes)})" if notes else "") + ":"]
    head = ["k"] + names + ["note"]
    body = []
    for i, k in enumerate(r["pairs"]):
        body.append([str(k)] + [_fmt_tokens(r["periods"][name][i]) for name in names] + [r["marks"].get(str(k), "")])
    lines.append(format_table(head, body))
    attn = {name: a for name, a in r["attention_factor"].items() if a != 1.0}
    if attn:
        lines.append("")
        lines.append("Attention factor (multiplies cos and sin): "
                     + ", ".join(f"{name} {a:.6g}" for name, a in attn.items()))
    return "\n".join(lines)


def _save_plot(path: str, columns: Dict[str, Rope], original: float, target: float) -> None:
    try:
        from .plot import plot_periods
        fig = plot_periods(columns, original_len=original, target_len=target)
    except ImportError as e:
        raise UsageError(f"--plot: {e}") from None
    fig.savefig(path, dpi=120)


def _report(args, prog: str) -> int:
    m = _model(args)
    methods = REPORT_METHODS if args.method is None else ("default", args.method)
    r = report_data(methods=methods, original_len=m["original"], target_len=m["target"],
                    model=m["model_rope"], base_rope=m["base_rope"])
    if args.plot is not None:
        columns = {name: _extended(m["base_rope"], name, m["original"], m["target"]) for name in methods}
        if m["model_rope"] is not None and m["model_rope"].method != "default":
            columns[f"model ({m['model_rope'].method})"] = m["model_rope"]
        _save_plot(args.plot, columns, m["original"], m["target"])
    if args.json:
        if args.hf is not None or args.gguf is not None:
            r["source"] = args.hf if args.hf is not None else args.gguf
        print(json.dumps(r, indent=2, allow_nan=False))
    else:
        print(_format_report(r, args.hf if args.hf is not None else args.gguf))
        if args.plot is not None:
            print(f"\nPlot saved to {args.plot}")
    return 0


# -- bench --------------------------------------------------------------------
def _rows_table(rows: Any) -> str:
    rows = list(rows)
    if not rows:
        return "(no rows)"
    if all(isinstance(r, dict) for r in rows):
        head: List[str] = []
        for r in rows:
            head += [k for k in r if k not in head]
        body = [[_cell(r.get(k, "")) for k in head] for r in rows]
        return format_table([str(h) for h in head], body)
    if all(isinstance(r, (list, tuple)) for r in rows):
        width = max(len(r) for r in rows)
        body = [[_cell(c) for c in r] + [""] * (width - len(r)) for r in rows]
        return format_table(body[0], body[1:]) if len(body) > 1 else format_table(body[0], [])
    return "\n".join(str(r) for r in rows)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _bench(args) -> int:
    try:
        bench_module = importlib.import_module("ropescale._bench")
    except ModuleNotFoundError as e:
        if e.name != "ropescale._bench":
            raise
        print("ropescale bench: the benchmark module (ropescale._bench) is not available in this installation",
              file=sys.stderr)
        return 1
    run_quick = getattr(bench_module, "run_quick", None)
    if run_quick is None:
        print("ropescale bench: ropescale._bench has no run_quick()", file=sys.stderr)
        return 1
    rows = run_quick()
    if args.json:
        print(json.dumps(list(rows), indent=2, default=str))
    elif hasattr(bench_module, "markdown_table") and hasattr(bench_module, "machine_info"):
        print("\n".join(bench_module.header_lines(bench_module.machine_info())))
        print()
        print(bench_module.markdown_table(rows))
    else:
        print(_rows_table(rows))
    return 0


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
    if args_list and args_list[0] in ("report", "bench", "eval"):
        command = args_list.pop(0)
    if command == "eval":  # parses its own arguments; needs the eval extra only when run
        from . import eval as _eval
        return _eval.main(args_list, prog=f"{prog} eval")
    try:
        if command == "bench":
            return _bench(_bench_parser(prog).parse_args(args_list))
        return _report(_report_parser(prog).parse_args(args_list), prog)
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


def console_main() -> None:  # pragma: no cover - thin wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
