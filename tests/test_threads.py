"""Thread safety and GIL release of the kernels.

* Eight Python threads run every kernel at once on shared read-only inputs,
  each into its own outputs (and, on the large cases, each splitting its call
  over C threads of its own): every result is bit for bit what a sequential
  run gives, and the shared inputs are untouched.
* The kernels release the GIL: with the interpreter's forced switching made
  very rare (``sys.setswitchinterval``), another Python thread advances a
  counter only when the running thread lets go of the GIL itself, so the
  counter moves during a long kernel call only if the kernel released it.  A
  call known to hold the GIL (``sorted`` of a long list) is the control.
* Splitting one call over 1, 2, 3 or 8 C threads gives identical bits.
* The thread split is measured on the running CPU (csrc/threads.c); these
  tests force every call of 64 KiB or more to split (``_core._test_split``),
  so that they exercise the threads whatever the measurements chose, and
  pin the split's fixed edges.
"""
import os
import platform
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import ropescale
from ropescale import _core

@pytest.fixture(autouse=True)
def _split_every_call():
    _core._test_split(1)
    yield
    _core._test_split(0)


def test_the_measured_split_keeps_small_calls_on_one_thread_and_splits_large_ones():
    _core._test_split(0)
    assert _core.thread_split(32 << 10, False, 4) == 1           # below 64 KiB: never worth a wake-up
    assert _core.thread_split(16 << 20, True, 4) == 4            # 16 MiB and up: always
    assert _core.thread_split(1 << 30, False, 1) == 1            # one thread asked for
    assert _core.thread_split(1 << 20, False, 3) in (1, 3)       # measured: one of the two
    _core._test_split(2)
    assert _core.thread_split(16 << 20, True, 4) == 1
    _core._test_split(1)
    assert _core.thread_split(64 << 10, True, 4) == 4
    with pytest.raises(ValueError, match="mode"):
        _core._test_split(3)


def test_measured_calls_of_every_size_class_give_the_one_thread_bits(threads):
    """While the split is being measured, calls alternate one thread and several: the bits
    never change (64 calls per size class cover the probes and the choice after them)."""
    _core._test_split(0)
    th = ropescale.inv_freq(64, 1e4)
    for rows in (300, 1200, 5000, 20000):           # 75 KiB .. 5 MiB of float32
        x = RNG.standard_normal((rows, 1, 64)).astype(np.float32)
        pos = np.arange(rows)[:, None] * 7
        threads(1)
        want = bits(ropescale.apply_rotary_positions(x, pos, th))
        threads(3)
        for _ in range(12):
            assert bits(ropescale.apply_rotary_positions(x, pos, th)) == want


# What the GIL and signal tests lean on is CPython's: its sorted() holds the
# GIL throughout (the control of the GIL test), and PyErr_CheckSignals runs a
# Python handler from inside a C call.  Under PyPy (cpyext) neither holds:
# measured there, the spinner advanced 14035 steps during sorted() against 258
# during a kernel, and SIGINT's handler ran only once the call had returned.
ON_PYPY = platform.python_implementation() == "PyPy"

N_THREADS = 8
REPEATS = 4


def frozen(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


RNG = np.random.default_rng(7)
TH = frozen(ropescale.inv_freq(64, 5e5))
X64 = frozen(RNG.standard_normal((32, 4, 64)))
X32 = frozen(X64.astype(np.float32))
X16 = frozen(X64.astype(np.float16))
XR = frozen(X64[::-1, :, ::-1])                       # negative strides
POS = frozen(np.arange(32)[:, None] * 1000 - 7000)
POS_F = frozen(np.linspace(-50.5, 3e6, 32)[:, None])
C32, S32 = (frozen(a) for a in ropescale.cos_sin(POS, TH, dtype=np.float32))
C64, S64 = (frozen(a) for a in ropescale.cos_sin(POS, TH, dtype=np.float64))
# Large enough (>= 4 MiB of x) that each call splits over C threads too.
BIG = frozen(RNG.standard_normal((4096, 4, 64)).astype(np.float32))
BIG_POS = frozen(np.arange(4096)[:, None])
YARN = {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 8192}


def jobs():
    """(name, fn(out_or_None) -> array) for every kernel; `out` is thread-private."""
    return [
        ("rotary-f32-out", lambda o: ropescale.apply_rotary(X32, C32, S32, out=o), X32),
        ("rotary-f16-interleaved-inverse", lambda o: ropescale.apply_rotary(X16, C32, S32, interleaved=True,
                                                                            inverse=True), None),
        ("rotary-f64-reversed", lambda o: ropescale.apply_rotary(XR, C64, S64), None),
        ("fused-f64-out", lambda o: ropescale.apply_rotary_positions(X64, POS, TH, attention_factor=0.9, out=o), X64),
        ("fused-f16-fractional", lambda o: ropescale.apply_rotary_positions(X16, POS_F, TH, interleaved=True), None),
        ("fused-in-place", lambda o: ropescale.apply_rotary_positions(o, POS, TH, out=o), "copy"),
        ("cos_sin-f16", lambda o: np.concatenate(ropescale.cos_sin(POS_F, TH, dtype=np.float16)), None),
        ("cos_sin-f64", lambda o: np.concatenate(ropescale.cos_sin(POS, TH, attention_factor=1.5,
                                                                    dtype=np.float64)), None),
        ("scaled_inv_freq", lambda o: ropescale.scaled_inv_freq(64, 5e5, YARN)[0], None),
        ("big-fused-split", lambda o: ropescale.apply_rotary_positions(BIG, BIG_POS, TH, out=o), BIG),
        ("big-rotary-split", lambda o: ropescale.apply_rotary(BIG, C32[:1], S32[:1], interleaved=True, out=o), BIG),
    ]


def fresh_out(template):
    if template is None:
        return None
    if isinstance(template, str):
        return np.array(X64)            # in place on a private copy
    return np.empty_like(template)


def run_job(fn, template):
    return np.array(fn(fresh_out(template)))


def bits(a):
    return a.dtype.str, a.shape, a.tobytes()


@pytest.fixture
def two_c_threads(threads):
    threads(2)


def test_eight_threads_at_once_give_the_sequential_bits(two_c_threads):
    table = jobs()
    expected = {name: bits(run_job(fn, tpl)) for name, fn, tpl in table}
    snapshot = {name: bits(np.array(a)) for name, a in
                (("X64", X64), ("X16", X16), ("POS", POS), ("C32", C32), ("TH", TH), ("BIG", BIG))}
    barrier = threading.Barrier(N_THREADS)
    errors, done = [], []

    def worker(k):
        try:
            barrier.wait()
            for rep in range(REPEATS):
                order = table[k % len(table):] + table[:k % len(table)]
                for name, fn, tpl in order:
                    got = bits(run_job(fn, tpl))
                    if got != expected[name]:
                        errors.append(f"thread {k} repeat {rep}: {name} differs from the sequential run")
            done.append(k)
        except Exception as e:  # reported below, with the thread
            errors.append(f"thread {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert sorted(done) == list(range(N_THREADS))
    for name, a in (("X64", X64), ("X16", X16), ("POS", POS), ("C32", C32), ("TH", TH), ("BIG", BIG)):
        assert bits(np.array(a)) == snapshot[name], f"shared input {name} was modified"


# ------------------------------------------------------------- GIL release

# Releases and retakes the GIL; sched_yield costs ~1 us where sleep(0) pays the
# timer slack (~50 us).
yield_gil = getattr(os, "sched_yield", lambda: time.sleep(0))


class Spinner:
    """A thread that counts while it holds the GIL, giving it up each round (sched_yield)."""

    def __init__(self):
        self.count = 0
        self.stop = threading.Event()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        self.started.set()
        while not self.stop.is_set():
            self.count += 1
            yield_gil()

    def __enter__(self):
        self.thread.start()
        self.started.wait()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def count_during(call):
    """How far the spinner advanced while `call` ran (forced switches off)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    try:
        with Spinner() as sp:
            time.sleep(0.01)                 # let it get going
            before = sp.count
            call()
            after = sp.count
    finally:
        sys.setswitchinterval(old)
    return after - before


@pytest.fixture
def one_c_thread(threads):
    threads(1)


def long_calls():
    # Each takes a good fraction of a second on one core: strided float16 rows
    # (the slowest path), fractional positions (no angle reuse), many angles.
    x = np.ones((1 << 19, 128), np.float16)[:, ::2]      # 128 MiB buffer
    pos = np.arange(1 << 19) % 4096 + 0.5
    th = ropescale.inv_freq(64)
    c, s = ropescale.cos_sin(np.arange(4096), th)
    c, s = np.tile(c, (128, 1)), np.tile(s, (128, 1))
    many = np.arange(6000, dtype=np.float64) + 0.5        # fractional: no angle cache
    th_long = ropescale.inv_freq(4096)
    return {
        "apply_rotary": lambda: ropescale.apply_rotary(x, c, s, out=x),
        "apply_rotary_positions": lambda: ropescale.apply_rotary_positions(x, pos, th, out=x),
        "cos_sin": lambda: ropescale.cos_sin(many, th_long, dtype=np.float64),
    }


@pytest.mark.skipif(ON_PYPY, reason="PyPy's sorted() lets other threads run: the test's control does not exist there")
@pytest.mark.parametrize("kernel", ["apply_rotary", "apply_rotary_positions", "cos_sin"])
def test_kernels_release_the_gil(kernel, one_c_thread):
    call = long_calls()[kernel]
    moved = count_during(call)
    big = list(np.random.default_rng(0).random(1_500_000))
    held = count_during(lambda: sorted(big))             # the control: holds the GIL throughout
    # Typically ~10**4 steps against 0 for the control (~10**2 under ASan, whose
    # interceptors make each GIL hand-over slow); a kernel holding the GIL
    # would leave the spinner where the control leaves it.
    assert moved >= 20, f"{kernel}: another thread advanced only {moved} steps while it ran"
    assert held * 10 < moved, f"control advanced {held}, kernel {moved}"


def test_another_thread_sees_an_in_place_rotation_half_done(one_c_thread):
    """Stronger than a counter: a thread that can run only while the GIL is free
    observes rows already rotated next to rows not yet rotated."""
    rows = 1 << 19
    x = np.ones((rows, 128), np.float16)[:, ::2]          # the slow path: a long call
    th = ropescale.inv_freq(64)
    c, s = ropescale.cos_sin(np.ones(1), th)             # position 1: every row changes
    probe = np.arange(0, rows, rows // 64)
    seen = []
    go, stop = threading.Event(), threading.Event()

    def watch():
        go.wait()
        while not stop.is_set():
            changed = x[probe, 0] != 1.0
            if changed.any() and not changed.all():
                seen.append(int(changed.sum()))
                return
            yield_gil()

    old = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    t = threading.Thread(target=watch, daemon=True)
    try:
        t.start()
        go.set()
        ropescale.apply_rotary(x, c, s, out=x)
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    assert seen, "no thread ever ran while the kernel was writing"
    assert np.all(x[:, 0] != 1.0)


# --------------------------------------------------- C-level splitting

@pytest.mark.parametrize("n", [2, 3, 8])
def test_split_over_c_threads_gives_identical_bits(n, threads):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((3001, 3, 96)).astype(np.float16)[::-1, :, ::-1]   # > 4 MiB of work, odd rows
    pos = rng.integers(-10**6, 10**6, size=(3001, 1))
    th = ropescale.inv_freq(80)
    c, s = ropescale.cos_sin(pos, th)
    threads(1)
    one = (ropescale.apply_rotary_positions(x, pos, th, interleaved=True),
           ropescale.apply_rotary(x, c, s),
           *ropescale.cos_sin(pos[:, 0] + 0.25, th, dtype=np.float32))
    threads(n)
    many = (ropescale.apply_rotary_positions(x, pos, th, interleaved=True),
            ropescale.apply_rotary(x, c, s),
            *ropescale.cos_sin(pos[:, 0] + 0.25, th, dtype=np.float32))
    for a, b in zip(one, many):
        assert bits(a) == bits(b)


@pytest.mark.parametrize("spin_ns", [0, 10**9])
def test_spinning_or_sleeping_workers_give_identical_bits(spin_ns, threads):
    """The pool's threads spin a while before they sleep (a sleeping worker took as long to wake
    as a decode step): with no spin (every call wakes a sleeper) and with a spin longer than the
    test (no worker ever sleeps), back-to-back split calls give the one-thread bits."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 1, 32, 128)).astype(np.float32)
    pos = rng.integers(0, 1 << 20, (64, 1, 1))
    th = ropescale.inv_freq(128, 1e4)
    threads(1)
    want = bits(ropescale.apply_rotary_positions(x, pos, th))
    threads(2)
    _core._set_spin(spin_ns)
    try:
        for _ in range(50):
            assert bits(ropescale.apply_rotary_positions(x, pos, th)) == want
    finally:
        _core._set_spin(-1)


@pytest.mark.parametrize("env,want", [("0", 0), ("50", 50_000), (" 100000 ", 100_000_000), ("", 200_000),
                                      ("-1", 200_000), ("1e3", 200_000), ("100001", 200_000), ("\u0663", 200_000)])
def test_ropescale_spin_us_sets_the_spin_or_warns(env, want):
    """ROPESCALE_SPIN_US (microseconds, 0 to 100000) sets how long the pool's threads spin at
    import; a bad value leaves the 200 us default with a RuntimeWarning naming the variable."""
    code = ("import warnings, ropescale\n"
            "from ropescale import _core\n"
            "print(_core._set_spin(-1))\n")
    env_vars = dict(os.environ, ROPESCALE_SPIN_US=env, PYTHONWARNINGS="always")
    r = subprocess.run([sys.executable, "-c", code], env=env_vars, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) == want
    bad = env.strip() not in ("", "0", "50", "100000")
    assert ("ROPESCALE_SPIN_US must be an integer" in r.stderr) == bad, r.stderr


def _process_cpu_seconds():
    t = os.times()
    return t.user + t.system


@pytest.mark.skipif(platform.system() == "Windows", reason="os.times() has no per-process CPU time there")
def test_workers_stop_spinning_and_sleep_after_a_call(threads):
    """A worker spins for at most a fraction of a millisecond after its last job, then sleeps:
    while the process then sleeps half a second, it uses almost no CPU time (a worker that
    spun on would use the whole half second)."""
    threads(2)
    x = np.ones((64, 1, 32, 128), np.float32)
    pos = np.arange(64)[:, None, None]
    for _ in range(20):                                 # the pool's worker exists and has worked
        ropescale.apply_rotary_positions(x, pos, ropescale.inv_freq(128))
    time.sleep(0.05)
    before = _process_cpu_seconds()
    time.sleep(0.5)
    assert _process_cpu_seconds() - before < 0.1


# ----------------------------------------------------------- environment

@pytest.mark.parametrize("value", ["\u00b2", "two", "0", "-3", "65", "1.5", "\u0663"])
def test_a_bad_ropescale_num_threads_is_ignored_with_a_warning(value, monkeypatch):
    """'²' passed str.isdigit and then made int() raise on every call."""
    from ropescale import _rotary
    monkeypatch.setenv("ROPESCALE_NUM_THREADS", value)
    monkeypatch.setattr(_rotary, "_num_threads", None)
    with pytest.warns(RuntimeWarning, match="ROPESCALE_NUM_THREADS"):
        n = ropescale.get_num_threads()
    assert n == max(1, min(os.cpu_count() or 1, 8))
    x = np.ones((2, 8))
    assert ropescale.apply_rotary_positions(x, [0, 0], ropescale.inv_freq(8)).tobytes() == x.tobytes()


def test_a_good_ropescale_num_threads_is_used(monkeypatch):
    from ropescale import _rotary
    monkeypatch.setenv("ROPESCALE_NUM_THREADS", " 3 ")
    monkeypatch.setattr(_rotary, "_num_threads", None)
    assert ropescale.get_num_threads() == 3


# ------------------------------------------------------------- Ctrl-C

@pytest.mark.skipif(ON_PYPY, reason="PyPy runs a Python signal handler only after the C call returns")
def test_ctrl_c_stops_a_long_call_before_it_finishes(one_c_thread):
    """A SIGINT arriving mid-call runs Python's handler during the call (the
    kernel polls between chunks), and the KeyboardInterrupt stops it: rows
    after that point are never written.  Before, the handler ran only after
    the call had written every row."""
    import signal
    rows = 1 << 19
    at_handler, after = _interrupt_a_long_call(rows)
    assert at_handler > 0, "the handler ran only after the call had finished"
    assert after > 0, "the call went on writing after the KeyboardInterrupt"
    x = np.ones((rows, 128), np.float16)[:, ::2]
    th = ropescale.inv_freq(64)
    c, s = ropescale.cos_sin(np.ones(1), th)
    seen = {}
    old = signal.getsignal(signal.SIGINT)
    # a handler that does not raise lets the call finish, with the right result
    signal.signal(signal.SIGINT, lambda *a: seen.__setitem__("quiet", True))
    try:
        t = threading.Thread(target=lambda: (time.sleep(0.05), signal.pthread_kill(
            threading.main_thread().ident, signal.SIGINT)), daemon=True)
        t.start()
        got = ropescale.apply_rotary_positions(x, np.ones(rows), th)
        t.join(5)
    finally:
        signal.signal(signal.SIGINT, old)
    np.testing.assert_array_equal(got, ropescale.apply_rotary(x, c, s))


# ---------------------------------------------------------------- the pool

def _interrupt_a_long_call(rows):
    """Send SIGINT once a long (slow-path) call is visibly under way, from another thread;
    return the rows still unwritten when Python's handler ran and after the call stopped."""
    import signal
    x = np.ones((rows, 128), np.float16)[:, ::2]          # the slow path: a long call
    out = np.full(x.shape, np.nan, np.float16)
    th = ropescale.inv_freq(64)
    c, s = ropescale.cos_sin(np.ones(1), th)
    seen = {}

    def handler(signum, frame):
        seen["unwritten"] = int(np.isnan(out[:, 0]).sum())
        raise KeyboardInterrupt

    def watch():
        # send the signal once the call is visibly under way
        while not (out[:, 0] == out[:, 0]).any():
            yield_gil()
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    old = signal.signal(signal.SIGINT, handler)
    t = threading.Thread(target=watch, daemon=True)
    try:
        t.start()
        with pytest.raises(KeyboardInterrupt):
            ropescale.apply_rotary(x, c, s, out=out)
    finally:
        signal.signal(signal.SIGINT, old)
        t.join(5)
    return seen["unwritten"], int(np.isnan(out[:, 0]).sum())


def _interrupt_a_split_call(rows):
    """:func:`_interrupt_a_long_call`'s rows unwritten after the call, or None when the signal
    only reached Python after the call ended."""
    at_handler, after = _interrupt_a_long_call(rows)
    return None if at_handler == 0 else after


def test_ctrl_c_stops_a_call_split_over_the_pool(threads):
    """With two C threads the tasks go to whichever thread is free; the calling
    thread still polls for signals (a worker never may: it cannot take the GIL),
    also while it waits for a worker to finish, so a SIGINT mid-call stops the call.
    Both cores run the call, so on a busy machine the watching thread may only get
    to send the signal when the call is over: then it cannot be judged, and the
    test tries a call twice as long."""
    threads(2)
    # A worker that claimed the remaining tasks while the caller ran the handler
    # (on a loaded machine the caller may be descheduled for milliseconds) writes
    # them legitimately, so one full write is not yet a failure: try again, with
    # larger tasks; three full writes in a row are.
    results = []
    for rows in (1 << 19, 1 << 20, 1 << 20):
        results.append(_interrupt_a_split_call(rows))
        if results[-1]:
            break
    judged = [r for r in results if r is not None]
    if not judged:
        pytest.skip("the SIGINT reached Python only after the call had ended, three times (machine too busy to judge)")
    assert judged[-1] > 0, f"the call went on writing after the KeyboardInterrupt (unwritten rows per try: {results})"
    # the pool is usable afterwards, with the same bits as one thread
    x = np.ones((4096, 128), np.float16)[:, ::2]
    th = ropescale.inv_freq(64)
    c, s = ropescale.cos_sin(np.ones(1), th)
    got = ropescale.apply_rotary(x, c, s)
    threads(1)
    assert bits(got) == bits(ropescale.apply_rotary(x, c, s))


def _child_uses_the_pool(conn):
    x = np.asarray(BIG)
    got = ropescale.apply_rotary_positions(x, BIG_POS, TH)
    conn.send(bits(np.asarray(got)))
    conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
def test_a_split_call_in_a_forked_child_finishes_with_the_parents_bits(threads):
    """The parent's workers do not exist in a forked child (a DataLoader worker,
    multiprocessing's fork start method): a split call there must run (the
    child forgets the parent's pool and its locks), not wait for them forever,
    and give the parent's bits."""
    import multiprocessing
    threads(2)
    want = bits(np.asarray(ropescale.apply_rotary_positions(BIG, BIG_POS, TH)))   # the pool is up
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child_uses_the_pool, args=(send,))
    p.start()
    try:
        assert recv.poll(60), "the forked child's split call did not finish within 60 s"
        got = recv.recv()
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
    assert p.exitcode == 0
    assert got == want


def test_calls_from_many_python_threads_share_the_pool_or_start_their_own(threads):
    """One call at a time uses the pool; the others start threads of their own.
    Decode-sized calls (under 1 MiB, split since the pool) from four Python
    threads at once all finish with the one-thread bits."""
    threads(1)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((64, 1, 32, 128)).astype(np.float32)
    pos = rng.integers(0, 1 << 20, (64, 1, 1))
    th = ropescale.inv_freq(128, 1e4)
    want = bits(ropescale.apply_rotary_positions(x, pos, th))
    threads(2)
    errors = []

    def worker():
        try:
            for _ in range(200):
                if bits(ropescale.apply_rotary_positions(x, pos, th)) != want:
                    errors.append("bits differ")
        except Exception as e:
            errors.append(repr(e))

    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not any(t.is_alive() for t in ts), "a call never returned"
    assert not errors, errors[:3]
