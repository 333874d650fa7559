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

The parts: :mod:`.prompts` (pass-key prompts, the texts and their windows),
:mod:`.models` (finding and loading a model, what a length costs),
:mod:`.run` (:func:`evaluate` and the model calls), :mod:`.stats` (the
intervals), :mod:`.report` (verdicts, comparisons, the table and the plot) and
:mod:`.command` (``ropescale eval``).
"""
# Every public name of the parts stays importable from here, as when this was one module (__all__ unchanged).
from ._common import (BATCH_TOKENS, DEFAULT_BUCKET, DEFAULT_DEPTHS, DEFAULT_PPL_TOLERANCE,  # noqa: F401
                      DEFAULT_SCORE_TOKENS, DEFAULT_TRIALS, MAX_LENGTH, EvalError)
from .command import main, parser  # noqa: F401
from .models import (DEFAULT_MODEL, MODELS, available_memory, default_model_path, estimate_memory,  # noqa: F401
                     gemma3_path, gguf_memory_estimate, load_model, model_path)
from .prompts import (PasskeyPrompt, PromptBuilder, build_passkey_prompt, default_text, default_texts,  # noqa: F401
                      make_keys, perplexity_windows, score_answer, source_text)
from .report import comparisons, format_table, loss_curves, plot, verdict_line, verdicts  # noqa: F401
from .run import (DEFAULT_METHODS, Cell, Method, default_lengths, evaluate, parse_methods,  # noqa: F401
                  token_nll, versions)
from .stats import (batch_means, mean_interval, paired_difference, position_buckets,  # noqa: F401
                    proportion_difference, t_quantile, wilson)


__all__ = [
    "DEFAULT_DEPTHS", "DEFAULT_METHODS", "EvalError", "MODELS", "PasskeyPrompt", "batch_means",
    "build_passkey_prompt", "comparisons", "default_model_path", "default_text", "default_texts",
    "estimate_memory", "evaluate", "gemma3_path", "gguf_memory_estimate", "loss_curves", "main", "mean_interval",
    "model_path", "paired_difference", "perplexity_windows", "position_buckets", "proportion_difference",
    "score_answer", "token_nll", "verdicts", "wilson",
]
