"""Re-scale a loaded transformers model's rotary embedding in place.

:func:`patch` swaps every rotary module of a model for a
:class:`ropescale.torch.RotaryEmbedding` carrying the new frequencies and
writes the new rope into the model's config, so ``save_pretrained`` saves a
model that transformers loads with the same rope.

Rotary modules are found by their contract, not by class name: a module with
an ``inv_freq`` buffer (``{layer_type}_inv_freq`` for per-layer-type ropes)
whose ``forward(x, position_ids[, layer_type])`` returns transformers'
full-width ``(cos, sin)`` tables.  Before anything is changed, each candidate
is called on probe positions and its tables are compared with the ones
ropescale makes from the module's config; a module that computes something
else (another pairing, another formula) is refused with a message, and the
model is left as it was.

Requires ``torch`` and ``transformers`` (the ``hf`` extra).
"""
from __future__ import annotations

import copy
import inspect
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

try:
    import torch
except ImportError as _e:
    raise ImportError("ropescale.hf needs PyTorch and transformers: install ropescale's hf extra "
                      "(pip install \".[hf]\" in a clone of ropescale)") from _e

from ._freq import inv_freq as _inv_freq
from .methods import SPECS, UNSCALED
from .rope import Rope
from .torch import RotaryEmbedding

__all__ = ["patch", "find_rotary_modules", "rope_parameters"]

# Probe positions: small ones, where transformers' float32 angles are still
# within 1e-5 of exact, so any larger difference is a different formula.
_PROBE = [0, 1, 2, 3, 7, 31, 100]
_PROBE_ATOL = 1e-4

Scaling = Union[Rope, Mapping[str, Any], Tuple[str, float]]


def _head_dim(cfg: Any) -> int:
    hd = getattr(cfg, "head_dim", None)
    if hd:
        return int(hd)
    return int(cfg.hidden_size) // int(cfg.num_attention_heads)


def _rope_params(cfg: Any) -> Any:
    params = getattr(cfg, "rope_parameters", None)
    if params is None:  # transformers 4.x: rope_theta + rope_scaling
        params = dict(getattr(cfg, "rope_scaling", None) or {"rope_type": UNSCALED})
        params.setdefault("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    return params


def _rope_from(cfg: Any, params: Mapping[str, Any]) -> Rope:
    """The Rope transformers computes for ``cfg`` with these rope parameters."""
    frag: Dict[str, Any] = {"head_dim": _head_dim(cfg), "rope_parameters": dict(params)}
    for key in ("max_position_embeddings", "original_max_position_embeddings", "partial_rotary_factor"):
        value = getattr(cfg, key, None)
        if value is not None:
            frag[key] = value
    return Rope.from_hf(frag)


def _config_ropes(cfg: Any, layer_types: Optional[Iterable[str]]) -> Dict[Optional[str], Rope]:
    params = _rope_params(cfg)
    if layer_types is None:
        return {None: _rope_from(cfg, params)}
    return {lt: _rope_from(cfg, params[lt]) for lt in layer_types}


def _needs_layer_type(module: torch.nn.Module) -> bool:
    try:
        p = inspect.signature(module.forward).parameters.get("layer_type")
    except (TypeError, ValueError):
        return False
    return p is not None and p.default is inspect.Parameter.empty


def find_rotary_modules(model: torch.nn.Module) -> List[Tuple[str, torch.nn.Module]]:
    """``(name, module)`` of every module that holds rotary frequencies (an ``*inv_freq`` buffer).

    A module reachable under several names is listed under each of them.
    """
    found = []
    for name, module in model.named_modules(remove_duplicate=False):
        buffers = [b for b, _ in module.named_buffers(recurse=False)]
        if any(b == "inv_freq" or b.endswith("_inv_freq") for b in buffers) and callable(getattr(module, "forward", None)):
            found.append((name, module))
    return found


def _module_layer_types(module: torch.nn.Module, cfg: Any) -> Optional[List[str]]:
    lts = getattr(module, "layer_types", None)
    if not lts and not _needs_layer_type(module):
        return None
    if not lts:
        params = _rope_params(cfg)
        lts = [k for k, v in params.items() if isinstance(v, Mapping)]
    return sorted(set(lts))


def _device(module: torch.nn.Module) -> torch.device:
    for _, b in module.named_buffers(recurse=False):
        return b.device
    return torch.device("cpu")


def _check_contract(name: str, module: torch.nn.Module, ropes: Dict[Optional[str], Rope]) -> str:
    """The table layout ("full" or "half") of a module computing transformers' standard tables; ValueError otherwise."""
    device = _device(module)
    x = torch.zeros(1, 1, dtype=torch.float32, device=device)
    ids = torch.tensor([_PROBE], device=device)
    what = f"{name or 'model'} ({type(module).__name__})"
    natives = {}
    # Probe a copy: dynamic/longrope modules change their state when called.
    module = copy.deepcopy(module)
    for lt in ropes:
        try:
            with torch.no_grad():
                natives[lt] = module(x, ids) if lt is None else module(x, ids, lt)
        except Exception as e:  # a foreign forward: report it, change nothing
            raise ValueError(f"ropescale.hf.patch cannot replace {what}: calling forward(x, position_ids"
                             f"{', layer_type' if lt else ''}) failed ({type(e).__name__}: {e}); the model was "
                             f"not changed") from None
        if not (isinstance(natives[lt], (tuple, list)) and len(natives[lt]) == 2):
            raise ValueError(f"ropescale.hf.patch cannot replace {what}: its forward does not return (cos, sin); "
                             f"the model was not changed")

    def matches(layout):
        ours = RotaryEmbedding(ropes, layout=layout)
        for lt, native in natives.items():
            for a, b in zip(native, ours(x, ids, lt)):
                if tuple(a.shape) != tuple(b.shape) or not torch.allclose(a.float().cpu(), b.float().cpu(),
                                                                           atol=_PROBE_ATOL, rtol=0):
                    return False
        return True

    for layout in ("full", "half"):
        if matches(layout):
            return layout
    shapes = {lt: tuple(n[0].shape) for lt, n in natives.items()}
    low = sorted({str(b.dtype) for n, b in module.named_buffers(recurse=False)
                  if n.endswith("inv_freq") and b.dtype in (torch.float16, torch.bfloat16)})
    hint = (f" (its inv_freq is {', '.join(low)}, too coarse to tell formulas apart: patch the model before "
            f"casting it to a half dtype)") if low else ""
    raise ValueError(f"ropescale.hf.patch cannot replace {what}: its (cos, sin) tables (shapes {shapes}) are neither "
                     f"transformers' cat(c, c) tables nor half-width tables of its config's rope "
                     f"{ {lt: r for lt, r in ropes.items()} }{hint}; the model was not changed")


def _resolve(scaling: Scaling, original: Rope, cfg: Any, trained: Optional[float]) -> Rope:
    """The new Rope for one rotary module, from what the caller passed.

    ``original`` and ``trained`` are the model's rope and context length as
    loaded, before any patch: patching again starts from them, never from a
    previous patch's result.
    """
    if isinstance(scaling, Rope):
        if scaling.dim != original.dim or scaling.rotary_dim != original.rotary_dim:
            raise ValueError(f"scaling is a Rope with dim={scaling.dim}, rotary_dim={scaling.rotary_dim}; the model's "
                             f"rotary module has dim={original.dim}, rotary_dim={original.rotary_dim}")
        return scaling
    if isinstance(scaling, Mapping):
        sc = dict(scaling)
        base = sc.pop("rope_theta", original.base)
        if original.rotary_dim != original.dim and "partial_rotary_factor" not in sc:
            sc["partial_rotary_factor"] = original.rotary_dim / original.dim
        frag: Dict[str, Any] = {"head_dim": original.dim, "rope_theta": base, "rope_scaling": sc}
        if trained is not None:
            frag["max_position_embeddings"] = trained
        return Rope.from_hf(frag)
    if isinstance(scaling, tuple) and len(scaling) == 2 and isinstance(scaling[0], str):
        method, target = scaling
        return original.extend(target, method, original_len=original.original_max_position_embeddings or trained)
    raise TypeError(f"scaling must be a ropescale.Rope, a rope_scaling dict or a (method, target_length) tuple, "
                    f"got {scaling!r}")


def rope_parameters(rope: Rope) -> dict:
    """transformers' ``rope_parameters`` dict that makes its native rotary module compute ``rope``.

    A method transformers lacks (``MethodSpec.in_transformers``) whose
    frequencies are a change of base, such as static ``ntk`` or ``ntk_alpha``,
    is written as the default rope with the base that gives the same
    frequencies; any other such method is a ValueError, so that a patched
    model's ``save_pretrained`` output still loads in plain transformers.

    Examples
    --------
    >>> ropescale.hf.rope_parameters(ropescale.Rope(64, 10000.0, {"rope_type": "linear", "factor": 4.0}))
    {'rope_type': 'linear', 'rope_theta': 10000.0, 'factor': 4.0}
    """
    partial = rope.rotary_dim / rope.dim if rope.rotary_dim != rope.dim else None
    if not SPECS[rope.method].in_transformers:
        params: Dict[str, Any] = {"rope_type": UNSCALED, "rope_theta": _equivalent_base(rope)}
    elif rope.method == UNSCALED:
        params = {"rope_type": UNSCALED, "rope_theta": rope.base}
    else:
        sc = rope.to_hf().get("rope_scaling") or {}
        params = {"rope_type": rope.method, "rope_theta": rope.base}
        params.update({k: v for k, v in sc.items() if k not in ("rope_type", "type")})
    params.pop("partial_rotary_factor", None)
    if partial is not None:
        params["partial_rotary_factor"] = partial
    return params


def _equivalent_base(rope: Rope) -> float:
    """The base whose unscaled frequencies are ``rope``'s; ValueError when there is none."""
    theta = rope.inv_freq
    r = rope.rotary_dim
    base = float(theta[1]) ** (-r / 2.0) if theta.shape[0] > 1 and theta[0] == 1.0 and theta[1] > 0 else None
    if SPECS[rope.method].length_dependent or base is None or not base > 1.0 or \
            not np.allclose(_inv_freq(r, base), theta, rtol=1e-12, atol=0):
        known = ", ".join(m for m, s in SPECS.items() if s.in_transformers)
        raise ValueError(f"rope_type {rope.method!r} is not one transformers knows ({known}) and its frequencies "
                         f"are not a change of base, so a patched config would not load in plain transformers: "
                         f"use ropescale.torch.RotaryEmbedding without hf.patch, or one of those methods")
    return base


def _write_config(cfg: Any, layer_type: Optional[str], rope: Rope, target: Optional[float]) -> None:
    params = rope_parameters(rope)
    if hasattr(cfg, "rope_parameters") and getattr(cfg, "rope_parameters") is not None:
        if layer_type is None:
            cfg.rope_parameters = params
        else:
            new = dict(cfg.rope_parameters)
            new[layer_type] = params
            cfg.rope_parameters = new
    else:  # transformers 4.x
        cfg.rope_theta = params.pop("rope_theta")
        cfg.rope_scaling = None if params.get("rope_type") == UNSCALED and len(params) == 1 else params
    if target is not None and SPECS[rope.method].hf_trained_length != "max_position_embeddings":
        # dynamic NTK measures against max_position_embeddings: leave it the trained length
        cfg.max_position_embeddings = int(target) if float(target).is_integer() else target


def _plan(names: List[str], module: torch.nn.Module, scaling: Scaling, wanted: Optional[List[str]]):
    """What :func:`patch` does to one rotary module (reachable under ``names``), decided and checked before
    anything changes: ``(names, module, cfg, new ropes by layer type, targets, layout, (originals, trained))``."""
    name = names[0]
    if "" in names:
        raise ValueError("ropescale.hf.patch cannot replace the model itself; pass the model that contains it")
    cfg = getattr(module, "config", None)
    if cfg is None:
        raise ValueError(f"ropescale.hf.patch cannot replace {name} ({type(module).__name__}): it has no config "
                         f"to read its rope from; the model was not changed")
    loaded = getattr(module, "_hf_loaded", None) if isinstance(module, RotaryEmbedding) else None
    if loaded is not None:
        # patched before: start again from the rope and context the model was loaded with
        originals, trained, layout = dict(loaded[0]), loaded[1], module.layout
        lts = None if None in originals else sorted(originals)
    else:
        lts = _module_layer_types(module, cfg)
        try:
            originals = _config_ropes(cfg, lts)
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"ropescale.hf.patch cannot read the rope of {name} ({type(module).__name__}) from "
                             f"its config: {e}; the model was not changed") from None
        trained = getattr(cfg, "max_position_embeddings", None)
        layout = _check_contract(name, module, originals)
    if lts is None:
        if wanted is not None:
            raise ValueError(f"layer_types={wanted} was given, but {name} ({type(module).__name__}) has one rope "
                             f"for every layer (no layer types): leave layer_types out; the model was not changed")
        targets = [None]
    else:
        targets = wanted if wanted is not None else ["full_attention"] if "full_attention" in lts else list(lts)
        unknown = [t for t in targets if t not in lts]
        if unknown:
            raise ValueError(f"layer_types {unknown} not among {name}'s layer types {lts}")
    new = dict(originals)
    for lt in targets:
        new[lt] = _resolve(scaling, originals[lt], cfg, trained)
        try:  # the config written afterwards must load in plain transformers: refuse before any change
            rope_parameters(new[lt])
        except ValueError as e:
            raise ValueError(f"ropescale.hf.patch: {e}; the model was not changed") from None
    return names, module, cfg, new, targets, layout, (originals, trained)


def patch(model: torch.nn.Module, scaling: Scaling, *, layer_types: Optional[Iterable[str]] = None) -> List[str]:
    """Re-scale ``model``'s rotary embedding in place; returns the names of the replaced modules.

    Parameters
    ----------
    model : transformers ``PreTrainedModel`` (any ``nn.Module`` with rotary modules)
    scaling : Rope, dict or (method, target_length)
        A :class:`ropescale.Rope` (its dims must match the model's); a
        ``rope_scaling`` dict such as ``{"rope_type": "yarn", "factor": 4.0}``
        (any method ropescale knows, including static ``ntk``), resolved
        against the model's config like a ``config.json``; or a method name and
        a target context length, ``("yarn", 32768)``, extending from the
        model's trained length.
    layer_types : iterable of str, optional
        For models with per-layer-type ropes (Gemma 2/3 ``sliding_attention``
        / ``full_attention``): which types to re-scale.  Default
        ``("full_attention",)``: sliding-window layers never see long distances.

    The model's config is updated (``rope_parameters``, and
    ``max_position_embeddings`` when a target length is given), so
    ``save_pretrained`` round-trips.

    Examples
    --------
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=1,
    ...                   intermediate_size=64, vocab_size=32, max_position_embeddings=256)
    >>> model = LlamaForCausalLM(cfg)
    >>> ropescale.hf.patch(model, ("yarn", 1024))
    ['model.rotary_emb']
    >>> model.config.rope_parameters["factor"], model.config.max_position_embeddings
    (4.0, 1024)
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (a transformers model), got {type(model).__name__}")
    candidates = find_rotary_modules(model)
    if not candidates:
        raise ValueError(f"ropescale.hf.patch found no rotary module in {type(model).__name__} (no module with an "
                         f"inv_freq buffer); nothing was changed")
    wanted = None if layer_types is None else list(layer_types)
    # One plan per module object: a module reachable under two names is replaced under both.
    groups: Dict[int, Tuple[List[str], torch.nn.Module]] = {}
    for name, module in candidates:
        groups.setdefault(id(module), ([], module))[0].append(name)
    plans = [_plan(names, module, scaling, wanted) for names, module in groups.values()]

    target_len = float(scaling[1]) if isinstance(scaling, tuple) else None
    if isinstance(scaling, Rope):
        target_len = getattr(scaling, "max_position_embeddings", None)
    replaced = []
    for names, module, cfg, new, targets, layout, loaded in plans:
        emb = RotaryEmbedding(new if None not in new else new[None], config=cfg, layout=layout).to(_device(module))
        emb._hf_loaded = loaded
        for name in names:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, emb)
            replaced.append(name)
        for lt in targets:
            if loaded[1] is not None:
                # from the loaded context, as a first patch (which may leave it, as dynamic NTK does)
                cfg.max_position_embeddings = loaded[1]
            _write_config(cfg, lt, new[lt], target_len)
    return replaced
