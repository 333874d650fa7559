"""No reference or memory leaks: every public function, 10**4 calls, error paths included.

For each call we check, after the loop:

* ``sys.getrefcount`` of every input object (and of the dtype singletons the
  glue touches) is what it was before: a missing ``Py_DECREF`` in a C path
  shows up as a count that grew by the number of calls;
* ``tracemalloc``'s traced memory (Python objects and NumPy buffers) did not
  grow by more than a small bound over a further ``TRACED_CALLS`` calls
  (tracing slows every allocation, so it runs on a tenth of the calls; a
  leak of 32 bytes a call still shows);
* the process's resident set (``/proc/self/statm``) did not grow by more than
  a small bound: a ``malloc`` without ``free`` in the C core (row buffers,
  angle caches are KiB-sized here) would add tens of MiB.

The arrays are small so the whole file runs in seconds.  Under the sanitizer
build (``ROPESCALE_SANITIZED=1``, see tools/sanitize.sh) the resident-set
check is skipped (ASan's quarantine holds freed memory on purpose) and the
call count is lowered; ``ROPESCALE_LEAK_CALLS`` overrides it.
"""
import ctypes
import gc
import os
import platform
import sys

import numpy as np
import pytest

if platform.python_implementation() != "CPython":
    # PyPy has no reference counts to compare and no _tracemalloc to trace with
    pytest.skip(f"leak checks need CPython's reference counts and tracemalloc, "
                f"not {platform.python_implementation()}'s", allow_module_level=True)
import resource  # noqa: E402  (after the skip: absent on Windows as well)
import tracemalloc  # noqa: E402

import ropescale
from ropescale import _core

SANITIZED = bool(os.environ.get("ROPESCALE_SANITIZED"))
CALLS = int(os.environ.get("ROPESCALE_LEAK_CALLS", 1000 if SANITIZED else 10_000))
TRACED_CALLS = max(CALLS // 10, 100)
WARMUP = 200
TRACED_BOUND = max(32 * TRACED_CALLS, 16 * 1024)   # bytes of traced growth allowed over TRACED_CALLS
RSS_BOUND = 4 * 1024 * 1024       # bytes of resident growth allowed per function

PAGE = resource.getpagesize()


def rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:  # pragma: no cover - not Linux
        return None


# ------------------------------------------------------------------ inputs
# Module-level objects, so their reference counts are stable between checks.
RNG = np.random.default_rng(0)
D, R = 128, 64                                  # KiB-sized row buffers and angle caches
TH = ropescale.inv_freq(D)
TH_COPY = TH.copy()
X64 = RNG.standard_normal((4, 2, D))
X32 = X64.astype(np.float32)
X16 = X64.astype(np.float16)
XBE = X32.astype(">f4")
XT = np.ascontiguousarray(X64.transpose(1, 0, 2)).transpose(1, 0, 2)[::-1, :, ::-1]
POS = np.arange(4)[:, None]
POS_F = np.array([0.5, -3.25, 7.0, 1e6])[:, None]
POS_BAD = np.array([0.0, np.nan, 1.0, 2.0])[:, None]
POS_HUGE = np.array([0, 2**62, 1, 2], dtype=np.int64)[:, None]
C64, S64 = ropescale.cos_sin(POS, TH, dtype=np.float64)
C32, S32 = ropescale.cos_sin(POS, TH, dtype=np.float32)
OUT64 = np.empty_like(X64)
OUT16 = np.empty(X64.shape, np.float16)
INPLACE = X64.copy()
RO = np.broadcast_to(np.zeros(D), X64.shape)
RAGGED = [[1.0, 2.0], [3.0]]
TH_2D = TH[None, :]
TH_LIST = TH.tolist()
X_INT = np.ones((4, 2, D), np.int32)
SHORT, LONG = [1.0] * R, [2.0] * R
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
        "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 0.707}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}
LONGROPE = {"rope_type": "longrope", "factor": 2.0, "original_max_position_embeddings": 4096,
            "short_factor": SHORT, "long_factor": LONG}
DYN = {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 16}
PROP = {"rope_type": "proportional", "partial_rotary_factor": 0.25, "factor": 2.0}
BAD_LONG = {"rope_type": "longrope", "factor": 2.0, "original_max_position_embeddings": 4096,
            "short_factor": SHORT, "long_factor": [1.0] * (R - 1)}
BAD_YARN = dict(YARN, beta_fast=0.5)
HF = {"rope_theta": 500000.0, "head_dim": D, "max_position_embeddings": 131072,
      "rope_scaling": dict(LLAMA3)}
ROPE = ropescale.Rope(D, 1e4, YARN)
ROPE_DYN = ropescale.Rope(D, 1e4, DYN)
ROPE_MROPE = ropescale.Rope(D, 1e6, {"mrope_section": [16, 24, 24]})
MROPE_POS = np.stack([POS, POS + 1, POS + 2])   # (3, tokens, 1): three position streams
ROPE_SMALL = ropescale.Rope(16).extend(32768, "yarn", original_len=4096)
BASE = float("1e4") * 1.0000001                # a float object of our own
DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64)]

TRACKED = [v for k, v in sorted(globals().items())
           if k.isupper() and isinstance(v, (np.ndarray, list, dict, ropescale.Rope, float))]
# What the read-only inputs hold before any call (outputs and in-place buffers excluded).
_written = ("INPLACE", "OUT64", "OUT16")
_snapshots = {k: np.array(v, copy=True) for k, v in globals().items()
              if k.isupper() and isinstance(v, np.ndarray) and k not in _written}


def ok(f, *a, **k):
    return lambda: f(*a, **k)


def err(f, *a, **k):
    def call():
        try:
            f(*a, **k)
        except (TypeError, ValueError):
            return
        raise AssertionError("expected TypeError or ValueError")
    return call


def threads_roundtrip():
    prev = ropescale.set_num_threads(3)
    ropescale.set_num_threads(prev)
    return ropescale.get_num_threads()


LAYERED = {"model_type": "gemma3_text", "rope_theta": 1e6, "rope_local_base_freq": 1e4, "head_dim": 64,
           "num_hidden_layers": 12, "rope_scaling": {"rope_type": "linear", "factor": 8.0}}


CALLS_TABLE = [
    # frequencies
    ("inv_freq", ok(ropescale.inv_freq, D, BASE)),
    ("inv_freq-error", err(ropescale.inv_freq, D + 1, BASE)),
    ("ntk_lambda", ok(ropescale.ntk_lambda, D, 8.0)),
    ("ntk_lambda-error", err(ropescale.ntk_lambda, 2, 8.0)),
    ("ntk_base", ok(ropescale.ntk_base, BASE, D, 8.0)),
    ("periods", ok(ropescale.periods, TH)),
    ("periods-list", ok(ropescale.periods, TH_LIST)),
    ("periods-error", err(ropescale.periods, RAGGED)),
    ("solve_base", ok(ropescale.solve_base, D, BASE, 4096, 32768)),
    ("solve_factor", ok(ropescale.solve_factor, D, BASE, 8e4)),
    ("solve_factor-error", err(ropescale.solve_factor, D, BASE, 1.0)),
    ("yarn_correction_range", ok(ropescale.yarn_correction_range, D, BASE, 4096)),
    ("yarn_correction_range-error", err(ropescale.yarn_correction_range, D, BASE, 4096, 1.0, 2.0)),
    ("scaled_inv_freq-yarn", ok(ropescale.scaled_inv_freq, D, BASE, YARN)),
    ("scaled_inv_freq-llama3", ok(ropescale.scaled_inv_freq, D, BASE, LLAMA3)),
    ("scaled_inv_freq-longrope", ok(ropescale.scaled_inv_freq, D, BASE, LONGROPE, seq_len=10**5)),
    ("scaled_inv_freq-dynamic", ok(ropescale.scaled_inv_freq, D, BASE, DYN, seq_len=100)),
    ("scaled_inv_freq-proportional", ok(ropescale.scaled_inv_freq, D, BASE, PROP)),
    ("scaled_inv_freq-error-list", err(ropescale.scaled_inv_freq, D, BASE, BAD_LONG)),
    ("scaled_inv_freq-error-yarn", err(ropescale.scaled_inv_freq, D, BASE, BAD_YARN)),
    ("scaled_inv_freq-error-seq_len", err(ropescale.scaled_inv_freq, D, BASE, DYN, seq_len=-1)),
    # tables
    ("cos_sin-f32", ok(ropescale.cos_sin, POS, TH)),
    ("cos_sin-f16-fractional", ok(ropescale.cos_sin, POS_F, TH, attention_factor=1.25, dtype=np.float16)),
    ("cos_sin-f64-list", ok(ropescale.cos_sin, [3, 1, 4], TH_LIST, dtype=np.float64)),
    ("cos_sin-error-nan", err(ropescale.cos_sin, POS_BAD, TH)),
    ("cos_sin-error-huge", err(ropescale.cos_sin, POS_HUGE, TH)),
    ("cos_sin-error-dtype", err(ropescale.cos_sin, POS, TH, dtype=np.int8)),
    ("cos_sin-error-inv_freq", err(ropescale.cos_sin, POS, TH_2D)),
    # rotation from tables
    ("apply_rotary-f64", ok(ropescale.apply_rotary, X64, C64, S64)),
    ("apply_rotary-f32-interleaved-inverse", ok(ropescale.apply_rotary, X32, C32, S32,
                                                interleaved=True, inverse=True)),
    ("apply_rotary-f16", ok(ropescale.apply_rotary, X16, C32, S32)),
    ("apply_rotary-byteswapped", ok(ropescale.apply_rotary, XBE, C32, S32)),
    ("apply_rotary-strided", ok(ropescale.apply_rotary, XT, C64, S64)),
    ("apply_rotary-out-f16", ok(ropescale.apply_rotary, X64, C64, S64, out=OUT16)),
    ("apply_rotary-in-place", ok(ropescale.apply_rotary, INPLACE, C64, S64, out=INPLACE)),
    ("apply_rotary-error-out", err(ropescale.apply_rotary, X64, C64, S64, out=RO)),
    ("apply_rotary-error-broadcast", err(ropescale.apply_rotary, X64, C64[:2], S64[:2])),
    ("apply_rotary-error-dtype", err(ropescale.apply_rotary, X_INT, C64, S64)),
    ("apply_rotary-error-ragged", err(ropescale.apply_rotary, RAGGED, C64, S64)),
    # fused rotation
    ("apply_rotary_positions-f64", ok(ropescale.apply_rotary_positions, X64, POS, TH)),
    ("apply_rotary_positions-f16-fractional", ok(ropescale.apply_rotary_positions, X16, POS_F, TH,
                                                 attention_factor=0.5, interleaved=True)),
    ("apply_rotary_positions-out", ok(ropescale.apply_rotary_positions, X32, POS, TH, out=OUT64)),
    ("apply_rotary_positions-in-place", ok(ropescale.apply_rotary_positions, INPLACE, POS, TH, out=INPLACE,
                                           inverse=True)),
    ("apply_rotary_positions-strided", ok(ropescale.apply_rotary_positions, XT, POS, TH)),
    ("apply_rotary_positions-error-nan", err(ropescale.apply_rotary_positions, X64, POS_BAD, TH)),
    ("apply_rotary_positions-error-huge", err(ropescale.apply_rotary_positions, X64, POS_HUGE, TH)),
    ("apply_rotary_positions-error-broadcast", err(ropescale.apply_rotary_positions, X64, POS.T, TH)),
    ("apply_rotary_positions-error-out", err(ropescale.apply_rotary_positions, X64, POS, TH, out=RO)),
    ("apply_rotary_qk-gqa", ok(ropescale.apply_rotary_qk, X32, X32[:, :1], POS, TH)),
    ("apply_rotary_qk-out", ok(ropescale.apply_rotary_qk, X64, X64, POS, TH, out=(OUT64, np.empty_like(X64)))),
    ("apply_rotary_qk-two-calls", ok(ropescale.apply_rotary_qk, X32, X64, POS, TH)),
    ("apply_rotary_qk-error-out", err(ropescale.apply_rotary_qk, X64, X64, POS, TH, out=(OUT64, RO))),
    ("apply_rotary_positions-error-inv_freq", err(ropescale.apply_rotary_positions, X64, POS, TH_2D)),
    # threads setting
    ("set_get_num_threads", threads_roundtrip),
    ("set_num_threads-error", err(ropescale.set_num_threads, 0)),
    # Rope
    ("Rope", ok(ropescale.Rope, D, BASE, YARN)),
    ("Rope-error", err(ropescale.Rope, D, BASE, BAD_LONG)),
    ("Rope.from_hf", ok(ropescale.Rope.from_hf, HF)),
    ("Rope.to_hf", ok(ROPE.to_hf)),
    ("Rope.extend", ok(ROPE.extend, 32768, "yarn", original_len=4096)),
    ("Rope.extend-error", err(ROPE.extend, 10, "ntk", original_len=4096)),
    ("Rope.cos_sin", ok(ROPE.cos_sin, POS)),
    ("Rope.apply-dynamic", ok(ROPE_DYN.apply, X32, POS)),
    ("Rope.apply-error", err(ROPE.apply, X64, POS_BAD)),
    ("Rope.repr", ok(repr, ROPE)),
    # analysis
    ("critical_dim", ok(ropescale.critical_dim, D, BASE, 4096)),
    ("critical_dim-error", err(ropescale.critical_dim, D, BASE, 0.0)),
    ("max_supported_length", ok(ropescale.max_supported_length, D, BASE, 4096, 8e4)),
    ("analyze+RopeAnalysis", lambda: (lambda a: (a.table(), a.summary(), a.to_dict(), repr(a)))(
        ropescale.analyze(ROPE_SMALL))),
    ("analyze-error", err(ropescale.analyze, ROPE_SMALL, -1.0)),
    # moving cached keys; the error budget (rows "-two-sum" reach the corrected-table path)
    ("rerotate", ok(ropescale.rerotate, X32, POS, POS_F, TH)),
    ("rerotate-inplace", ok(ropescale.rerotate, INPLACE, POS, POS_F, TH, out=INPLACE)),
    ("rerotate-two-sum", ok(ropescale.rerotate, X64, POS_F * 0.1, POS_F, TH)),
    ("rerotate-error", err(ropescale.rerotate, X32, POS, POS_BAD, TH)),
    ("rebase", ok(ropescale.rebase, X32, POS, TH, TH * 0.5)),
    ("rebase-two-sum", ok(ropescale.rebase, X64, POS, TH, TH / 3.0)),
    ("rebase-error", err(ropescale.rebase, X32, POS, TH, TH[:3])),
    ("Rope.rebase_cache", ok(ROPE_DYN.rebase_cache, X32, POS, 16, 64)),
    # per-layer ropes, M-RoPE streams, position builders (issue 11)
    ("layer_ropes LayerRopes.to_hf", ok(lambda: ropescale.layer_ropes(LAYERED).to_hf())),
    ("layer_ropes-error", err(ropescale.layer_ropes, {**LAYERED, "no_rope_layers": [1, 2]})),
    ("Rope.from_hf-layer_type", ok(ropescale.Rope.from_hf, LAYERED, layer_type="sliding_attention")),
    ("Rope.cos_sin-mrope", ok(ROPE_MROPE.cos_sin, MROPE_POS)),
    ("Rope.apply-mrope", ok(ROPE_MROPE.apply, X32, MROPE_POS)),
    ("Rope.apply-mrope-error", err(ROPE_MROPE.apply, X32, MROPE_POS[:2])),
    ("_core.cos_sin_streams-error", err(_core.cos_sin_streams, MROPE_POS.reshape(3, -1), TH,
                                        np.full(R, 5, dtype=np.int64), 1.0, OUT64, OUT64, 1)),
    ("packed_positions", ok(ropescale.packed_positions, [0, 3, 7, 7, 12], document_ids=True)),
    ("packed_positions-error", err(ropescale.packed_positions, [0, 3, 2])),
    ("self_extend_positions", ok(ropescale.self_extend_positions, POS, 4, 8)),
    ("self_extend_positions-error", err(ropescale.self_extend_positions, POS, 0, 8)),
    ("precision.report", ok(ropescale.precision.report, ROPE_SMALL, 4096, per_octave=2)),
    ("precision.check", ok(ropescale.precision.check, C32, S32, POS, TH)),
    ("precision-error", err(ropescale.precision.report, ROPE_SMALL, 0)),
    # the C glue's own checks, reached directly (the Python layer normally stops these first)
    ("_core.rotate-error-dtype", err(_core.rotate, X64, C32, S32, OUT64, False, False, 1)),
    ("_core.rotate-error-readonly", err(_core.rotate, X64, C64, S64, RO, False, False, 1)),
    ("_core.rotate-error-notarray", err(_core.rotate, TH_LIST, C64, S64, OUT64, False, False, 1)),
    ("_core.cos_sin-error-shape", err(_core.cos_sin, POS_F, TH, 1.0, OUT64, OUT64, 1)),
    ("_core.scaled_inv_freq-error-list", err(_core.scaled_inv_freq, D, BASE, _core.LONGROPE, factor=2.0,
                                              original_max=4096.0, short_factor=SHORT,
                                              long_factor=[1.0] * (R + 1))),
    ("_core.scaled_inv_freq-error-list-type", err(_core.scaled_inv_freq, D, BASE, _core.LONGROPE, factor=2.0,
                                                   original_max=4096.0, short_factor=RAGGED, long_factor=LONG)),
    ("_core.inv_freq-error", err(_core.inv_freq, 7, BASE)),
]


def refcounts():
    gc.collect()
    return [sys.getrefcount(o) for o in TRACKED] + [sys.getrefcount(d) for d in DTYPES]


def measure(call, n, n_traced):
    """(refcount deltas, RSS growth) over n calls, then traced growth over n_traced calls."""
    for _ in range(WARMUP):
        call()
    gc.collect()
    before = refcounts()
    rss0 = rss_bytes()
    for _ in range(n):
        call()
    gc.collect()
    rss1 = rss_bytes()
    after = refcounts()
    tracemalloc.start()
    try:
        for _ in range(min(WARMUP, n_traced)):
            call()
        gc.collect()
        traced0 = tracemalloc.get_traced_memory()[0]
        for _ in range(n_traced):
            call()
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced0
    finally:
        tracemalloc.stop()
    names = [f"input #{i} ({type(o).__name__})" for i, o in enumerate(TRACKED)] + [f"dtype {d}" for d in DTYPES]
    deltas = {name: b - a for name, a, b in zip(names, before, after) if b != a}
    return deltas, traced, (None if rss0 is None else rss1 - rss0)


def called(name):
    """The function a table row calls: its id up to the first '-' ("apply_rotary-f64" -> "apply_rotary")."""
    return name.split("-", 1)[0]


def test_every_public_function_is_in_the_table():
    # exact names, not substrings: "apply_rotary_positions-f64" does not cover apply_rotary
    names = {called(name) for name, _ in CALLS_TABLE}
    missing = [fn for fn in ropescale.__all__
               if callable(getattr(ropescale, fn)) and not isinstance(getattr(ropescale, fn), type)
               and fn not in ("get_num_threads", "set_num_threads") and fn not in names]
    assert not missing, missing
    assert "set_get_num_threads" in names and "Rope" in names
    for method in ("from_hf", "to_hf", "extend", "cos_sin", "apply"):
        assert any(n == f"Rope.{method}" for n in names), method


def test_every_call_leaves_its_inputs_untouched():
    """Runs every row of the table itself (not relying on test order), then
    checks the module-level inputs of the calls that are not in place."""
    for _, call in CALLS_TABLE:
        call()
    assert_inputs_unmodified()


@pytest.mark.parametrize("name, call", CALLS_TABLE, ids=[n for n, _ in CALLS_TABLE])
def test_no_leak(name, call):
    deltas, grown, rss = measure(call, CALLS, TRACED_CALLS)
    assert not deltas, f"{name}: reference counts changed over {CALLS} calls: {deltas}"
    assert grown <= TRACED_BOUND, f"{name}: traced memory grew by {grown} bytes over {TRACED_CALLS} calls"
    if rss is not None and not SANITIZED:
        assert rss <= RSS_BOUND, f"{name}: resident memory grew by {rss} bytes over {CALLS} calls"


def assert_inputs_unmodified():
    # every call above that is not in place leaves its inputs as they were
    for name, before in _snapshots.items():
        np.testing.assert_array_equal(globals()[name], before, err_msg=name)
    np.testing.assert_array_equal(X32, X64.astype(np.float32))
    np.testing.assert_array_equal(X16, X64.astype(np.float16))
    np.testing.assert_array_equal(TH, TH_COPY)
    assert SHORT == [1.0] * R and LONG == [2.0] * R
    assert YARN["beta_fast"] == 32.0 and DYN == {"rope_type": "dynamic", "factor": 2.0,
                                                 "original_max_position_embeddings": 16}


# ------------------------------------------------- the detectors can fail

_KEEP = []


def test_detectors_see_a_reference_leak_a_python_leak_and_a_c_leak():
    arr = TRACKED[0]
    deltas, _, _ = measure(lambda: _KEEP.append(arr), 1000, 100)
    assert sum(deltas.values()) >= 1000
    _KEEP.clear()

    _, grown, _ = measure(lambda: _KEEP.append(bytearray(400)), 100, TRACED_CALLS)
    assert grown > TRACED_BOUND                 # ~460 bytes a call
    _KEEP.clear()

    if SANITIZED or rss_bytes() is None:
        pytest.skip("RSS check is off under the sanitizer")
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]

    def c_leak():                              # malloc without free, pages touched
        p = libc.malloc(4096)
        ctypes.memset(p, 1, 4096)
    # Earlier tests (in any order) may leave freed but resident heap pages that
    # the leak would reuse without growing RSS: hand them back to the OS first.
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    _, _, rss = measure(c_leak, CALLS, 10)
    assert rss > RSS_BOUND, rss


# ------------------------------------------------- bounded working memory

_PEAK_CHILD = r'''
import resource, sys
import numpy as np
import ropescale

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def peak():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

case = sys.argv[1]
ropescale.set_num_threads(2)
if case == "cos_sin":
    theta = ropescale.inv_freq(3 * 2**22)              # 6.3 M pairs; a 50 MB float32 result
    pos = np.array([5])
    call = lambda: ropescale.cos_sin(pos, theta)
    out_bytes = 2 * 4 * theta.size
else:
    theta = ropescale.inv_freq(2**22)                  # 2 M pairs per row
    x = np.ones((8, 2**22), np.float32)                # 128 MB
    out = np.zeros_like(x)                             # touched: its pages count before the call
    pos = np.arange(8) * 3 + 2
    call = lambda: ropescale.apply_rotary_positions(x, pos, theta, out=out)
    out_bytes = 0
base = max(peak(), rss())
call()
print(peak() - base - out_bytes)
'''


@pytest.mark.skipif(SANITIZED or rss_bytes() is None, reason="needs /proc and the plain allocator")
@pytest.mark.parametrize("case", ["cos_sin", "fused_out"])
def test_working_memory_does_not_grow_with_the_number_of_pairs(case):
    """Each thread's angle cache was 257 * 16 * R bytes: cos_sin([5], inv_freq(3 * 2**22))
    asked for 26 GB, a fused call with out= on 128 MB grew the peak by ~250 MB.  Now
    the peak grows by the new output at most, plus a bounded working set."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", _PEAK_CHILD, case], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    growth = int(proc.stdout.split()[-1])
    assert growth <= 8 * 1024 * 1024, f"{case}: peak resident memory grew {growth / 2**20:.1f} MiB beyond the output"
