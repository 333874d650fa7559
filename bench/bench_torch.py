"""Per-call overhead of passing torch tensors instead of NumPy arrays, at decode shapes.

    python bench/bench_torch.py              # ~20 s
    python bench/bench_torch.py --repeat 9

Each row times the same call on NumPy arrays and on torch tensors viewing the
same memory, interleaved round by round, in CPU time of the calling thread,
and reports the fastest round of each (the machine is shared; the minimum is
the least disturbed) and their difference: the cost of recognising the tensors, viewing them as NumPy
arrays (zero-copy) and wrapping the result as a tensor.  The target (context,
never asserted) is an overhead of at most 5 us per call.  The ``ropescale.torch``
rows compare its functions with the NumPy call: "no grad" is a call on tensors
that need no autograd (the common inference case), "requires_grad=True forward"
one that records the graph (torch's ``autograd.Function.apply`` included).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import ropescale
import ropescale.torch as rt

TARGET_US = 5.0


def _per_call(fn, number):
    # CPU time of this thread, not wall time: on a shared machine the wall
    # clock also counts the time other processes hold the core.  ropescale
    # runs on one thread here (main() sets it): a call split with the pool's
    # worker would leave the worker's share out of this thread's CPU time.
    t = time.thread_time()
    for _ in range(number):
        fn()
    return (time.thread_time() - t) / number * 1e6


def _pair(numpy_fn, torch_fn, repeat, number):
    a, b = [], []
    for _ in range(repeat):
        a.append(_per_call(numpy_fn, number))
        b.append(_per_call(torch_fn, number))
    return min(a), min(b)


def cases(shape):
    rng = np.random.default_rng(0)
    b, s, h, d = shape
    x = rng.standard_normal(shape).astype(np.float32)
    pos = np.full((b, s, 1), 4000, dtype=np.int64)
    theta = ropescale.inv_freq(d)
    c, sn = ropescale.cos_sin(pos, theta)
    out = np.empty_like(x)
    xt, post, ct, st, outt = (torch.from_numpy(a) for a in (x, pos, c, sn, out))
    thetat = torch.from_numpy(theta)
    xg = xt.clone().requires_grad_()
    xb = xt.bfloat16()
    try:
        import ml_dtypes
        xb_np = x.astype(ml_dtypes.bfloat16)
    except ImportError:  # pragma: no cover
        xb_np = None
    rows = [
        ("apply_rotary (tables)", lambda: ropescale.apply_rotary(x, c, sn),
         lambda: ropescale.apply_rotary(xt, ct, st)),
        ("apply_rotary, out=", lambda: ropescale.apply_rotary(x, c, sn, out=out),
         lambda: ropescale.apply_rotary(xt, ct, st, out=outt)),
        ("apply_rotary_positions (fused)", lambda: ropescale.apply_rotary_positions(x, pos, theta),
         lambda: ropescale.apply_rotary_positions(xt, post, thetat)),
        ("ropescale.torch.apply_rotary, no grad", lambda: ropescale.apply_rotary(x, c, sn),
         lambda: rt.apply_rotary(xt, ct, st)),
        ("ropescale.torch.apply_rotary_positions, no grad", lambda: ropescale.apply_rotary_positions(x, pos, theta),
         lambda: rt.apply_rotary_positions(xt, post, thetat)),
        # x.requires_grad: the forward records the graph (autograd.Function.apply, torch's
        # own cost of several microseconds, is part of the overhead); no backward is run.
        ("ropescale.torch.apply_rotary, requires_grad=True forward", lambda: ropescale.apply_rotary(x, c, sn),
         lambda: rt.apply_rotary(xg, ct, st)),
        ("ropescale.torch.apply_rotary_positions, requires_grad=True forward",
         lambda: ropescale.apply_rotary_positions(x, pos, theta), lambda: rt.apply_rotary_positions(xg, post, thetat)),
    ]
    # The conversion alone: the same entry-point wrapper around a kernel that
    # does nothing, so only recognising, viewing and wrapping is timed.
    from ropescale import _arrays

    res = np.empty_like(x)
    noop = _arrays.rotary_entry(lambda *a, **k: res)
    rows.append(("wrapper alone, kernel replaced by a no-op", lambda: noop(x, c, sn), lambda: noop(xt, ct, st)))
    if xb_np is not None:
        rows.append(("bfloat16 (ml_dtypes array vs torch tensor)", lambda: ropescale.apply_rotary(xb_np, c, sn),
                     lambda: ropescale.apply_rotary(xb, ct, st)))
        rows.append(("bfloat16 fused, out= in place", lambda: ropescale.apply_rotary_positions(xb_np, pos, theta, out=xb_np),
                     lambda: ropescale.apply_rotary_positions(xb, post, thetat, out=xb)))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--number", type=int, default=2000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ropescale.set_num_threads(1)
    print(f"torch {torch.__version__}, numpy {np.__version__}, ropescale threads {ropescale.get_num_threads()}")
    print()
    print("| shape (B, S, H, D) | call | NumPy µs | torch µs | overhead µs | ≤ 5 µs |")
    print("|---|---|---:|---:|---:|:---:|")
    for shape in ((1, 1, 32, 128), (64, 1, 32, 128)):
        for name, fn_np, fn_t in cases(shape):
            for _ in range(200):  # warm-up
                fn_np(), fn_t()
            a, b = _pair(fn_np, fn_t, args.repeat, args.number if shape[0] == 1 else args.number // 10)
            verdict = "PASS" if b - a <= TARGET_US else "MISS"
            print(f"| {shape} | {name} | {a:.2f} | {b:.2f} | {b - a:+.2f} | {verdict} |")


if __name__ == "__main__":
    main()
