"""Reading model configs: a HF ``config.json`` (transformers 4 and 5 layouts) or a GGUF header -> ropes.

``Rope`` is the value object; this module knows how models write their rope
down: legacy key spellings, per-layer-type ``rope_parameters``, the defaults a
``model_type`` implies (:mod:`ropescale.model_types`), which layers rotate.
``Rope.from_hf`` / ``Rope.from_gguf`` / ``Rope.to_gguf`` and
:func:`layer_ropes` are its entry points; the classmethods reach it through
``ropescale.rope._UPPER``, which this module fills at import, so that ``rope``
imports no reader.
"""
from __future__ import annotations

import json
import math
import os
import stat
import warnings
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from . import _checks, gguf
from .layers import LayerRopes
from .methods import SPECS, UNSCALED, canonical, promoted, trained_length_from_hf
from .model_types import LEGACY_KEYS, MODEL_TYPES, NOPE_LAYER_TYPES
from .rope import _UPPER, Rope, _length

__all__ = ["layer_ropes", "read_config", "ModelRopes", "MAX_CONFIG_BYTES"]

#: Largest config file ``Rope.from_hf`` reads (a real config.json is a few KB).
MAX_CONFIG_BYTES = 4 << 20


def _get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        value = config.get(key, default)
    else:
        value = getattr(config, key, default)
    return default if value is None else value


def _config_int(key: str, value: Any) -> int:
    """A positive integer from a config value (JSON may carry 128.0); the error names the key."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"config[{key!r}] must be a positive integer, got {_checks._show(value)}")
    if isinstance(value, (float, np.floating)) and not (math.isfinite(value) and float(value).is_integer()):
        raise ValueError(f"config[{key!r}] must be a positive integer, got {value!r}")
    if not 0 < value <= _checks.MAX_DIM * 1024:
        raise ValueError(f"config[{key!r}] must be a positive integer <= {_checks.MAX_DIM * 1024}, "
                         f"got {_checks._show(value)}")
    return int(value)



def _on_config(config: Any, fn):
    """``fn(config content)``; for a path, errors name the file."""
    if not isinstance(config, (str, os.PathLike)):
        return fn(config)
    path = os.fspath(config)
    try:
        return fn(read_config(path))
    except (ValueError, TypeError) as e:
        text = str(e)
        raise type(e)(text if text.startswith(f"config {path}:") else f"config {path}: {text}") from None


_ABSENT = object()


def _raw(config: Any, key: str) -> Any:
    """A config value, None kept apart from an absent key (``_ABSENT``)."""
    if isinstance(config, Mapping):
        return config.get(key, _ABSENT)
    return getattr(config, key, _ABSENT)


class ModelRopes:
    """One model config, read once: its layer layout and the rope of each layer type.

    ``Rope.from_hf`` and :func:`ropescale.layer_ropes` both read configs through
    this class, so that "the rope of layer type X" has one meaning.
    """

    def __init__(self, config: Any, model_type: Any, known: Any, keyed: Optional[dict], layer_types, rotates,
                 local_base: Optional[float], query_temperature):
        self.config, self.model_type, self.known = config, model_type, known
        #: rope_parameters keyed by layer type (transformers 5), else None
        self.keyed = keyed
        #: one layer type per layer, or None when the config does not say how many layers
        self.layer_types = layer_types
        #: per layer: whether its attention rotates (None: every rope layer type does)
        self.rotates = rotates
        #: base of sliding_attention layers in a flat (v4) config: Gemma 3's rope_local_base_freq
        self.local_base = local_base
        self.query_temperature = query_temperature
        self._cache: dict = {}

    @classmethod
    def read(cls, config: Any) -> "ModelRopes":
        config, model_type = _text_config(config)
        known = MODEL_TYPES.get(model_type) if isinstance(model_type, str) else None
        if known is not None and known.unsupported:
            raise ValueError(f"ropescale cannot follow model_type {model_type!r}: {known.unsupported} "
                             f"({known.source})")
        try:
            keyed = _keyed_rope_parameters(config)
            layer_types, rotates = _layer_layout(config, known, keyed)
            local = _get(config, "rope_local_base_freq")
            if local is not None:
                local = _checks.real("config['rope_local_base_freq']", local, above=1.0)
            elif known is not None:
                local = known.local_base
            return cls(config, model_type, known, keyed, layer_types, rotates, local, _temperature(config, known))
        except TypeError as e:
            raise ValueError(str(e)) from None

    # -- layer types ---------------------------------------------------------
    def has_rope(self, layer_type: str) -> bool:
        """Whether any layer of this type rotates."""
        if layer_type in NOPE_LAYER_TYPES:
            return False
        if self.known is not None and layer_type in self.known.nope_types and not (
                self.known.nope_unless is not None and _get(self.config, self.known.nope_unless)):
            return False
        cond = self.known.nope_types_if if self.known is not None else None
        if cond is not None and layer_type in cond[1] and _get(self.config, cond[0]) is not None:
            return False
        if self.rotates is None or self.layer_types is None:
            return True
        return any(r for t, r in zip(self.layer_types, self.rotates) if t == layer_type)

    def types(self) -> list:
        """The layer types, in order of first appearance."""
        if self.layer_types is not None:
            return list(dict.fromkeys(self.layer_types))
        if self.keyed is not None:
            return list(self.keyed)
        return ["full_attention"] + (["sliding_attention"] if self.local_base is not None else [])

    def rope(self, layer_type: Optional[str]) -> "Rope":
        if layer_type is None:
            layer_type = self._global_type()
        elif layer_type not in self.types():
            raise ValueError(f"layer_type must be one of this model's layer types ({', '.join(self.types())}), "
                             f"got {layer_type!r}")
        elif not self.has_rope(layer_type):
            raise ValueError(f"layer_type {layer_type!r} has no rotary embedding in this model "
                             f"(ropescale.layer_ropes maps it to None)")
        if layer_type not in self._cache:
            try:
                self._cache[layer_type] = self._build(layer_type)
            except TypeError as e:
                # The config itself is of the right type; a value in it is not.
                raise ValueError(str(e)) from None
        return self._cache[layer_type]

    def _global_type(self) -> Optional[str]:
        if self.keyed is not None:
            return "full_attention" if "full_attention" in self.keyed else next(iter(self.keyed))
        return None

    def _per_layer_head_dim(self, layer_type: Optional[str], dim: int) -> int:
        """The head dim ``per_layer_config`` gives the layers of this type (Gemma 4's global layers: 512,
        where transformers saves ``per_layer_config`` instead of ``global_head_dim``), else ``dim``."""
        per = _get(self.config, "per_layer_config")
        if per is not None and not isinstance(self.config, Mapping) and hasattr(self.config, "to_dict"):
            per = self.config.to_dict().get("per_layer_config")    # a config object keeps a view: its JSON
        if per is None or self.layer_types is None:
            return dim
        if not isinstance(per, Mapping):
            raise TypeError(f"config['per_layer_config'] must be a dict of layer index -> overrides, "
                            f"got {_checks._show(per)}")
        dims = set()
        for i, lt in enumerate(self.layer_types):
            one = per.get(str(i), per.get(f"{i:02d}", per.get(i)))
            if lt == layer_type:
                dims.add(dim if not isinstance(one, Mapping) or one.get("head_dim") is None
                         else _config_int(f"per_layer_config[{i}]['head_dim']", one["head_dim"]))
        if len(dims) > 1:
            raise ValueError(f"config['per_layer_config'] gives layers of type {layer_type!r} different head dims "
                             f"{sorted(dims)}: ropescale has one rope per layer type")
        return dims.pop() if dims else dim

    def _build(self, layer_type: Optional[str]) -> "Rope":
        config, known = self.config, self.known
        if self.keyed is not None:
            if layer_type not in self.keyed:
                raise ValueError(f"config['rope_parameters'] has no entry for layer type {layer_type!r} "
                                 f"(it has {', '.join(self.keyed)})")
            scaling = dict(self.keyed[layer_type])
        else:
            scaling = _flat_rope_dict(config)
        # read into the query multiplier below, not a parameter of the frequencies
        beta = None if scaling is None else scaling.pop(QUERY_BETA_KEY, None)
        local = self.keyed is None and layer_type == "sliding_attention" and self.local_base is not None
        unscaled = self.keyed is None and known is not None and bool(known.flat_scaling_types) and \
            layer_type not in known.flat_scaling_types
        dim = _head_dim(config, known, use_global=self.keyed is not None and layer_type == "full_attention")
        dim = self._per_layer_head_dim(layer_type, dim)
        if local:
            # Gemma 3: sliding layers rotate unscaled at rope_local_base_freq
            base, scaling = self.local_base, None
        elif unscaled:
            # OLMo 3: a flat rope_scaling is the full_attention layers'; the others keep the plain rope
            base = _base(config, scaling, known, self.model_type)
            scaling = {k: v for k, v in (scaling or {}).items() if k in ("partial_rotary_factor",)} or None
        else:
            base = _base(config, scaling, known, self.model_type, prefer_scaling=self.keyed is not None)
        value, key = _legacy(config, "max_position_embeddings")
        max_pos = _length(f"config[{key!r}]", value)
        if known is not None and known.mrope is not None and not local and \
                (scaling is None or scaling.get("mrope_section") is None):
            # Qwen-VL modeling code applies M-RoPE with its default sections whatever the dict says
            scaling = {**(scaling or {}), "mrope_section": list(known.mrope[0]),
                       "mrope_interleaved": known.mrope[1]}
        scaling = _resolve_scaling(config, scaling, max_pos, _partial_rotary(config, dim, known))
        qk, hd = _get(config, "qk_rope_head_dim"), _get(config, "head_dim")
        prf = (scaling or {}).get("partial_rotary_factor")
        if qk is not None and hd is not None and prf is not None and dim == qk and \
                isinstance(hd, (int, float)) and isinstance(prf, (int, float)) and int(hd * prf) == qk:
            # transformers rotates int(head_dim * partial_rotary_factor) features; a config whose
            # qk_rope_head_dim is that product (Mistral 4) has applied the factor already
            scaling = {k: v for k, v in scaling.items() if k != "partial_rotary_factor"} or None
        if known is not None and known.fixed_rope and scaling is not None and \
                promoted(canonical(scaling.get("rope_type", UNSCALED)), scaling) != UNSCALED:
            raise ValueError(f"model_type {self.model_type!r} rotates with a fixed sin/cos table "
                             f"({known.source}): its model ignores rope_type {scaling.get('rope_type')!r} in the "
                             f"config, so ropescale will not apply it either; use Rope(...).extend for a scaled rope")
        interleaved = _get(config, "rope_interleave")
        if interleaved is None:
            interleaved = known is not None and known.interleaved
        qt = self.query_temperature
        if known is None or known.query_beta:
            qt = _query_beta(beta, scaling, self.model_type, known) or qt
        # the MLA softmax factor is transformers' yarn_apply_mscale; a config without a model type is
        # read as DeepSeek-style, the family that writes mscale_all_dim
        mla = known.mla_softmax if known is not None else self.model_type is None
        return Rope(dim, base, scaling, max_position_embeddings=max_pos,
                    interleaved=_checks.boolean("config['rope_interleave']", interleaved),
                    query_temperature=qt, softmax_mscale=mla)


#: The rope-parameters key of the query multiplier of Ministral 3 / Mistral 4 (:func:`_query_beta`).
QUERY_BETA_KEY = "llama_4_scaling_beta"


def _query_beta(beta: Any, scaling: Optional[dict], model_type: Any, known) -> Optional[tuple]:
    """``(original, beta, 0)``: queries times ``1 + beta ln(1 + floor(p / original))``, or None.

    The model types that apply it (``known.query_beta``) read ``beta`` and ``original`` from the rope
    parameters at every forward and fail without them; a config of no known type gets it when it
    writes the key, which has no other meaning.
    """
    if beta is None:
        if known is not None:
            raise ValueError(f"model_type {model_type!r} multiplies its queries by 1 + beta ln(1 + floor(p / "
                             f"original)) with beta = rope_parameters[{QUERY_BETA_KEY!r}] ({known.source}), which "
                             f"this config lacks (transformers' forward fails without it)")
        return None
    beta = _checks.real(f"config['rope_parameters'][{QUERY_BETA_KEY!r}]", beta, at_least=0.0)
    original = (scaling or {}).get("original_max_position_embeddings")
    if original is None:
        raise ValueError(f"config['rope_parameters'][{QUERY_BETA_KEY!r}] = {beta!r} multiplies the queries by "
                         f"1 + beta ln(1 + floor(p / original)) with original = the rope parameters' "
                         f"original_max_position_embeddings, which this config's rope does not give")
    return (_checks.real("config['rope_parameters']['original_max_position_embeddings']", original, at_least=1.0),
            beta, 0.0)


def _temperature(config: Any, known) -> Optional[tuple]:
    """Llama 4's (floor_scale, attn_scale) when attention temperature tuning is on."""
    on = _raw(config, "attn_temperature_tuning")
    default = known.query_temperature if known is not None else None
    if on is _ABSENT or on is None:
        if default is None:
            return None
        on = True
    # Published Llama 4 configs write an int here (4); transformers tests its truth.
    if isinstance(on, (bool, np.bool_)) or (isinstance(on, (int, np.integer))):
        on = bool(on)
    else:
        raise TypeError(f"config['attn_temperature_tuning'] must be true/false (or an int), got {_checks._show(on)}")
    if not on:
        return None
    floor_scale = _get(config, "floor_scale", default[0] if default else 8192.0)
    attn_scale = _get(config, "attn_scale", default[1] if default else 0.1)
    return (_checks.real("config['floor_scale']", floor_scale, above=0.0),
            _checks.real("config['attn_scale']", attn_scale, at_least=0.0))


def _layer_layout(config: Any, known, keyed: Optional[dict]):
    """``(layer_types or None, rotates or None)`` as transformers' config classes derive them."""
    lt = _get(config, "layer_types")
    if lt is not None:
        if not isinstance(lt, (list, tuple)) or not lt or not all(isinstance(t, str) for t in lt):
            raise TypeError(f"config['layer_types'] must be a non-empty list of strings, got {_checks._show(lt)}")
        lt = list(lt)
    n = _legacy(config, "num_hidden_layers")[0]
    if n is None and known is not None:
        n = known.num_hidden_layers
    n = None if n is None else _config_int("num_hidden_layers", n)
    if n is None and lt is not None:
        n = len(lt)
    # Llama 4: no_rope_layers[i] == 1 means layer i rotates (transformers' naming).
    rotates = None
    flags = _get(config, "no_rope_layers")
    if flags:
        if not isinstance(flags, (list, tuple)) or not all(
                isinstance(f, (bool, int, np.integer)) and f in (0, 1) for f in flags):
            raise TypeError(f"config['no_rope_layers'] must be a list of 0/1 (1: the layer uses rope), "
                            f"got {_checks._show(flags)}")
        rotates = [bool(f) for f in flags]
        if n is not None and len(rotates) != n:
            raise ValueError(f"config['no_rope_layers'] has {len(rotates)} entries for {n} layers "
                             f"(num_hidden_layers)")
    else:
        interval = _get(config, "no_rope_layer_interval", known.no_rope_interval if known is not None else None)
        if interval is not None and n is not None:
            iv = _config_int("no_rope_layer_interval", interval)
            rotates = [(i + 1) % iv != 0 for i in range(n)]
    if lt is None and rotates is not None:
        chunk = _raw(config, "attention_chunk_size")
        chunked = chunk is not None  # absent: Llama 4's default 8192
        lt = ["chunked_attention" if r and chunked else "full_attention" for r in rotates]
    if lt is None and n is not None:
        pattern = known.layer_pattern if known is not None else None
        if pattern is not None:
            key, default, other = pattern
            iv = None
            if key is not None:
                iv = _get(config, key, _get(config, "_" + key))
            iv = default if iv is None else _config_int(key, iv)
            lt = ["full_attention" if (i + 1) % iv == 0 else other for i in range(n)]
        elif keyed is None:
            lt = ["full_attention"] * n
    if lt is not None and rotates is not None and len(lt) != len(rotates):
        raise ValueError(f"config['no_rope_layers'] has {len(rotates)} entries for {len(lt)} layers")
    if _get(config, "layer_types") is None and n is not None and known is not None \
            and known.block_types_key is not None:
        blocks = _get(config, known.block_types_key)
        if blocks is not None:
            if not isinstance(blocks, (list, tuple)) or not blocks or not all(isinstance(b, str) for b in blocks):
                raise TypeError(f"config[{known.block_types_key!r}] must be a list of block names, "
                                f"got {_checks._show(blocks)}")
            lt = ["full_attention" if blocks[i % len(blocks)] == "attention" else "recurrent" for i in range(n)]
    if lt is not None and known is not None and known.nope_where_zero is not None:
        thetas = _get(config, known.nope_where_zero)
        if thetas is not None:
            if not isinstance(thetas, (list, tuple)) or len(thetas) != len(lt) or not all(
                    isinstance(t, (int, float)) and not isinstance(t, bool) for t in thetas):
                raise TypeError(f"config[{known.nope_where_zero!r}] must be a list of {len(lt)} numbers, "
                                f"got {_checks._show(thetas)}")
            rotates = [(True if rotates is None else rotates[i]) and thetas[i] != 0 for i in range(len(lt))]
    if lt is not None and known is not None and known.nope_layers_key is not None:
        idx = _get(config, known.nope_layers_key)
        if idx is not None:
            if not isinstance(idx, (list, tuple)) or not all(
                    isinstance(i, (int, np.integer)) and not isinstance(i, bool) and 0 <= i < len(lt) for i in idx):
                raise TypeError(f"config[{known.nope_layers_key!r}] must be a list of layer indices below "
                                f"{len(lt)}, got {_checks._show(idx)}")
            rotates = [(True if rotates is None else rotates[i]) and i not in set(idx) for i in range(len(lt))]
    if lt is not None and keyed is not None:
        missing = sorted(set(t for t in lt if t not in NOPE_LAYER_TYPES) - set(keyed))
        if missing:
            raise ValueError(f"config['rope_parameters'] has no entry for layer type(s) {', '.join(missing)} "
                             f"of config['layer_types'] (it has {', '.join(keyed)})")
    return lt, rotates


def _keyed_rope_parameters(config: Any) -> Optional[dict]:
    """rope_parameters (or rope_scaling) keyed by layer type, as transformers 5 writes it; else None."""
    for key in ("rope_parameters", "rope_scaling"):
        value = _get(config, key)
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(f"config[{key!r}] must be a dict (or null), got {_checks._show(value)}")
        if isinstance(value, Mapping) and value and "rope_type" not in value and "type" not in value \
                and all(isinstance(v, Mapping) for v in value.values()):
            return {str(k): dict(v) for k, v in value.items()}
        if isinstance(value, Mapping) and "full_attention" in value and not isinstance(value["full_attention"], Mapping):
            raise TypeError(f"config[{key!r}]['full_attention'] must be a dict, "
                            f"got {_checks._show(value['full_attention'])}")
    return None


def read_config(path: str) -> Any:
    """A config.json's content; ValueError naming the file for anything but a small regular JSON file."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ValueError(f"config {path}: cannot read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"config {path}: not a regular file (a config.json is expected)")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"config {path}: {st.st_size:,} bytes is too large for a config.json "
                         f"(limit {MAX_CONFIG_BYTES:,} bytes; a real one is a few KB)")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ValueError(f"config {path}: cannot read: {e.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"config {path}: larger than {MAX_CONFIG_BYTES:,} bytes, too large for a config.json")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"config {path}: not UTF-8 text (byte {e.start}): not a config.json") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"config {path}: JSON nested too deeply to be a config.json") from None
    except ValueError as e:  # JSONDecodeError, and integers of more digits than Python converts
        raise ValueError(f"config {path}: not valid JSON: {' '.join(str(e).split())}") from None


def _text_config(config: Any):
    """``(the config holding the language model's rope, its model_type)``."""
    if not isinstance(config, Mapping) and not hasattr(config, "__dict__"):
        raise TypeError(f"config must be a dict, a path to config.json or a config object, got {type(config).__name__}")
    model_type = _get(config, "model_type")
    row = MODEL_TYPES.get(model_type) if isinstance(model_type, str) else None
    if row is not None and row.text_config_path:
        for key in row.text_config_path:
            sub = _get(config, key)
            if sub is None or not (isinstance(sub, Mapping) or hasattr(sub, "__dict__")):
                raise ValueError(f"config of model_type {model_type!r} keeps its language model's rope at "
                                 f"{'.'.join(row.text_config_path)}, but has no {key!r} there")
            config = sub
        return config, _get(config, "model_type", model_type)
    text = _get(config, "text_config")
    if text is not None and _get(config, "rope_theta") is None and (isinstance(text, Mapping) or hasattr(text, "__dict__")):
        config = text
        model_type = _get(config, "model_type", model_type)
    return config, model_type


def _legacy(config: Any, key: str):
    """``(value, the key it came from)`` for a standard key or its legacy spellings."""
    for k in (key,) + LEGACY_KEYS.get(key, ()):
        value = _get(config, k)
        if value is not None:
            return value, k
    return None, key


def _base(config: Any, scaling: Optional[dict], known, model_type, prefer_scaling: bool = False) -> float:
    """rope_theta as transformers reads it: the key (or its legacy spelling), else the model type's default.

    ``prefer_scaling``: a rope_parameters entry of one layer type carries its own theta.
    """
    base, key = _legacy(config, "rope_theta")
    if prefer_scaling and scaling is not None and scaling.get("rope_theta") is not None:
        base, key = None, "rope_theta"
    if base is None and scaling is not None and scaling.get("rope_theta") is not None:
        base, key = scaling["rope_theta"], "rope_parameters['rope_theta']"
    if base is None:
        if known is None and model_type is not None:
            # A model type ropescale does not know (remote code, or a transformers type without a
            # row) may have any base, or no rope at all (Phi-4-mini-flash): no silent 10000.
            raise ValueError(f"config gives no rope_theta (nor rope_parameters['rope_theta']) and ropescale does not "
                             f"know model_type {model_type!r} (ropescale.model_types.MODEL_TYPES), so its rope base "
                             f"is unknown: add rope_theta to the config if the model has a rope")
        if known is None:
            warnings.warn("config gives no rope_theta and no model_type: assuming 10000", stacklevel=7)
        base, key = (10000.0 if known is None else known.rope_theta), "rope_theta"
    base = _checks.real(f"config[{key!r}]", base, above=1.0)
    ratio = _get(config, "rope_ratio")
    if ratio is not None:  # ChatGLM: base = 10000 * rope_ratio
        base *= _checks.real("config['rope_ratio']", ratio, above=0.0)
        if not (math.isfinite(base) and base > 1.0):
            raise ValueError(f"config['rope_ratio'] = {ratio!r} makes the base {base:g}, which must be finite and > 1")
    return base


def _partial_rotary(config: Any, dim: int, known) -> Optional[float]:
    """partial_rotary_factor from the config (or a legacy spelling, or an absolute rotary_dim), else the type's."""
    prf, key = _legacy(config, "partial_rotary_factor")
    if prf is not None:
        return _checks.real(f"config[{key!r}]", prf, above=0.0, at_most=1.0)
    rotary_dim = _get(config, "rotary_dim") if known is None or "rotary_dim" not in known.ignored_keys else None
    if rotary_dim is None and known is not None:
        if known.partial_rotary_factor is not None:
            return known.partial_rotary_factor
        rotary_dim = known.rotary_dim
    if rotary_dim is None:
        return None
    rd = _config_int("rotary_dim", rotary_dim)
    if rd > dim or rd % 2:
        raise ValueError(f"config['rotary_dim'] must be an even number <= the head dim {dim}, got {rd}")
    return rd / dim


def _flat_rope_dict(config: Any) -> Optional[dict]:
    """The one rope dict of a config not keyed by layer type: ``rope_scaling``, else ``rope_parameters``."""
    for key in ("rope_scaling", "rope_parameters"):
        value = _get(config, key)
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(f"config[{key!r}] must be a dict (or null), got {_checks._show(value)}")
        if value is not None:
            return dict(value)
    return None


def rope_blocks(text: Mapping[str, Any]) -> Tuple[Optional[dict], Optional[dict]]:
    """``(rope_scaling, rope_parameters)`` of a text config as written (copies, None when absent); a
    ``rope_parameters`` keyed by layer type (transformers 5's own layout, read per layer) counts as absent.

    What ``ropescale lint`` and ``ropescale parity`` compare across engines: the v4 and the v5 block."""
    v4, v5 = text.get("rope_scaling"), text.get("rope_parameters")
    v4 = dict(v4) if isinstance(v4, Mapping) else None
    if isinstance(v5, Mapping) and v5 and all(isinstance(v, Mapping) for v in v5.values()):
        v5 = None
    v5 = dict(v5) if isinstance(v5, Mapping) else None
    return v4, v5


def _head_dim(config: Any, known, use_global: bool = False) -> int:
    for key in ("qk_rope_head_dim",) + (("global_head_dim",) if use_global else ()) + ("head_dim",):
        value, name = _legacy(config, key)
        if value is not None:
            return _config_int(name, value)
    (hidden, hkey), (heads, nkey) = _legacy(config, "hidden_size"), _legacy(config, "num_attention_heads")
    if _get(config, "embed_dim") is not None and _get(config, "num_heads") is not None:
        # vision towers (Qwen2-VL's) spell it embed_dim / num_heads; their hidden_size is the language model's
        (hidden, hkey), (heads, nkey) = (_get(config, "embed_dim"), "embed_dim"), (_get(config, "num_heads"), "num_heads")
    if hidden is None or heads is None:
        if known is not None and known.head_dim is not None:
            return known.head_dim
        raise ValueError("config must give head_dim, or hidden_size and num_attention_heads")
    return _config_int(hkey, hidden) // _config_int(nkey, heads)


def _resolve_scaling(config: Any, scaling: Optional[dict], max_pos: Optional[float],
                     prf: Optional[float]) -> Optional[dict]:
    """The rope_scaling dict with the trained length and factor filled in as HF transformers (5.x) does."""
    scaling = {"rope_type": UNSCALED} if scaling is None else scaling
    scaling.pop("rope_theta", None)
    if prf is not None and "partial_rotary_factor" not in scaling:
        scaling["partial_rotary_factor"] = prf
    if scaling.get("rope_type") is None and "type" in scaling:
        scaling["rope_type"] = scaling.pop("type")
    method = promoted(canonical(scaling.get("rope_type", UNSCALED), "config rope_type"), scaling)
    top_original = _length("config['original_max_position_embeddings']",
                           _get(config, "original_max_position_embeddings"))
    m_l = trained_length_from_hf(method, scaling, max_pos, top_original)
    if SPECS[method].trained_length and m_l is not None:
        scaling["original_max_position_embeddings"] = m_l
    if SPECS[method].hf_factor_from_lengths and scaling.get("factor") is None and max_pos is not None \
            and m_l is not None:
        scaling["factor"] = max_pos / _checks.real("config['original_max_position_embeddings']", m_l, at_least=1.0)
    if method == UNSCALED:
        rest = {k: v for k, v in scaling.items() if k not in ("rope_type", "type")}
        return rest or None
    return scaling


def layer_ropes(config: Any) -> LayerRopes:
    """Every layer's rope: ``(by_type, layers, layer_types, layout)``, see :class:`LayerRopes`.

    ``config`` is what :meth:`Rope.from_hf` takes (a dict, a path, a config
    object).  ``by_type[t]`` is ``Rope.from_hf(config, layer_type=t)``, or None
    where layers of type ``t`` do not rotate; ``layers[i]`` answers "what does
    layer ``i`` use".  The number of layers is ``num_hidden_layers`` (or the
    length of ``layer_types``, or the model type's default); a config giving
    neither is a ValueError.

    Examples
    --------
    >>> cfg = {"model_type": "gemma3_text", "rope_theta": 1e6, "rope_local_base_freq": 1e4,
    ...        "head_dim": 256, "num_hidden_layers": 12}
    >>> lr = ropescale.layer_ropes(cfg)
    >>> [t[0] for t in lr.layer_types], lr.layers[5].base, lr.layers[4].base
    (['s', 's', 's', 's', 's', 'f', 's', 's', 's', 's', 's', 'f'], 1000000.0, 10000.0)
    >>> nope = ropescale.layer_ropes({"model_type": "llama4_text", "num_hidden_layers": 8})
    >>> [r is not None for r in nope.layers]
    [True, True, True, False, True, True, True, False]
    """
    return _on_config(config, _layer_ropes)


def _layer_ropes(config: Any) -> LayerRopes:
    model = ModelRopes.read(config)
    if model.layer_types is None:
        raise ValueError("config gives neither num_hidden_layers nor layer_types: the number of layers is unknown")
    by_type: Dict[str, Optional[Rope]] = {}
    for lt in model.types():
        by_type[lt] = model.rope(lt) if model.has_rope(lt) else None
    rotates = model.rotates or [True] * len(model.layer_types)
    layers = [by_type[lt] if r else None for lt, r in zip(model.layer_types, rotates)]
    if model.keyed is not None:
        layout = "rope_parameters"
    elif "sliding_attention" in by_type and model.local_base is not None:
        layout = "rope_local_base_freq"
    else:
        layout = "flat"
    qt = model.query_temperature
    if qt is not None:
        # Llama 4: temperature tuning on the NoPE layers only
        temps = tuple(qt if r is None and lt not in NOPE_LAYER_TYPES else None
                      for lt, r in zip(model.layer_types, layers))
    else:
        # llama_4_scaling_beta: on every layer's rotated queries
        temps = tuple(None if r is None else r.query_temperature for r in layers)
    main = next((r for r in layers if r is not None), None)
    soft = 1.0 if main is None else main.softmax_scale
    return LayerRopes(by_type, layers, tuple(model.layer_types), layout, temps,
                      tuple(soft if lt not in NOPE_LAYER_TYPES else 1.0 for lt in model.layer_types))


def _from_hf(config: Any, layer_type: Optional[str]) -> Rope:
    return _on_config(config, lambda cfg: ModelRopes.read(cfg).rope(layer_type))


def _from_gguf(path: Any, layer_type: Optional[str]) -> Rope:
    return gguf.read(path).layer_rope(layer_type)


_UPPER.update(from_hf=_from_hf, from_gguf=_from_gguf, to_gguf=gguf.metadata)
