"""Per-call overhead of passing torch tensors instead of NumPy arrays, at decode shapes.

    python bench/bench_torch.py              # ~40 s
    python bench/bench_torch.py --budget 4

Each row times three calls, shuffled call by call (each once per step, in a
random order; ``harness.time_calls_shuffled``), and reports the median of
each, so that any drift of the shared machine, and whatever ran just before
a call, reaches all three alike:

* the NumPy call;
* the same call on torch tensors viewing the same memory;
* torch's own floor: the NumPy call plus what any zero-copy route through
  torch's Python API must do for these arguments, and nothing of ropescale's:
  ``Tensor.numpy()`` of each tensor argument, ``torch.from_numpy`` of a new
  result, and for the grad rows ``autograd.Function.apply`` of a Function whose
  forward only allocates the result.

"overhead" is torch minus NumPy (the target, context only and never asserted,
is at most 5 us per call); "floor" is torch's floor minus NumPy; "ropescale's
own" is torch minus the floor: recognising the tensors and the Python between
them and the kernel.  At (64, 1, 32, 128) x and out fill a core's 2 MiB L2, so
the code after each kernel runs from a cold cache and every call costs more
than it does at (1, 1, 32, 128), torch's own calls included.  The
``ropescale.torch`` rows compare its functions with the NumPy call: "no grad" is
a call on tensors that need no autograd (the common inference case),
"requires_grad=True forward" one that records the graph.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import ropescale
import ropescale.torch as rt

import harness  # bench/harness.py, beside this file

TARGET_US = 5.0


def _medians(fns, budget):
    got = harness.time_calls_shuffled(dict(enumerate(fns)), budget=budget, max_calls=20000)
    return [got[i] * 1e6 for i in range(len(fns))]


class _Allocates(torch.autograd.Function):
    """torch's floor for a recorded call: a Function whose forward only allocates its result."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return torch.from_numpy(np.empty(tuple(x.shape), np.float32))

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - never run
        return grad, None, None


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
    views = lambda *ts: [t.numpy() for t in ts]  # noqa: E731  (torch's own zero-copy views)
    wrap = torch.from_numpy
    rows = [
        ("apply_rotary (tables)", lambda: ropescale.apply_rotary(x, c, sn),
         lambda: ropescale.apply_rotary(xt, ct, st),
         lambda: (views(xt, ct, st), wrap(ropescale.apply_rotary(x, c, sn)))),
        ("apply_rotary, out=", lambda: ropescale.apply_rotary(x, c, sn, out=out),
         lambda: ropescale.apply_rotary(xt, ct, st, out=outt),
         lambda: (views(xt, ct, st, outt), ropescale.apply_rotary(x, c, sn, out=out))),
        ("apply_rotary, out=x (in place)", lambda: ropescale.apply_rotary(out, c, sn, out=out),
         lambda: ropescale.apply_rotary(outt, ct, st, out=outt),
         lambda: (views(outt, ct, st), ropescale.apply_rotary(out, c, sn, out=out))),
        ("apply_rotary_positions (fused)", lambda: ropescale.apply_rotary_positions(x, pos, theta),
         lambda: ropescale.apply_rotary_positions(xt, post, thetat),
         lambda: (views(xt, post, thetat), wrap(ropescale.apply_rotary_positions(x, pos, theta)))),
        ("ropescale.torch.apply_rotary, no grad", lambda: ropescale.apply_rotary(x, c, sn),
         lambda: rt.apply_rotary(xt, ct, st),
         lambda: (views(xt, ct, st), wrap(ropescale.apply_rotary(x, c, sn)))),
        ("ropescale.torch.apply_rotary_positions, no grad", lambda: ropescale.apply_rotary_positions(x, pos, theta),
         lambda: rt.apply_rotary_positions(xt, post, thetat, attention_factor=1.0),
         lambda: (views(xt, post, thetat), wrap(ropescale.apply_rotary_positions(x, pos, theta)))),
        # x.requires_grad: the forward records the graph; no backward is run.
        ("ropescale.torch.apply_rotary, requires_grad=True forward", lambda: ropescale.apply_rotary(x, c, sn),
         lambda: rt.apply_rotary(xg, ct, st),
         lambda: (_Allocates.apply(xg, ct, st), views(xt, ct, st), ropescale.apply_rotary(x, c, sn))),
        ("ropescale.torch.apply_rotary_positions, requires_grad=True forward",
         lambda: ropescale.apply_rotary_positions(x, pos, theta), lambda: rt.apply_rotary_positions(xg, post, thetat, attention_factor=1.0),
         lambda: (_Allocates.apply(xg, ct, st), views(xt, post, thetat),
                  ropescale.apply_rotary_positions(x, pos, theta))),
    ]
    # The conversion alone: the same entry-point wrapper around a kernel that
    # does nothing, so only recognising, viewing and wrapping is timed.
    from ropescale import _arrays

    res = np.empty_like(x)
    noop = _arrays.rotary_entry(lambda *a, **k: res)
    rows.append(("wrapper alone, kernel replaced by a no-op", lambda: noop(x, c, sn), lambda: noop(xt, ct, st),
                 lambda: (views(xt, ct, st), wrap(noop(x, c, sn)))))
    if xb_np is not None:
        i16 = torch.int16  # a bfloat16 tensor's only zero-copy NumPy view: reinterpreted as int16
        rows.append(("bfloat16 (ml_dtypes array vs torch tensor)", lambda: ropescale.apply_rotary(xb_np, c, sn),
                     lambda: ropescale.apply_rotary(xb, ct, st),
                     lambda: (xb.view(i16).numpy(), views(ct, st),
                             wrap(ropescale.apply_rotary(xb_np, c, sn).view(np.int16)).view(torch.bfloat16))))
        rows.append(("bfloat16 fused, out= in place", lambda: ropescale.apply_rotary_positions(xb_np, pos, theta, out=xb_np),
                     lambda: ropescale.apply_rotary_positions(xb, post, thetat, out=xb),
                     lambda: (xb.view(i16).numpy(), views(post, thetat),
                              ropescale.apply_rotary_positions(xb_np, pos, theta, out=xb_np))))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=1.5, help="seconds of shuffled calls per row (default 1.5)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ropescale.set_num_threads(1)
    print(f"torch {torch.__version__}, numpy {np.__version__}, ropescale threads {ropescale.get_num_threads()}")
    print()
    print("| shape (B, S, H, D) | call | NumPy µs | torch µs | overhead µs | torch's floor µs | ropescale's own µs "
          "| overhead ≤ 5 µs |")
    print("|---|---|---:|---:|---:|---:|---:|:---:|")
    for shape in ((1, 1, 32, 128), (64, 1, 32, 128)):
        for name, fn_np, fn_t, fn_floor in cases(shape):
            for _ in range(200):  # warm-up
                fn_np(), fn_t(), fn_floor()
            a, b, f = _medians((fn_np, fn_t, fn_floor), args.budget)
            verdict = "PASS" if b - a <= TARGET_US else "MISS"
            print(f"| {shape} | {name} | {a:.2f} | {b:.2f} | {b - a:+.2f} | {f - a:+.2f} | {b - f:+.2f} | {verdict} |")

if __name__ == "__main__":
    main()
