"""The texts ``ropescale eval`` feeds a model: pass-key prompts of an exact token length, and the long texts
of the loss by position with their windows."""
from __future__ import annotations

import importlib.util
import os
import platform
import random
import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from ._common import EvalError, _depth, _length


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
