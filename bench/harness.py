"""Benchmark machinery for ``bench/bench.py`` (and ``ropescale bench``, which runs it from a checkout).

A *case* is a plain dict (JSON-serialisable, so a fresh subprocess can rebuild
it to measure peak memory).  For each case the contenders are timed
interleaved, one call of each per round, so that they all see the same machine
state (turbo, page cache, a noisy neighbour); the median over rounds is kept.

Contenders of an ``apply`` case:

* ``ropescale``: :func:`ropescale.apply_rotary` (``form="cached"``, with a
  table from :func:`ropescale.cos_sin`) or
  :func:`ropescale.apply_rotary_positions` (``form="fused"``);
  ``place`` is ``"alloc"`` (returns a new array), ``"out"`` (writes into a
  preallocated buffer) or ``"inplace"`` (``out=x``).
* ``floor``: ``np.copyto`` of the same bytes, into a fresh ``np.empty`` for
  ``alloc`` (allocation and first-touch page faults are part of both), into a
  preallocated buffer otherwise.
* ``ipfloor`` (in-place cases): ``np.multiply(x, 1, out=x)``, the same
  read-modify-write traffic as an in-place rotation.
* ``numpy``: :mod:`ropescale.reference` (pure NumPy, float64).
* ``plain`` (M-RoPE cases, ``mrope=`` a section such as ``(16, 24, 24)``):
  the same x rotated by :meth:`ropescale.Rope.apply` of the rope without the
  section at plain per-token positions, while ``ropescale`` is
  ``Rope.apply`` of the M-RoPE rope at ``k`` position streams (Qwen2-VL
  style: text tokens at equal positions on every stream, an image's tokens
  at (t, row, column)); ``x_plain`` = M-RoPE time / plain time, from single
  calls shuffled one by one (:func:`time_calls_shuffled`), not the batches.
* ``torch``: what Hugging Face transformers does on CPU,
  ``q * cos + rotate_half(q) * sin`` (``rotate_every_two`` for interleaved
  pairs; the fused form also makes cos/sin from positions, as the HF rotary
  module's forward does), at the same thread count.  Skipped when torch is
  not installed.

NumPy is the only requirement; torch is imported lazily.
"""
from __future__ import annotations

import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List

import numpy as np

import ropescale
from ropescale import _core

HERE = os.path.dirname(os.path.abspath(__file__))

__all__ = [
    "apply_case",
    "cos_sin_case",
    "machine_info",
    "markdown_table",
    "peak_rss_growth",
    "run_case",
    "run_cases",
    "run_quick",
    "QUICK_CASES",
]

_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
_SHORT = {"float16": "f16", "float32": "f32", "float64": "f64", "bfloat16": "bf16"}


def _np_dtype(name):
    """The NumPy dtype of a case; bfloat16 needs ml_dtypes (None without it: the case is skipped)."""
    if name == "bfloat16":
        try:
            import ml_dtypes  # optional
        except ImportError:
            return None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(_DTYPES[name])


# ---------------------------------------------------------------------------
# Case specifications
# ---------------------------------------------------------------------------

def apply_case(name, shape, dtype="float32", *, form="cached", place="alloc", pairs=None, interleaved=False,
               positions="prefill", threads=None, targets=(), numpy_ref=True, torch_ref=True, compiled=False,
               mrope=None, mrope_distinct=False, k_heads=None):
    """Spec of one rotary-application case on x of ``shape`` = (B, S, H, D).

    ``pairs`` is R (default D/2; smaller for partial rotary).  ``positions``
    is ``"prefill"`` (token t at position t, table (S, 1, R)) or
    ``"decode"`` (one token per sequence at different offsets, (B, 1, 1, R)).
    ``targets`` are ``(metric, op, value)`` with metric one of ``x_floor``,
    ``x_copy``, ``x_ipfloor``, ``x_numpy``, ``x_torch``, ``x_compile``,
    ``x_jax``, ``x_plain`` and op ``"<="`` or ``">="``.  ``compiled`` adds the compiled
    peers (``torch.compile`` and ``jax.jit`` of the HF formula; full rotary only).
    ``mrope`` (a section, pairs per stream, summing to R) makes it an M-RoPE
    case: ``ropescale`` rotates through :meth:`ropescale.Rope.apply` at
    ``len(mrope)`` position streams and the ``plain`` contender at plain
    positions (the NumPy and torch peers are left out).  The streams are laid
    out as Qwen2-VL's (see ``_mrope_streams``), or with ``mrope_distinct``
    different on every stream for every token (the general path's worst case).
    ``k_heads`` makes it a q-and-k case: ``ropescale`` is :meth:`ropescale.Rope.apply_qk`
    of q ``shape`` and k with ``k_heads`` heads (fused positions), ``two`` the same
    rope's :meth:`~ropescale.Rope.apply` called on q and on k, the floors copy both,
    and the torch peers apply HF's formula to both with cos/sin made once (as
    ``apply_rotary_pos_emb(q, k, cos, sin)`` does); ``x_two`` = one pass / two calls, and
    ``x_two_floor`` = the copy floor / two calls, timed among the same shuffled single calls:
    the least ``x_two`` a kernel that cannot rotate faster than memory copies could read
    (``x_floor_single`` = one pass / that floor).
    """
    return {
        "kind": "apply", "name": name, "shape": list(shape), "dtype": dtype, "form": form, "place": place,
        "pairs": pairs, "interleaved": bool(interleaved), "positions": positions, "threads": threads,
        "targets": [list(t) for t in targets], "numpy_ref": numpy_ref, "torch_ref": torch_ref,
        "compiled": bool(compiled), "mrope": None if mrope is None else [int(v) for v in mrope],
        "mrope_distinct": bool(mrope_distinct), "k_heads": None if k_heads is None else int(k_heads),
    }


def cos_sin_case(name, n_positions=131072, n_pairs=64, dtype="float32", *, threads=None, targets=()):
    """Spec of a table build: ``ropescale.cos_sin`` for ``n_positions`` x ``n_pairs``."""
    return {
        "kind": "cos_sin", "name": name, "n": int(n_positions), "pairs": int(n_pairs), "dtype": dtype,
        "threads": threads, "targets": [list(t) for t in targets], "numpy_ref": True, "torch_ref": True,
    }


def _label(spec):
    if spec["kind"] == "cos_sin":
        return f"({spec['n']}, {spec['pairs']}) x2 {_SHORT[spec['dtype']]}"
    label = "(" + ", ".join(str(v) for v in spec["shape"]) + ")"
    if spec.get("k_heads"):
        b, s_, _, d = spec["shape"]
        label = f"q {label} + k ({b}, {s_}, {spec['k_heads']}, {d})"
    return label + " " + _SHORT[spec["dtype"]]


# ---------------------------------------------------------------------------
# Building the contenders
# ---------------------------------------------------------------------------

def _random(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f" and dt.itemsize in (4, 8):
        return rng.standard_normal(tuple(shape), dtype=dt)
    return rng.standard_normal(tuple(shape), dtype=np.float32).astype(dt)


def _positions(spec):
    b, s = spec["shape"][0], spec["shape"][1]
    if spec["positions"] == "decode":
        # one new token per sequence, KV caches of different lengths
        return (1000 + 37 * np.arange(b, dtype=np.int64) + (s - 1)).reshape(b, 1, 1)
    return np.arange(s, dtype=np.int64).reshape(s, 1)


def _mrope_streams(spec):
    """Positions ``(k,) + plain shape`` for an M-RoPE case, laid out as Qwen2-VL lays them.

    Decode: one new text token per sequence, so every stream holds the same
    position (what Qwen2-VL passes while generating text after an image).
    Prefill: text, then an image of ``g x g`` tokens (a quarter to half of the
    sequence) at ``(t, row, column)`` offsets from the image's start, then
    text again from one past the largest position so far.  ``mrope_distinct``:
    stream ``j`` at the plain position + ``3 j`` for every token.
    """
    k = len(spec["mrope"])
    plain = _positions(spec)
    if spec.get("mrope_distinct"):
        return np.stack([plain + 3 * j for j in range(k)])
    if spec["positions"] == "decode":
        return np.stack([plain] * k)
    s = spec["shape"][1]
    g = max(1, int(math.isqrt(s // 2)))
    a = (s - g * g) // 2  # text tokens before the image
    t = np.empty((k, s), dtype=np.int64)
    t[:, :a] = np.arange(a)
    rows, cols = np.divmod(np.arange(g * g), g)
    grid = np.stack([np.zeros(g * g, dtype=np.int64), rows, cols] + [np.zeros(g * g, dtype=np.int64)] * (k - 3))
    t[:, a:a + g * g] = a + grid[:k]
    rest = s - a - g * g
    t[:, a + g * g:] = a + g + np.arange(rest)  # the next text token follows the image's largest position
    return t.reshape((k,) + plain.shape)


def _import_torch():
    # torch's OpenMP workers spin-wait after each call by default, taking the
    # cores from whichever contender runs next in the round-robin; passive
    # waiting keeps the comparison fair (set before torch starts its pool).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # optional
    except ImportError:
        return None
    return torch


def _import_jax():
    try:
        import jax  # optional
        import jax.numpy as jnp
    except ImportError:
        return None, None
    return jax, jnp


def _jax_apply(jnp, q, cos, sin, interleaved):
    """The HF formula in jax.numpy (full rotary), for jax.jit."""
    if interleaved:
        x1, x2 = q[..., ::2], q[..., 1::2]
        turned = jnp.stack((-x2, x1), axis=-1).reshape(q.shape)
    else:
        half = q.shape[-1] // 2
        turned = jnp.concatenate((-q[..., half:], q[..., :half]), axis=-1)
    return q * cos + turned * sin


def _compiled_peers(spec, want, x, pos, theta, c, s, il, fns):
    """``compile`` (torch.compile, inductor) and ``jax`` (jax.jit) of the HF
    formula; each left out when its framework is missing or fails to compile."""
    form = spec["form"]
    if "compile" in want:
        torch = _import_torch()
        if torch is not None and hasattr(torch, "compile") and x.dtype in (np.float32, np.float16, np.float64):
            q = torch.from_numpy(x)
            rot = x.shape[-1]
            try:
                if form == "cached":
                    ct = torch.from_numpy(_expand_np(c, il)).to(q.dtype)
                    st = torch.from_numpy(_expand_np(s, il)).to(q.dtype)
                    f = torch.compile(lambda a, b, d: _torch_apply(torch, a, b, d, rot, il), backend="inductor",
                                      dynamic=False)
                    call = lambda f=f, q=q: f(q, ct, st)  # noqa: E731
                else:
                    pt = torch.from_numpy(pos)
                    inv = torch.from_numpy(theta).float()

                    def hf_fused(a, p, w):
                        freqs = p[..., None].float() * w
                        emb = torch.repeat_interleave(freqs, 2, dim=-1) if il else torch.cat((freqs, freqs), dim=-1)
                        return _torch_apply(torch, a, emb.cos().to(a.dtype), emb.sin().to(a.dtype), rot, il)

                    f = torch.compile(hf_fused, backend="inductor", dynamic=False)
                    call = lambda f=f, q=q: f(q, pt, inv)  # noqa: E731
                call()
                call()  # compiled now
                fns["compile"] = call
            except Exception as e:  # noqa: BLE001 - a peer that cannot compile here is skipped, with a note
                print(f"  (torch.compile skipped for {spec['name']}: {type(e).__name__}: {e})".splitlines()[0],
                      file=sys.stderr)
    if "jax" in want:
        jax, jnp = _import_jax()
        if jax is not None and x.dtype in (np.float32, np.float16):
            try:
                q = jax.device_put(x)
                if form == "cached":
                    cj = jax.device_put(_expand_np(c, il).astype(x.dtype))
                    sj = jax.device_put(_expand_np(s, il).astype(x.dtype))
                    f = jax.jit(lambda a, b, d: _jax_apply(jnp, a, b, d, il))
                    call = lambda f=f, q=q: f(q, cj, sj).block_until_ready()  # noqa: E731
                else:
                    pj = jax.device_put(pos.astype(np.int32))
                    wj = jax.device_put(theta.astype(np.float32))

                    def hf_fused(a, p, w):
                        freqs = p[..., None].astype(jnp.float32) * w
                        emb = jnp.repeat(freqs, 2, axis=-1) if il else jnp.concatenate((freqs, freqs), axis=-1)
                        return _jax_apply(jnp, a, jnp.cos(emb).astype(a.dtype), jnp.sin(emb).astype(a.dtype), il)

                    f = jax.jit(hf_fused)
                    call = lambda f=f, q=q: f(q, pj, wj).block_until_ready()  # noqa: E731
                call()
                fns["jax"] = call
            except Exception as e:  # noqa: BLE001
                print(f"  (jax.jit skipped for {spec['name']}: {type(e).__name__}: {e})".splitlines()[0],
                      file=sys.stderr)


def _torch_apply(torch, q, cos, sin, rot, interleaved):
    """HF transformers' application on CPU (cos/sin already expanded to 2R features)."""
    if rot < q.shape[-1]:
        q_rot, q_pass = q[..., :rot], q[..., rot:]
    else:
        q_rot, q_pass = q, None
    if interleaved:
        # GPT-J / CodeGen: rotate_every_two
        x1, x2 = q_rot[..., ::2], q_rot[..., 1::2]
        turned = torch.stack((-x2, x1), dim=-1).flatten(-2)
    else:
        half = rot // 2
        turned = torch.cat((-q_rot[..., half:], q_rot[..., :half]), dim=-1)
    emb = q_rot * cos + turned * sin
    return emb if q_pass is None else torch.cat((emb, q_pass), dim=-1)


def _expand_np(table, interleaved):
    """(…, R) -> (…, 2R) the way HF lays cos/sin out for each pairing."""
    return np.repeat(table, 2, axis=-1) if interleaved else np.concatenate([table, table], axis=-1)


def build_apply(spec, want):
    """Contenders (name -> zero-argument callable) for an ``apply`` spec.

    ``want`` is a set of contender names to build (the memory probe builds
    only ``ropescale``).  Also returns the output size in bytes.
    """
    B, S, H, D = spec["shape"]
    dt = _np_dtype(spec["dtype"])
    R = spec["pairs"] or D // 2
    il = spec["interleaved"]
    form, place = spec["form"], spec["place"]
    x = _random(spec["shape"], dt)
    pos = _positions(spec)
    theta = ropescale.inv_freq(2 * R, 10000.0)
    table_dt = np.float64 if dt == np.float64 else np.float32
    bf16 = spec["dtype"] == "bfloat16"
    c = s = None
    if form == "cached" and not spec.get("mrope"):
        c, s = ropescale.cos_sin(pos, theta, dtype=table_dt)
    buf = None
    if place in ("out", "inplace"):
        buf = np.empty_like(x)
        buf.fill(0)  # touched now, so the memory probe sees only what the call allocates
    fns: Dict[str, Callable[[], Any]] = {}

    if spec.get("mrope"):
        # Both through Rope.apply, the only public way in for position streams.
        out = {"alloc": None, "out": buf, "inplace": x}[place]
        m_rope = ropescale.Rope(D, 1e6, {"mrope_section": list(spec["mrope"])}, interleaved=il)
        p_rope = ropescale.Rope(D, 1e6, interleaved=il)
        streams = _mrope_streams(spec)
        if "ropescale" in want:
            fns["ropescale"] = lambda: m_rope.apply(x, streams, out=out)
        if "plain" in want:
            fns["plain"] = lambda: p_rope.apply(x, pos, out=out)
    elif "ropescale" in want:
        out = {"alloc": None, "out": buf, "inplace": x}[place]
        if form == "cached":
            fns["ropescale"] = lambda: ropescale.apply_rotary(x, c, s, interleaved=il, out=out)
        else:
            fns["ropescale"] = lambda: ropescale.apply_rotary_positions(x, pos, theta, interleaved=il, out=out)
    if "floor" in want:
        if place == "alloc":
            fns["floor"] = lambda: np.copyto(np.empty_like(x), x)
        else:
            fns["floor"] = lambda: np.copyto(buf, x)
    if "xcopy" in want and place == "alloc":
        fns["xcopy"] = lambda: x.copy()
    if "ipfloor" in want and place == "inplace":
        one = dt.type(1)
        fns["ipfloor"] = lambda: np.multiply(x, one, out=x)
    if spec.get("compiled") and not bf16:
        _compiled_peers(spec, want, x, pos, theta, c, s, il, fns)
    if "numpy" in want and spec.get("numpy_ref", True) and not bf16:
        if form == "cached":
            fns["numpy"] = lambda: ropescale.reference.apply_rotary(x, c, s, interleaved=il)
        else:
            fns["numpy"] = lambda: ropescale.reference.apply_rotary_positions(x, pos, theta, interleaved=il)
    if "torch" in want and spec.get("torch_ref", True):
        torch = _import_torch()
        if torch is not None:
            tdt = getattr(torch, spec["dtype"])
            q = torch.from_numpy(x.view(np.int16)).view(tdt) if bf16 else torch.from_numpy(x)
            rot = 2 * R
            if form == "cached":
                ct = torch.from_numpy(_expand_np(c, il)).to(tdt)
                st = torch.from_numpy(_expand_np(s, il)).to(tdt)
                fns["torch"] = lambda: _torch_apply(torch, q, ct, st, rot, il)
            else:
                pt = torch.from_numpy(pos)
                inv = torch.from_numpy(theta).float()

                def torch_fused():
                    freqs = pt[..., None].float() * inv
                    emb = torch.repeat_interleave(freqs, 2, dim=-1) if il else torch.cat((freqs, freqs), dim=-1)
                    return _torch_apply(torch, q, emb.cos().to(tdt), emb.sin().to(tdt), rot, il)

                fns["torch"] = torch_fused
    return fns, x.nbytes


def build_qk(spec, want):
    """Contenders for a q-and-k case (``apply_case(..., k_heads=...)``); fused positions."""
    B, S, H, D = spec["shape"]
    dt = _np_dtype(spec["dtype"])
    il = spec["interleaved"]
    place = spec["place"]
    q = _random(spec["shape"], dt)
    k = _random((B, S, spec["k_heads"], D), dt, seed=1)
    pos = _positions(spec)
    rope = ropescale.Rope(D, 10000.0, interleaved=il)
    bufs = None
    if place == "out":
        bufs = (np.zeros_like(q), np.zeros_like(k))
    fns: Dict[str, Callable[[], Any]] = {}
    if "ropescale" in want:
        fns["ropescale"] = lambda: rope.apply_qk(q, k, pos, out=bufs)
    if "two" in want:
        if bufs is None:
            fns["two"] = lambda: (rope.apply(q, pos), rope.apply(k, pos))
        else:
            fns["two"] = lambda: (rope.apply(q, pos, out=bufs[0]), rope.apply(k, pos, out=bufs[1]))
    if "floor" in want:
        if bufs is None:
            fns["floor"] = lambda: (np.copyto(np.empty_like(q), q), np.copyto(np.empty_like(k), k))
        else:
            fns["floor"] = lambda: (np.copyto(bufs[0], q), np.copyto(bufs[1], k))
    if "xcopy" in want and bufs is None:
        fns["xcopy"] = lambda: (q.copy(), k.copy())
    torch = _import_torch() if ("torch" in want or "compile" in want) and spec.get("torch_ref", True) else None
    if torch is not None and dt in (np.float32, np.float16, np.float64):
        tq, tk = torch.from_numpy(q), torch.from_numpy(k)
        pt = torch.from_numpy(pos)
        inv = torch.from_numpy(rope.inv_freq.copy()).float()

        def hf_qk(a, b, p, w):
            freqs = p[..., None].float() * w
            emb = torch.repeat_interleave(freqs, 2, dim=-1) if il else torch.cat((freqs, freqs), dim=-1)
            c, s = emb.cos().to(a.dtype), emb.sin().to(a.dtype)
            return _torch_apply(torch, a, c, s, D, il), _torch_apply(torch, b, c, s, D, il)

        if "torch" in want:
            fns["torch"] = lambda: hf_qk(tq, tk, pt, inv)
        if "compile" in want and spec.get("compiled") and hasattr(torch, "compile"):
            try:
                f = torch.compile(hf_qk, backend="inductor", dynamic=False)
                f(tq, tk, pt, inv)
                f(tq, tk, pt, inv)
                fns["compile"] = lambda: f(tq, tk, pt, inv)
            except Exception as e:  # noqa: BLE001 - a peer that cannot compile here is skipped, with a note
                print(f"  (torch.compile skipped for {spec['name']}: {type(e).__name__}: {e})".splitlines()[0],
                      file=sys.stderr)
    return fns, q.nbytes + k.nbytes


def build_cos_sin(spec, want):
    n, R = spec["n"], spec["pairs"]
    dt = np.dtype(_DTYPES[spec["dtype"]])
    pos = np.arange(n, dtype=np.int64)
    theta = ropescale.inv_freq(2 * R, 10000.0)
    out_bytes = 2 * n * R * dt.itemsize
    fns: Dict[str, Callable[[], Any]] = {}
    if "ropescale" in want:
        fns["ropescale"] = lambda: ropescale.cos_sin(pos, theta, dtype=dt)
    if "floor" in want:
        src = np.ones((2, n, R), dtype=dt)
        fns["floor"] = lambda: np.copyto(np.empty_like(src), src)
    if "numpy" in want:
        def numpy_cos_sin():
            a = np.outer(pos.astype(np.float64), theta)
            return np.cos(a), np.sin(a)

        fns["numpy"] = numpy_cos_sin
    if "torch" in want:
        torch = _import_torch()
        if torch is not None:
            pt = torch.from_numpy(pos)
            inv = torch.from_numpy(theta).float()

            def torch_cos_sin():
                freqs = torch.outer(pt.float(), inv)  # HF: float32 angles
                return freqs.cos().to(getattr(torch, spec["dtype"])), freqs.sin().to(getattr(torch, spec["dtype"]))

            fns["torch"] = torch_cos_sin
    return fns, out_bytes


def build(spec, want):
    if spec["kind"] == "apply" and spec.get("k_heads"):
        return build_qk(spec, want)
    return (build_apply if spec["kind"] == "apply" else build_cos_sin)(spec, want)


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

def _time_calls(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def time_interleaved(fns, repeat=5, warmup=1, min_sample=0.005, budget=1.0, max_rounds=30):
    """Per contender: median and minimum seconds per call, measured round-robin.

    Each sample runs ``number`` calls (calibrated so a sample lasts at least
    ``min_sample`` seconds), so that microsecond calls are not lost in the
    timer's resolution.  At least ``repeat`` rounds are timed; cheap cases get
    more (up to ``max_rounds``, within about ``budget`` seconds), which keeps
    their medians steady on a shared machine.  The GC is off while timing;
    the order of the contenders rotates from round to round.
    Returns ``{name: (median, minimum)}``.
    """
    names = list(fns)
    number = {}
    for name in names:
        fns[name]()  # first call: imports, lazy init (a slow first call made the batch too small)
        t = _time_calls(fns[name], 1)  # the second sets the batch size
        number[name] = max(1, min(10000, int(math.ceil(min_sample / max(t, 1e-9)))))
    samples: Dict[str, List[float]] = {n: [] for n in names}
    order_rng = np.random.default_rng(12)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        rounds, r = warmup + repeat, 0
        while r < rounds:
            t0 = time.perf_counter()
            # A fresh order every round: the first contender after the round's
            # gc.collect() runs measurably slower (~10% at decode shapes), and a
            # fixed cycle gave each contender the same predecessor every round
            # (the one after np.copyto's idle second core read 4-13% slower
            # than the same call elsewhere in the cycle).
            for name in order_rng.permutation(names).tolist():
                t = _time_calls(fns[name], number[name])
                if r >= warmup:
                    samples[name].append(t)
            if r == warmup:  # the first timed round sets how many fit the budget
                per_round = time.perf_counter() - t0
                extra = int(budget / max(per_round, 1e-9))
                rounds = warmup + max(repeat, min(max_rounds, extra))
            r += 1
            gc.collect()
    finally:
        if was_enabled:
            gc.enable()
    return {n: (float(np.median(v)), float(np.min(v))) for n, v in samples.items()}


def time_calls_shuffled(fns, budget=2.0, max_calls=4000, seed=7):
    """Per contender: the median seconds of single calls, the contenders' calls
    shuffled one by one (each contender once per step, in a random order).

    For ratios of a few percent between calls of the same kind (M-RoPE
    against plain positions): any drift of the machine, and any effect of
    what ran just before, reaches every contender alike.  Round-robin
    batches (:func:`time_interleaved`) read identical calls 0.98-1.13 apart
    on this machine; this reads them within 1-2%.  Returns ``{name: median}``.
    """
    names = list(fns)
    for name in names:   # warm-up, and the step's length
        fns[name]()
    t0 = time.perf_counter()
    for name in names:
        fns[name]()
    per_step = time.perf_counter() - t0
    steps = max(20, min(max_calls, int(budget / max(per_step, 1e-9))))
    rng = np.random.default_rng(seed)
    # A quarter of the budget untimed, shuffled as the timed steps are: on the
    # KVM machines these runs use, the first second of a fresh case read the
    # same contenders 1.37x apart where the steady state reads them 1.26x apart
    # (a decode step against its copy floor); a decode loop runs in the steady state.
    for _ in range(max(5, steps // 4)):
        for name in rng.permutation(names).tolist():
            fns[name]()
    times = {n: np.empty(steps) for n in names}
    clock = time.perf_counter
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(steps):
            for name in rng.permutation(names).tolist():
                fn = fns[name]
                t = clock()
                fn()
                times[name][i] = clock() - t
    finally:
        if was_enabled:
            gc.enable()
    return {n: float(np.median(v)) for n, v in times.items()}


# ---------------------------------------------------------------------------
# Peak memory: a fresh subprocess per case
# ---------------------------------------------------------------------------

def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _rss_probe(spec):
    """In the child: build the inputs, reset the high-water mark, call once."""
    threads = spec.get("threads")
    if threads:
        ropescale.set_num_threads(threads)
    fns, out_bytes = build(spec, {"ropescale"})
    gc.collect()
    try:
        # "5" resets VmHWM (and getrusage's ru_maxrss) to the current RSS.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_kib("VmRSS")
        result = fns["ropescale"]()
        peak = _status_kib("VmHWM")
        method = "VmHWM"
    except OSError:  # no clear_refs: the setup's own peak may hide growth
        import resource

        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = fns["ropescale"]()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss"
    del result
    return {"growth_mb": (peak - base) / 1024.0, "out_mb": out_bytes / 2**20, "method": method}


def _rss_child_main():
    spec = json.loads(sys.stdin.read())
    print(json.dumps(_rss_probe(spec)))


def peak_rss_growth(spec, timeout=300):
    """Peak RSS growth (MiB) of one ropescale call of ``spec``, in a fresh process.

    Returns a dict ``growth_mb``, ``out_mb``, ``method``, or ``None`` when
    the probe cannot run (not Linux, or the child failed).
    """
    if not sys.platform.startswith("linux"):
        return None
    code = f"import sys; sys.path.insert(0, {HERE!r}); from harness import _rss_child_main; _rss_child_main()"
    try:
        proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(spec), capture_output=True,
                              text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------
# Running cases
# ---------------------------------------------------------------------------

def _check(row, targets):
    """PASS / MISS against the targets (text), or "" when none apply."""
    if not targets:
        return ""
    misses = []
    for metric, op, value in targets:
        got = row.get(metric)
        if got is None:
            continue
        ok = got <= value if op == "<=" else got >= value
        if not ok:
            misses.append(f"{metric[2:]} {got:.2f}{'>' if op == '<=' else '<'}{value:g}")
    return "PASS" if not misses else "MISS (" + "; ".join(misses) + ")"


def _target_text(targets):
    words = {"x_floor": "×floor", "x_copy": "×x.copy()", "x_ipfloor": "×ip-floor", "x_numpy": "×np",
             "x_torch": "×torch", "x_compile": "×compile", "x_jax": "×jax", "x_plain": "×plain",
             "x_two": "×two calls"}
    return ", ".join(f"{words[m]}{op}{v:g}" for m, op, v in targets)


# Calls of at most this many bytes of x (q and k) take their floor ratios from single calls
# shuffled one by one (run_case): the decode rows.
SINGLE_CALL_BYTES = 8 << 20


def run_case(spec, *, repeat=5, warmup=1, threads=None, rss=True, numpy_ref=True, torch_ref=True, budget=1.0):
    """Time one case; returns a row (dict) with milliseconds and ratios.

    Ratios: ``x_floor`` = ropescale / copy floor (lower is better; the
    in-place floor ``x_ipfloor`` and, in M-RoPE cases, ``x_plain`` = M-RoPE /
    plain positions likewise), ``x_numpy`` and ``x_torch`` = how many times
    ropescale is faster (higher is better).
    """
    spec = dict(spec)
    n_threads = spec.get("threads") or threads or ropescale.get_num_threads()
    spec["threads"] = n_threads
    prev = ropescale.set_num_threads(n_threads)
    if spec.get("mrope"):  # M-RoPE against plain positions: no peers
        numpy_ref = torch_ref = False
    torch = _import_torch() if torch_ref else None
    prev_torch = None
    if torch is not None:
        prev_torch = torch.get_num_threads()
        torch.set_num_threads(n_threads)
    want = {"ropescale", "plain", "two", "floor", "xcopy", "ipfloor", "compile", "jax"}
    if numpy_ref:
        want.add("numpy")
    if torch is not None:
        want.add("torch")
    else:
        want.discard("compile")
    try:
        fns, out_bytes = build(spec, want)
        med = time_interleaved(fns, repeat=repeat, warmup=warmup, budget=budget)
        del fns
        gc.collect()
    finally:
        ropescale.set_num_threads(prev)
        if torch is not None:
            torch.set_num_threads(prev_torch)
    ms = {k: v[0] * 1e3 for k, v in med.items()}
    rs_ms = ms["ropescale"]
    row: Dict[str, Any] = {
        "case": spec["name"], "shape": _label(spec), "threads": n_threads,
        "ropescale_ms": rs_ms, "floor_ms": ms.get("floor"), "ipfloor_ms": ms.get("ipfloor"),
        "numpy_ms": ms.get("numpy"), "torch_ms": ms.get("torch"),
        "xcopy_ms": ms.get("xcopy"), "compile_ms": ms.get("compile"), "jax_ms": ms.get("jax"),
        "plain_ms": ms.get("plain"), "two_ms": ms.get("two"),
        "out_mb": out_bytes / 2**20,
        "min_ms": {k: v[1] * 1e3 for k, v in med.items()},
    }
    row["x_floor"] = rs_ms / row["floor_ms"] if row["floor_ms"] else None
    row["x_ipfloor"] = rs_ms / row["ipfloor_ms"] if row["ipfloor_ms"] else None
    row["x_numpy"] = row["numpy_ms"] / rs_ms if row["numpy_ms"] else None
    row["x_torch"] = row["torch_ms"] / rs_ms if row["torch_ms"] else None
    row["x_copy"] = rs_ms / row["xcopy_ms"] if row["xcopy_ms"] else None
    row["x_compile"] = row["compile_ms"] / rs_ms if row["compile_ms"] else None
    row["x_jax"] = row["jax_ms"] / rs_ms if row["jax_ms"] else None
    row["floor_from"] = "batches"
    if spec["kind"] == "apply" and out_bytes <= SINGLE_CALL_BYTES and not spec.get("mrope"):
        # Decode-sized calls (tens of microseconds): the ratios to the floors from single calls shuffled
        # one by one (time_calls_shuffled), which read two identical calls within 1-2 %; round-robin
        # batches of such calls read them 0.98-1.13 apart on a quiet machine and several times apart
        # with other processes on the cores (the times in ms stay the batches')
        fns, _ = build(spec, {"ropescale", "floor", "xcopy", "ipfloor"})
        prev = ropescale.set_num_threads(n_threads)
        try:
            single = time_calls_shuffled(fns, budget=2.0 * budget)
        finally:
            ropescale.set_num_threads(prev)
        for key, name in (("x_floor", "floor"), ("x_copy", "xcopy"), ("x_ipfloor", "ipfloor")):
            if name in single:
                row[key] = single["ropescale"] / single[name]
        row["floor_from"] = "single calls"
    if row["plain_ms"]:
        # M-RoPE against plain positions is a matter of a few percent: timed call by call (see
        # time_calls_shuffled), not from the batches above
        fns, _ = build(spec, {"ropescale", "plain"})
        prev = ropescale.set_num_threads(n_threads)
        try:
            single = time_calls_shuffled(fns, budget=2.0 * budget)
        finally:
            ropescale.set_num_threads(prev)
        row["x_plain"] = single["ropescale"] / single["plain"]
    else:
        row["x_plain"] = None
    if spec["kind"] == "apply":
        fused = spec["form"] == "fused" or bool(spec.get("mrope")) or bool(spec.get("k_heads"))
        row["split"] = _core.thread_split(out_bytes, fused, n_threads)
    row["x_two"] = row["x_two_floor"] = row["x_floor_single"] = None
    if row["two_ms"]:
        # one pass against two calls, like M-RoPE against plain: single calls shuffled, with the
        # copy floor of q and k among them, so that floor / two calls (the least x_two any kernel
        # could read without rotating faster than memory copies) comes from the same seconds
        fns, _ = build(spec, {"ropescale", "two", "floor"})
        prev = ropescale.set_num_threads(n_threads)
        try:
            single = time_calls_shuffled(fns, budget=3.0 * budget)
        finally:
            ropescale.set_num_threads(prev)
        row["x_two"] = single["ropescale"] / single["two"]
        row["x_two_floor"] = single["floor"] / single["two"]
        row["x_floor_single"] = single["ropescale"] / single["floor"]
    row["rss_mb"] = None
    if rss:
        probe = peak_rss_growth(spec)
        if probe is not None:
            row["rss_mb"] = probe["growth_mb"]
    row["target"] = _target_text(spec.get("targets", []))
    row["status"] = _check(row, spec.get("targets", []))
    if row["status"].startswith("MISS") and row["x_two_floor"] is not None \
            and any(m == "x_two" for m, _, _ in spec.get("targets", [])):
        # say whether the target is within reach of any kernel on this machine
        row["status"] += f"; the copy floor alone is {row['x_two_floor']:.2f}× two calls"
    return row


def run_cases(specs, *, repeat=5, warmup=1, threads=None, rss=True, numpy_ref=True, torch_ref=True, budget=1.0,
              progress=None):
    rows = []
    for spec in specs:
        row = run_case(spec, repeat=repeat, warmup=warmup, threads=threads, rss=rss, numpy_ref=numpy_ref,
                       torch_ref=torch_ref, budget=budget)
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


# Representative and quick (a few seconds): a prefill of 2048 tokens (64 MiB
# in and out, beyond the last-level cache of most machines), the fused form,
# a decode step and a table build.
QUICK_CASES = [
    apply_case("prefill cached", (1, 2048, 32, 128), targets=[("x_floor", "<=", 1.3), ("x_numpy", ">=", 10),
                                                             ("x_torch", ">=", 5)]),
    apply_case("prefill fused", (1, 2048, 32, 128), form="fused", targets=[("x_floor", "<=", 1.6)]),
    apply_case("decode cached", (64, 1, 32, 128), positions="decode", targets=[("x_floor", "<=", 3.0)]),
    cos_sin_case("cos_sin table", 32768, 64, targets=[("x_numpy", ">=", 3)]),
]


def run_quick(*, repeat=3, threads=None, rss=False, numpy_ref=True, torch_ref=True, progress=None):
    """Run :data:`QUICK_CASES` (about 5-10 s) and return their rows (list of dicts).

    Keys of a row: ``case``, ``shape``, ``threads``, ``ropescale_ms``,
    ``floor_ms``, ``x_floor``, ``ipfloor_ms``, ``x_ipfloor``, ``numpy_ms``,
    ``x_numpy``, ``torch_ms``, ``x_torch``, ``plain_ms``, ``x_plain`` (``None`` where a contender was
    skipped), ``out_mb``, ``rss_mb`` (``None`` unless ``rss``), ``target``,
    ``status`` ("PASS", "MISS (...)" or ""), ``min_ms`` (fastest sample
    of each contender).
    """
    # Several warm-up calls: the first allocations of a fresh process fault
    # their pages in from the OS until malloc's mmap threshold adapts, which
    # would be timed as the kernel otherwise.
    return run_cases(QUICK_CASES, repeat=repeat, warmup=4, threads=threads, rss=rss, numpy_ref=numpy_ref,
                     torch_ref=torch_ref, budget=0.5, progress=progress)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    fields = {}
    for line in info.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields.setdefault(k.strip(), v.strip())
    name = fields.get("model name", platform.machine())
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def _cpu_vendor():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _cache_sizes():
    """``{"L1d": bytes, "L2": bytes, "L3": bytes}`` of one instance each (Linux sysfs; {} elsewhere),
    with how many CPUs share it (``"L2_shared": n``)."""
    sizes = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return sizes
    for name in names:
        if not name.startswith("index"):
            continue
        try:
            with open(os.path.join(base, name, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(base, name, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(base, name, "size")) as f:
                text = f.read().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        value = int(text.rstrip("KMG") or 0) * mult
        key = "L1d" if level == "1" else f"L{level}"
        sizes[key] = value
        try:
            with open(os.path.join(base, name, "shared_cpu_list")) as f:
                cpus = f.read().strip()
            sizes[key + "_shared"] = sum(int(b) - int(a) + 1 if "-" in part else 1
                                         for part in cpus.split(",") for a, _, b in [part.partition("-")])
        except (OSError, ValueError):
            pass
    return sizes


def _size_text(n):
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n >> 10} KiB"


def cpu_text(info):
    """One line naming the CPU: vendor, model, caches, the SIMD level the kernels use."""
    caches = info.get("caches") or {}
    parts = []
    for key in ("L2", "L3"):
        if key in caches:
            shared = caches.get(key + "_shared")
            per = " per core" if shared == 1 else (f" per {shared} CPUs" if shared else "")
            parts.append(f"{key} {_size_text(caches[key])}{per}")
    return (f"{info.get('vendor', '?')} {info['cpu']}" + (", " + ", ".join(parts) if parts else "")
            + f", kernels: {info['simd']}")


def machine_info():
    torch = _import_torch()
    return {
        "vendor": _cpu_vendor(),
        "caches": _cache_sizes(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "jax": _version("jax"),
        "ml_dtypes": _version("ml_dtypes"),
        "ropescale": ropescale.__version__,
        "ropescale_threads": ropescale.get_num_threads(),
        "simd": _core.simd_name(),
    }


def header_lines(info):
    return [
        f"- CPU: {cpu_text(info)}; {info['cpus']} logical CPUs",
        f"- Python {info['python']}, NumPy {info['numpy']}, torch {info['torch'] or 'not installed (skipped)'}, "
        f"jax {info.get('jax') or 'not installed (skipped)'}, ml_dtypes {info.get('ml_dtypes') or 'not installed'}",
        f"- ropescale {info['ropescale']}: get_num_threads() = {info['ropescale_threads']}, "
        f"_core.simd_name() = {info['simd']}",
    ]


def _fmt_ms(v):
    if v is None:
        return "–"
    if v < 1:
        return f"{v:.3f}"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _fmt_x(v):
    return "–" if v is None else f"{v:.2f}" if v < 10 else f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def threads_text(row):
    """The thread count asked for, and "→ m" when the measured split ran the case on m."""
    used = row.get("split")
    return str(row["threads"]) if used is None or used == row["threads"] else f"{row['threads']}→{used}"


def markdown_table(rows):
    """One Markdown table, one row per case."""
    head = ["case", "shape / dtype", "thr", "ropescale ms", "copy-floor ms", "×floor", "×x.copy()", "×ip-floor",
            "×faster than numpy ref", "×faster than torch", "×faster than torch.compile", "×faster than jax.jit",
            "×plain positions", "×two calls", "floor ÷ two calls", "peak RSS growth MB (out)", "target",
            "PASS/MISS"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        rss = "–" if r.get("rss_mb") is None else f"{r['rss_mb']:.1f} ({r['out_mb']:.0f})"
        cells = [r["case"], r["shape"], threads_text(r), _fmt_ms(r["ropescale_ms"]), _fmt_ms(r["floor_ms"]),
                 _fmt_x(r["x_floor"]), _fmt_x(r.get("x_copy")), _fmt_x(r["x_ipfloor"]), _fmt_x(r["x_numpy"]),
                 _fmt_x(r["x_torch"]), _fmt_x(r.get("x_compile")), _fmt_x(r.get("x_jax")), _fmt_x(r.get("x_plain")),
                 _fmt_x(r.get("x_two")), _fmt_x(r.get("x_two_floor")), rss,
                 r.get("target", ""), r.get("status", "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
