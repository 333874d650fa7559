"""``Rope``: one model's rotary embedding, its frequencies and how it was scaled."""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from . import _checks
from ._display import rope_html
from ._freq import scaled_from_params, seq_len_arg
from ._rotary import (_INT64, STREAM_PAIRS_MAX, STREAMS_MAX, _check_broadcast, _fast_positions, _fast_qk,
                      _rotate_qk, apply_rotary, apply_rotary_positions, apply_rotary_streams, cos_sin,
                      cos_sin_streams)
from ._rerotate import rebase
from .methods import AXIAL, DEFAULT_EXTENSION, LAYOUT_KEYS, SPECS, UNSCALED, canonical, config_name, normalize_scaling

# What Rope's convenience methods call on the floors above it (reading configs and GGUF
# files, the analysis): each of those modules registers its function here when it is
# imported (``import ropescale`` imports them all), so this module imports none of them.
_UPPER: Dict[str, Callable[..., Any]] = {}


def _upper(name: str) -> Callable[..., Any]:
    try:
        return _UPPER[name]
    except KeyError:  # pragma: no cover - only a partial import of the package gets here
        raise RuntimeError(f"ropescale's {name} is not loaded: import ropescale first") from None

# The attributes a Rope is made of; everything else is derived from them.
_FIELDS = ("dim", "base", "scaling", "max_position_embeddings", "interleaved", "query_temperature",
           "softmax_mscale")


def _length(name: str, value: Any) -> Optional[float]:
    """A context length in tokens (>= 1, finite), kept an int when it is one."""
    if value is None:
        return None
    v = _checks.real(name, value, at_least=1.0)
    if v > 2.0**53:
        raise ValueError(f"{name} must be <= 2**53 tokens, got {_checks._show(value)}")
    return int(v) if v.is_integer() else v


def _rebuild(dim, base, scaling, max_position_embeddings, interleaved=False, query_temperature=None,
             softmax_mscale=True):
    return Rope(dim, base, scaling, max_position_embeddings=max_position_embeddings, interleaved=interleaved,
                query_temperature=query_temperature, softmax_mscale=softmax_mscale)


def _query_temperature(value: Any) -> Optional[tuple]:
    """``(floor_scale, attn_scale, offset)`` checked (a pair means offset 1, Llama 4's), or None."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise TypeError(f"query_temperature must be None, a pair (floor_scale, attn_scale) or a triple "
                        f"(floor_scale, attn_scale, offset), got {_checks._show(value)}")
    offset = _checks.real("query_temperature offset", value[2], at_least=0.0) if len(value) == 3 else 1.0
    return (_checks.real("query_temperature floor_scale", value[0], above=0.0),
            _checks.real("query_temperature attn_scale", value[1], at_least=0.0), offset)


class Rope:
    """A rotary embedding: head dim, base, and an optional HF-style ``rope_scaling`` dict.

    A ``Rope`` is immutable: its frequencies are computed once from the
    arguments, and :meth:`replace` returns a new, checked ``Rope``.

    Parameters
    ----------
    dim : int
        Head dimension ``D``; the rotary dim is ``int(D * partial_rotary_factor)``.
    base : float
        ``rope_theta``.
    scaling : dict or None
        A ``rope_scaling`` dict (see :func:`ropescale.scaled_inv_freq`).
    max_position_embeddings : int, optional
        The model's ``max_position_embeddings``: the context it is meant to
        serve (:meth:`extend` sets it to the target length).
    interleaved : bool
        The model's pairing: ``(x[2k], x[2k+1])`` (GPT-J, GLM, Cohere, Llama 4,
        DeepSeek) instead of the half-split ``(x[k], x[k+R])`` (Llama, NeoX).
        :meth:`apply` uses it unless told otherwise; :meth:`from_hf` knows it
        from the model type.
    query_temperature : (float, float[, float]), optional
        ``(floor_scale, attn_scale[, offset])``: the model multiplies its
        queries by ``1 + attn_scale * ln(1 + floor((p + offset) / floor_scale))``
        at position ``p``, see :meth:`query_scale`.  Llama 4's attention
        temperature tuning has offset 1 (the default); Ministral 3 and
        Mistral 4 (``llama_4_scaling_beta``) have offset 0.  None (default): no
        query multiplier.
    softmax_mscale : bool
        Whether the model's attention multiplies its softmax scale by
        ``mscale(s, mscale_all_dim)**2`` when the scaling gives
        ``mscale_all_dim`` (see :attr:`softmax_scale`).  True (default) is the
        DeepSeek (MLA) convention the key comes from; :meth:`from_hf` sets it
        from the model type (False for Ministral 3, which writes the key and
        does not apply it).

    Examples
    --------
    >>> rope = ropescale.Rope(128, 10000.0, {"rope_type": "ntk", "factor": 8.0})
    >>> rope.method, rope.rotary_dim
    ('ntk', 128)
    >>> bool(np.isclose(rope.periods[-1], 8 * ropescale.Rope(128).periods[-1]))
    True
    >>> rope.replace(base=5e5).base
    500000.0
    """

    __slots__ = ("_dim", "_base", "_scaling", "_max_pos", "_interleaved", "_qtemp", "_smscale", "_method",
                 "_params", "_inv_freq", "_attn", "_streams", "_lean")

    def __init__(self, dim: int, base: float = 10000.0, scaling: Optional[Mapping[str, Any]] = None, *,
                 max_position_embeddings: Optional[float] = None, interleaved: bool = False,
                 query_temperature: Optional[tuple] = None, softmax_mscale: bool = True):
        set_ = object.__setattr__
        d = _checks.dim(dim)
        b = _checks.real("base", base, above=1.0)
        if scaling is not None and not isinstance(scaling, Mapping):
            raise TypeError(f"scaling must be None or a dict like a config's rope_scaling, got {type(scaling).__name__}")
        sc = None if scaling is None else copy.deepcopy(dict(scaling))
        method, params = normalize_scaling(sc, d)
        theta, attn = scaled_from_params(method, params, b)
        theta.setflags(write=False)
        for name, value in (("_dim", d), ("_base", b), ("_scaling", sc),
                            ("_max_pos", _length("max_position_embeddings", max_position_embeddings)),
                            ("_interleaved", _checks.boolean("interleaved", interleaved)),
                            ("_qtemp", _query_temperature(query_temperature)),
                            ("_smscale", _checks.boolean("softmax_mscale", softmax_mscale)),
                            ("_method", method), ("_params", params), ("_inv_freq", theta), ("_attn", attn),
                            ("_streams", _mrope_streams(sc, params["rotary_dim"] // 2, method))):
            set_(self, name, value)
        set_(self, "_lean", self._lean_streams())

    def __setattr__(self, name: str, value: Any) -> None:
        hint = f"; use rope.replace({name}=...)" if name in _FIELDS else ""
        raise AttributeError(f"Rope is immutable: cannot set {name!r}{hint}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Rope is immutable: cannot delete {name!r}")

    def __reduce__(self):
        return _rebuild, (self._dim, self._base, self._scaling, self._max_pos, self._interleaved, self._qtemp,
                          self._smscale)

    def _key(self) -> tuple:
        sc = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in (self._scaling or {}).items()
              if k not in ("rope_type", "type")}
        # the softmax rule counts only where it changes softmax_scale (a rope without mscale_all_dim
        # is the same rope whatever a model would do with the key)
        return (self._dim, self._base, self._method, sc, self._max_pos, self._interleaved, self._qtemp,
                self.softmax_scale)

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Rope):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # equal ropes may hold unhashable scaling lists

    def replace(self, **changes: Any) -> "Rope":
        """A new ``Rope`` with some of ``dim``, ``base``, ``scaling``, ``max_position_embeddings`` changed.

        Everything derived (method, rotary dim, frequencies, attention factor)
        is computed afresh and checked.

        Examples
        --------
        >>> r = ropescale.Rope(64, 1e4, {"rope_type": "linear", "factor": 2.0})
        >>> r.replace(scaling={"rope_type": "ntk", "factor": 2.0}).method
        'ntk'
        """
        unknown = sorted(set(changes) - set(_FIELDS))
        if unknown:
            raise TypeError(f"replace() takes {', '.join(_FIELDS)}; got {', '.join(unknown)}")
        args = {"dim": self._dim, "base": self._base, "scaling": self._scaling,
                "max_position_embeddings": self._max_pos, "interleaved": self._interleaved,
                "query_temperature": self._qtemp, "softmax_mscale": self._smscale, **changes}
        return Rope(args["dim"], args["base"], args["scaling"],
                    max_position_embeddings=args["max_position_embeddings"], interleaved=args["interleaved"],
                    query_temperature=args["query_temperature"], softmax_mscale=args["softmax_mscale"])

    # -- the arguments -------------------------------------------------------
    @property
    def dim(self) -> int:
        """Head dimension ``D``."""
        return self._dim

    @property
    def base(self) -> float:
        """``rope_theta``."""
        return self._base

    @property
    def scaling(self) -> Optional[dict]:
        """A copy of the ``rope_scaling`` dict (None: unscaled)."""
        return copy.deepcopy(self._scaling)

    @property
    def max_position_embeddings(self) -> Optional[float]:
        """The context the model is meant to serve, when known."""
        return self._max_pos

    @property
    def interleaved(self) -> bool:
        """Whether the model pairs ``(x[2k], x[2k+1])`` rather than ``(x[k], x[k+R])``."""
        return self._interleaved

    @property
    def method(self) -> str:
        """The scaling method (an alias such as ``su`` resolved)."""
        return self._method

    @property
    def rotary_dim(self) -> int:
        return self._params["rotary_dim"]

    @property
    def inv_freq(self) -> np.ndarray:
        """Scaled frequencies ``theta'`` (read-only float64, ``rotary_dim // 2``)."""
        return self._inv_freq

    @property
    def attention_factor(self) -> float:
        """The factor that multiplies cos and sin (YaRN's ``mscale``, LongRoPE's scale).

        :meth:`cos_sin` and :meth:`apply` already include it: both q and k are
        multiplied by it, so attention logits carry it squared.  Do not apply it
        again.  It is distinct from :attr:`softmax_scale` (a factor on the
        softmax scale ``1/sqrt(d_qk)``, which ropescale never applies) and from
        :meth:`query_scale` (Llama 4's per-position factor on the queries of its
        NoPE layers).
        """
        return self._attn

    @property
    def softmax_scale(self) -> float:
        """The factor a model puts on its softmax scale ``1/sqrt(d_qk)`` for this rope; 1.0 when none.

        DeepSeek V2/V3 YaRN with ``mscale_all_dim`` > 0 multiply the softmax
        scale by ``mscale(s, mscale_all_dim)**2`` with ``mscale(s, mu) = 0.1 mu
        ln s + 1`` (1 for ``s <= 1``), on top of :attr:`attention_factor`
        (``mscale(s, mscale) / mscale(s, mscale_all_dim)``, already in cos/sin).
        The attention code applies this one: ``scores = q k^T / sqrt(d_qk) *
        softmax_scale``.  Nothing in ropescale applies it.

        Only some models do (MLA families: transformers' ``yarn_apply_mscale``);
        Ministral 3, for one, writes ``mscale_all_dim`` and leaves its softmax
        scale alone.  :meth:`from_hf` knows which from the model type and sets
        :attr:`softmax_mscale` accordingly, so a rope read from a config reports
        what that model's attention does.  A bare ``Rope(...)`` knows no model:
        it reports ``mscale(s, mscale_all_dim)**2`` whenever the scaling gives
        ``mscale_all_dim`` (DeepSeek's convention, where the key comes from),
        unless built with ``softmax_mscale=False``.

        Examples
        --------
        >>> yarn = {"rope_type": "yarn", "factor": 40.0, "mscale": 1.0, "mscale_all_dim": 1.0,
        ...         "original_max_position_embeddings": 4096}
        >>> r = ropescale.Rope(64, 1e4, yarn)
        >>> round(r.softmax_scale, 6), r.attention_factor
        (1.873854, 1.0)
        >>> ropescale.Rope(64, 1e4, yarn, softmax_mscale=False).softmax_scale
        1.0
        """
        mu = self._params.get("mscale_all_dim")
        s = self._params.get("factor", 1.0)
        if not self._smscale or not mu or s <= 1.0:
            return 1.0
        m = 0.1 * mu * math.log(s) + 1.0
        return m * m

    @property
    def softmax_mscale(self) -> bool:
        """Whether the model applies :attr:`softmax_scale`'s ``mscale_all_dim`` factor (see there)."""
        return self._smscale

    @property
    def query_temperature(self) -> Optional[tuple]:
        """``(floor_scale, attn_scale, offset)`` of the query multiplier (see :meth:`query_scale`), or None."""
        return self._qtemp

    def query_scale(self, positions: Any) -> np.ndarray:
        """The per-position factor on the queries (attention temperature tuning); ones without it.

        ``1 + attn_scale * ln(1 + floor((p + offset) / floor_scale))`` at position
        ``p``, from :attr:`query_temperature`.  Llama 4 multiplies the queries of
        its NoPE layers by it with offset 1 (transformers' ``Llama4TextAttention``,
        ``attn_temperature_tuning``); Ministral 3 and Mistral 4 multiply every
        layer's rotated queries by ``1 + beta * ln(1 + floor(p / original))``:
        ``floor_scale`` is the rope's ``original_max_position_embeddings``,
        ``attn_scale`` its ``llama_4_scaling_beta``, offset 0 (transformers'
        ``get_llama_4_attn_scale``).  Which layers apply it:
        :meth:`ropescale.LayerRopes.query_scale`.  Returns float64 of
        ``positions``' shape.  Independent of :attr:`attention_factor` (on
        cos/sin) and :attr:`softmax_scale`.

        Examples
        --------
        >>> r = ropescale.Rope(128, query_temperature=(8192.0, 0.1))
        >>> np.round(r.query_scale([0, 8190, 8191]), 6).tolist()
        [1.0, 1.0, 1.069315]
        >>> m3 = ropescale.Rope(128, query_temperature=(16384, 0.1, 0))
        >>> np.round(m3.query_scale([16383, 16384, 32768]), 6).tolist()
        [1.0, 1.069315, 1.109861]
        """
        p = np.asarray(positions)
        if p.dtype.kind not in "iuf":
            raise TypeError(f"positions must be an integer or real array, got dtype {p.dtype}")
        p = p.astype(np.float64)
        if not np.all(np.isfinite(p)) or (p.size and p.min() < 0):
            raise ValueError("positions must be finite and >= 0")
        if self._qtemp is None:
            return np.ones(p.shape)
        floor_scale, attn_scale, offset = self._qtemp
        return np.log1p(np.floor((p + offset) / floor_scale)) * attn_scale + 1.0

    @property
    def trained_length(self) -> Optional[float]:
        """The trained context: ``original_max_position_embeddings``, else ``max_position_embeddings``."""
        return self.original_max_position_embeddings or self._max_pos

    # -- frequencies -------------------------------------------------------
    @property
    def original_max_position_embeddings(self) -> Optional[float]:
        """Trained context ``m_l`` when the scaling names one."""
        return self._params.get("original_max_position_embeddings")

    @property
    def factor(self) -> float:
        """The extension factor ``s`` (``alpha`` for ``ntk_alpha``; 1 when the method has none)."""
        return self._params.get("factor", self._params.get("alpha", 1.0))

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
        if seq_len is None or not SPECS[self._method].length_dependent:
            return self._inv_freq, self._attn
        return scaled_from_params(self._method, self._params, self._base, seq_len_arg(seq_len))

    # -- M-RoPE ------------------------------------------------------------
    @property
    def mrope_section(self) -> Optional[tuple]:
        """M-RoPE sections (pairs per position stream: temporal, height, width), or None.

        ``axial`` ropes have two, ``(R/4, R/4)``: rows, then columns."""
        if self._streams is None:
            return None
        declared = self._scaling.get("mrope_section")   # as written, empty sections included
        return tuple(int(v) for v in (np.bincount(self._streams) if declared is None else declared))

    @property
    def mrope_interleaved(self) -> bool:
        """Whether the streams take turns pair by pair (Qwen3-VL) rather than in chunks (Qwen2-VL)."""
        return bool((self._scaling or {}).get("mrope_interleaved", False))

    @property
    def pair_streams(self) -> Optional[np.ndarray]:
        """For M-RoPE, which position stream drives each rotary pair (int64, ``rotary_dim // 2``); else None.

        Chunked (Qwen2-VL / Qwen2.5-VL): the first ``s_0`` pairs follow stream
        0, the next ``s_1`` stream 1, and so on.  Interleaved (Qwen3-VL): pair
        ``k`` follows stream ``k % 3`` while ``k < 3 s_j`` for that stream
        ``j`` in 1, 2, and stream 0 otherwise (transformers'
        ``apply_interleaved_mrope``).

        Examples
        --------
        >>> r = ropescale.Rope(16, 1e4, {"mrope_section": [2, 3, 3]})
        >>> r.pair_streams.tolist()
        [0, 0, 1, 1, 1, 2, 2, 2]
        >>> r.replace(scaling={"mrope_section": [4, 2, 2], "mrope_interleaved": True}).pair_streams.tolist()
        [0, 1, 2, 0, 1, 2, 0, 0]
        """
        return None if self._streams is None else self._streams.copy()

    @classmethod
    def axial(cls, dim: int, base: float = 10000.0, *, interleaved: bool = False) -> "Rope":
        """A 2-D axial rope for vision: positions ``(2, ...)`` = (row, column).

        Pairs ``0 .. dim/4 - 1`` rotate by the row, the rest by the column, each
        half with the frequencies of a rope of dim ``dim/2``:
        ``theta_k = base^(-2 (k mod dim/4) / (dim/2))`` (transformers' ``axial``
        rope type, Qwen2-VL's vision tower: half-split pairing).  With
        ``interleaved=True`` it equals rotary-embedding-torch's
        ``RotaryEmbedding(dim // 2).get_axial_freqs(H, W)`` applied to ``dim``
        features (``freqs_for="lang"``, ``theta=base``), which concatenates the
        row and column frequencies, each repeated for a consecutive pair.

        Examples
        --------
        >>> r = ropescale.Rope.axial(8)
        >>> r.mrope_section, r.pair_streams.tolist()
        ((2, 2), [0, 0, 1, 1])
        >>> c, s = r.cos_sin(np.array([[3], [5]]), dtype=np.float64)   # row 3, column 5
        >>> bool(np.allclose(c[0], np.cos([3, 0.01 * 3, 5, 0.01 * 5])))
        True
        """
        return cls(dim, base, {"rope_type": AXIAL}, interleaved=interleaved)

    def _lean_streams(self) -> Optional[int]:
        """What :meth:`apply`'s lean lane takes: 0 (plain positions) or the number of M-RoPE streams; None
        when every call needs the general path (the frequencies depend on the positions)."""
        if SPECS[self._method].length_dependent:
            return None
        if self._streams is None:
            return 0
        k = self._n_streams()
        return k if k <= STREAMS_MAX and self._inv_freq.shape[0] <= STREAM_PAIRS_MAX else None

    def _n_streams(self) -> int:
        """len(mrope_section): the streams the config declares, an empty last one ([4, 4, 0]) included."""
        declared = self._scaling.get("mrope_section")
        return len(declared) if declared is not None else int(self._streams[-1]) + 1

    def _stream_positions(self, positions):
        """positions as M-RoPE streams ``(k, ...)``, or None for plain (text-only) positions."""
        if self._streams is None:
            return None
        p = np.asarray(positions)
        k = self._n_streams()
        if p.ndim <= 1:
            return None        # text only: every stream at the same position
        if p.shape[0] != k:
            raise ValueError(f"positions for this M-RoPE rope must be 1-D (text) or have a leading axis of "
                             f"{k} position streams (mrope_section {list(self.mrope_section)}), "
                             f"got shape {p.shape}")
        return p

    def _stream_cos_sin(self, streams, theta, attn, dtype):
        """cos/sin where pair j takes its angle from stream pair_streams[j] (one C table kernel)."""
        return cos_sin_streams(streams, theta, self._streams, attention_factor=attn, dtype=dtype)

    def _for_positions(self, positions, seq_len):
        if SPECS[self._method].length_dependent and seq_len is None:
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
        streams = self._stream_positions(positions)
        if streams is not None:
            return self._stream_cos_sin(streams, theta, attn, dtype)
        return cos_sin(positions, theta, attention_factor=attn, dtype=dtype)

    def apply(self, x: Any, positions: Any, *, interleaved: Optional[bool] = None, inverse: bool = False,
              out: Optional[np.ndarray] = None, seq_len: Optional[int] = None) -> np.ndarray:
        """Rotate ``x`` (..., D) at ``positions`` (fused, see :func:`ropescale.apply_rotary_positions`).

        The pairing is the rope's own (:attr:`interleaved`) unless ``interleaved`` is given.
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
        lean = self._lean
        if lean is not None and type(x) is np.ndarray and type(positions) is np.ndarray and seq_len is None:
            # The common call straight to a fused kernel: at a decode step whose x and out fill a
            # core's L2, every line of Python here runs from a cold cache and costs several times
            # its warm time.  M-RoPE streams go to the stream kernel as they are (it makes the row
            # of a token whose streams agree at once, with the same bits); a refusal of any check
            # returns None and the general path below raises or handles the call.
            il = self._interleaved if interleaved is None else interleaved
            if lean == 0:
                res = _fast_positions(x, positions, self._inv_freq, self._attn, il, inverse, out)
            elif positions.ndim >= 2 and positions.shape[0] == lean and positions.dtype == _INT64:
                res = _fast_positions(x, positions, self._inv_freq, self._attn, il, inverse, out, self._streams)
            else:
                res = None
            if res is not None:
                return res
        theta, attn = self._for_positions(positions, seq_len)
        if interleaved is None:
            interleaved = self._interleaved
        streams = self._stream_positions(positions)
        if streams is not None:
            x_arr = np.asarray(x)
            dt = x_arr.dtype if x_arr.dtype.kind == "f" else np.float64
            if dt in _FUSED_EQUALS_CACHED and streams.shape[0] <= STREAMS_MAX and theta.shape[0] <= STREAM_PAIRS_MAX:
                # fused, every stream's angles made as the rows go by (a token whose streams
                # agree, such as every decode step of Qwen2-VL, at once), with the bits of the
                # stream table (tests/test_mrope.py); it names the positions in its own
                # broadcasting check
                return apply_rotary_streams(x, streams, theta, self._streams, attention_factor=attn,
                                            interleaved=interleaved, inverse=inverse, out=out)
            if x_arr.ndim >= 1:  # name the positions, not the tables made from them
                _check_broadcast("positions", streams.shape[1:], x_arr.shape[:-1])
            c, s = self._stream_cos_sin(streams, theta, attn, np.float64 if dt == np.float64 else np.float32)
            return apply_rotary(x, c, s, interleaved=interleaved, inverse=inverse, out=out)
        return apply_rotary_positions(x, positions, theta, attention_factor=attn, interleaved=interleaved,
                                      inverse=inverse, out=out)

    def apply_qk(self, q: Any, k: Any, positions: Any, *, interleaved: Optional[bool] = None, inverse: bool = False,
                 out: Any = None, seq_len: Optional[int] = None) -> Tuple[Any, Any]:
        """Rotate queries and keys at the same ``positions`` in one pass: ``(q_rot, k_rot)``.

        The same bits as ``(self.apply(q, positions), self.apply(k, positions))``
        with each position's angles made once for both (see
        :func:`ropescale.apply_rotary_qk`): GQA/MQA head counts, views of a
        packed ``(B, S, 3, H, D)`` qkv array, M-RoPE position streams.
        ``out`` is None or a pair ``(out_q, out_k)``; ``out=(q, k)`` rotates in place.

        Examples
        --------
        >>> rope = ropescale.Rope(64, 500000.0)
        >>> qkv = np.ones((2, 3, 3, 4, 64), dtype=np.float32)   # (batch, seq, q/k/v, heads, head_dim)
        >>> pos = np.arange(3)[:, None]
        >>> _ = rope.apply_qk(qkv[:, :, 0], qkv[:, :, 1], pos, out=(qkv[:, :, 0], qkv[:, :, 1]))
        >>> bool(np.array_equal(qkv[:, :, 1], rope.apply(np.ones((2, 3, 4, 64), np.float32), pos)))
        True
        """
        lean = self._lean
        il = self._interleaved if interleaved is None else interleaved
        if lean is not None and type(positions) is np.ndarray and seq_len is None:
            # as in apply: the common call straight to the joint kernel
            if lean == 0:
                res = _fast_qk(q, k, positions, self._inv_freq, self._attn, il, inverse, out)
            elif positions.ndim >= 2 and positions.shape[0] == lean and positions.dtype == _INT64:
                res = _fast_qk(q, k, positions, self._inv_freq, self._attn, il, inverse, out, self._streams)
            else:
                res = None
            if res is not None:
                return res
        theta, attn = self._for_positions(positions, seq_len)
        streams = self._stream_positions(positions)

        def one(x, o):
            return self.apply(x, positions, interleaved=il, inverse=inverse, out=o, seq_len=seq_len)

        # the joint kernel where apply takes a fused kernel (not past the stream kernel's limits)
        joint = streams is None or (streams.shape[0] <= STREAMS_MAX and theta.shape[0] <= STREAM_PAIRS_MAX)
        return _rotate_qk(q, k, positions if streams is None else streams, theta, attn, il, inverse, out,
                          None if streams is None else self._streams, one, joint)

    # -- configs -----------------------------------------------------------
    @classmethod
    def from_hf(cls, config: Any, *, layer_type: Optional[str] = None) -> "Rope":
        """Build from a model's ``config.json``: a dict, a path, or an object with the same attributes.

        Reads ``rope_theta``, ``head_dim`` (or ``hidden_size / num_attention_heads``;
        ``qk_rope_head_dim`` for DeepSeek), ``partial_rotary_factor``,
        ``rope_scaling`` or ``rope_parameters``, ``max_position_embeddings`` and
        ``original_max_position_embeddings``, resolving them as HF transformers does.
        Every value goes through the checks of the Python API; errors name the
        key (and the file, for a path).

        ``layer_type`` picks the rope of one kind of layer in models whose
        layers differ (``"sliding_attention"`` of Gemma 3, a key of a
        transformers-5 ``rope_parameters`` keyed by layer type); None, the
        default, is the global (full-attention) rope.  A layer type without
        rotary attention (Qwen3-Next's ``linear_attention``, Llama 4's NoPE
        layers) is a ValueError; :func:`ropescale.layer_ropes` maps every layer.

        Examples
        --------
        >>> cfg = {"rope_theta": 500000.0, "hidden_size": 4096, "num_attention_heads": 32,
        ...        "max_position_embeddings": 131072,
        ...        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        ...                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
        >>> ropescale.Rope.from_hf(cfg)
        Rope(dim=128, base=500000.0, scaling={'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0, 'original_max_position_embeddings': 8192}, max_position_embeddings=131072)
        >>> gemma3 = {"model_type": "gemma3_text", "rope_theta": 1e6, "rope_local_base_freq": 1e4, "head_dim": 256}
        >>> ropescale.Rope.from_hf(gemma3, layer_type="sliding_attention").base
        10000.0
        """
        if layer_type is not None and not isinstance(layer_type, str):
            raise TypeError(f"layer_type must be None or a string such as 'sliding_attention', "
                            f"got {_checks._show(layer_type)}")
        return _upper("from_hf")(config, layer_type)

    def to_hf(self) -> dict:
        """The config fragment that :meth:`from_hf` reads back to the same frequencies at every length.

        ``rope_theta``, ``head_dim``, ``rope_scaling`` (the keys its method
        reads), ``partial_rotary_factor``, ``max_position_embeddings`` and, for
        interleaved pairing, ``rope_interleave``.  For ``dynamic``, whose trained length
        HF takes from ``max_position_embeddings``, that key carries the trained
        length.  A Ministral-style query multiplier (:attr:`query_temperature`
        with offset 0 stepping at the rope's original length) is written as
        ``llama_4_scaling_beta`` in the rope dict; Llama 4's temperature tuning is
        per layer and written by :meth:`ropescale.LayerRopes.to_hf`.

        Examples
        --------
        >>> ropescale.Rope(64, 1e6, {"rope_type": "linear", "factor": 2.0}).to_hf()
        {'rope_theta': 1000000.0, 'head_dim': 64, 'rope_scaling': {'rope_type': 'linear', 'factor': 2.0}}
        """
        d: dict = {"rope_theta": self._base, "head_dim": self._dim}
        sc = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in (self._scaling or {}).items()}
        sc.pop("type", None)
        prf = sc.pop("partial_rotary_factor", None)
        if prf is not None:
            d["partial_rotary_factor"] = prf
        # Only the keys the method reads (an ignored key may hold anything, even a non-JSON inf).
        used = set(SPECS[self._method].keys) | {"attention_factor"} | set(LAYOUT_KEYS)
        sc = {k: v for k, v in sc.items() if k in used}
        qt = self._qtemp
        if qt is not None and qt[2] == 0.0 and qt[0] == self.original_max_position_embeddings:
            sc["llama_4_scaling_beta"] = qt[1]     # Ministral 3's key: from_hf reads it back
        if self._method != UNSCALED or sc:
            d["rope_scaling"] = {"rope_type": config_name(self._method, self._scaling or {}), **sc}
        if self._interleaved:
            d["rope_interleave"] = True
        mp = self._max_pos
        if SPECS[self._method].hf_trained_length == "max_position_embeddings":
            mp = _length("original_max_position_embeddings", self.original_max_position_embeddings)
        if mp is not None:
            d["max_position_embeddings"] = mp
        return d

    def extend(self, target_len: float, method: str = DEFAULT_EXTENSION, *, original_len: Optional[float] = None, **params: Any) -> "Rope":
        """The rope scaled for a target context length ``target_len``.

        ``method`` is any of :data:`ropescale.METHODS` (``default`` gives the
        unscaled rope; ``longrope`` without ``short_factor``/``long_factor`` uses
        the uniform lists: 1 up to the trained length, the factor beyond).
        ``original_len`` defaults to this rope's trained context
        (``original_max_position_embeddings`` or ``max_position_embeddings``).
        ``params`` are extra ``rope_scaling`` keys (e.g. ``beta_fast``).

        Examples
        --------
        >>> r = ropescale.Rope(128).extend(32768, "ntk", original_len=4096)
        >>> r.scaling["factor"], r.max_position_embeddings
        (8.0, 32768)
        """
        spec = SPECS[canonical(method, "method")]
        if spec.layout_only:
            raise ValueError(f"method {spec.name!r} is a position layout, not a context extension "
                             f"(build it with Rope.{spec.name}(...))")
        m_l = original_len if original_len is not None else self.trained_length
        if m_l is None:
            raise ValueError("original_len is required: this rope does not know its trained context length")
        m_l = _checks.real("original_len", m_l, at_least=1.0)
        m = _checks.real("target_len", target_len, at_least=m_l)
        prf = (self._scaling or {}).get("partial_rotary_factor")
        sc: dict = {} if spec.extend is None else {"rope_type": spec.name, **spec.extend(m / m_l, m_l, self._n_pairs(spec, prf))}
        sc.update(params)
        if prf is not None:
            sc["partial_rotary_factor"] = prf
        # the position layout (M-RoPE sections) is the model's, whatever the scaling
        for key in LAYOUT_KEYS:
            if key in (self._scaling or {}) and key not in sc:
                sc[key] = copy.deepcopy(self._scaling[key])
        return Rope(self._dim, self._base, sc or None, max_position_embeddings=_length("target_len", m),
                    interleaved=self._interleaved, query_temperature=self._qtemp, softmax_mscale=self._smscale)

    def _n_pairs(self, spec, prf) -> int:
        if spec.full_head_dim:
            return self._dim // 2
        return int(self._dim * (1.0 if prf is None else prf)) // 2

    # -- display -----------------------------------------------------------
    def __repr__(self) -> str:
        sc = None
        if self._scaling is not None:
            sc = {k: (f"[{len(v)} values]" if isinstance(v, (list, tuple, np.ndarray)) and len(v) > 4 else v)
                  for k, v in self._scaling.items()}
        mp = f", max_position_embeddings={self._max_pos!r}" if self._max_pos is not None else ""
        extra = f", rotary_dim={self.rotary_dim}" if self.rotary_dim != self._dim else ""
        attn = f", attention_factor={self._attn:.6g}" if self._attn != 1.0 else ""
        il = ", interleaved=True" if self._interleaved else ""
        qt = f", query_temperature={self._qtemp!r}" if self._qtemp is not None else ""
        sm = ", softmax_mscale=False" if not self._smscale and self._params.get("mscale_all_dim") else ""
        return f"Rope(dim={self._dim}, base={self._base!r}, scaling={sc}{mp}{il}{qt}{sm}{extra}{attn})"

    def _repr_html_(self) -> str:
        return rope_html(self)

    def analyze(self, target_len: Optional[int] = None, original_len: Optional[int] = None):
        """Per-pair analysis against the original rope; see :func:`ropescale.analyze`.

        Examples
        --------
        >>> a = ropescale.Rope(128).extend(32768, "yarn", original_len=4096).analyze()
        >>> a.critical_dim
        46
        """
        return _upper("analyze")(self, target_len=target_len, original_len=original_len)

    # -- KV cache ----------------------------------------------------------
    def rebase_cache(self, k: Any, positions: Any, old_seq_len: int, new_seq_len: int, *,
                     interleaved: Optional[bool] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Keys cached at ``old_seq_len``'s frequencies, moved to ``new_seq_len``'s (see :func:`ropescale.rebase`).

        For ``dynamic`` (the base grows with the sequence) and ``longrope``
        (short factors up to the trained length, long ones past it) the
        frequencies depend on the sequence length, so keys cached earlier were
        rotated with other frequencies than new queries use.  The change of
        attention factor, if any, is applied once.  Other methods return the
        keys unchanged (copied into ``out`` when given).  The pairing is the
        rope's own unless ``interleaved`` is given.

        Examples
        --------
        >>> rope = ropescale.Rope(64, 10000.0, {"rope_type": "dynamic", "factor": 2.0,
        ...                                     "original_max_position_embeddings": 16})
        >>> pos = np.arange(20)[:, None]
        >>> k = rope.apply(np.ones((20, 2, 64)), pos, seq_len=16)
        >>> bool(np.allclose(rope.rebase_cache(k, pos, 16, 40), rope.apply(np.ones((20, 2, 64)), pos, seq_len=40)))
        True
        """

        if interleaved is None:
            interleaved = self._interleaved
        old, a_old = self.inv_freq_at(seq_len_arg(old_seq_len))
        new, a_new = self.inv_freq_at(seq_len_arg(new_seq_len))
        return rebase(k, positions, old, new, attention_factor=a_new / a_old, interleaved=interleaved, out=out)

    # -- GGUF (llama.cpp files; see ropescale.gguf) ---------------------------
    @classmethod
    def from_gguf(cls, path: Any, *, layer_type: Optional[str] = None) -> "Rope":
        """The rope of a llama.cpp GGUF file (see :func:`ropescale.gguf.read` for the pairing and context).

        ``layer_type="sliding_attention"`` gives the rope of the sliding-window
        layers of a model that has them (``{arch}.rope.freq_base_swa``, or
        Gemma 3's fixed local base); None, the default, the other layers'.

        ``ValueError`` names the file and the missing key when it is not a
        GGUF, is truncated or has no rope metadata.
        """
        return _upper("from_gguf")(path, layer_type)

    def to_gguf(self, arch: str = "llama", *, context_length: Optional[int] = None) -> dict:
        """The GGUF metadata a converter writes for this rope (see :func:`ropescale.gguf.metadata`).

        Examples
        --------
        >>> ropescale.Rope(64, 1e4).to_gguf()
        {'llama.rope.freq_base': 10000.0, 'llama.rope.dimension_count': 64}
        """
        return _upper("to_gguf")(self, arch, context_length=context_length)


# x dtypes whose fused rotation is bit-identical to the cached one with the float32
# (float64 for float64) table that M-RoPE builds (tests/test_rotary.py, tests/test_mrope.py).
_FUSED_EQUALS_CACHED = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _mrope_streams(scaling: Optional[Mapping[str, Any]], n_pairs: int, method: str = UNSCALED) -> Optional[np.ndarray]:
    """The stream of each pair for an M-RoPE rope dict (checked), or None."""
    if method == AXIAL and (scaling is None or scaling.get("mrope_section") is None):
        scaling = {**(scaling or {}), "mrope_section": [n_pairs // 2, n_pairs // 2]}
    if not scaling or scaling.get("mrope_section") is None:
        if scaling and scaling.get("mrope_interleaved") not in (None, False):
            raise ValueError("scaling['mrope_interleaved'] is set but scaling['mrope_section'] is not")
        return None
    sec = scaling["mrope_section"]
    if not isinstance(sec, (list, tuple)) or not sec or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 0 for v in sec):
        raise TypeError(f"scaling['mrope_section'] must be a list of integers >= 0 (pairs per position stream), "
                        f"got {_checks._show(sec)}")
    if sum(sec) != n_pairs:
        raise ValueError(f"scaling['mrope_section'] must add up to rotary_dim/2 = {n_pairs}, "
                         f"got {list(sec)} (sum {sum(sec)})")
    inter = _checks.boolean("scaling['mrope_interleaved']", scaling.get("mrope_interleaved", False))
    if not inter:
        streams = np.repeat(np.arange(len(sec), dtype=np.int64), sec)
    else:
        if len(sec) != 3:
            raise ValueError(f"interleaved M-RoPE takes 3 sections (temporal, height, width), got {list(sec)}")
        k = np.arange(n_pairs)
        streams = np.zeros(n_pairs, dtype=np.int64)
        for j in (1, 2):   # transformers' apply_interleaved_mrope: pairs j, j+3, ... below 3 * sec[j]
            streams[(k % 3 == j) & (k < 3 * sec[j])] = j
        if np.bincount(streams, minlength=3).tolist() != list(sec):
            raise ValueError(f"interleaved M-RoPE sections {list(sec)} do not fit rotary_dim/2 = {n_pairs} "
                             f"(pair k follows stream k % 3 below 3 * section)")
    streams.setflags(write=False)
    return streams
