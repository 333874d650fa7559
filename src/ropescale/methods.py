"""The scaling methods: one spec per method, read by every consumer.

This is the one Python table of the methods (the C side has its own one-line
list, ``csrc/methods.def``, and the two are checked against each other at
import).  :func:`normalize_scaling` (used by ``scaled_inv_freq`` and ``Rope``),
``Rope.from_hf`` / ``to_hf`` / ``extend``, the ``ropescale`` command and the
plots all read :data:`SPECS`; none of them lists methods of its own.  Adding a
method: ``CONTRIBUTING.md``.

Keys and defaults of ``rope_scaling`` dicts follow HF transformers'
``modeling_rope_utils`` (transformers 5.x) so that a model's ``config.json``
goes straight in.
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from . import _checks, _core

__all__ = ["MethodSpec", "SPECS", "METHODS", "ALIASES", "UNSCALED", "LINEAR", "NTK", "DYNAMIC", "YARN", "LLAMA3",
           "LONGROPE", "PROPORTIONAL", "NTK_ALPHA", "NTK_MIXED", "NTK_BY_PARTS", "DYNAMIC_YARN", "AXIAL",
           "DEFAULT_EXTENSION", "BASE_SCALING", "canonical", "normalize_scaling", "core_params"]

# -- the method names: each spelt once, here -----------------------------------
# Code that must single out one method (its formula in reference.py, another
# engine's rule about it) compares with these constants, never with a string;
# the constant of a method is its name in capitals, except the unscaled rope's
# (tests/test_methods_registry.py checks there is exactly one per SPECS entry).

#: The unscaled rope's method (a ``Rope`` of this method is the model's trained rope).
UNSCALED = "default"
LINEAR = "linear"
NTK = "ntk"
DYNAMIC = "dynamic"
YARN = "yarn"
LLAMA3 = "llama3"
LONGROPE = "longrope"
PROPORTIONAL = "proportional"
NTK_ALPHA = "ntk_alpha"
NTK_MIXED = "ntk_mixed"
NTK_BY_PARTS = "ntk_by_parts"
DYNAMIC_YARN = "dynamic_yarn"
#: The 2-D vision layout (``Rope.axial``): rows drive the first half of the pairs, columns the second.
AXIAL = "axial"

#: The method ``Rope.extend`` and ``hf.patch``'s ``(target, length)`` form use when none is named.
DEFAULT_EXTENSION = YARN

#: The method the report's base-change section (NTK's lambda, the critical dim) describes.
BASE_SCALING = NTK

#: How a length-dependent method picks the sequence length its frequencies are
#: taken at.  "current": the length of this call, ``max(positions) + 1``
#: (``Rope.cos_sin``).  "longest_seen": transformers' ``dynamic_frequency_update``
#: (``modeling_rope_utils.py``, 5.x): the longest length seen so far, back to
#: the trained length when a call is shorter than it.
LENGTH_RULES = ("current", "longest_seen")


def _factor_only(s: float, original_len: float, n_pairs: int) -> dict:
    return {"factor": s}


def _factor_and_original(s: float, original_len: float, n_pairs: int) -> dict:
    return {"factor": s, "original_max_position_embeddings": _length(original_len)}


def _llama3_extend(s: float, original_len: float, n_pairs: int) -> dict:
    # Llama 3.1's published low/high frequency factors.
    return {**_factor_and_original(s, original_len, n_pairs), "low_freq_factor": 1.0, "high_freq_factor": 4.0}


def _longrope_extend(s: float, original_len: float, n_pairs: int) -> dict:
    # Without a searched factor list, the uniform one: the trained rope up to
    # original_len, linear interpolation by s beyond it.  Pass short_factor /
    # long_factor to extend() to use searched lists.
    return {**_factor_and_original(s, original_len, n_pairs),
            "short_factor": [1.0] * n_pairs, "long_factor": [float(s)] * n_pairs}


def _alpha_extend(s: float, original_len: float, n_pairs: int) -> dict:
    return {"alpha": s}


def _mixed_extend(s: float, original_len: float, n_pairs: int) -> dict:
    # b = 0.75: the value Su's post (kexue.fm/archives/9706) uses.
    return {"factor": s, "mixed_b": 0.75}


def _original_only(s: float, original_len: float, n_pairs: int) -> dict:
    return {"original_max_position_embeddings": _length(original_len)}


def _length(v: float):
    """A context length as a config writes it: an int when it is one."""
    return int(v) if float(v).is_integer() else float(v)


@dataclass(frozen=True)
class MethodSpec:
    """Everything the package knows about one scaling method (one ``rope_type``)."""

    #: ``rope_type`` value, as in HF configs.
    name: str
    #: One line for help texts.
    summary: str
    #: ``rope_scaling`` keys that must be given.
    required: Tuple[str, ...] = ()
    #: Keys the method reads when given.
    optional: Tuple[str, ...] = ()
    #: Values of optional keys when absent (the C core receives them explicitly).
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: Other spellings found in published configs.
    aliases: Tuple[str, ...] = ()
    #: Whether it measures against a trained length (``original_max_position_embeddings``).
    trained_length: bool = False
    #: Where ``Rope.from_hf`` finds that length.  "original": the top-level
    #: ``original_max_position_embeddings`` (Phi-3) wins, then the rope dict's,
    #: then ``max_position_embeddings``.  "max_position_embeddings": always that
    #: key (HF's dynamic NTK measures against it, whatever the rope dict says).
    hf_trained_length: str = "original"
    #: Whether ``Rope.from_hf`` takes ``factor = max_position_embeddings /
    #: original_max_position_embeddings`` when the config gives none (HF does
    #: for yarn and longrope).
    hf_factor_from_lengths: bool = False
    #: None: theta' does not depend on the sequence length; else one of
    #: :data:`LENGTH_RULES`, the length a rotary module takes it at.
    length_rule: Optional[str] = None
    #: Smallest rotary dim it is defined for.
    min_rotary_dim: int = 2
    #: Whether the rotary dim is the full head dim (pairs past
    #: ``partial_rotary_factor`` get theta = 0) rather than ``int(dim * prf)``.
    full_head_dim: bool = False
    #: ``(factor, original_len, n_pairs) -> rope_scaling keys`` for
    #: ``Rope.extend``.  Required for every method but the unscaled one and
    #: position layouts (``layout_only``).
    extend: Optional[Callable[[float, float, int], dict]] = None
    #: Whether the published form has parameters of its own that a factor alone
    #: does not give (searched LongRoPE lists, Gemma's proportional head):
    #: ``Rope.extend`` builds a stand-in, so ``ropescale eval`` wants a dict.
    needs_published_params: bool = False
    #: Whether transformers (5.x) implements this ``rope_type``
    #: (``modeling_rope_utils.ROPE_INIT_FUNCTIONS``; ``tests/test_methods_registry.py``
    #: checks it against the installed transformers).  ``hf.patch`` writes only these.
    in_transformers: bool = False
    #: The ``{arch}.rope.scaling.type`` a llama.cpp GGUF file names this method
    #: with, in llama.cpp's own spelling (``"none"`` for the unscaled rope), when
    #: llama.cpp has a scaling type for it: ``llama_rope_scaling_type`` in
    #: ggml-org/llama.cpp ``include/llama.h``, written by its converter from
    #: ``gguf.constants.RopeScalingType`` (gguf 0.19; ``tests/test_methods_registry.py``
    #: checks it against the installed ``gguf``).  A literal, not this method's
    #: constant: renaming a method here does not rename llama.cpp's type.
    #: ``ropescale.gguf`` writes and reads it, and says how it expresses the few
    #: methods llama.cpp computes without a type of their own.
    gguf_scaling_type: Optional[str] = None
    #: A column of ``ropescale eval`` when ``--methods`` is not given.
    eval_default: bool = False
    #: What the ``ropescale report`` table says about this column, if anything.
    report_note: str = ""
    #: A column of ``ropescale report`` and of the default plots.
    report: bool = False
    #: Its color in every figure (None: grey, the unscaled rope).
    color: Optional[str] = None
    #: Cross-key checks: ``check(params, scaling)`` raises ValueError.
    check: Optional[Callable[[dict, Mapping[str, Any]], None]] = None
    #: ``(key, method)``: a config of this ``rope_type`` that gives ``key`` (truthy)
    #: means ``method`` (Hunyuan's ``dynamic`` with ``alpha`` is transformers' ``ntk_alpha``).
    hf_with_key: Tuple[Tuple[str, str], ...] = ()
    #: A position layout rather than a context extension (``axial``):
    #: ``Rope.extend`` refuses it.
    layout_only: bool = False

    def __post_init__(self) -> None:
        if self.length_rule is not None and self.length_rule not in LENGTH_RULES:
            raise ValueError(f"MethodSpec {self.name!r}: length_rule must be None or one of {LENGTH_RULES}, "
                             f"got {self.length_rule!r}")
        if self.extend is None and self.name != UNSCALED and not self.layout_only:
            raise ValueError(f"MethodSpec {self.name!r}: extend is required (how Rope.extend builds it from "
                             f"a factor); only {UNSCALED!r} and position layouts have none")

    @property
    def keys(self) -> Tuple[str, ...]:
        return self.required + self.optional

    @property
    def length_dependent(self) -> bool:
        """Whether theta' depends on the current sequence length."""
        return self.length_rule is not None


def _check_yarn(p: dict, scaling: Mapping[str, Any]) -> None:
    if p["beta_fast"] < p["beta_slow"]:
        raise ValueError(f"scaling['beta_fast'] must be >= beta_slow, got beta_fast={p['beta_fast']} "
                         f"< beta_slow={p['beta_slow']}")


def _check_by_parts(p: dict, scaling: Mapping[str, Any]) -> None:
    if not p["beta_fast"] > p["beta_slow"]:
        raise ValueError(f"scaling['beta_fast'] must be > beta_slow (the blend is linear between them), "
                         f"got beta_fast={p['beta_fast']} <= beta_slow={p['beta_slow']}")


def _check_llama3(p: dict, scaling: Mapping[str, Any]) -> None:
    # Llama 4 ships low_freq_factor == high_freq_factor (no blended band): computed as
    # transformers does.  An inverted pair is computable too; transformers warns, so do we.
    if p["high_freq_factor"] < p["low_freq_factor"]:
        warnings.warn(f"scaling['high_freq_factor'] ({p['high_freq_factor']}) is below low_freq_factor "
                      f"({p['low_freq_factor']}): no pair is blended (computed as transformers does)", stacklevel=4)


def _check_longrope(p: dict, scaling: Mapping[str, Any]) -> None:
    if "factor" not in p and "attention_factor" not in p:
        raise ValueError(f"scaling for rope_type {LONGROPE!r} is missing required key(s): factor (or attention_factor)")
    if "attention_factor" not in p and p["factor"] > 1 and not p["original_max_position_embeddings"] > 1:
        raise ValueError(f"scaling['original_max_position_embeddings'] must be > 1 for rope_type {LONGROPE!r} "
                         "(its attention factor divides by ln of it), got "
                         f"{p['original_max_position_embeddings']}")


#: The methods, in the order of ``csrc/methods.def`` (the C codes).
SPECS: Dict[str, MethodSpec] = {s.name: s for s in (
    # "mrope": Qwen2-VL / Qwen2.5-VL write {"type": "mrope", "mrope_section": ...}; transformers
    # reads it as the default rope with M-RoPE sections (see M-RoPE in Rope).
    MethodSpec(UNSCALED, "the original rope", aliases=("mrope",), extend=None, report=True, in_transformers=True,
               eval_default=True, gguf_scaling_type="none"),
    MethodSpec(LINEAR, "position interpolation: theta / s", required=("factor",),
               extend=_factor_only, report=True, color="tab:blue", in_transformers=True, eval_default=True,
               gguf_scaling_type="linear"),
    MethodSpec(NTK, "NTK-aware base scaling: base * s^(d/(d-2))", required=("factor",), min_rotary_dim=4,
               extend=_factor_only, report=True, color="tab:orange", hf_with_key=(("mixed_b", NTK_MIXED),),
               eval_default=True),
    MethodSpec(DYNAMIC, "dynamic NTK: base scaling growing with the sequence length",
               required=("factor", "original_max_position_embeddings"), trained_length=True,
               hf_trained_length="max_position_embeddings", length_rule="longest_seen", min_rotary_dim=4,
               extend=_factor_and_original, report=True, color="tab:green", hf_with_key=(("alpha", NTK_ALPHA),),
               in_transformers=True, eval_default=True, report_note="dynamic at the target length"),
    MethodSpec(YARN, "YaRN: ramp between extrapolation and interpolation, attention factor",
               required=("factor", "original_max_position_embeddings"),
               optional=("beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"),
               defaults={"beta_fast": 32.0, "beta_slow": 1.0, "truncate": True},
               aliases=("mistral_yarn",), trained_length=True, hf_factor_from_lengths=True,
               extend=_factor_and_original, report=True,
               color="tab:red", check=_check_yarn, in_transformers=True, eval_default=True, gguf_scaling_type="yarn"),
    MethodSpec(LLAMA3, "Llama 3.1: wavelength bands kept, blended, interpolated",
               required=("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
               trained_length=True, extend=_llama3_extend, report=True, color="tab:purple",
               check=_check_llama3, in_transformers=True,
               report_note="llama3 low_freq_factor 1, high_freq_factor 4"),
    MethodSpec(LONGROPE, "LongRoPE: per-pair factors, short and long",
               required=("short_factor", "long_factor", "original_max_position_embeddings"),
               optional=("factor", "short_mscale", "long_mscale"),
               aliases=("su",), trained_length=True, hf_factor_from_lengths=True, length_rule="current",
               extend=_longrope_extend, needs_published_params=True, in_transformers=True,
               color="tab:brown", check=_check_longrope, gguf_scaling_type="longrope",
               report_note="longrope with uniform factors, at the target length"),
    MethodSpec(PROPORTIONAL, "rotate only the first pairs of the full head dim, optionally / s",
               optional=("factor",), full_head_dim=True, extend=_factor_only, color="tab:pink",
               needs_published_params=True, in_transformers=True),
    MethodSpec(NTK_ALPHA, "Hunyuan's fixed NTK: base * alpha^(d/(d-2)), any length", required=("alpha",),
               min_rotary_dim=4, extend=_alpha_extend, color="tab:olive"),
    MethodSpec(NTK_MIXED, "vLLM's mixed NTK: theta_k / exp(a (k+1)^b), a = ln s / (d/2)^b",
               required=("factor", "mixed_b"), extend=_mixed_extend, color="tab:cyan"),
    MethodSpec(NTK_BY_PARTS, "NTK-by-parts: blend linear in turns per trained context, no attention factor",
               required=("factor", "original_max_position_embeddings"), optional=("beta_fast", "beta_slow"),
               defaults={"beta_fast": 32.0, "beta_slow": 1.0}, trained_length=True,
               extend=_factor_and_original, color="tab:gray", check=_check_by_parts),
    MethodSpec(DYNAMIC_YARN, "dynamic YaRN: YaRN with s = max(1, L / m_l) at the current length L",
               required=("original_max_position_embeddings",),
               optional=("beta_fast", "beta_slow", "truncate"),
               defaults={"beta_fast": 32.0, "beta_slow": 1.0, "truncate": True}, trained_length=True,
               length_rule="current", extend=_original_only, color="darkred", check=_check_yarn),
    MethodSpec(AXIAL, "2-D axial (vision): rows drive the first half of the pairs, columns the second",
               min_rotary_dim=4, color="teal", layout_only=True),
)}

#: The scaling methods ``scaled_inv_freq`` understands (``rope_type`` values).
METHODS: Tuple[str, ...] = tuple(SPECS)

#: Other spellings found in published configs.
ALIASES: Dict[str, str] = {a: s.name for s in SPECS.values() for a in s.aliases}

#: The C method codes, by name.
CODES: Dict[str, int] = {name: code for code, name in enumerate(_core.METHOD_NAMES)}

if tuple(_core.METHOD_NAMES) != METHODS:  # pragma: no cover - a build out of step with this file
    raise ImportError(f"ropescale._core was built with methods {_core.METHOD_NAMES}, but ropescale.methods "
                      f"lists {METHODS}: rebuild the extension (csrc/methods.def and SPECS must agree)")

# Keys that may sit in a config's rope dict without being a method's parameter.
_PASSIVE = frozenset({"rope_type", "type", "rope_theta", "attention_factor", "partial_rotary_factor",
                      "original_max_position_embeddings", "max_position_embeddings"} | set(_LAYOUT_KEYS := (
                          "mrope_section", "mrope_interleaved")))

#: Keys of a rope dict that say how positions reach the pairs, for any method
#: (M-RoPE); ``Rope.to_hf`` writes them back.
LAYOUT_KEYS = _LAYOUT_KEYS

#: Keys whose value is a list of one factor per rotary pair (checked against the rotary dim).
FACTOR_LISTS = ("short_factor", "long_factor")

# rope_scaling key -> the C core's name, where they differ.
_C_NAMES = {"original_max_position_embeddings": "original_max"}


# -- one checker per key ------------------------------------------------------
def _real(at_least=None, above=None):
    def check(name, value):
        return _checks.real(name, value, at_least=at_least, above=above)
    return check


def _truncate(name, value):
    return _checks.boolean(name, value)


_KEY_CHECKS: Dict[str, Callable[[str, Any], Any]] = {
    "factor": _real(at_least=1.0),
    "attention_factor": _real(above=0.0),
    "original_max_position_embeddings": _real(at_least=1.0),
    "beta_fast": _real(above=0.0),
    "beta_slow": _real(above=0.0),
    "mscale": _real(at_least=0.0),
    "mscale_all_dim": _real(at_least=0.0),
    "truncate": _truncate,
    "low_freq_factor": _real(above=0.0),
    "high_freq_factor": _real(above=0.0),
    "short_mscale": _real(above=0.0),
    "long_mscale": _real(above=0.0),
    "alpha": _real(above=0.0),
    "mixed_b": _real(above=0.0),
    # FACTOR_LISTS: _factor_list (their length depends on the rotary dim)
}

# HF reads these with `get(key) or default`, so a 0 means "absent".
_FALSY_IS_DEFAULT = ("beta_fast", "beta_slow")
# HF reads truncate with `get(key, True)`: an explicit null would switch truncation
# off there, and the default on here; ambiguous, so refused.
_NULL_IS_INVALID = ("truncate",)


def canonical(name: Any, what: str = "scaling['rope_type']") -> str:
    """The method a ``rope_type`` (or alias) names; ValueError/TypeError naming ``what`` otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string, got {_checks._show(name)}")
    method = ALIASES.get(name, name)
    if method not in SPECS:
        aliases = ", ".join(f"{a} ({m})" for a, m in ALIASES.items())
        raise ValueError(f"{what} must be one of {', '.join(METHODS)} (or an alias: {aliases}), got {name!r}")
    return method


def promoted(method: str, scaling: Mapping[str, Any]) -> str:
    """The method a config means: Hunyuan's ``dynamic`` with ``alpha`` is ``ntk_alpha``, vLLM's
    ``ntk`` with ``mixed_b`` is ``ntk_mixed`` (``MethodSpec.hf_with_key``)."""
    for key, target in SPECS[method].hf_with_key:
        value = scaling.get(key)
        if value is not None and value is not False and not (isinstance(value, (int, float)) and value == 0):
            return target
    return method


def config_name(method: str, scaling: Mapping[str, Any]) -> str:
    """The ``rope_type`` a config writes for ``method``: the one it was promoted from, if any."""
    for name, spec in SPECS.items():
        for key, target in spec.hf_with_key:
            if target == method and scaling.get("rope_type", scaling.get("type")) in (name,) + spec.aliases:
                return name
    return method


def normalize_scaling(scaling: Optional[Mapping[str, Any]], dim: int) -> Tuple[str, dict]:
    """Check an HF-style ``rope_scaling`` dict; return ``(method, params)``.

    ``params`` holds every parameter the method uses, with defaults filled in,
    plus ``rotary_dim`` (``int(dim * partial_rotary_factor)``, or ``dim`` for
    methods on the full head dim) and ``rotated_pairs`` (those methods only).
    """
    d = _checks.dim(dim)
    if scaling is None:
        return UNSCALED, {"rotary_dim": d}
    if not isinstance(scaling, Mapping):
        raise TypeError(f"scaling must be None or a dict like a config's rope_scaling, got {type(scaling).__name__}")
    if "rope_type" in scaling and "type" in scaling and scaling["rope_type"] != scaling["type"]:
        raise ValueError(f"scaling has rope_type={scaling['rope_type']!r} and type={scaling['type']!r}; give one")
    method = promoted(canonical(scaling.get("rope_type", scaling.get("type", UNSCALED))), scaling)
    spec = SPECS[method]
    missing = [k for k in spec.required if scaling.get(k) is None]
    if missing:
        raise ValueError(f"scaling for rope_type {method!r} is missing required key(s): {', '.join(missing)}")
    unknown = sorted((str(k) for k in set(scaling) - set(spec.keys) - _PASSIVE), key=str)
    if unknown:
        warnings.warn(f"scaling keys ignored by rope_type {method!r}: {', '.join(unknown)}", stacklevel=3)

    p: dict = {}
    prf = _checks.real("scaling['partial_rotary_factor']", scaling.get("partial_rotary_factor", 1.0),
                       above=0.0, at_most=1.0)
    if spec.full_head_dim:
        p["rotary_dim"] = d
        p["rotated_pairs"] = int(prf * d) // 2
    else:
        rd = int(d * prf)
        if rd < 2 or rd % 2:
            raise ValueError(f"dim * partial_rotary_factor must give an even rotary dim >= 2, "
                             f"got int({d} * {prf}) = {rd} (scaling['partial_rotary_factor'])")
        p["rotary_dim"] = rd
    if p["rotary_dim"] < spec.min_rotary_dim:
        raise ValueError(f"rope_type {method!r} needs a rotary dim >= {spec.min_rotary_dim}, got {p['rotary_dim']}")
    for key in spec.keys + ("attention_factor",):
        value = scaling.get(key)
        if key in _FALSY_IS_DEFAULT and value is not None and not isinstance(value, (bool, np.bool_)) \
                and isinstance(value, (numbers.Real, np.floating, np.integer)) and value == 0:
            warnings.warn(f"scaling[{key!r}] = {value!r} is read as absent, i.e. {spec.defaults[key]!r}, "
                          f"as HF transformers does (it reads `{key} or default`)", stacklevel=3)
            value = None
        if value is None and key in _NULL_IS_INVALID and key in scaling:
            raise TypeError(f"scaling[{key!r}] must be True or False, got None")
        if value is None:
            if key in spec.defaults:
                p[key] = spec.defaults[key]
            continue
        if key in FACTOR_LISTS:
            p[key] = _factor_list(f"scaling[{key!r}]", value, p["rotary_dim"] // 2)
        else:
            p[key] = _KEY_CHECKS[key](f"scaling[{key!r}]", value)
    if spec.check is not None:
        spec.check(p, scaling)
    return method, p


def _factor_list(name: str, value: Any, n: int) -> np.ndarray:
    what = f"{name} must be a list of rotary_dim/2 = {n} positive numbers"
    if not isinstance(value, (list, tuple, np.ndarray)) or (isinstance(value, np.ndarray) and value.ndim != 1):
        raise TypeError(f"{what}, got {_checks._show(value)}")
    items = list(value)
    for i, v in enumerate(items):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.integer, np.floating)):
            raise TypeError(f"{what}, got {_checks._show(v)} of type {type(v).__name__} at index {i}")
    if len(items) != n:
        raise ValueError(f"{name} must have rotary_dim/2 = {n} entries, got {len(items)}")
    try:
        arr = np.array([float(v) for v in items], dtype=np.float64)
    except OverflowError:
        raise ValueError(f"{name} must hold finite positive numbers; an entry overflows float64") from None
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        raise ValueError(f"{name} must hold finite positive numbers, got {arr[bad][:3].tolist()}")
    with np.errstate(over="ignore", divide="ignore"):
        if not np.all(np.isfinite(1.0 / arr)):
            raise ValueError(f"{name} holds an entry so small that theta / factor overflows: {arr[~np.isfinite(1.0 / arr)][:3].tolist()}")
    arr.setflags(write=False)
    return arr


def core_params(p: Mapping[str, Any], seq_len: Optional[int] = None) -> dict:
    """The keyword parameters of ``_core.scaled_inv_freq`` for checked ``params``."""
    kw = {_C_NAMES.get(k, k): v for k, v in p.items() if k != "rotary_dim"}
    if seq_len is not None:
        kw["seq_len"] = float(seq_len)
    return kw


def trained_length_from_hf(method: str, scaling: Mapping[str, Any], max_pos: Any, top_original: Any) -> Any:
    """The trained length ``Rope.from_hf`` puts into ``original_max_position_embeddings``, as HF resolves it."""
    spec = SPECS[method]
    if not spec.trained_length:
        return scaling.get("original_max_position_embeddings")
    if spec.hf_trained_length == "max_position_embeddings" and max_pos is not None:
        return max_pos
    if top_original is not None:
        return top_original
    if scaling.get("original_max_position_embeddings") is not None:
        return scaling["original_max_position_embeddings"]
    return max_pos


def report_methods() -> Tuple[str, ...]:
    """The methods ``ropescale report`` and the default plots show."""
    return tuple(name for name, s in SPECS.items() if s.report)


def length_at(method: str, seq_len: int, trained: Optional[float], longest: Optional[int]) -> int:
    """The sequence length a rotary module takes ``method``'s frequencies at (``MethodSpec.length_rule``).

    ``longest``: the length this rule remembers from earlier calls (None: none
    yet); the result is what it remembers next.
    """
    if SPECS[method].length_rule != "longest_seen" or trained is None:
        return seq_len
    original = int(trained)
    kept = original if longest is None else longest
    if seq_len > kept:
        kept = seq_len
    if seq_len < original and kept > original:
        kept = original
    return kept
