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
model) through ordinary bounded reads, never a memory map: a file that another
process truncates during the parse is a "truncated GGUF file" error, not a
SIGBUS.  Every read is bounds-checked, so a truncated or foreign file gives a
``ValueError`` naming the file and what was missing, and nothing past the end
is read; a FIFO or device is refused before it is read; counts beyond any real
file (2**16 keys, 2**20 tensors, 2**24 keys, tensors and array strings in all)
are refused at once; a key given twice is refused, as llama.cpp does; and a
rope key of the wrong type or value (a string count, ``inf``, an array of
strings for ``rope.scaling.type``) is an error naming the file and the key,
never read as absent.  Writing uses the ``gguf`` package (the ``gguf`` extra).
"""
from __future__ import annotations

import math
import os
import stat
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from ._freq import inv_freq as _inv_freq, ntk_lambda, yarn_mscale
from .methods import LINEAR, LLAMA3, LONGROPE, NTK, SPECS, UNSCALED, YARN
from .rope import Rope

__all__ = ["GGUFRope", "read", "metadata", "write", "pairing"]

_MAGIC = b"GGUF"

# GGUF value types (gguf.GGUFValueType): struct format of the fixed-size ones.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# llama.cpp's rope.scaling.type values (MethodSpec.gguf_scaling_type), to the method each reads as.
_METHOD_OF_TYPE = {s.gguf_scaling_type: name for name, s in SPECS.items() if s.gguf_scaling_type is not None}
_UNSCALED_TYPE = SPECS[UNSCALED].gguf_scaling_type  # also what an absent or empty type means
# Methods llama.cpp has no scaling type for that a file still expresses (metadata() below):
# NTK-aware scaling as the base it gives (freq_base), Llama 3.1's bands as per-pair divisors in the
# rope_freqs tensor (as llama.cpp's convert_hf_to_gguf.py generate_extra_tensors bakes them).
_WITHOUT_TYPE = (NTK, LLAMA3)
_WRITABLE = tuple(name for name, s in SPECS.items() if s.gguf_scaling_type is not None or name in _WITHOUT_TYPE)

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
# Plausibility bounds of a GGUF header, far above any real file (SmolLM2-135M: 33 keys, 272
# tensors, 98,052 tokenizer strings; a 262k-token vocabulary with its merges is under 1M
# strings), so that a corrupt or hostile file (a sparse file of a terabyte claiming 10**11
# keys) is refused at once instead of parsed for days.
_MAX_KEYS = 1 << 16
_MAX_TENSORS = 1 << 20
_MAX_ENTRIES = 1 << 24  # keys, tensor infos and strings inside arrays, together
_MAX_NAME = 65535  # GGUF's bound on a key name (and ropescale's on a tensor name)
_MAX_KEPT_STRING = 1 << 16  # longer metadata strings are skipped, not read into memory
_MAX_ROPE_ENTRIES = 1 << 20  # a rope tensor holds rotary_dim / 2 values
_CHUNK = 1 << 20


class _Unread:
    """A metadata value the reader skipped (an array of strings, a long array or string): any rope key that
    holds one is an error that says what it held, never a value read as absent."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return self.what


class _Reader:
    """Bounds-checked little-endian reads of a file through ordinary bounded reads.

    The file is never mapped: another process that truncates it during the
    parse gives "truncated GGUF file", not a SIGBUS.  Each read is checked
    against the size the file had when it was opened, and a short read (the
    file shrank since) is the same error.
    """

    def __init__(self, f, path: str, size: int):
        self.f, self.path, self.size = f, path, size
        self.buf, self.start, self.pos = b"", 0, 0  # self.buf holds the file's bytes from self.start
        self.entries = 0

    def _truncated(self, n: int, what: str, size: int):
        raise ValueError(f"{self.path}: truncated GGUF file: {what} at byte {self.pos} needs {n} bytes, "
                         f"the file has {size}")

    def need(self, n: int, what: str) -> int:
        """Bytes ``[pos, pos + n)`` in ``self.buf``; returns their offset there."""
        if n < 0 or self.pos + n > self.size:
            self._truncated(n, what, self.size)
        off = self.pos - self.start
        if 0 <= off and off + n <= len(self.buf):
            return off
        self.f.seek(self.pos)
        data = self.f.read(max(n, min(_CHUNK, self.size - self.pos)))
        if len(data) < n:
            self._truncated(n, what, self.pos + len(data))
        self.buf, self.start = data, self.pos
        return 0

    def skip(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            self._truncated(n, what, self.size)
        self.pos += n

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        off = self.need(n, what)  # before reading self.buf, which it may replace
        value = struct.unpack_from(fmt, self.buf, off)[0]
        self.pos += n
        return value

    def count(self, what: str, n: int = 1) -> None:
        """Account for ``n`` more entries of the header (keys, tensor infos, array strings)."""
        self.entries += n
        if self.entries > _MAX_ENTRIES:
            raise ValueError(f"{self.path}: implausible GGUF header: with {what} it holds more than "
                             f"{_MAX_ENTRIES:,} keys, tensors and array strings (a corrupt count?)")

    def text(self, n: int, what: str) -> str:
        off = self.need(n, what)
        self.pos += n
        return self.buf[off:off + n].decode("utf-8", errors="replace")

    def string(self, what: str):
        """A string, or an :class:`_Unread` for one longer than ``_MAX_KEPT_STRING`` bytes (skipped)."""
        n = self.unpack("<Q", what)
        if n > _MAX_KEPT_STRING:
            self.skip(n, what)
            return _Unread(f"a string of {n:,} bytes")
        return self.text(n, what)

    def name(self, what: str) -> str:
        n = self.unpack("<Q", what)
        if n > _MAX_NAME:
            raise ValueError(f"{self.path}: corrupt GGUF file: {what} at byte {self.pos - 8} claims a name of "
                             f"{n:,} bytes (GGUF names have at most {_MAX_NAME})")
        return self.text(n, what)

    def value(self, vtype: int, what: str, keep: bool = True):
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype], what)
        if vtype == _STRING:
            if keep:
                return self.string(what)
            self.skip(self.unpack("<Q", what), what)
            return _Unread("a string (not read)")
        if vtype == _ARRAY:
            etype = self.unpack("<I", what)
            count = self.unpack("<Q", what)
            if etype in _SCALARS:
                size = struct.calcsize(_SCALARS[etype])
                if keep and count <= 1024:
                    off = self.need(count * size, what)
                    self.pos += count * size
                    return list(struct.unpack_from(f"<{count}{_SCALARS[etype][1]}", self.buf, off))
                self.skip(count * size, what)
                return _Unread(f"an array of {count:,} values")
            if etype == _STRING:
                self.count(what, count)
                if count * 8 > self.size - self.pos:  # each string has at least its 8-byte length
                    self._truncated(count * 8, what, self.size)
                for _ in range(count):
                    self.skip(self.unpack("<Q", what), what)
                return _Unread(f"an array of {count:,} strings")
            raise ValueError(f"{self.path}: unsupported GGUF array element type {etype} in {what}")
        raise ValueError(f"{self.path}: unknown GGUF value type {vtype} in {what}")


def _parse(path: str, f, size: int) -> tuple:
    """``(keys, tensors)``: the metadata (strings and small arrays read, the rest :class:`_Unread`) and the rope
    tensors of an open GGUF file of ``size`` bytes."""
    cur = _Reader(f, path, size)
    if size < 4 or cur.need(4, "the magic") != 0 or cur.buf[:4] != _MAGIC:
        raise ValueError(f"{path}: not a GGUF file (no 'GGUF' magic at the start)")
    cur.pos = 4
    version = cur.unpack("<I", "the version")
    if version not in (2, 3):
        raise ValueError(f"{path}: unsupported GGUF version {version} (2 and 3 are read; a big-endian file shows "
                         f"a byte-swapped version)")
    n_tensors = cur.unpack("<Q", "the tensor count")
    n_kv = cur.unpack("<Q", "the metadata count")
    # a key takes at least 13 bytes (name length, type, a one-byte value), a tensor info 24
    if n_kv > _MAX_KEYS or n_tensors > _MAX_TENSORS:
        raise ValueError(f"{path}: implausible GGUF header ({n_kv:,} keys, {n_tensors:,} tensors; ropescale reads "
                         f"at most {_MAX_KEYS:,} keys and {_MAX_TENSORS:,} tensors): a corrupt count?")
    if 13 * n_kv + 24 * n_tensors > size - cur.pos:
        cur._truncated(13 * n_kv + 24 * n_tensors, f"{n_kv:,} keys and {n_tensors:,} tensor infos", size)
    keys: Dict[str, Any] = {}
    for i in range(n_kv):
        cur.count(f"metadata key {i}")
        name = cur.name(f"metadata key {i}")
        if name in keys:  # llama.cpp's gguf reader refuses such a file too
            raise ValueError(f"{path}: GGUF metadata has the key {name!r} twice")
        vtype = cur.unpack("<I", f"the type of {name!r}")
        keys[name] = cur.value(vtype, f"the value of {name!r}", keep=not name.startswith("tokenizer."))
    infos, seen = [], set()
    for i in range(n_tensors):
        cur.count(f"tensor info {i}")
        name = cur.name(f"tensor info {i}")
        if name in seen:
            raise ValueError(f"{path}: corrupt GGUF file: tensor info {i} repeats the name {name!r}")
        seen.add(name)
        n_dims = cur.unpack("<I", f"the dims of tensor {name!r}")
        if n_dims > 8:
            raise ValueError(f"{path}: corrupt GGUF file: tensor {name!r} claims {n_dims} dimensions (at most 8)")
        dims = [cur.unpack("<Q", f"the shape of tensor {name!r}") for _ in range(n_dims)]
        ttype = cur.unpack("<I", f"the type of tensor {name!r}")
        offset = cur.unpack("<Q", f"the offset of tensor {name!r}")
        if name in _ROPE_TENSORS:
            infos.append((name, dims, ttype, offset))
    align = keys.get("general.alignment", 32)
    if not isinstance(align, int) or isinstance(align, bool) or not 0 < align <= 1 << 30:
        raise ValueError(f"{path}: GGUF metadata 'general.alignment' must be a positive integer, got {align!r}")
    data_start = -(-cur.pos // align) * align
    tensors = {}
    for name, dims, ttype, offset in infos:
        dt = _TENSOR_TYPES.get(ttype)
        if dt is None:
            raise ValueError(f"{path}: tensor {name!r} has ggml type {ttype}; rope tensors are read as F32/F16/F64")
        count = 1
        for n in dims:
            count *= n
        if count > _MAX_ROPE_ENTRIES:
            raise ValueError(f"{path}: tensor {name!r} claims shape {dims}; a rope tensor holds rotary_dim / 2 "
                             f"values")
        cur.pos = data_start + offset
        off = cur.need(count * dt.itemsize, f"the data of tensor {name!r}")
        raw = cur.buf[off:off + count * dt.itemsize]  # a bytes copy of just this tensor
        tensors[name] = np.frombuffer(raw, dtype=dt).astype(np.float64)
    return keys, tensors


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if not isinstance(value, _Unread) else value.what


def _number(path: str, keys: Dict[str, Any], key: str, default: Any = None):
    """A finite real number of the metadata, or ``default`` when the key is absent."""
    value = keys.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: GGUF metadata {key!r} must be a finite number, got {_show(value)}")
    return value


def _integer(path: str, keys: Dict[str, Any], key: str, default: Any = None, *, minimum: int = 1):
    """An integer count of the metadata (a length, a dim, a head count) >= ``minimum``, or ``default``."""
    value = keys.get(key)
    if value is None:
        return default
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # a count a converter stored as a float
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= 2**53:
        raise ValueError(f"{path}: GGUF metadata {key!r} must be an integer >= {minimum}, got {_show(value)}")
    return value


def _text(path: str, keys: Dict[str, Any], key: str, default: Any = None):
    value = keys.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{path}: GGUF metadata {key!r} must be a string, got {_show(value)}")
    return value


def _head_count(path: str, keys: Dict[str, Any], key: str) -> Optional[int]:
    """``attention.head_count``: one count, or one per layer (the largest is the attention layers')."""
    value = keys.get(key)
    if not isinstance(value, list):
        return _integer(path, keys, key)
    if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value) \
            or max(value) < 1:
        raise ValueError(f"{path}: GGUF metadata {key!r} must be a positive integer or a list of per-layer counts "
                         f">= 0, not all 0, got {value[:8]!r}{' ...' if len(value) > 8 else ''}")
    return max(value)


# Which GGUF metadata each parameter of the Rope built from a file comes from, for errors that
# Rope's own checks raise (they name the parameter; the file's reader names the key).
_ORIGINS = (("partial_rotary_factor", "rope.dimension_count"), ("original_max_position_embeddings",
            "rope.scaling.original_context_length"), ("short_factor", "rope_factors_short"),
            ("long_factor", "rope_factors_long"), ("attention_factor", "rope.scaling.attn_factor"),
            ("beta_fast", "rope.scaling.yarn_beta_fast"), ("beta_slow", "rope.scaling.yarn_beta_slow"),
            ("mscale", "rope.scaling.yarn_log_multiplier"), ("factor", "rope.scaling.factor"),
            ("base", "rope.freq_base"), ("dim", "attention.key_length"))


def _checked_rope(p: str, arch: str, head: int, base: float, sc: Dict[str, Any], where: Dict[str, str]) -> Rope:
    """``Rope(head, base, sc)``; a refusal names the file and the GGUF keys its values came from.

    ``where`` overrides the key of a parameter (e.g. ``dim`` from ``embedding_length / head_count``)."""
    try:
        return Rope(head, base, sc or None)
    except (ValueError, TypeError) as e:
        msg = str(e)
        named, rest = [], msg
        for param, key in _ORIGINS:
            if param in rest:
                rest = rest.replace(param, "")
                named.append(where.get(param, f"{arch}.{key}"))
        keys = ", ".join(repr(k) for k in dict.fromkeys(named)) or "its rope keys"
        raise ValueError(f"{p}: GGUF metadata {keys} does not give a valid rope: {msg}") from None


def read(path: Any) -> GGUFRope:
    """Read the rope of a GGUF file (see the module docstring for the mapping).

    Raises ``ValueError`` naming the file and the key when the file is not a
    GGUF, is truncated, or lacks the rope metadata.
    """
    p = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{p}: not a regular file (a GGUF file is expected)")
            if st.st_size == 0:
                raise ValueError(f"{p}: not a GGUF file (it is empty)")
            keys, tensors = _parse(p, f, st.st_size)
    except OSError as e:
        raise ValueError(f"{p}: cannot read GGUF file: {e.strerror or e}") from None
    arch = keys.get("general.architecture")
    if arch is None:
        raise ValueError(f"{p}: GGUF metadata has no 'general.architecture'")
    arch = _text(p, keys, "general.architecture")
    rope_keys = {k: v for k, v in keys.items() if k.startswith(f"{arch}.rope.")}
    if not rope_keys:
        raise ValueError(f"{p}: GGUF metadata has no rope keys (no {arch + '.rope.freq_base'!r}, "
                         f"{arch + '.rope.dimension_count'!r}): not a rotary model, or not converted with them")
    rope = _rope(p, arch, keys, tensors)
    ctx = _integer(p, keys, f"{arch}.context_length")
    shown = dict(rope_keys)
    shown.update({k: v for k, v in keys.items() if k in (f"{arch}.context_length", f"{arch}.attention.key_length",
                                                          f"{arch}.attention.head_count", f"{arch}.embedding_length")})
    shown.update({k: f"[{len(v)} values]" for k, v in tensors.items()})
    window = _integer(p, keys, f"{arch}.attention.sliding_window", minimum=0)
    sliding = types = None
    if window:
        shown[f"{arch}.attention.sliding_window"] = window
        sliding = _sliding_rope(p, arch, keys, rope)
        types = _layer_types(arch, keys)
    return GGUFRope(p, arch, rope, pairing(arch), ctx, shown, sliding, types)


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
    head = _integer(p, keys, f"{arch}.attention.key_length_swa", rope.dim)
    n_rot = _integer(p, keys, f"{arch}.rope.dimension_count_swa", rope.rotary_dim if head == rope.dim else head)
    if n_rot % 2 or n_rot > head:
        raise ValueError(f"{p}: the sliding layers' rotary dim {n_rot} ({arch + '.rope.dimension_count_swa'!r}) must "
                         f"be an even number <= their head dim {head} ({arch + '.attention.key_length_swa'!r})")
    partial = {} if n_rot == head else {"partial_rotary_factor": n_rot / head}
    where = {"dim": f"{arch}.attention.key_length_swa", "partial_rotary_factor": f"{arch}.rope.dimension_count_swa"}
    fixed = _SWA_FIXED_BASE.get(arch)
    if fixed is not None:
        return _checked_rope(p, arch, head, fixed, partial, where)
    base = _number(p, keys, f"{arch}.rope.freq_base_swa", rope.base)
    if not base > 1.0:
        raise ValueError(f"{p}: GGUF metadata {arch + '.rope.freq_base_swa'!r} must be a number > 1, got {base!r}")
    # llama.cpp: otherwise the sliding layers share the other layers' scaling
    sc = {k: v for k, v in (rope.scaling or {}).items() if k != "partial_rotary_factor"}
    sc.update(partial)
    return _checked_rope(p, arch, head, float(base), sc, {**where, "base": f"{arch}.rope.freq_base_swa"})


def _rope(p: str, arch: str, keys: Dict[str, Any], tensors: Dict[str, np.ndarray]) -> Rope:
    k = f"{arch}.rope"
    base = float(_number(p, keys, f"{k}.freq_base", 10000.0))  # llama.cpp's default when absent
    head = _integer(p, keys, f"{arch}.attention.key_length")
    where: Dict[str, str] = {}
    if head is None:
        emb = _integer(p, keys, f"{arch}.embedding_length")
        heads = _head_count(p, keys, f"{arch}.attention.head_count")
        if emb is None or heads is None:
            raise ValueError(f"{p}: GGUF metadata has no {arch + '.attention.key_length'!r} (nor "
                             f"{arch + '.embedding_length'!r} and {arch + '.attention.head_count'!r}) to give the head dim")
        head = emb // heads
        where["dim"] = f"{arch}.embedding_length' / '{arch}.attention.head_count"
    n_rot = _integer(p, keys, f"{k}.dimension_count", head)
    if n_rot % 2 or n_rot > head:
        raise ValueError(f"{p}: {k + '.dimension_count'!r} must be an even number <= the head dim {head} "
                         f"({where.get('dim', arch + '.attention.key_length')!r}), got {n_rot}")
    sc: Dict[str, Any] = {}
    if n_rot != head:
        sc["partial_rotary_factor"] = n_rot / head
    stype = _text(p, keys, f"{k}.scaling.type", _UNSCALED_TYPE)
    factor = _number(p, keys, f"{k}.scaling.factor")
    original = _integer(p, keys, f"{k}.scaling.original_context_length")
    attn = _number(p, keys, f"{k}.scaling.attn_factor")
    ctx = _integer(p, keys, f"{arch}.context_length")
    r = n_rot // 2

    def per_pair(name):
        v = tensors.get(name)
        if v is not None and v.shape != (r,):
            raise ValueError(f"{p}: tensor {name!r} must have {r} entries (rope.dimension_count / 2), got {v.shape[0]}")
        return v

    freqs = per_pair("rope_freqs.weight")
    method = _METHOD_OF_TYPE.get(stype or _UNSCALED_TYPE)
    if method == UNSCALED or (method == LINEAR and factor in (None, 1.0)):
        if freqs is not None:
            # Llama 3.1-style per-pair divisors: theta'_k = theta_k / f_k at every length.
            f = freqs.tolist()
            sc.update({"rope_type": LONGROPE, "short_factor": f, "long_factor": f, "attention_factor": 1.0,
                       "original_max_position_embeddings": original or ctx or 1})
            where.update(short_factor="rope_freqs", long_factor="rope_freqs",
                         original_max_position_embeddings=f"{k}.scaling.original_context_length" if original
                         else f"{arch}.context_length")
        return _checked_rope(p, arch, head, base, sc, where)
    if freqs is not None:
        raise ValueError(f"{p}: a rope_freqs tensor together with {k + '.scaling.type'!r} = {stype!r} is not a "
                         f"combination ropescale reads")
    if method == LINEAR:
        sc.update({"rope_type": LINEAR, "factor": float(factor)})
    elif method == YARN:
        if factor is None or original is None:
            missing = f"{k}.scaling.factor" if factor is None else f"{k}.scaling.original_context_length"
            raise ValueError(f"{p}: YaRN scaling needs {missing!r}, which the GGUF metadata lacks")
        sc.update({"rope_type": YARN, "factor": float(factor), "original_max_position_embeddings": original})
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
            where["attention_factor"] = f"{k}.scaling.attn_factor' * '{k}.scaling.yarn_attn_factor"
        if attn is not None and attn != 1.0:
            sc["attention_factor"] = float(attn) * yarn_mscale(float(factor))
    elif method == LONGROPE:
        long_f, short_f = per_pair("rope_factors_long.weight"), per_pair("rope_factors_short.weight")
        if long_f is None or short_f is None:
            raise ValueError(f"{p}: LongRoPE scaling needs the tensors rope_factors_long and rope_factors_short")
        if original is None:
            raise ValueError(f"{p}: LongRoPE scaling needs {k + '.scaling.original_context_length'!r}")
        sc.update({"rope_type": LONGROPE, "short_factor": short_f.tolist(), "long_factor": long_f.tolist(),
                   "original_max_position_embeddings": original})
        if factor is not None:
            sc["factor"] = float(factor)
        elif ctx is not None:
            sc["factor"] = float(ctx) / float(original)
            where["factor"] = f"{arch}.context_length' / '{k}.scaling.original_context_length"
        if attn is not None:
            sc["attention_factor"] = float(attn)
    else:
        raise ValueError(f"{p}: {k + '.scaling.type'!r} = {stype!r} is not one of {', '.join(_METHOD_OF_TYPE)}")
    return _checked_rope(p, arch, head, base, sc, where)


def _per_pair_only(rope: Rope, sc: Dict[str, Any]) -> bool:
    """A longrope whose lists agree and whose attention factor is 1: fixed per-pair divisors (what rope_freqs holds)."""
    return rope.attention_factor == 1.0 and np.array_equal(np.asarray(sc["short_factor"], dtype=np.float64),
                                                          np.asarray(sc["long_factor"], dtype=np.float64))


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
    gguf_type = SPECS[method].gguf_scaling_type
    if method == UNSCALED:
        pass
    elif method == NTK:
        md[f"{k}.freq_base"] = float(rope.base * ntk_lambda(rope.rotary_dim, rope.factor))
    elif method == LINEAR:
        md.update({f"{k}.scaling.type": gguf_type, f"{k}.scaling.factor": float(rope.factor)})
    elif method == YARN:
        if sc.get("truncate", True) is False:
            raise ValueError("GGUF cannot express YaRN with truncate=False (llama.cpp always rounds the correction "
                             "range to whole dims)")
        md.update({f"{k}.scaling.type": gguf_type, f"{k}.scaling.factor": float(rope.factor),
                   f"{k}.scaling.original_context_length": int(rope.original_max_position_embeddings)})
        for name in ("beta_fast", "beta_slow"):  # llama.cpp's defaults are YaRN's (32, 1)
            if sc.get(name) is not None:
                md[f"{k}.scaling.yarn_{name}"] = float(sc[name])
        ms, msa = sc.get("mscale"), sc.get("mscale_all_dim")
        if "attention_factor" not in sc and ms and msa and ms == msa:
            md[f"{k}.scaling.yarn_log_multiplier"] = 0.1 * float(msa)
        elif rope.attention_factor != yarn_mscale(rope.factor):
            md[f"{k}.scaling.attn_factor"] = float(rope.attention_factor / yarn_mscale(rope.factor))
    elif method == LLAMA3 or (method == LONGROPE and _per_pair_only(rope, sc)):
        md["rope_freqs.weight"] = (_inv_freq(rope.rotary_dim, rope.base) / rope.inv_freq).astype(np.float32)
    elif method == LONGROPE:
        md.update({f"{k}.scaling.type": gguf_type,
                   f"{k}.scaling.original_context_length": int(rope.original_max_position_embeddings),
                   f"{k}.scaling.attn_factor": float(rope.attention_factor),
                   "rope_factors_long.weight": np.asarray(sc["long_factor"], dtype=np.float32),
                   "rope_factors_short.weight": np.asarray(sc["short_factor"], dtype=np.float32)})
        if "factor" in sc:
            md[f"{k}.scaling.factor"] = float(sc["factor"])
    else:
        raise ValueError(f"GGUF cannot express the {method!r} rope (llama.cpp has no such scaling); "
                         f"methods it can: {', '.join(_WRITABLE)}")
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
