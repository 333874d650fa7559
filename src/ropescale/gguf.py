"""Rope metadata of llama.cpp GGUF files: read it into a :class:`Rope`, write a Rope as GGUF metadata.

What a GGUF file says about its rope (keys as the ``gguf`` package names them):

* ``{arch}.rope.freq_base`` (``rope_theta``), ``{arch}.rope.dimension_count``
  (the rotary dim; the head dim is ``{arch}.attention.key_length`` or
  ``embedding_length / attention.head_count``), ``{arch}.context_length``;
* ``{arch}.rope.scaling.type`` (``none``, ``linear``, ``yarn``, ``longrope``),
  ``.factor``, ``.original_context_length``, ``.attn_factor``,
  ``.yarn_beta_fast``, ``.yarn_beta_slow``, ``.yarn_log_multiplier``;
* per-pair divisors: the ``rope_freqs`` tensor (Llama 3.1's scaling, written
  by converters as ``theta_k / theta'_k``), ``rope_factors_long`` /
  ``rope_factors_short`` (LongRoPE);
* the pairing, which is not in the file but fixed per architecture by
  llama.cpp: consecutive pairs ("norm", e.g. ``llama``, whose converter
  permutes q/k weights) or half-split pairs ("neox", e.g. ``qwen2``);
* the rope of the sliding-window layers, in models that have them
  (``{arch}.attention.sliding_window``): as llama.cpp's loader reads it, the
  other layers' rope with the base ``{arch}.rope.freq_base_swa`` and the
  widths ``{arch}.attention.key_length_swa`` and
  ``{arch}.rope.dimension_count_swa`` when the file has those keys, and for
  Gemma 3 (``gemma3``, ``gemma-embedding``) a fixed unscaled base of 10000,
  which its loader sets without reading a key (transformers'
  ``rope_local_base_freq``).

How GGUF expresses each ropescale method (what :func:`metadata` writes and
:func:`read` reads back):

============  ==================================================================
default       ``freq_base``
linear        ``scaling.type = linear``, ``scaling.factor``
ntk           ``freq_base = lambda * base`` (llama.cpp has no separate NTK type)
yarn          ``scaling.type = yarn``, factor, original length, beta fast/slow;
              ``attn_factor`` multiplies YaRN's own ``0.1 ln s + 1``; equal
              ``mscale``/``mscale_all_dim`` (DeepSeek) as ``yarn_log_multiplier``
llama3        ``rope_freqs`` tensor; read back as per-pair factors (a
              ``longrope`` rope whose short and long lists are equal)
longrope      ``scaling.type = longrope``, ``rope_factors_long/short``,
              original length, ``attn_factor``
dynamic       not expressible (llama.cpp has no dynamic NTK): ValueError
============  ==================================================================

The reader parses the file's header itself (the ``gguf`` package's
``GGUFReader`` decodes every tokenizer string, which takes seconds on a real
model); every read is bounds-checked, so a truncated or foreign file gives a
``ValueError`` naming the file and what was missing, and nothing past the end
is read.  Writing uses the ``gguf`` package (the ``gguf`` extra).
"""
from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from ._freq import inv_freq as _inv_freq, ntk_lambda
from .rope import Rope

__all__ = ["GGUFRope", "read", "metadata", "write", "pairing"]

_MAGIC = b"GGUF"

# GGUF value types (gguf.GGUFValueType): struct format of the fixed-size ones.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# llama.cpp's llama_model_rope_type(): architectures whose rope turns
# consecutive pairs (x[2k], x[2k+1]); the converters permute q/k weights of
# HF's half-split models into this order.  The neox list turns (x[k], x[k+R]).
_NORM_ARCHS = frozenset({
    "llama", "llama4", "deci", "baichuan", "starcoder", "plamo", "orion", "internlm2", "minicpm", "xverse",
    "command-r", "cohere2", "olmo", "arctic", "deepseek", "deepseek2", "chatglm", "granite", "granitemoe",
    "chameleon", "solar", "bailingmoe", "smollm3", "arcee", "ernie4_5", "ernie4_5-moe", "mistral3", "plm",
})
_NEOX_ARCHS = frozenset({
    "falcon", "grok", "dbrx", "bert", "nomic-bert", "stablelm", "bitnet", "qwen", "qwen2", "qwen2moe", "qwen3",
    "qwen3moe", "olmo2", "olmoe", "phi2", "phi3", "phimoe", "gemma", "gemma2", "gemma3", "gemma3n", "starcoder2",
    "openelm", "gptneox", "codeshell", "nemotron", "exaone", "minicpm3", "gpt-oss", "dream", "llada-moe",
})

# Tensor types readable here (ggml_type codes): F32, F16, F64.
_TENSOR_TYPES = {0: np.dtype("<f4"), 1: np.dtype("<f2"), 28: np.dtype("<f8")}
_ROPE_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")


def pairing(arch: str) -> Optional[str]:
    """``"interleaved"`` (llama.cpp's norm rope), ``"half"`` (neox) or None for an architecture llama.cpp's table lacks.

    Examples
    --------
    >>> ropescale.gguf.pairing("llama"), ropescale.gguf.pairing("qwen2")
    ('interleaved', 'half')
    """
    if arch in _NORM_ARCHS:
        return "interleaved"
    if arch in _NEOX_ARCHS:
        return "half"
    return None


@dataclass(frozen=True)
class GGUFRope:
    """What :func:`read` found: the rope and its context in the file."""

    path: str
    arch: str
    rope: Rope
    pairing: Optional[str]
    context_length: Optional[int]
    keys: Dict[str, Any] = field(default_factory=dict)  # the rope-related metadata as read
    #: The rope of the sliding-window layers (see the module docstring), or None without such layers.
    sliding: Optional[Rope] = None
    #: Each layer's type (``"sliding_attention"`` / ``"full_attention"``) when the file says, or None.
    layer_types: Optional[List[str]] = None

    def layer_rope(self, layer_type: Optional[str] = None) -> Rope:
        """The rope of one kind of layer: ``None`` or ``"full_attention"`` (:attr:`rope`), ``"sliding_attention"``."""
        if layer_type is None or layer_type == "full_attention":
            return self.rope
        if layer_type == "sliding_attention":
            if self.sliding is None:
                raise ValueError(f"{self.path}: the model has no sliding-window layers (the GGUF metadata has no "
                                 f"{self.arch + '.attention.sliding_window'!r})")
            return self.sliding
        raise ValueError(f"layer_type must be None, 'full_attention' or 'sliding_attention' for a GGUF file, "
                         f"got {layer_type!r}")

    @property
    def interleaved(self) -> Optional[bool]:
        """The ``interleaved`` argument of ropescale's rotary functions for this file's weights."""
        return None if self.pairing is None else self.pairing == "interleaved"


# -- reading ------------------------------------------------------------------
class _Cursor:
    """Bounds-checked little-endian reads from a byte buffer."""

    def __init__(self, buf, path: str):
        self.buf, self.pos, self.path, self.size = buf, 0, path, len(buf)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise ValueError(f"{self.path}: truncated GGUF file: {what} at byte {self.pos} needs {n} bytes, "
                             f"the file has {self.size}")

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what)
        self.need(n, what)
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_string(self, what: str) -> None:
        n = self.unpack("<Q", what)
        self.need(n, what)
        self.pos += n

    def value(self, vtype: int, what: str, keep: bool = True):
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype], what)
        if vtype == _STRING:
            return self.string(what) if keep else self.skip_string(what)
        if vtype == _ARRAY:
            etype = self.unpack("<I", what)
            count = self.unpack("<Q", what)
            if etype in _SCALARS:
                size = struct.calcsize(_SCALARS[etype])
                self.need(count * size, what)
                if keep and count <= 1024:
                    out = [struct.unpack_from(_SCALARS[etype], self.buf, self.pos + i * size)[0] for i in range(count)]
                else:
                    out = None
                self.pos += count * size
                return out
            if etype == _STRING:
                self.need(count * 8, what)  # each string has at least its 8-byte length
                for _ in range(count):
                    self.skip_string(what)
                return None
            raise ValueError(f"{self.path}: unsupported GGUF array element type {etype} in {what}")
        raise ValueError(f"{self.path}: unknown GGUF value type {vtype} in {what}")


def _parse(path: str, buf) -> tuple:
    """``(keys, tensors)``: scalar/small metadata and the rope tensors of a GGUF buffer."""
    cur = _Cursor(buf, path)
    if cur.size < 4 or buf[:4] != _MAGIC:
        raise ValueError(f"{path}: not a GGUF file (no 'GGUF' magic at the start)")
    cur.pos = 4
    version = cur.unpack("<I", "the version")
    if version not in (2, 3):
        raise ValueError(f"{path}: unsupported GGUF version {version} (2 and 3 are read; a big-endian file shows "
                         f"a byte-swapped version)")
    n_tensors = cur.unpack("<Q", "the tensor count")
    n_kv = cur.unpack("<Q", "the metadata count")
    if n_kv > cur.size or n_tensors > cur.size:
        raise ValueError(f"{path}: corrupt GGUF header ({n_kv} keys, {n_tensors} tensors in {cur.size} bytes)")
    keys: Dict[str, Any] = {}
    for i in range(n_kv):
        name = cur.string(f"metadata key {i}")
        vtype = cur.unpack("<I", f"the type of {name!r}")
        keys[name] = cur.value(vtype, f"the value of {name!r}", keep=not name.startswith("tokenizer."))
    infos = []
    for i in range(n_tensors):
        name = cur.string(f"tensor info {i}")
        n_dims = cur.unpack("<I", f"the dims of tensor {name!r}")
        if n_dims > 8:
            raise ValueError(f"{path}: tensor {name!r} claims {n_dims} dimensions")
        dims = [cur.unpack("<Q", f"the shape of tensor {name!r}") for _ in range(n_dims)]
        ttype = cur.unpack("<I", f"the type of tensor {name!r}")
        offset = cur.unpack("<Q", f"the offset of tensor {name!r}")
        if name in _ROPE_TENSORS:
            infos.append((name, dims, ttype, offset))
    align = keys.get("general.alignment", 32)
    if not isinstance(align, int) or align <= 0:
        raise ValueError(f"{path}: general.alignment must be a positive integer, got {align!r}")
    data_start = -(-cur.pos // align) * align
    tensors = {}
    for name, dims, ttype, offset in infos:
        dt = _TENSOR_TYPES.get(ttype)
        if dt is None:
            raise ValueError(f"{path}: tensor {name!r} has ggml type {ttype}; rope tensors are read as F32/F16/F64")
        count = int(np.prod(dims)) if dims else 1
        cur.pos = data_start + offset
        cur.need(count * dt.itemsize, f"the data of tensor {name!r}")
        raw = buf[cur.pos:cur.pos + count * dt.itemsize]  # a bytes copy of just this tensor
        tensors[name] = np.frombuffer(raw, dtype=dt).astype(np.float64)
    return keys, tensors


def _number(path: str, keys: Dict[str, Any], key: str, default: Any = None, *, required: bool = False):
    value = keys.get(key)
    if value is None:
        if required:
            raise ValueError(f"{path}: GGUF metadata has no {key!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{path}: GGUF metadata {key!r} must be a number, got {value!r}")
    return value


def read(path: Any) -> GGUFRope:
    """Read the rope of a GGUF file (see the module docstring for the mapping).

    Raises ``ValueError`` naming the file and the key when the file is not a
    GGUF, is truncated, or lacks the rope metadata.
    """
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ValueError(f"{p}: not a GGUF file (it is empty)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                # the mmap itself, not a memoryview: no export may outlive the
                # parse, or an error raised inside it would keep the map open
                keys, tensors = _parse(p, mm)
    except OSError as e:
        raise ValueError(f"{p}: cannot read GGUF file: {e.strerror or e}") from None
    arch = keys.get("general.architecture")
    if not isinstance(arch, str):
        raise ValueError(f"{p}: GGUF metadata has no 'general.architecture'")
    rope_keys = {k: v for k, v in keys.items() if k.startswith(f"{arch}.rope.")}
    if not rope_keys:
        raise ValueError(f"{p}: GGUF metadata has no rope keys (no {arch + '.rope.freq_base'!r}, "
                         f"{arch + '.rope.dimension_count'!r}): not a rotary model, or not converted with them")
    rope = _rope(p, arch, keys, tensors)
    ctx = _number(p, keys, f"{arch}.context_length")
    shown = dict(rope_keys)
    shown.update({k: v for k, v in keys.items() if k in (f"{arch}.context_length", f"{arch}.attention.key_length",
                                                          f"{arch}.attention.head_count", f"{arch}.embedding_length")})
    shown.update({k: f"[{len(v)} values]" for k, v in tensors.items()})
    window = _number(p, keys, f"{arch}.attention.sliding_window")
    sliding = types = None
    if window:
        shown[f"{arch}.attention.sliding_window"] = window
        sliding = _sliding_rope(p, arch, keys, rope)
        types = _layer_types(arch, keys)
    return GGUFRope(p, arch, rope, pairing(arch), None if ctx is None else int(ctx), shown, sliding, types)


def _layer_types(arch: str, keys: Dict[str, Any]) -> Optional[List[str]]:
    """Which layers slide, as llama.cpp's loader reads ``{arch}.attention.sliding_window_pattern``: one flag per
    layer (true: sliding), or a period n (layer i slides when n = 0 or i mod n < n - 1, llama.cpp's
    ``set_swa_pattern``; Gemma 3 fixes n = 6).  A few architectures put the full layer first in each
    period instead; for them only the per-layer form is read right."""
    n_layers = keys.get(f"{arch}.block_count")
    pattern = keys.get(f"{arch}.attention.sliding_window_pattern", 6 if arch in _SWA_FIXED_BASE else None)
    if isinstance(pattern, list):
        flags = [bool(v) for v in pattern]
    elif isinstance(n_layers, int) and not isinstance(n_layers, bool) and 0 < n_layers <= 1 << 16 \
            and isinstance(pattern, int) and not isinstance(pattern, bool) and pattern >= 0:
        flags = [pattern == 0 or i % pattern < pattern - 1 for i in range(n_layers)]
    else:
        return None
    return ["sliding_attention" if f else "full_attention" for f in flags]


# Architectures whose llama.cpp loader fixes the sliding layers' rope (base 10000, no scaling)
# without reading rope.freq_base_swa (llama_model::load_hparams, LLM_ARCH_GEMMA3 and
# LLM_ARCH_GEMMA_EMBEDDING); transformers' Gemma 3 config says the same as rope_local_base_freq.
_SWA_FIXED_BASE = {"gemma3": 10000.0, "gemma-embedding": 10000.0}


def _sliding_rope(p: str, arch: str, keys: Dict[str, Any], rope: Rope) -> Rope:
    """The sliding-window layers' rope, as llama.cpp's loader sets it up (see the module docstring).

    Their head dim and rotary dim default to the other layers' and are
    ``{arch}.attention.key_length_swa`` and ``{arch}.rope.dimension_count_swa``
    when the file has them (Gemma 4-style models whose two kinds of layer
    differ in width)."""
    head = int(_number(p, keys, f"{arch}.attention.key_length_swa", rope.dim))
    n_rot = int(_number(p, keys, f"{arch}.rope.dimension_count_swa",
                        rope.rotary_dim if head == rope.dim else head))
    if head <= 0 or n_rot <= 0 or n_rot % 2 or n_rot > head:
        raise ValueError(f"{p}: the sliding layers' rotary dim {n_rot} ({arch + '.rope.dimension_count_swa'!r}) must "
                         f"be an even number <= their head dim {head} ({arch + '.attention.key_length_swa'!r})")
    partial = {} if n_rot == head else {"partial_rotary_factor": n_rot / head}
    fixed = _SWA_FIXED_BASE.get(arch)
    if fixed is not None:
        return Rope(head, fixed, partial or None)
    base = _number(p, keys, f"{arch}.rope.freq_base_swa", rope.base)
    if not (math.isfinite(base) and base > 1.0):
        raise ValueError(f"{p}: GGUF metadata {arch + '.rope.freq_base_swa'!r} must be a number > 1, got {base!r}")
    # llama.cpp: otherwise the sliding layers share the other layers' scaling
    sc = {k: v for k, v in (rope.scaling or {}).items() if k != "partial_rotary_factor"}
    sc.update(partial)
    return Rope(head, float(base), sc or None)


def _rope(p: str, arch: str, keys: Dict[str, Any], tensors: Dict[str, np.ndarray]) -> Rope:
    k = f"{arch}.rope"
    base = float(_number(p, keys, f"{k}.freq_base", 10000.0))  # llama.cpp's default when absent
    head = _number(p, keys, f"{arch}.attention.key_length")
    if head is None:
        emb = _number(p, keys, f"{arch}.embedding_length")
        heads = keys.get(f"{arch}.attention.head_count")
        if isinstance(heads, list):  # per-layer head counts
            heads = max(heads) if heads else None
        if emb is None or not heads:
            raise ValueError(f"{p}: GGUF metadata has no {arch + '.attention.key_length'!r} (nor "
                             f"{arch + '.embedding_length'!r} and {arch + '.attention.head_count'!r}) to give the head dim")
        head = int(emb) // int(heads)
    head = int(head)
    n_rot = int(_number(p, keys, f"{k}.dimension_count", head))
    if n_rot <= 0 or n_rot % 2 or n_rot > head:
        raise ValueError(f"{p}: {k + '.dimension_count'!r} must be an even number <= the head dim {head}, got {n_rot}")
    sc: Dict[str, Any] = {}
    if n_rot != head:
        sc["partial_rotary_factor"] = n_rot / head
    stype = keys.get(f"{k}.scaling.type", "none")
    factor = _number(p, keys, f"{k}.scaling.factor")
    original = _number(p, keys, f"{k}.scaling.original_context_length")
    attn = _number(p, keys, f"{k}.scaling.attn_factor")
    ctx = _number(p, keys, f"{arch}.context_length")
    r = n_rot // 2

    def per_pair(name):
        v = tensors.get(name)
        if v is not None and v.shape != (r,):
            raise ValueError(f"{p}: tensor {name!r} must have {r} entries (rope.dimension_count / 2), got {v.shape[0]}")
        return v

    freqs = per_pair("rope_freqs.weight")
    if stype in ("none", None, "") or (stype == "linear" and factor in (None, 1.0)):
        if freqs is not None:
            # Llama 3.1-style per-pair divisors: theta'_k = theta_k / f_k at every length.
            f = freqs.tolist()
            sc.update({"rope_type": "longrope", "short_factor": f, "long_factor": f, "attention_factor": 1.0,
                       "original_max_position_embeddings": int(original or ctx or 1)})
        return Rope(head, base, sc or None)
    if freqs is not None:
        raise ValueError(f"{p}: a rope_freqs tensor together with {k + '.scaling.type'!r} = {stype!r} is not a "
                         f"combination ropescale reads")
    if stype == "linear":
        sc.update({"rope_type": "linear", "factor": float(factor)})
    elif stype == "yarn":
        if factor is None or original is None:
            missing = f"{k}.scaling.factor" if factor is None else f"{k}.scaling.original_context_length"
            raise ValueError(f"{p}: YaRN scaling needs {missing!r}, which the GGUF metadata lacks")
        sc.update({"rope_type": "yarn", "factor": float(factor), "original_max_position_embeddings": int(original)})
        for key, name in (("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow")):
            v = _number(p, keys, f"{k}.scaling.{key}")
            if v is not None:
                sc[name] = float(v)
        log_mul = _number(p, keys, f"{k}.scaling.yarn_log_multiplier")
        if log_mul:
            sc["mscale"] = sc["mscale_all_dim"] = float(log_mul) / 0.1
        ext = _number(p, keys, f"{k}.scaling.yarn_ext_factor")
        if ext is not None and ext not in (-1.0, 1.0):
            # llama.cpp's ramp weight: -1 (its default) and 1 are YaRN's own blend
            raise ValueError(f"{p}: {k + '.scaling.yarn_ext_factor'!r} = {ext} changes YaRN's blend; ropescale "
                             f"reads only the standard blend (-1 or 1)")
        yarn_attn = _number(p, keys, f"{k}.scaling.yarn_attn_factor")
        if yarn_attn is not None:
            attn = (1.0 if attn is None else attn) * yarn_attn
        if attn is not None and attn != 1.0:
            sc["attention_factor"] = float(attn) * _yarn_mscale(float(factor))
    elif stype == "longrope":
        long_f, short_f = per_pair("rope_factors_long.weight"), per_pair("rope_factors_short.weight")
        if long_f is None or short_f is None:
            raise ValueError(f"{p}: LongRoPE scaling needs the tensors rope_factors_long and rope_factors_short")
        if original is None:
            raise ValueError(f"{p}: LongRoPE scaling needs {k + '.scaling.original_context_length'!r}")
        sc.update({"rope_type": "longrope", "short_factor": short_f.tolist(), "long_factor": long_f.tolist(),
                   "original_max_position_embeddings": int(original)})
        if factor is not None:
            sc["factor"] = float(factor)
        elif ctx is not None:
            sc["factor"] = float(ctx) / float(original)
        if attn is not None:
            sc["attention_factor"] = float(attn)
    else:
        raise ValueError(f"{p}: {k + '.scaling.type'!r} = {stype!r} is not one of none, linear, yarn, longrope")
    return Rope(head, base, sc)


def _per_pair_only(rope: Rope, sc: Dict[str, Any]) -> bool:
    """A longrope whose lists agree and whose attention factor is 1: fixed per-pair divisors (what rope_freqs holds)."""
    return rope.attention_factor == 1.0 and np.array_equal(np.asarray(sc["short_factor"], dtype=np.float64),
                                                          np.asarray(sc["long_factor"], dtype=np.float64))


def _yarn_mscale(factor: float) -> float:
    return 1.0 if factor <= 1.0 else 0.1 * math.log(factor) + 1.0


# -- writing ------------------------------------------------------------------
def metadata(rope: Rope, arch: str = "llama", *, context_length: Optional[int] = None) -> Dict[str, Any]:
    """The GGUF metadata (and rope tensors, under their tensor names) a converter writes for ``rope``.

    Keys are full GGUF keys (``"llama.rope.freq_base"``); tensor entries
    (names ending in ``.weight``) hold float32 arrays.

    Examples
    --------
    >>> md = ropescale.gguf.metadata(ropescale.Rope(64, 1e4, {"rope_type": "linear", "factor": 2.0}))
    >>> md["llama.rope.scaling.type"], md["llama.rope.scaling.factor"]
    ('linear', 2.0)
    """
    if not isinstance(rope, Rope):
        raise TypeError(f"rope must be a ropescale.Rope, got {type(rope).__name__}")
    if not isinstance(arch, str) or not arch:
        raise TypeError(f"arch must be a GGUF architecture name such as 'llama', got {arch!r}")
    k = f"{arch}.rope"
    sc = dict(rope.scaling or {})
    md: Dict[str, Any] = {f"{k}.freq_base": float(rope.base), f"{k}.dimension_count": int(rope.rotary_dim)}
    if rope.rotary_dim != rope.dim:
        md[f"{arch}.attention.key_length"] = int(rope.dim)
    ctx = context_length if context_length is not None else getattr(rope, "max_position_embeddings", None)
    if ctx is not None:
        md[f"{arch}.context_length"] = int(ctx)
    method = rope.method
    if method == "default":
        pass
    elif method == "ntk":
        md[f"{k}.freq_base"] = float(rope.base * ntk_lambda(rope.rotary_dim, rope.factor))
    elif method == "linear":
        md.update({f"{k}.scaling.type": "linear", f"{k}.scaling.factor": float(rope.factor)})
    elif method == "yarn":
        if sc.get("truncate", True) is False:
            raise ValueError("GGUF cannot express YaRN with truncate=False (llama.cpp always rounds the correction "
                             "range to whole dims)")
        md.update({f"{k}.scaling.type": "yarn", f"{k}.scaling.factor": float(rope.factor),
                   f"{k}.scaling.original_context_length": int(rope.original_max_position_embeddings)})
        for name in ("beta_fast", "beta_slow"):  # llama.cpp's defaults are YaRN's (32, 1)
            if sc.get(name) is not None:
                md[f"{k}.scaling.yarn_{name}"] = float(sc[name])
        ms, msa = sc.get("mscale"), sc.get("mscale_all_dim")
        if "attention_factor" not in sc and ms and msa and ms == msa:
            md[f"{k}.scaling.yarn_log_multiplier"] = 0.1 * float(msa)
        elif rope.attention_factor != _yarn_mscale(rope.factor):
            md[f"{k}.scaling.attn_factor"] = float(rope.attention_factor / _yarn_mscale(rope.factor))
    elif method == "llama3" or (method == "longrope" and _per_pair_only(rope, sc)):
        md["rope_freqs.weight"] = (_inv_freq(rope.rotary_dim, rope.base) / rope.inv_freq).astype(np.float32)
    elif method == "longrope":
        md.update({f"{k}.scaling.type": "longrope",
                   f"{k}.scaling.original_context_length": int(rope.original_max_position_embeddings),
                   f"{k}.scaling.attn_factor": float(rope.attention_factor),
                   "rope_factors_long.weight": np.asarray(sc["long_factor"], dtype=np.float32),
                   "rope_factors_short.weight": np.asarray(sc["short_factor"], dtype=np.float32)})
        if "factor" in sc:
            md[f"{k}.scaling.factor"] = float(sc["factor"])
    else:
        raise ValueError(f"GGUF cannot express the {method!r} rope (llama.cpp has no such scaling); "
                         f"methods it can: default, linear, ntk, yarn, llama3, longrope")
    return md


def write(writer: Any, rope: Rope, arch: Optional[str] = None, *, context_length: Optional[int] = None) -> None:
    """Add ``rope``'s metadata and rope tensors to a ``gguf.GGUFWriter`` (before it writes its header)."""
    arch = arch or writer.arch
    for key, value in metadata(rope, arch, context_length=context_length).items():
        if key.endswith(".weight"):
            writer.add_tensor(key[: -len(".weight")] + ".weight", np.asarray(value, dtype=np.float32))
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:  # pragma: no cover - metadata() makes only the kinds above
            raise TypeError(f"cannot write {key!r} = {value!r}")
