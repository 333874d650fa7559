"""Check one ``config.json`` for the RoPE settings that engines read differently.

Each check is one row of :data:`CHECKS`: a code, a severity, a one-line reason
and the engines it affects (the rules behind them are in
:mod:`ropescale.parity` and ``docs/parity.md``).  :func:`lint` returns the
findings; ``ropescale lint CONFIG`` prints them and exits 0 (clean),
1 (warnings) or 2 (errors, or a config that cannot be read).  ``--fix`` writes
the config with one normalized transformers-5 ``rope_parameters`` block whose
``Rope.from_hf`` is identical to the original's, and refuses when it would not be.

Examples
--------
>>> cfg = {"hidden_size": 2880, "num_attention_heads": 64, "head_dim": 64, "max_position_embeddings": 131072,
...        "rope_theta": 150000.0, "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "truncate": False,
...        "original_max_position_embeddings": 4096}}
>>> [f.code for f in ropescale.lint.lint(cfg)]
['yarn-truncate']
"""
from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ._freq import yarn_mscale as _mscale
from .configs import _text_config, read_config, rope_blocks as _blocks
from .methods import ALIASES, FACTOR_LISTS, LONGROPE, SPECS, UNSCALED, YARN
from .rope import Rope

__all__ = ["CHECKS", "Finding", "lint", "fix"]

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Check:
    code: str
    severity: str
    reason: str
    engines: str


CHECKS: Dict[str, Check] = {c.code: c for c in [
    Check("mscale-without-all-dim", WARNING, "YaRN mscale without mscale_all_dim: transformers ignores mscale "
          "(0.1 ln s + 1), mlx-lm and the DeepSeek ropes of vLLM/SGLang use mscale(s, mscale)",
          "mlx-lm, vLLM and SGLang (deepseek_yarn)"),
    Check("mscale-pair-ignored", WARNING, "YaRN mscale/mscale_all_dim give a cos/sin factor other than "
          "0.1 ln s + 1, and some engines read neither", "older releases: vLLM at 926c71f, SGLang at eb047c1"),
    Check("attention-factor-dropped", WARNING, "an explicit attention_factor differs from the computed one, and "
          "some engines do not read it", "SGLang, mlx-lm, vLLM at 926c71f, LongRoPE in vLLM/SGLang/mlx-lm"),
    Check("yarn-truncate", WARNING, "YaRN truncate: false (fractional correction range) is ignored by engines "
          "that always truncate", "llama.cpp, mlx-lm, vLLM before PR #28244, SGLang before #14270"),
    Check("missing-original", WARNING, "no original_max_position_embeddings in the rope block: transformers falls "
          "back to max_position_embeddings, vLLM and SGLang read the key from the block and fail to load",
          "vLLM, SGLang"),
    Check("v4-v5-disagree", ERROR, "rope_scaling (v4) and rope_parameters (v5) are both present and disagree: "
          "which one an engine reads decides the model", "every engine (vLLM PR #28542, SGLang PR #14745)"),
    Check("v5-only", WARNING, "scaling or θ only in rope_parameters (v5): readers of v4 keys run the model "
          "unscaled at θ = 10000", "vLLM before PR #28542, SGLang before PR #14745"),
    Check("theta-missing", WARNING, "no rope_theta: each engine falls back to its own default (transformers: the "
          "model type's, vLLM/SGLang get_rope: 10000)", "every engine"),
    Check("longrope-factor-length", ERROR, "a LongRoPE factor list is not one value per rotary pair",
          "every engine (shape error or wrong pairing)"),
    Check("max-pos-mismatch", WARNING, "max_position_embeddings is not factor x original: engines that derive one "
          "from the other (LongRoPE's cos/sin scale, vLLM's YaRN cache of original x factor positions) disagree",
          "vLLM, SGLang, mlx-lm, transformers"),
    Check("partial-rotary-conflict", ERROR, "the partial-rotary keys (partial_rotary_factor, rotary_pct, "
          "rotary_dim, in and out of the rope block) give different rotary widths", "every engine"),
    Check("unknown-key", WARNING, "a rope key no engine reads for this rope type (a typo or a key from another "
          "family) is silently ignored", "every engine"),
]}

# Keys any rope block may carry besides its method's own.
_GENERAL_KEYS = {"rope_type", "type", "rope_theta", "partial_rotary_factor", "attention_factor", "mrope_section",
                 "mrope_interleaved", "original_max_position_embeddings", "max_position_embeddings"}
# Keys a model family reads from its rope block (transformers' modeling file of that type).
_MODEL_KEYS = {"ministral3": {"llama_4_scaling_beta"}, "mistral4": {"llama_4_scaling_beta"},
               "mistral3": {"llama_4_scaling_beta"}}


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    message: str
    engines: str

    def format(self) -> str:
        return f"{self.severity}: {self.code}: {self.message} [{self.engines}]"

    def to_dict(self) -> Dict[str, str]:
        return {"code": self.code, "severity": self.severity, "message": self.message, "engines": self.engines}


def _find(code: str, detail: str) -> Finding:
    c = CHECKS[code]
    return Finding(code, c.severity, f"{c.reason} ({detail})", c.engines)


def _load(config: Any) -> Tuple[Dict[str, Any], str]:
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        return dict(read_config(path)), path
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict or a config.json path, got {type(config).__name__}")
    return dict(config), "config"


def _method(block: Optional[Mapping[str, Any]]) -> str:
    if not block:
        return UNSCALED
    name = block.get("rope_type", block.get("type", UNSCALED))
    return ALIASES.get(name, name) if isinstance(name, str) else UNSCALED


def lint(config: Any) -> List[Finding]:
    """The traps in one config (a dict or a ``config.json`` path), errors first.

    A config ``Rope.from_hf`` cannot read raises its ValueError/TypeError.
    """
    cfg, _ = _load(config)
    text, model_type = _text_config(cfg)   # where Rope.from_hf reads the language model's rope
    model_type = str(model_type or "")
    v4, v5 = _blocks(text)
    block = v5 if v5 is not None else (v4 or {})
    method = _method(block)
    out: List[Finding] = []

    if v4 is not None and v5 is not None:
        bad = sorted(k for k in set(v4) & set(v5) if v4[k] != v5[k] and k not in ("type", "rope_type"))
        if _method(v4) != _method(v5):
            bad.insert(0, "rope_type")
        if bad:
            out.append(_find("v4-v5-disagree", "differ: " + ", ".join(bad)))
    if "rope_theta" in text and v5 is not None and "rope_theta" in v5 and float(text["rope_theta"]) != \
            float(v5["rope_theta"]):
        out.append(_find("v4-v5-disagree", f"rope_theta {text['rope_theta']} vs rope_parameters' {v5['rope_theta']}"))
    if v5 is not None and v4 is None and ("rope_theta" not in text or method != UNSCALED):
        out.append(_find("v5-only", f"rope_type {method}, θ {v5.get('rope_theta', '?')}"))
    theta_keys = ("rope_theta", "rotary_emb_base", "rope_ratio")
    keyed = text.get("rope_parameters")
    # transformers 5 keyed by layer type (Gemma 4): every entry gives its own theta
    keyed_theta = isinstance(keyed, Mapping) and bool(keyed) and all(
        isinstance(v, Mapping) and "rope_theta" in v for v in keyed.values())
    if not any(k in text for k in theta_keys) and not (v5 and "rope_theta" in v5) and \
            not (v4 and "rope_theta" in v4) and not keyed_theta:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            base = Rope.from_hf(cfg).base
        if base != 10000.0:  # vLLM's and SGLang's get_rope default
            out.append(_find("theta-missing", f"transformers' default for {model_type or '?'} is {base:g}"))

    out += _partial_rotary(text, block)
    if method in SPECS:
        out += _method_checks(text, block, method, model_type)
    order = {ERROR: 0, WARNING: 1}
    rope_errors = [f for f in out if f.code in ("longrope-factor-length", "partial-rotary-conflict")]
    if not rope_errors:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Rope.from_hf(cfg)  # anything it refuses is an error of the config itself
    return sorted(out, key=lambda f: order[f.severity])


def _partial_rotary(text: Mapping[str, Any], block: Mapping[str, Any]) -> List[Finding]:
    head = text.get("head_dim") or (text.get("hidden_size", 0) // max(1, text.get("num_attention_heads", 1) or 1))
    widths = {}
    for where, key, value in (("top level", "partial_rotary_factor", text.get("partial_rotary_factor")),
                              ("rope block", "partial_rotary_factor", block.get("partial_rotary_factor")),
                              ("top level", "rotary_pct", text.get("rotary_pct"))):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and head:
            widths[f"{key} ({where}) {value}"] = int(head * value)
    if isinstance(text.get("rotary_dim"), int):
        widths[f"rotary_dim {text['rotary_dim']}"] = text["rotary_dim"]
    if len(set(widths.values())) > 1:
        return [_find("partial-rotary-conflict", "; ".join(f"{k} -> {v}" for k, v in widths.items()))]
    return []


def _n_pairs(text: Mapping[str, Any], block: Mapping[str, Any]) -> Optional[int]:
    head = text.get("head_dim") or (text.get("hidden_size", 0) // max(1, text.get("num_attention_heads", 1) or 1))
    prf = block.get("partial_rotary_factor", text.get("partial_rotary_factor", 1.0))
    return int(head * prf) // 2 if head else None


def _method_checks(text, block, method, model_type) -> List[Finding]:
    spec = SPECS[method]
    out = []
    known = set(spec.keys) | _GENERAL_KEYS | _MODEL_KEYS.get(model_type, set())
    unknown = sorted(k for k in block if k not in known)
    if unknown:
        out.append(_find("unknown-key", f"rope_type {method}: {', '.join(unknown)}"))
    orig = block.get("original_max_position_embeddings", text.get("original_max_position_embeddings"))
    if "original_max_position_embeddings" in spec.required and orig is None and spec.hf_trained_length == "original":
        out.append(_find("missing-original", f"rope_type {method}"))
    s = block.get("factor")
    max_pos = text.get("max_position_embeddings")
    n = _n_pairs(text, block)
    for key in (k for k in spec.keys if k in FACTOR_LISTS):
        v = block.get(key)
        if n is not None and isinstance(v, list) and len(v) != n:
            out.append(_find("longrope-factor-length", f"{key} has {len(v)} values, the rotary width has {n} pairs"))
    # the methods whose factor engines (and transformers) derive as max_position_embeddings / original
    if spec.hf_factor_from_lengths and isinstance(s, (int, float)) and orig and max_pos and \
            not math.isclose(float(max_pos), float(s) * float(orig)):
        out.append(_find("max-pos-mismatch", f"max_position_embeddings {max_pos} vs factor {s} x original {orig} = "
                                             f"{float(s) * float(orig):g}"))
    if method == YARN:  # engine rules about YaRN's own keys (parity's truncate and yarn_attention topics)
        if block.get("truncate") is False:
            out.append(_find("yarn-truncate", "truncate: false"))
        mu, mud = block.get("mscale"), block.get("mscale_all_dim")
        factor = float(s) if isinstance(s, (int, float)) else 1.0
        if mu and not mud and mu != 1.0:
            out.append(_find("mscale-without-all-dim", f"mscale {mu}: transformers 0.1 ln s + 1 = "
                                                       f"{_mscale(factor):.4g}, mlx-lm {_mscale(factor, mu):.4g}"))
        if mu and mud and "attention_factor" not in block:
            ratio = _mscale(factor, mu) / _mscale(factor, mud)
            if not math.isclose(ratio, _mscale(factor), rel_tol=1e-12) and model_type not in \
                    ("deepseek_v2", "deepseek_v3", "deepseek_v32", "kimi_k2"):
                out.append(_find("mscale-pair-ignored", f"transformers {ratio:.4g}, those engines "
                                                        f"{_mscale(factor):.4g}"))
    af = block.get("attention_factor")
    # the methods whose attention factor some engines compute without reading the config's (parity's
    # yarn_attention and longrope_attention topics)
    if af is not None and method in (YARN, LONGROPE):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            computed = Rope.from_hf({**dict(text), **({"rope_parameters": {k: v for k, v in block.items()
                                                                            if k != "attention_factor"}}
                                                       if "rope_parameters" in text else
                                                       {"rope_scaling": {k: v for k, v in block.items()
                                                                         if k != "attention_factor"}})}
                                    ).attention_factor
        if not math.isclose(float(af), computed, rel_tol=1e-12):
            out.append(_find("attention-factor-dropped", f"attention_factor {af}, computed {computed:.4g}"))
    return out


# ---------------------------------------------------------------------------
# --fix: one normalized v5 rope_parameters block, checked against the original.
# ---------------------------------------------------------------------------

_DROP = ("rope_scaling", "rope_parameters", "rope_theta", "partial_rotary_factor")


def fix(config: Any) -> Dict[str, Any]:
    """The config with its rope keys written as one transformers-5 ``rope_parameters`` block.

    The new block holds ``rope_type``, ``rope_theta``, the keys the method reads
    (as ``Rope.to_hf`` writes them), ``partial_rotary_factor`` when the rotary
    width is partial, and the model family's own rope keys (Ministral 3's
    ``llama_4_scaling_beta``); ``rope_scaling`` and the top-level
    ``rope_theta`` / ``partial_rotary_factor`` go.  Raises ValueError when
    ``Rope.from_hf`` of the result would differ from the original's, or when the
    config has errors (:func:`lint`) or a per-layer-type ``rope_parameters``.

    Examples
    --------
    >>> cfg = {"hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 5e5, "max_position_embeddings": 131072,
    ...        "rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    ...                         "original_max_position_embeddings": 8192}}
    >>> fixed = ropescale.lint.fix(cfg)
    >>> sorted(fixed["rope_parameters"])[:3], "rope_scaling" in fixed
    (['factor', 'high_freq_factor', 'low_freq_factor'], False)
    >>> ropescale.Rope.from_hf(fixed) == ropescale.Rope.from_hf(cfg)
    True
    """
    cfg, _ = _load(config)
    errors = [f for f in lint(cfg) if f.severity == ERROR]
    if errors:
        raise ValueError(f"config has errors that --fix cannot decide: {errors[0].code}")
    out = copy.deepcopy(cfg)
    text = _text_config(out)[0]   # the dict inside out that holds the rope, edited in place
    rp = text.get("rope_parameters")
    if isinstance(rp, Mapping) and rp and all(isinstance(v, Mapping) for v in rp.values()):
        raise ValueError("rope_parameters is keyed by layer type (transformers 5's own layout): nothing to normalize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = Rope.from_hf(cfg)
    hf = before.to_hf()
    v4, v5 = _blocks(text)
    old = v5 if v5 is not None else (v4 or {})
    model_type = str(text.get("model_type", ""))
    block: Dict[str, Any] = {"rope_type": before.method, "rope_theta": before.base}
    block.update({k: v for k, v in (hf.get("rope_scaling") or {}).items() if k not in ("rope_type", "type")})
    for key in _MODEL_KEYS.get(model_type, ()):
        if key in old:
            block[key] = old[key]
    if "attention_factor" in old:
        block["attention_factor"] = old["attention_factor"]
    prf = hf.get("partial_rotary_factor", old.get("partial_rotary_factor", text.get("partial_rotary_factor")))
    if prf is not None and prf != 1.0:
        block["partial_rotary_factor"] = prf
    for key in _DROP:
        text.pop(key, None)
    text["rope_parameters"] = block
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        after = Rope.from_hf(out)
    if not _identical(before, after):
        raise ValueError("the normalized rope_parameters would change Rope.from_hf (method, θ, frequencies or "
                         "scales differ): left unfixed")
    return out


def _identical(a: Rope, b: Rope) -> bool:
    return (a.method == b.method and a.base == b.base and a.dim == b.dim and a.rotary_dim == b.rotary_dim
            and a.interleaved == b.interleaved and a.max_position_embeddings == b.max_position_embeddings
            and np.array_equal(a.inv_freq, b.inv_freq) and a.attention_factor == b.attention_factor
            and a.softmax_scale == b.softmax_scale and a.query_temperature == b.query_temperature
            and all(np.array_equal(a.inv_freq_at(n)[0], b.inv_freq_at(n)[0])
                    and a.inv_freq_at(n)[1] == b.inv_freq_at(n)[1]
                    for n in _probe_lengths(a)))


def _probe_lengths(r: Rope) -> List[int]:
    L = int(r.trained_length or 4096)
    return [1, L, L + 1, 4 * L]


# ---------------------------------------------------------------------------
# Command line (``ropescale lint``): cli.py passes its parser in.
# ---------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("config", help="a config.json")
    p.add_argument("--fix", action="store_true",
                   help="rewrite the config with one normalized v5 rope_parameters block (same Rope.from_hf)")
    p.add_argument("--out", default=None, help="with --fix: write here instead of over CONFIG")
    p.add_argument("--json", action="store_true", help="print JSON")


def run_cli(args) -> int:
    """Run ``ropescale lint``: 0 clean, 1 warnings, 2 errors."""
    if args.out is not None and not args.fix:
        raise ValueError("--out needs --fix")
    findings = lint(args.config)
    if args.json:
        print(json.dumps([f.to_dict() for f in findings], indent=1))
    else:
        for f in findings:
            print(f"{args.config}: {f.format()}")
        if not findings:
            print(f"{args.config}: clean")
    status = 2 if any(f.severity == ERROR for f in findings) else (1 if findings else 0)
    if args.fix and status < 2:
        fixed = fix(args.config)
        _write_json(args.out or args.config, fixed)
        if not args.json:
            print(f"{args.out or args.config}: wrote normalized rope_parameters")
    return status


def _write_json(path: str, data: Mapping[str, Any]) -> None:
    # Written next to the target and renamed, so a failure never leaves half a file.
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".json.tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
