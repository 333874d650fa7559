#!/usr/bin/env python3
"""Mutation check: break ropescale on purpose and require a test named for the break to fail.

    python tools/mutants.py                 # every mutant (a few minutes)
    python tools/mutants.py --list          # what each mutant does and which tests must catch it
    python tools/mutants.py --only cos_sin_swapped --tests tests

Each mutant is a monkeypatch applied by this file acting as a pytest plugin
(``-p mutants``, selected by the ``ROPESCALE_MUTANT`` environment variable), so
nothing is rebuilt.  The patches wrap the public entry points every consumer
goes through:

* ``ropescale._core.scaled_inv_freq`` (the one C entry of every scaled theta',
  whichever Python helper calls it): theta' random, theta' of another method,
  ``seq_len`` dropped, attention factor returned as 1;
* ``ropescale._core.cos_sin``, ``ropescale._core.rotate`` and
  ``ropescale._core.rotate_positions`` (the kernels): cos and sin swapped,
  the pairing flipped, ``inverse`` ignored, the attention factor (``scale``)
  dropped.

A wrapper replaces the original everywhere it is bound: as an attribute of
``ropescale._core`` (so later ``from ._core import f`` gets it) and under any
other name in a loaded ``ropescale.*`` module that holds the same object.

For each mutant, each of its test selections (files + ``-k`` expression, the
tests named for the behaviour the mutant breaks) is run with ``-x``; the
mutant must make every selection fail.  Before that, all selections must pass
unmutated, and each mutant must actually have changed at least one call
(a wrapper that found nothing to break proves nothing); both are errors
otherwise.  Exit status 0 only if every mutant is killed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (what it breaks, [(test files, -k expression), ...]); every selection must fail.
MUTANTS = {
    "theta_random": (
        "scaled_inv_freq returns random frequencies (same shape)",
        [(["test_freq.py", "test_golden.py"],
          "(reference or period_matching or lowest_pair or transformers) and not live"),
         # relative position holds for any theta: these must check theta too
         (["test_freq.py", "test_rotary.py"], "scores_depend_only")],
    ),
    "theta_wrong_method": (
        "scaled_inv_freq computes another method's frequencies (linear for the others, ntk for linear)",
        [(["test_freq.py", "test_golden.py"],
          "(every_method or regions or keeps_fast_pairs or long_factors or transformers) and not live")],
    ),
    "seq_len_ignored": (
        "scaled_inv_freq ignores seq_len (dynamic and longrope always at their short setting)",
        [(["test_freq.py", "test_rotary.py", "test_golden.py"],
          "(dynamic or long_factors or sequence_length) and not live")],
    ),
    "attention_factor_dropped_freq": (
        "scaled_inv_freq returns attention factor 1",
        [(["test_freq.py", "test_golden.py"],
          "(every_method or keeps_fast_pairs or long_factors or transformers) and not live")],
    ),
    "attention_factor_dropped_kernel": (
        "cos_sin and the fused rotation ignore the attention factor",
        [(["test_rotary.py", "test_bad_input.py"], "attention_factor")],
    ),
    "cos_sin_swapped": (
        "the kernels use sin for cos and cos for sin",
        [(["test_rotary.py"], "matches_reference"),
         (["test_precision.py"], "tables or exact_angles")],
    ),
    "pairing_swapped": (
        "the kernels pair interleaved features for half-split and vice versa",
        [(["test_rotary.py"], "pairings or matches_reference")],
    ),
    "inverse_ignored": (
        "the kernels rotate forward when asked for the inverse",
        [(["test_rotary.py"], "inverse")],
    ),
}


# --------------------------------------------------------------------- plugin
# Imported by pytest as ``-p mutants`` in the child runs.

_STATE = {"applied": 0, "inapplicable": 0}


def _record(changed: bool) -> None:
    """Count a call the mutant changed (calls it leaves as they are count nothing)."""
    if changed:
        _STATE["applied"] += 1


def _not_understood() -> None:
    """A call the wrapper could not read (the glue's signature changed): update this mutant."""
    _STATE["inapplicable"] += 1


def _wrappers(name, core):
    """{attribute of ropescale._core: wrapper} for mutant ``name``."""
    import numpy as np

    orig = {k: getattr(core, k) for k in ("scaled_inv_freq", "cos_sin", "rotate", "rotate_positions")}
    rng = np.random.default_rng(12345)
    codes = {getattr(core, m): m for m in ("DEFAULT", "LINEAR", "NTK", "DYNAMIC", "YARN", "LLAMA3",
                                            "LONGROPE", "PROPORTIONAL") if hasattr(core, m)}

    if name == "theta_random":
        def scaled_inv_freq(*a, **k):
            theta, attn = orig["scaled_inv_freq"](*a, **k)
            _record(theta.size > 0)
            return np.sort(rng.uniform(1e-6, 1.0, theta.shape))[::-1].copy(), attn
        return {"scaled_inv_freq": scaled_inv_freq}

    if name == "theta_wrong_method":
        def scaled_inv_freq(*a, **k):
            method = a[2] if len(a) > 2 else k.get("method")
            if method not in codes:
                _not_understood()
                return orig["scaled_inv_freq"](*a, **k)
            if codes[method] == "DEFAULT":     # no other method to be
                return orig["scaled_inv_freq"](*a, **k)
            other = core.NTK if codes[method] == "LINEAR" else core.LINEAR
            _record(True)
            if len(a) > 2:
                a = a[:2] + (other,) + a[3:]
            else:
                k = dict(k, method=other)
            return orig["scaled_inv_freq"](*a, **k)
        return {"scaled_inv_freq": scaled_inv_freq}

    if name == "seq_len_ignored":
        def scaled_inv_freq(*a, **k):
            if "seq_len" in k:
                _record(True)
                k = {key: v for key, v in k.items() if key != "seq_len"}
            return orig["scaled_inv_freq"](*a, **k)
        return {"scaled_inv_freq": scaled_inv_freq}

    if name == "attention_factor_dropped_freq":
        def scaled_inv_freq(*a, **k):
            theta, attn = orig["scaled_inv_freq"](*a, **k)
            _record(attn != 1.0)
            return theta, 1.0
        return {"scaled_inv_freq": scaled_inv_freq}

    if name == "attention_factor_dropped_kernel":
        # cos_sin(positions, inv_freq, scale, cos, sin, n_threads)
        # rotate_positions(x, positions, inv_freq, scale, out, interleaved, inverse, n_threads)
        # (*rest: the optional trailing bf16 flag, passed through)
        def cos_sin(pos, theta, scale, c, s, n, *rest):
            _record(scale != 1.0)
            return orig["cos_sin"](pos, theta, 1.0, c, s, n, *rest)

        def rotate_positions(x, pos, theta, scale, out, il, inv, n, *rest):
            _record(scale != 1.0)
            return orig["rotate_positions"](x, pos, theta, 1.0, out, il, inv, n, *rest)
        return {"cos_sin": cos_sin, "rotate_positions": rotate_positions}

    if name == "cos_sin_swapped":
        def cos_sin(pos, theta, scale, c, s, n, *rest):
            _record(True)
            return orig["cos_sin"](pos, theta, scale, s, c, n, *rest)

        def rotate(x, c, s, out, il, inv, n, *rest):
            _record(True)
            return orig["rotate"](x, s, c, out, il, inv, n, *rest)

        def rotate_positions(x, pos, theta, scale, out, il, inv, n, *rest):
            _record(True)
            kdt = np.float64 if x.dtype == np.float64 else np.float32
            flat = np.ascontiguousarray(pos, dtype=np.float64).reshape(-1)
            c = np.empty((flat.size, theta.shape[0]), kdt)
            s = np.empty_like(c)
            orig["cos_sin"](flat, theta, scale, c, s, n)
            shape = pos.shape + (theta.shape[0],)
            return orig["rotate"](x, s.reshape(shape), c.reshape(shape), out, il, inv, n, *rest)
        return {"cos_sin": cos_sin, "rotate": rotate, "rotate_positions": rotate_positions}

    if name == "pairing_swapped":
        def rotate(x, c, s, out, il, inv, n, *rest):
            _record(True)
            return orig["rotate"](x, c, s, out, not il, inv, n, *rest)

        def rotate_positions(x, pos, theta, scale, out, il, inv, n, *rest):
            _record(True)
            return orig["rotate_positions"](x, pos, theta, scale, out, not il, inv, n, *rest)
        return {"rotate": rotate, "rotate_positions": rotate_positions}

    if name == "inverse_ignored":
        def rotate(x, c, s, out, il, inv, n, *rest):
            _record(bool(inv))
            return orig["rotate"](x, c, s, out, il, False, n, *rest)

        def rotate_positions(x, pos, theta, scale, out, il, inv, n, *rest):
            _record(bool(inv))
            return orig["rotate_positions"](x, pos, theta, scale, out, il, False, n, *rest)
        return {"rotate": rotate, "rotate_positions": rotate_positions}

    raise ValueError(f"unknown mutant {name!r}; known: {', '.join(MUTANTS)}")


def _install(name):
    import ropescale
    from ropescale import _core

    replaced = 0
    for attr, wrapper in _wrappers(name, _core).items():
        original = getattr(_core, attr)
        for mod_name, mod in list(sys.modules.items()):
            if mod is None or not (mod_name == "ropescale" or mod_name.startswith("ropescale.")):
                continue
            for key, value in list(vars(mod).items()):
                if value is original:
                    setattr(mod, key, wrapper)
                    replaced += 1
    if not replaced:
        raise RuntimeError(f"mutant {name}: nothing to patch in ropescale {ropescale.__version__}")


def pytest_configure(config):
    name = os.environ.get("ROPESCALE_MUTANT")
    try:       # fail fast, no shrinking: the question is only whether a test fails
        from hypothesis import Phase, settings
        settings.register_profile("mutants", phases=[Phase.explicit, Phase.reuse, Phase.generate],
                                  database=None, deadline=None)
        settings.load_profile("mutants")
    except ImportError:
        pass
    if name:
        _install(name)


def pytest_unconfigure(config):
    report = os.environ.get("ROPESCALE_MUTANT_REPORT")
    if report and os.environ.get("ROPESCALE_MUTANT"):
        with open(report, "w") as f:
            json.dump(_STATE, f)


# --------------------------------------------------------------------- runner

def _run(tests_dir, files, expr, mutant=None, report=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("ROPESCALE_MUTANT", None)
    if mutant:
        env["ROPESCALE_MUTANT"] = mutant
        env["ROPESCALE_MUTANT_REPORT"] = report
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "--no-header", "-p", "no:cacheprovider", "-p", "no:randomly",
           "-p", "mutants", "-k", expr] + [os.path.join(tests_dir, f) for f in files]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    return proc, time.time() - t0


def _last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tests", default=os.path.join(HERE, os.pardir, "tests"), help="the tests directory")
    p.add_argument("--only", action="append", help="run only this mutant (repeatable)")
    p.add_argument("--list", action="store_true", help="list the mutants and their test selections")
    args = p.parse_args(argv)
    names = args.only or list(MUTANTS)
    for n in names:
        if n not in MUTANTS:
            p.error(f"unknown mutant {n!r}; known: {', '.join(MUTANTS)}")
    if args.list:
        for n in names:
            what, selections = MUTANTS[n]
            print(f"{n}: {what}")
            for files, expr in selections:
                print(f"    must fail: {' '.join(files)} -k {expr!r}")
        return 0

    problems = []
    # 1. every selection passes unmutated (a failing test would "kill" anything)
    seen = set()
    for n in names:
        for files, expr in MUTANTS[n][1]:
            if (tuple(files), expr) in seen:
                continue
            seen.add((tuple(files), expr))
            proc, dt = _run(args.tests, files, expr)
            status = {0: "passes", 5: "selects no test"}.get(proc.returncode, f"fails (exit {proc.returncode})")
            print(f"baseline {' '.join(files)} -k {expr!r}: {status} [{dt:.0f}s] {_last_line(proc.stdout)}")
            if proc.returncode != 0:
                problems.append(f"baseline: {' '.join(files)} -k {expr!r} {status}")
                print(proc.stdout[-3000:], proc.stderr[-2000:])

    # 2. each mutant changes something and fails every one of its selections
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            what, selections = MUTANTS[n]
            for files, expr in selections:
                report = os.path.join(tmp, f"{n}.json")
                if os.path.exists(report):
                    os.remove(report)
                proc, dt = _run(args.tests, files, expr, mutant=n, report=report)
                try:
                    with open(report) as f:
                        state = json.load(f)
                except (OSError, ValueError):
                    state = {"applied": 0, "inapplicable": 0}
                where = f"{' '.join(files)} -k {expr!r}"
                if proc.returncode == 1 and state["applied"] > 0 and not state["inapplicable"]:
                    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
                    print(f"killed   {n}: {where} [{dt:.0f}s] {failed[0] if failed else ''}")
                    continue
                if proc.returncode == 0:
                    msg = "SURVIVED"
                elif state["inapplicable"] or state["applied"] == 0:
                    msg = f"NOT APPLIED (changed {state['applied']} calls, {state['inapplicable']} not understood)"
                else:
                    msg = f"ERROR (pytest exit {proc.returncode})"
                print(f"{msg} {n} ({what}): {where} [{dt:.0f}s]")
                print(proc.stdout[-3000:], proc.stderr[-2000:])
                problems.append(f"{n}: {msg} in {where}")

    if problems:
        print("\nmutants: FAILED\n  " + "\n  ".join(problems))
        return 1
    print(f"\nmutants: all {len(names)} killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
