"""``Rope``: one model's rotary embedding, its frequencies and how it was scaled."""
from __future__ import annotations

import copy
import json
import math
import os
from typing import Any, Mapping, Optional

import numpy as np

from . import _checks
from ._freq import METHODS, normalize_scaling, scaled_from_params, seq_len_arg
from ._rotary import apply_rotary_positions, cos_sin

# Methods whose frequencies depend on the current sequence length.
_LENGTH_DEPENDENT = ("dynamic", "longrope")


def _get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        value = config.get(key, default)
    else:
        value = getattr(config, key, default)
    return default if value is None else value


def _config_int(key: str, value: Any) -> int:
    """An integer from a config value (JSON may carry 128.0); ValueError names the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not float(value).is_integer() or value <= 0:
        raise ValueError(f"config[{key!r}] must be a positive integer, got {value!r}")
    return int(value)


def _config_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"config[{key!r}] must be a number, got {value!r}")
    return float(value)


class Rope:
    """A rotary embedding: head dim, base, and an optional HF-style ``rope_scaling`` dict.

    Parameters
    ----------
    dim : int
        Head dimension ``D``; the rotary dim is ``int(D * partial_rotary_factor)``.
    base : float
        ``rope_theta``.
    scaling : dict or None
        A ``rope_scaling`` dict (see :func:`ropescale.scaled_inv_freq`).

    Examples
    --------
    >>> rope = ropescale.Rope(128, 10000.0, {"rope_type": "ntk", "factor": 8.0})
    >>> rope.method, rope.rotary_dim
    ('ntk', 128)
    >>> bool(np.isclose(rope.periods[-1], 8 * ropescale.Rope(128).periods[-1]))
    True
    """

    def __init__(self, dim: int, base: float = 10000.0, scaling: Optional[Mapping[str, Any]] = None):
        self.dim = _checks.dim(dim)
        self.base = _checks.real("base", base, above=1.0)
        if scaling is not None and not isinstance(scaling, Mapping):
            raise TypeError(f"scaling must be None or a dict like a config's rope_scaling, got {type(scaling).__name__}")
        self.scaling = None if scaling is None else copy.deepcopy(dict(scaling))
        method, params = normalize_scaling(self.scaling, self.dim)
        self.method = method
        self.rotary_dim = params["rotary_dim"]
        self._params = params
        self.inv_freq, self.attention_factor = scaled_from_params(method, params, self.base)
        self.inv_freq.setflags(write=False)

    # -- frequencies -------------------------------------------------------
    @property
    def original_max_position_embeddings(self) -> Optional[float]:
        """Trained context ``m_l`` when the scaling names one."""
        return self._params.get("original_max_position_embeddings")

    @property
    def factor(self) -> float:
        return self._params.get("factor", 1.0)

    @property
    def periods(self) -> np.ndarray:
        """Per-pair periods ``2 pi / theta'`` in positions (float64)."""
        with np.errstate(divide="ignore"):
            return 2.0 * math.pi / self.inv_freq

    def inv_freq_at(self, seq_len: Optional[int] = None) -> tuple:
        """``(inv_freq, attention_factor)`` at a sequence length (dynamic and longrope depend on it).

        Examples
        --------
        >>> rope = ropescale.Rope(64, 10000.0, {"rope_type": "dynamic", "factor": 2.0,
        ...                                     "original_max_position_embeddings": 4096})
        >>> bool(np.array_equal(rope.inv_freq_at(4096)[0], ropescale.inv_freq(64)))
        True
        >>> bool(rope.inv_freq_at(8192)[0][-1] < ropescale.inv_freq(64)[-1])
        True
        """
        if seq_len is None or self.method not in _LENGTH_DEPENDENT:
            return self.inv_freq, self.attention_factor
        return scaled_from_params(self.method, self._params, self.base, seq_len_arg(seq_len))

    def _for_positions(self, positions, seq_len):
        if self.method in _LENGTH_DEPENDENT and seq_len is None:
            p = np.asarray(positions)
            if p.size and p.dtype.kind in "iuf" and np.all(np.isfinite(p)):
                seq_len = int(math.floor(float(np.max(p)))) + 1
                seq_len = max(seq_len, 0)
        return self.inv_freq_at(seq_len)

    # -- application -------------------------------------------------------
    def cos_sin(self, positions: Any, dtype: Any = np.float32, *, seq_len: Optional[int] = None):
        """cos/sin tables for ``positions`` with this rope's frequencies and attention factor.

        For ``dynamic`` and ``longrope`` the sequence length defaults to ``max(positions) + 1``.

        Returns ``(cos, sin)``, each ``positions.shape + (rotary_dim // 2,)`` of ``dtype``.

        Examples
        --------
        >>> c, s = ropescale.Rope(64).cos_sin(np.arange(4)[:, None])
        >>> c.shape, c.dtype
        ((4, 1, 32), dtype('float32'))
        """
        theta, attn = self._for_positions(positions, seq_len)
        return cos_sin(positions, theta, attention_factor=attn, dtype=dtype)

    def apply(self, x: Any, positions: Any, *, interleaved: bool = False, inverse: bool = False,
              out: Optional[np.ndarray] = None, seq_len: Optional[int] = None) -> np.ndarray:
        """Rotate ``x`` (..., D) at ``positions`` (fused, see :func:`ropescale.apply_rotary_positions`).

        Returns an array of ``x``'s shape and dtype (``out``'s when given).

        Examples
        --------
        >>> rope = ropescale.Rope(8, 10000.0, {"rope_type": "linear", "factor": 2.0})
        >>> q = np.ones((3, 2, 8), dtype=np.float32)        # (tokens, heads, head_dim)
        >>> y = rope.apply(q, np.arange(3)[:, None])
        >>> y.shape, y.dtype
        ((3, 2, 8), dtype('float32'))
        >>> bool(np.allclose(rope.apply(y, np.arange(3)[:, None], inverse=True), q, atol=1e-6))
        True
        """
        theta, attn = self._for_positions(positions, seq_len)
        return apply_rotary_positions(x, positions, theta, attention_factor=attn, interleaved=interleaved,
                                      inverse=inverse, out=out)

    # -- configs -----------------------------------------------------------
    @classmethod
    def from_hf(cls, config: Any) -> "Rope":
        """Build from a model's ``config.json``: a dict, a path, or an object with the same attributes.

        Reads ``rope_theta``, ``head_dim`` (or ``hidden_size / num_attention_heads``;
        ``qk_rope_head_dim`` for DeepSeek), ``partial_rotary_factor``,
        ``rope_scaling`` or ``rope_parameters``, ``max_position_embeddings`` and
        ``original_max_position_embeddings``, resolving them as HF transformers does.

        Examples
        --------
        >>> cfg = {"rope_theta": 500000.0, "hidden_size": 4096, "num_attention_heads": 32,
        ...        "max_position_embeddings": 131072,
        ...        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        ...                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
        >>> ropescale.Rope.from_hf(cfg)
        Rope(dim=128, base=500000.0, scaling={'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0, 'original_max_position_embeddings': 8192})
        """
        if isinstance(config, (str, os.PathLike)):
            try:
                with open(config, encoding="utf-8") as f:
                    config = json.load(f)
            except OSError as e:
                raise ValueError(f"config: cannot read {os.fspath(config)!r}: {e.strerror}") from None
            except json.JSONDecodeError as e:
                raise ValueError(f"config: {os.fspath(config)!r} is not valid JSON: {e}") from None
        if isinstance(config, Mapping) and isinstance(config.get("text_config"), Mapping) and "rope_theta" not in config:
            config = config["text_config"]
        if not isinstance(config, Mapping) and not hasattr(config, "__dict__"):
            raise TypeError(f"config must be a dict, a path to config.json or a config object, got {type(config).__name__}")

        rope_params = _get(config, "rope_parameters")
        rope_scaling = _get(config, "rope_scaling")
        # Newer configs keep everything in rope_parameters; some (Gemma) nest it per
        # attention type: the full-attention layers are the ones that see long context.
        nested = False
        if isinstance(rope_params, Mapping) and "rope_type" not in rope_params and "full_attention" in rope_params:
            rope_params = rope_params["full_attention"]
            nested = True
        if isinstance(rope_scaling, Mapping) and "rope_type" not in rope_scaling and "type" not in rope_scaling \
                and "full_attention" in rope_scaling:
            rope_scaling = rope_scaling["full_attention"]
            nested = True
        scaling = dict(rope_scaling) if isinstance(rope_scaling, Mapping) else None
        if scaling is None and isinstance(rope_params, Mapping):
            scaling = dict(rope_params)
        base = _get(config, "rope_theta")
        if base is None and scaling is not None:
            base = scaling.get("rope_theta")
        base = 10000.0 if base is None else base

        dim = _get(config, "qk_rope_head_dim")
        if dim is None and nested:
            dim = _get(config, "global_head_dim")
        if dim is None:
            dim = _get(config, "head_dim")
        if dim is None:
            hidden, heads = _get(config, "hidden_size"), _get(config, "num_attention_heads")
            if hidden is None or heads is None:
                raise ValueError("config must give head_dim, or hidden_size and num_attention_heads")
            dim = _config_int("hidden_size", hidden) // _config_int("num_attention_heads", heads)
        max_pos = _get(config, "max_position_embeddings")
        top_original = _get(config, "original_max_position_embeddings")
        prf = _get(config, "partial_rotary_factor")
        if scaling is None:
            scaling = {"rope_type": "default"}
        scaling.pop("rope_theta", None)
        if prf is not None and "partial_rotary_factor" not in scaling:
            scaling["partial_rotary_factor"] = prf
        method = scaling.get("rope_type", scaling.get("type", "default"))
        method = {"su": "longrope"}.get(method, method)
        # As HF transformers (5.x) resolves them: a top-level
        # original_max_position_embeddings (Phi-3) wins for llama3/yarn/longrope;
        # otherwise the trained length is max_position_embeddings.  Dynamic NTK
        # always measures against max_position_embeddings.
        if method in ("yarn", "longrope", "llama3") and top_original is not None:
            scaling["original_max_position_embeddings"] = top_original
        if method == "dynamic" and max_pos is not None:
            scaling["original_max_position_embeddings"] = max_pos
        if method in ("dynamic", "yarn", "longrope", "llama3") and scaling.get("original_max_position_embeddings") is None \
                and max_pos is not None:
            scaling["original_max_position_embeddings"] = max_pos
        if method == "longrope" and scaling.get("factor") is None and max_pos is not None:
            # LongRoPE's attention factor uses max_pos / original when no factor is given.
            scaling["factor"] = max_pos / scaling["original_max_position_embeddings"]
        if scaling.get("rope_type") is None and "type" in scaling:
            scaling["rope_type"] = scaling.pop("type")
        if scaling.get("rope_type") in (None, "default") and len(scaling) <= 2 and "factor" not in scaling:
            rest = {k: v for k, v in scaling.items() if k != "rope_type"}
            scaling = rest if rest else None
        rope = cls(_config_int("head_dim", dim), _config_float("rope_theta", base), scaling)
        rope.max_position_embeddings = max_pos
        return rope

    def to_hf(self) -> dict:
        """The config fragment that :meth:`from_hf` reads back (``rope_theta``, ``head_dim``, ``rope_scaling``).

        Examples
        --------
        >>> ropescale.Rope(64, 1e6, {"rope_type": "linear", "factor": 2.0}).to_hf()
        {'rope_theta': 1000000.0, 'head_dim': 64, 'rope_scaling': {'rope_type': 'linear', 'factor': 2.0}}
        """
        d = {"rope_theta": self.base, "head_dim": self.dim}
        if self.scaling is not None:
            sc = {}
            for k, v in self.scaling.items():
                sc[k] = v.tolist() if isinstance(v, np.ndarray) else v
            if "type" in sc and "rope_type" not in sc:
                sc["rope_type"] = sc.pop("type")
            prf = sc.pop("partial_rotary_factor", None)
            if prf is not None:
                d["partial_rotary_factor"] = prf
            d["rope_scaling"] = sc
        mp = getattr(self, "max_position_embeddings", None)
        if mp is not None:
            d["max_position_embeddings"] = mp
        return d

    def extend(self, target_len: float, method: str = "yarn", *, original_len: Optional[float] = None, **params: Any) -> "Rope":
        """The rope scaled for a target context length ``target_len``.

        ``original_len`` defaults to this rope's trained context
        (``original_max_position_embeddings`` or ``max_position_embeddings``).
        ``params`` are extra ``rope_scaling`` keys (e.g. ``beta_fast``).

        Examples
        --------
        >>> r = ropescale.Rope(128).extend(32768, "ntk", original_len=4096)
        >>> r.scaling["factor"]
        8.0
        """
        if method not in METHODS or method in ("default", "longrope", "proportional"):
            raise ValueError(f"method must be one of linear, ntk, dynamic, yarn, llama3, got {method!r}")
        m_l = original_len
        if m_l is None:
            m_l = self.original_max_position_embeddings or getattr(self, "max_position_embeddings", None)
        if m_l is None:
            raise ValueError("original_len is required: this rope does not know its trained context length")
        m_l = _checks.real("original_len", m_l, at_least=1.0)
        m = _checks.real("target_len", target_len, at_least=m_l)
        sc: dict = {"rope_type": method, "factor": m / m_l}
        if method in ("dynamic", "yarn", "llama3"):
            sc["original_max_position_embeddings"] = int(m_l) if float(m_l).is_integer() else m_l
        if method == "llama3":
            sc.setdefault("low_freq_factor", 1.0)
            sc.setdefault("high_freq_factor", 4.0)
        sc.update(params)
        if self.scaling and "partial_rotary_factor" in self.scaling:
            sc["partial_rotary_factor"] = self.scaling["partial_rotary_factor"]
        rope = Rope(self.dim, self.base, sc)
        rope.max_position_embeddings = int(m) if float(m).is_integer() else m
        return rope

    # -- display -----------------------------------------------------------
    def __repr__(self) -> str:
        sc = None
        if self.scaling is not None:
            sc = {k: (f"[{len(v)} values]" if isinstance(v, (list, tuple, np.ndarray)) and len(v) > 4 else v)
                  for k, v in self.scaling.items()}
        extra = f", rotary_dim={self.rotary_dim}" if self.rotary_dim != self.dim else ""
        attn = f", attention_factor={self.attention_factor:.6g}" if self.attention_factor != 1.0 else ""
        return f"Rope(dim={self.dim}, base={self.base!r}, scaling={sc}{extra}{attn})"

    def _repr_html_(self) -> str:
        from ._display import rope_html
        return rope_html(self)

    def analyze(self, target_len: Optional[int] = None, original_len: Optional[int] = None):
        """Per-pair analysis against the original rope; see :func:`ropescale.analyze`.

        Examples
        --------
        >>> a = ropescale.Rope(128).extend(32768, "yarn", original_len=4096).analyze()
        >>> a.critical_dim
        46
        """
        from .analysis import analyze
        return analyze(self, target_len=target_len, original_len=original_len)

    # -- GGUF (llama.cpp files; see ropescale.gguf) ---------------------------
    @classmethod
    def from_gguf(cls, path: Any) -> "Rope":
        """The rope of a llama.cpp GGUF file (see :func:`ropescale.gguf.read` for the pairing and context).

        ``ValueError`` names the file and the missing key when it is not a
        GGUF, is truncated or has no rope metadata.
        """
        from .gguf import read
        return read(path).rope

    def to_gguf(self, arch: str = "llama", *, context_length: Optional[int] = None) -> dict:
        """The GGUF metadata a converter writes for this rope (see :func:`ropescale.gguf.metadata`).

        Examples
        --------
        >>> ropescale.Rope(64, 1e4).to_gguf()
        {'llama.rope.freq_base': 10000.0, 'llama.rope.dimension_count': 64}
        """
        from .gguf import metadata
        return metadata(self, arch, context_length=context_length)
