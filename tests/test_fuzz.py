"""Hypothesis fuzzing of the public kernels, in a subprocess.

tests/_fuzz_worker.py draws calls of apply_rotary, apply_rotary_positions,
cos_sin and scaled_inv_freq from their whole argument space, valid and
invalid, and calls of both rotations whose out shares one buffer with any of
their inputs (x, cos, sin, positions, inv_freq), and requires of each either the right result (against
ropescale.reference with exact angles) or a TypeError/ValueError for an
invalid call -- nothing else.  It runs in a child process with a fixed seed
so that a crash of the interpreter (a segfault in the C core) is reported as
a failure here instead of taking the test run down with it.

``ROPESCALE_FUZZ_EXAMPLES`` sets the examples per target (default 1000; the
sanitizer run uses fewer).
"""
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
pytest.importorskip("mpmath")

WORKER = Path(__file__).with_name("_fuzz_worker.py")
SANITIZED = bool(os.environ.get("ROPESCALE_SANITIZED"))
EXAMPLES = int(os.environ.get("ROPESCALE_FUZZ_EXAMPLES", 300 if SANITIZED else 1000))
SEED = 20240501
TARGETS = ("apply_rotary", "apply_rotary_positions", "cos_sin", "scaled_inv_freq", "aliasing")
ALL_VALID = ("aliasing",)   # every call valid: out and the inputs share one buffer in every way


def run_worker(*args, timeout=600):
    return subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(WORKER.parent.parent))


def describe(proc):
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = str(-proc.returncode)
        head = f"the fuzz worker was killed by signal {name} (a crash in the C core?)"
    else:
        head = f"the fuzz worker exited with {proc.returncode}"
    return f"{head}\n--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"


def test_fuzz_gives_correct_results_or_clear_errors(record_property):
    proc = run_worker("--examples", str(EXAMPLES), "--seed", str(SEED))
    assert proc.returncode == 0, describe(proc)
    counts = {m.group(1): (int(m.group(2)), int(m.group(3)), int(m.group(4)))
              for m in re.finditer(r"^FUZZ (\S+) (\d+) valid=(\d+) invalid=(\d+)$", proc.stdout, re.M)}
    total = re.search(r"^FUZZ-TOTAL (\d+)$", proc.stdout, re.M)
    assert total, describe(proc)
    assert set(counts) == set(TARGETS), counts
    for name, (n, valid, invalid) in counts.items():
        assert n >= 0.9 * EXAMPLES, (name, n)
        # both halves of the argument space are exercised
        if name not in ALL_VALID:
            assert valid >= 0.1 * n and invalid >= 0.1 * n, (name, valid, invalid)
    record_property("fuzz_examples", int(total.group(1)))
    print(f"fuzz: {total.group(1)} examples: " + ", ".join(f"{k} {v[0]} ({v[1]} valid)" for k, v in counts.items()))


def test_a_crash_in_the_worker_is_reported_not_lost(tmp_path):
    """The harness itself: a child that dies of a signal is a failure with a clear message."""
    proc = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    if proc.returncode < 0:
        assert proc.returncode == -signal.SIGSEGV and "SIGSEGV" in describe(proc)
    else:                       # under AddressSanitizer: its report, then exit 1
        assert "SEGV" in describe(proc)
