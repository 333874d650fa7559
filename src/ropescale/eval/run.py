"""Running ``ropescale eval``: the methods as table columns, the model calls (greedy decoding, per-token loss)
and :func:`evaluate`, which measures every method at every length."""
from __future__ import annotations

import copy
import inspect
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..methods import ALIASES, METHODS, SPECS, UNSCALED, canonical, promoted
from ..rope import Rope
from ._common import (BATCH_TOKENS, DEFAULT_BUCKET, DEFAULT_DEPTHS, DEFAULT_PPL_TOLERANCE, DEFAULT_SCORE_TOKENS,
                      EvalError, _depth, _jsonable, _length, _one_line)
from .models import (_check_memory, _flops, _logit_rows, _model_device, _model_rope, _text_config,
                     _trained_length, available_memory, estimate_memory)
from .prompts import (PromptBuilder, _encode, _prefix_ids, default_texts, make_keys, perplexity_windows,
                      score_answer)
from .report import verdicts
from .stats import batch_means, wilson


DEFAULT_METHODS = ("none",) + tuple(m for m in METHODS if SPECS[m].eval_default and m != UNSCALED)
# Methods whose published form has its own parameters (MethodSpec.needs_published_params):
# a name alone would evaluate a made-up variant.
_NEEDS_SCALING = tuple(m for m in METHODS if SPECS[m].needs_published_params)
# The methods --methods takes by name: every registry method that Rope.extend builds.
_BY_NAME = tuple(m for m in METHODS if SPECS[m].extend is not None and m not in _NEEDS_SCALING)
_UNSCALED = ("none", UNSCALED)


@dataclass
class Method:
    """A column of the table: a method name scaled per length, or a fixed scaling dict."""
    name: str
    fixed: Optional[Dict[str, Any]] = None   # a --scaling dict, used at every length

    def rope(self, base: Rope, length: int, trained: int) -> Rope:
        if self.fixed is not None:
            sc = dict(self.fixed)
            if _takes_trained_length(sc):
                sc.setdefault("original_max_position_embeddings", trained)
            return Rope(base.dim, base.base, _with_prf(base, sc))
        if self.name in _UNSCALED or length <= trained:
            return base
        return base.extend(length, self.name, original_len=trained)


def _takes_trained_length(sc: Mapping[str, Any]) -> bool:
    """Whether a --scaling dict's method measures against the trained length (filled in when the dict has none)."""
    try:
        method = canonical(sc.get("rope_type", sc.get("type", UNSCALED)))
    except (TypeError, ValueError):
        return False   # Rope() says what is wrong with the dict
    return bool(SPECS[promoted(method, sc)].trained_length)


def _with_prf(base: Rope, sc: Dict[str, Any]) -> Dict[str, Any]:
    if base.scaling and "partial_rotary_factor" in base.scaling:
        sc.setdefault("partial_rotary_factor", base.scaling["partial_rotary_factor"])
    return sc


def parse_methods(text: str, scalings: Sequence[str] = ()) -> List[Method]:
    out: List[Method] = []
    for name in [m.strip() for m in text.split(",") if m.strip()] if text else []:
        name = ALIASES.get(name, name)
        if name in _NEEDS_SCALING:
            raise EvalError(f"--methods: {name} needs its own parameters; give it with --scaling JSON")
        if name not in _UNSCALED and name not in _BY_NAME:
            raise EvalError(f"--methods: unknown method {name!r}; known: none, " + ", ".join(_BY_NAME))
        out.append(Method("none" if name in _UNSCALED else name))
    for i, js in enumerate(scalings):
        try:
            sc = json.loads(js)
        except json.JSONDecodeError as e:
            raise EvalError(f"--scaling: not valid JSON ({e}): {js!r}") from None
        if not isinstance(sc, dict):
            raise EvalError(f"--scaling must be a JSON object (a rope_scaling dict), got {js!r}")
        sc = dict(sc)
        label = str(sc.pop("name", None) or sc.get("rope_type") or sc.get("type") or f"scaling{i + 1}")
        try:  # validate keys and values now, not after loading a model (the trained length comes later)
            probe = dict(sc)
            if _takes_trained_length(probe):
                probe.setdefault("original_max_position_embeddings", 4096)
            Rope(64, 10000.0, probe)
        except (TypeError, ValueError) as e:
            raise EvalError(f"--scaling {js}: {_one_line(e)}") from None
        out.append(Method(f"{label}*" if any(m.name == label for m in out) else label, sc))
    if not out:
        raise EvalError("--methods: no method given")
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise EvalError(f"--methods: a method is listed twice: {','.join(names)}")
    return out


def default_lengths(trained: int) -> List[int]:
    """Half the trained length, the trained length and twice it."""
    return [trained // 2, trained, trained * 2]


def _fingerprint(rope: Rope, length: int) -> Tuple:
    """Two ropes with the same fingerprint give the model the same positions at this length."""
    inv, attn = rope.inv_freq_at(length)
    # a rule that remembers lengths (transformers' dynamic NTK) is not a function of this length alone
    return (SPECS[rope.method].length_rule == "longest_seen", np.asarray(inv, dtype=np.float64).tobytes(),
            float(attn))


def _cache_arg(model) -> str:
    # transformers 5.x renamed past_key_values to cache
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _prefill(model, ids: Sequence[int]):
    """The KV cache after ``ids`` (shared by the prompts that start with them)."""
    import torch
    x = torch.tensor([list(ids)], dtype=torch.long, device=_model_device(model))
    out = model(input_ids=x, use_cache=True, logits_to_keep=1)
    past = getattr(out, "cache", None)
    return out.past_key_values if past is None else past


def _greedy(model, ids: Sequence[int], n_new: int, prefix: Optional[Tuple[int, Any]] = None) -> List[int]:
    """Greedy decoding of ``n_new`` tokens after ``ids``, with the KV cache.

    ``prefix = (n, cache)``: the cache after ``ids[:n]`` (from :func:`_prefill`);
    a copy is extended, so one cache serves every prompt sharing those tokens.
    """
    import torch
    name = _cache_arg(model)
    device = _model_device(model)
    kw: Dict[str, Any] = {}
    start = 0
    if prefix is not None:
        start, cache = prefix
        kw[name] = copy.deepcopy(cache)
    x = torch.tensor([list(ids[start:])], dtype=torch.long, device=device)
    out = model(input_ids=x, use_cache=True, logits_to_keep=1, **kw)
    new: List[int] = []
    for i in range(n_new):
        tok = int(out.logits[0, -1].argmax())
        new.append(tok)
        if i + 1 < n_new:
            past = getattr(out, "cache", None)
            past = out.past_key_values if past is None else past
            out = model(input_ids=torch.tensor([[tok]], device=device), use_cache=True, **{name: past})
    return new


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``seqs`` (at most one less than the shortest)."""
    n = min(len(q) for q in seqs) - 1
    first = seqs[0]
    for q in seqs[1:]:
        i = 0
        while i < n and q[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def token_nll(model, ids: Sequence[int]) -> np.ndarray:
    """Every token's negative log-likelihood (nats) after the ones before it: ``len(ids) - 1`` values.

    One forward pass of the decoder; the output head runs over a few rows at a
    time, so a long window never holds its ``length x vocabulary`` logits
    (4 GiB at 16k tokens of a 64k vocabulary).  Final-logit soft-capping
    (Gemma 2) is applied as the model's own ``forward`` applies it.
    """
    import torch
    device = _model_device(model)
    x = torch.tensor([list(ids)], dtype=torch.long, device=device)
    hidden = model.get_decoder()(input_ids=x, use_cache=False).last_hidden_state[0, :-1]
    head = model.get_output_embeddings()
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    target = x[0, 1:]
    rows = _logit_rows(head.weight.shape[0])
    out = torch.empty(len(target), dtype=torch.float64, device=device)
    for s in range(0, len(target), rows):
        logits = head(hidden[s:s + rows]).float()
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        logp = torch.log_softmax(logits, dim=-1)
        out[s:s + rows] = -logp.gather(1, target[s:s + rows, None])[:, 0].double()
    return out.cpu().numpy()


@dataclass
class Cell:
    method: str
    length: int
    factor: float
    scaling: Optional[Dict[str, Any]]
    passkey: Dict[str, Any] = field(default_factory=dict)
    perplexity: Dict[str, Any] = field(default_factory=dict)
    loss: List[Dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    same_as: Optional[str] = None
    layers: Optional[Dict[str, Any]] = None


def _scaling_json(rope: Rope) -> Optional[Dict[str, Any]]:
    return rope.to_hf().get("rope_scaling")


def evaluate(model, tokenizer, *, methods: Sequence[Any] = DEFAULT_METHODS, lengths: Optional[Sequence[int]] = None,
             depths: Sequence[float] = DEFAULT_DEPTHS, trials: int = 1, seed: int = 0,
             text: Optional[str] = None, text_source: str = "",
             texts: Optional[Sequence[Tuple[str, str]]] = None, score_tokens: int = DEFAULT_SCORE_TOKENS,
             bucket: int = DEFAULT_BUCKET,
             trained_length: Optional[int] = None, tasks: Sequence[str] = ("passkey", "perplexity"),
             ppl_tolerance: float = DEFAULT_PPL_TOLERANCE, max_memory: Optional[int] = None,
             progress: bool = True, model_info: Optional[Dict[str, Any]] = None,
             on_cell: Optional[Any] = None, done: Optional[Mapping[str, Any]] = None,
             layer_types: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run pass key and loss by position for each method at each length; returns the JSON-ready results.

    ``methods``: names (``"none"`` and any of ``ropescale.METHODS`` that
    :meth:`Rope.extend` can scale) or :class:`Method` objects.  ``texts``:
    ``(text, source)`` pairs for the loss (default :func:`default_texts`;
    ``text`` alone is one text).  Every token of each window is scored; the
    first text's last ``score_tokens`` tokens give the perplexity column.
    The model runs on its own device (move it first).  The model is left with
    its original rope afterwards.  ``on_cell(cells)`` is called after each
    measured cell with the list of finished cells (as JSON dicts), e.g. to
    save partial results of a long run; ``done`` takes ``{"settings": ...,
    "results": cells}`` (what ``on_cell`` was given) back and skips the cells
    it holds (same method, length and rope); a run with other settings is
    refused.  ``layer_types``:
    which layer types of a per-layer-type model a method rescales (default:
    :func:`ropescale.hf.patch`'s, the full-attention layers).
    """
    import torch
    t_start, cpu_start = time.perf_counter(), time.process_time()
    load_start = _loadavg()
    config = _text_config(model)
    base = _model_rope(model)
    trained = trained_length or _trained_length(model.config)
    if not trained:
        raise EvalError("the model's config gives no max_position_embeddings; pass --trained N")
    methods = [m if isinstance(m, Method) else parse_methods(m)[0] for m in methods]
    lengths = sorted({_length(L) for L in (lengths or default_lengths(trained))})
    depths = [_depth(d) for d in depths]
    tasks = list(tasks)
    _check_tasks(tasks, depths, trials, bucket)
    params = int(sum(p.numel() for p in model.parameters()))
    weight_bytes = int(sum(p.numel() * p.element_size() for p in model.parameters()))
    dtype_bytes = next(model.parameters()).element_size()
    threads = torch.get_num_threads()
    device = _model_device(model)
    memory = {L: estimate_memory(config, L, weight_bytes=weight_bytes, dtype_bytes=dtype_bytes,
                                 score_tokens=score_tokens, threads=threads) for L in lengths}
    limit = max_memory if max_memory is not None else available_memory()
    if limit is not None:
        _check_memory(memory, limit)

    windows: List[Dict[int, Tuple[int, int]]] = []
    text_ids: List[List[int]] = []
    text_info: List[Dict[str, Any]] = []
    if "perplexity" in tasks:
        if texts is None:
            texts = [(text, text_source)] if text is not None else default_texts()
        windows, text_ids, text_info = _loss_texts(tokenizer, texts, lengths, score_tokens)
    prefix = _prefix_ids(tokenizer)

    builder = PromptBuilder(tokenizer) if "passkey" in tasks else None
    keys = make_keys(seed, trials * len(depths))

    cells, work = _plan_cells(methods, lengths, base, trained)
    settings = {"tasks": tasks, "depths": depths, "trials": trials, "seed": seed, "score_tokens": score_tokens,
                "texts": text_info}
    if done is not None and _jsonable_settings(done.get("settings") or {}) != _jsonable_settings(settings):
        raise EvalError(f"--resume: {done.get('path', 'the earlier run')} was run with other settings "
                        f"({done.get('settings')}), not {_jsonable_settings(settings)}")
    finished: List[Cell] = [c for c, _ in work if _resume(c, (done or {}).get("results") or ())]

    n_pk = len(depths) * trials if "passkey" in tasks else 0

    def cost(L):
        return (n_pk + len(windows)) * _flops(config, L, params)

    todo = [(c, r) for c, r in work if c not in finished]
    bar = _progress(sum(cost(c.length) for c, _ in todo), progress,
                    f"1/{len(todo)} {todo[0][0].method} @ {todo[0][0].length:,}" if todo else "")
    try:
        with torch.inference_mode():
            for i, (cell, rope) in enumerate(todo):
                bar.set_description_str(f"{i + 1}/{len(todo)} {cell.method} @ {cell.length:,}")
                t0 = time.perf_counter()
                cell.layers = _patch(model, rope, layer_types)
                per = _flops(config, cell.length, params)
                if builder is not None:
                    cell.passkey = _passkeys(model, tokenizer, builder, cell.length, depths, trials, keys,
                                             lambda: bar.update(per))
                _losses(model, cell, text_ids, windows, prefix, score_tokens, lambda: bar.update(per))
                cell.seconds = time.perf_counter() - t0
                finished.append(cell)
                if on_cell is not None:
                    on_cell([_cell_json(c) for c in finished], settings)
    finally:
        bar.close()
        _patch(model, base, None)
    for cell in cells:
        if cell.same_as is not None:
            src = next(c for c in cells if c.same_as is None and c.method == cell.same_as and c.length == cell.length)
            cell.passkey, cell.perplexity, cell.loss = src.passkey, src.perplexity, src.loss

    result = {
        "ropescale": _version(),
        "model": dict(model_info or {}, trained_length=trained),
        "task": {"tasks": tasks, "depths": depths, "trials": trials, "seed": seed, "score_tokens": score_tokens,
                 "text": text_info[0] if text_info else None, "texts": text_info, "bucket": bucket,
                 "batch": BATCH_TOKENS, "ppl_tolerance": ppl_tolerance, "device": str(device)},
        "methods": [{"name": m.name, "scaling": m.fixed} for m in methods],
        "lengths": lengths,
        "memory_estimate": {str(L): memory[L] for L in lengths},
        "results": [_cell_json(c) for c in cells],
        "timings": {"total_seconds": time.perf_counter() - t_start, "cpu_seconds": time.process_time() - cpu_start,
                    "peak_rss_bytes": _peak_rss(), "threads": threads, "cpu_count": os.cpu_count(),
                    "load_average": [load_start, _loadavg()],
                    "resumed_cells": len(work) - len(todo)},
        "versions": versions(),
    }
    result["verdicts"] = verdicts(result)
    return result


def _check_tasks(tasks: Sequence[str], depths: Sequence[float], trials: Any, bucket: Any) -> None:
    if not set(tasks) <= {"passkey", "perplexity"} or not tasks:
        raise EvalError(f"--tasks must name passkey and/or perplexity, got {','.join(tasks)}")
    if "passkey" in tasks and not depths:
        raise EvalError("--depths: no depth given")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise EvalError(f"--trials must be a positive integer, got {trials!r}")
    if isinstance(bucket, bool) or not isinstance(bucket, int) or bucket <= 0 or bucket % BATCH_TOKENS:
        raise EvalError(f"--bucket must be a positive multiple of {BATCH_TOKENS} tokens, got {bucket!r}")


def _loss_texts(tokenizer, texts: Sequence[Tuple[str, str]], lengths: Sequence[int], score_tokens: int):
    """``(windows, token ids, info)`` per text of the loss by position: each text's windows at every length."""
    windows, text_ids, text_info = [], [], []
    for body, source in texts:
        if not body or not body.strip():
            raise EvalError(f"--text: the text is empty{' (' + source + ')' if source else ''}")
        ids = _encode(tokenizer, body)
        try:
            windows.append(perplexity_windows(len(ids), lengths, score_tokens))
        except EvalError as e:
            raise EvalError(f"{e} ({source})" if source else str(e)) from None
        text_ids.append(ids)
        text_info.append({"source": source, "tokens": len(ids)})
    return windows, text_ids, text_info


def _plan_cells(methods: Sequence[Method], lengths: Sequence[int], base: Rope, trained: int):
    """``(cells, work)``: a cell per method and length, and the ``(cell, rope)`` pairs to run: one run per
    distinct rope at each length, the other cells pointing at it (``same_as``)."""
    first: Dict[Tuple, Cell] = {}
    cells: List[Cell] = []
    work: List[Tuple[Cell, Rope]] = []
    for L in lengths:
        for m in methods:
            rope = m.rope(base, L, trained)
            cell = Cell(m.name, L, float(rope.factor) if rope.scaling else 1.0,
                        _scaling_json(rope) if rope.scaling else None)
            fp = (L, _fingerprint(rope, L))
            if fp in first:
                cell.same_as = first[fp].method
            else:
                first[fp] = cell
                work.append((cell, rope))
            cells.append(cell)
    return cells, work


def _losses(model, cell: Cell, text_ids, windows, prefix: List[int], score_tokens: int, tick) -> None:
    """The loss by position of every text at the cell's length (the first text's end: the perplexity)."""
    for t, (ids, w) in enumerate(zip(text_ids, windows)):
        a, b = w[cell.length]
        # every window starts with the tokenizer's special prefix (BOS), as a document would
        nll = token_nll(model, prefix + ids[a + len(prefix):b])
        means, counts = batch_means(nll)
        last = float(nll[-score_tokens:].mean())
        cell.loss.append({"text": t, "window": [a, b], "batch": BATCH_TOKENS,
                          "batch_nll": [round(v, 6) for v in means], "batch_tokens": counts,
                          "mean_nll": float(nll.mean()), "last_nll": last})
        if t == 0:
            cell.perplexity = {"value": math.exp(last), "nll": last, "tokens": score_tokens, "window": [a, b]}
        tick()


def _patch(model, rope: Rope, layer_types) -> Optional[Dict[str, Any]]:
    """Put ``rope`` into the model; for per-layer-type models, the rope of each layer type afterwards."""
    from .. import hf
    hf.patch(model, rope, layer_types=layer_types)
    params = getattr(_text_config(model), "rope_parameters", None) or {}
    per_type = {k: dict(v) for k, v in params.items() if isinstance(v, Mapping)}
    return per_type or None


def _passkeys(model, tokenizer, builder, length, depths, trials, keys, tick) -> Dict[str, Any]:
    """``trials`` keys at each depth; the prompts at one depth share the KV cache of their common start."""
    runs: List[Dict[str, Any]] = []
    for j, d in enumerate(depths):
        prompts = [builder.build(length, d, keys[t * len(depths) + j]) for t in range(trials)]
        shared = None
        if trials > 1:
            n = _common_prefix([p.ids for p in prompts])
            if n > 0:
                shared = (n, _prefill(model, prompts[0].ids[:n]))
        for t, p in enumerate(prompts):
            new = _greedy(model, p.ids, len(p.answer_ids) + 2, shared)
            answer = tokenizer.decode(new, skip_special_tokens=True)
            exact, right = score_answer(answer, p.key)
            runs.append({"depth": d, "trial": t, "key": p.key, "answer": answer, "correct": exact,
                         "digits_right": right, "key_position": p.key_start})
            tick()
    runs.sort(key=lambda r: (r["trial"], depths.index(r["depth"])))
    k = sum(r["correct"] for r in runs)
    lo, hi = wilson(k, len(runs))
    return {"accuracy": k / len(runs), "found": k, "n": len(runs), "interval": [lo, hi],
            "digits": sum(r["digits_right"] for r in runs) / (5 * len(runs)), "runs": runs}


def _resume(cell: Cell, done: Sequence[Mapping[str, Any]]) -> bool:
    """Fill ``cell`` from a finished cell of an earlier run with the same settings; False if there is none."""
    for c in done:
        if (c.get("method"), c.get("length"), c.get("scaling")) == (cell.method, cell.length, cell.scaling) \
                and c.get("seconds"):
            cell.passkey, cell.perplexity = c.get("passkey") or {}, c.get("perplexity") or {}
            cell.loss, cell.seconds, cell.layers = c.get("loss") or [], c.get("seconds", 0.0), c.get("layers")
            return True
    return False


def _jsonable_settings(settings: Mapping[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(settings, default=_jsonable))


def _peak_rss() -> Optional[int]:
    try:
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)
    except (ImportError, OSError):
        return None


def _loadavg() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _cell_json(c: Cell) -> Dict[str, Any]:
    return {"method": c.method, "length": c.length, "factor": c.factor, "scaling": c.scaling,
            "same_as": c.same_as, "seconds": c.seconds, "layers": c.layers,
            "passkey": c.passkey or None, "perplexity": c.perplexity or None, "loss": c.loss or None}


def _progress(total: float, enabled: bool, desc: str = ""):
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not enabled:
        class _Null:
            def update(self, n): pass
            def set_description_str(self, s): pass
            def close(self): pass
        return _Null()
    return tqdm(total=total, desc=desc, unit="flop", unit_scale=True, file=sys.stderr, dynamic_ncols=True,
                bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")


def versions() -> Dict[str, Optional[str]]:
    from importlib import metadata
    v: Dict[str, Optional[str]] = {"python": platform.python_version(), "ropescale": _version(),
                                   "platform": platform.platform()}
    for name in ("numpy", "torch", "transformers", "gguf", "accelerate", "tqdm"):
        try:
            v[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            v[name] = None
    return v


def _version() -> str:
    from .. import __version__
    return __version__
