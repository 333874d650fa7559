"""Per-layer RoPE: which rope (if any) each layer of a model uses.

Models whose layers differ:

- Gemma 2 alternates sliding and full attention with one rope; Gemma 3 rotates
  its sliding layers unscaled at ``rope_local_base_freq`` (one full layer in
  ``sliding_window_pattern``), its full layers with ``rope_theta`` and the
  ``rope_scaling``;
- transformers 5 writes ``rope_parameters`` keyed by layer type
  (``{"full_attention": {...}, "sliding_attention": {...}}``) beside
  ``layer_types``;
- Llama 4 leaves rope out of every ``no_rope_layer_interval``-th layer
  (``no_rope_layers[i] == 1`` means layer ``i`` rotates); Cohere 2 rotates only
  its sliding layers; Qwen3-Next's ``linear_attention`` layers have no
  attention scores at all.

The layouts are derived as transformers' configuration classes derive them
(``models/<type>/configuration_<type>.py``); the defaults per model type are
in :data:`ropescale.model_types.MODEL_TYPES`; reading a config into
:class:`LayerRopes` is :func:`ropescale.configs.layer_ropes`.
"""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from .methods import UNSCALED
from .model_types import NOPE_LAYER_TYPES
from .rope import Rope, _upper

__all__ = ["LayerRopes"]


class LayerRopes(NamedTuple):
    """The result of :func:`layer_ropes`: ``(by_type, layers, layer_types, layout)``."""

    #: layer type -> its Rope, or None when no layer of that type rotates.
    by_type: Dict[str, Optional[Rope]]
    #: one entry per layer: the Rope it uses, or None (NoPE / no attention).
    layers: List[Optional[Rope]]
    #: one layer type per layer.
    layer_types: Tuple[str, ...]
    #: how the config wrote it: ``"rope_parameters"`` (keyed by layer type,
    #: transformers 5), ``"rope_local_base_freq"`` (Gemma 3's flat keys) or ``"flat"``.
    layout: str
    #: one entry per layer: the ``(floor_scale, attn_scale, offset)`` of the query multiplier that
    #: layer's attention applies (:meth:`Rope.query_scale`), or None.  Llama 4 applies its temperature
    #: tuning on its NoPE layers only (``attn_temperature_tuning and not use_rope``,
    #: models/llama4/modeling_llama4.py), so a rotating layer's entry is None even though its Rope
    #: carries the model's triple; Ministral 3 and Mistral 4 (``llama_4_scaling_beta``) apply theirs on
    #: every layer (models/ministral3/modeling_ministral3.py, ``get_llama_4_attn_scale``).
    query_temperatures: Optional[Tuple[Optional[tuple], ...]] = None
    #: one entry per layer: the factor that layer's attention puts on its softmax scale
    #: ``1/sqrt(d_qk)`` (:attr:`Rope.softmax_scale` for MLA models, which apply it; 1.0 elsewhere).
    softmax_scales: Optional[Tuple[float, ...]] = None

    def query_scale(self, layer: int, positions: Any) -> Any:
        """The factor on layer ``layer``'s queries at ``positions`` (ones where the layer has none).

        Examples
        --------
        >>> lr = ropescale.layer_ropes({"model_type": "llama4_text", "num_hidden_layers": 4})
        >>> [float(lr.query_scale(i, [8191])[0]) != 1.0 for i in range(4)]
        [False, False, False, True]
        """
        qt = None if self.query_temperatures is None else self.query_temperatures[layer]
        return Rope(2, query_temperature=qt).query_scale(positions)

    def analyze(self, target_len: Optional[float] = None, original_len: Optional[float] = None
                ) -> Dict[str, Any]:
        """:func:`ropescale.analyze` of each layer type's rope: ``{layer_type: RopeAnalysis or None}``.

        The lengths default per rope, as for :func:`ropescale.analyze` (a
        sliding layer's unscaled rope is analysed against the model's context).

        Examples
        --------
        >>> cfg = {"model_type": "gemma3_text", "rope_theta": 1e6, "rope_local_base_freq": 1e4, "head_dim": 256,
        ...        "num_hidden_layers": 6, "max_position_embeddings": 131072,
        ...        "rope_scaling": {"rope_type": "linear", "factor": 8.0}}
        >>> a = ropescale.layer_ropes(cfg).analyze()
        >>> a["full_attention"].original_len, a["sliding_attention"].base
        (16384.0, 10000.0)
        """
        analyze = _upper("analyze")
        return {lt: None if rope is None else analyze(rope, target_len=target_len, original_len=original_len)
                for lt, rope in self.by_type.items()}

    def to_hf(self) -> dict:
        """The config keys that :func:`layer_ropes` reads back to the same per-layer ropes.

        Written in the layout that was read: ``rope_parameters`` keyed by layer
        type with ``layer_types``, or the flat keys of the global rope (plus
        ``rope_local_base_freq`` for Gemma 3's sliding layers), and
        ``no_rope_layers`` when some rope layer type has NoPE layers.

        Examples
        --------
        >>> cfg = {"model_type": "gemma3_text", "rope_theta": 1e6, "rope_local_base_freq": 1e4,
        ...        "head_dim": 256, "num_hidden_layers": 6}
        >>> out = ropescale.layer_ropes(cfg).to_hf()
        >>> out["rope_theta"], out["rope_local_base_freq"], out["layer_types"][-1]
        (1000000.0, 10000.0, 'full_attention')
        """
        ropes = [r for r in self.by_type.values() if r is not None]
        if not ropes:
            return {"layer_types": list(self.layer_types), "no_rope_layers": [0] * len(self.layers)}
        main = self.by_type.get("full_attention") or ropes[0]
        if self.layout == "rope_parameters":
            out = {k: v for k, v in main.to_hf().items() if k not in ("rope_theta", "rope_scaling")}
            params = {}
            for lt, rope in self.by_type.items():
                if rope is None:
                    continue
                one = rope.to_hf()
                params[lt] = {"rope_type": UNSCALED, **(one.get("rope_scaling") or {}), "rope_theta": one["rope_theta"]}
                if "partial_rotary_factor" in one:
                    params[lt]["partial_rotary_factor"] = one["partial_rotary_factor"]
            out.pop("partial_rotary_factor", None)
            out["rope_parameters"] = params
        else:
            out = main.to_hf()
            local = self.by_type.get("sliding_attention")
            if self.layout == "rope_local_base_freq" and local is not None:
                out["rope_local_base_freq"] = local.base
        out["layer_types"] = list(self.layer_types)
        if any(r is None and lt not in NOPE_LAYER_TYPES for lt, r in zip(self.layer_types, self.layers)):
            out["no_rope_layers"] = [int(r is not None) for r in self.layers]
        qt = main.query_temperature
        if qt is not None and qt[2] == 1.0:     # Llama 4's keys (llama_4_scaling_beta is in the rope dict)
            out.update(attn_temperature_tuning=True, floor_scale=qt[0], attn_scale=qt[1])
        return out
