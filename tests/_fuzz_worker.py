"""Hypothesis fuzzing of apply_rotary, apply_rotary_positions, cos_sin and scaled_inv_freq,
and of every input of the rotations sharing memory with out (target ``aliasing``).

Run by tests/test_fuzz.py in a subprocess, so that a crash of the interpreter
is a failed test rather than a lost run::

    python tests/_fuzz_worker.py --examples 300 --seed 20240501

Each target draws from the whole argument space, valid and invalid, and
decides independently (from the documented contract, not from the code under
test) whether the call is valid.  The call must then either return the right
result -- compared with ``ropescale.reference`` using exact angles (50-digit
mpmath on the exact product of the two doubles), tolerance relative to |x|:
float64 1e-12, float32 2e-6, float16 2e-3 -- or, for an invalid call, raise a
TypeError or ValueError.  Anything else (another exception, a wrong result, an
invalid call accepted, a valid one refused, an input modified) fails.

Prints one line per target, ``FUZZ <target> <examples> valid=<n> invalid=<n>``,
then ``FUZZ-TOTAL <examples>``; exits 1 on a failure (with Hypothesis's
falsifying example).
"""
import math
import sys
import warnings

import mpmath
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ropescale
from ropescale import reference as ref
from ropescale.methods import (ALIASES, DYNAMIC, LINEAR, LLAMA3, LONGROPE, NTK, PROPORTIONAL, SPECS, UNSCALED, YARN,
                               canonical)

from conftest import TOL  # noqa: E402  (the suite's one tolerance table; this directory is sys.path[0])
from _targets import run, tally  # noqa: E402
FLOAT_KINDS = ["<f2", "<f4", "<f8", ">f4", ">f8"]
MAX_POSITION = 2**52
MAX_ANGLE = 2.0**34
NAN, INF = float("nan"), float("inf")

# ------------------------------------------------------------------ oracles

mpmath.mp.dps = 50
_EXACT = {}


def exact_cos_sin(pos, theta):
    """cos/sin of the exact product p * theta (both doubles), rounded to float64."""
    pos = np.asarray(pos, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    c = np.empty(pos.shape + theta.shape)
    s = np.empty(pos.shape + theta.shape)
    for idx in np.ndindex(pos.shape):
        p = float(pos[idx])
        for k, t in enumerate(theta.tolist()):
            key = (p, t)
            if key not in _EXACT:
                a = mpmath.mpf(p) * mpmath.mpf(t)      # exact: 106 bits fit in 166
                _EXACT[key] = (float(mpmath.cos(a)), float(mpmath.sin(a)))
            c[idx + (k,)], s[idx + (k,)] = _EXACT[key]
    return c, s


def same(a, b):
    """Equal contents (NaN equal to NaN), for arrays of any dtype."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def looks_full_width(s):
    """Whether a half-width ``sin`` falls under the documented refusal of full-width
    tables: its last row is cat(h, h) of an h that is not constant (width >= 4, even)."""
    if not isinstance(s, np.ndarray) or s.ndim == 0 or s.size == 0 or s.shape[-1] < 4 or s.shape[-1] % 2:
        return False
    # compared as stored bit patterns: -0.0 is not 0.0 there, and NaN payloads count
    row = np.ascontiguousarray(s[(-1,) * (s.ndim - 1)])
    bits = row.view(f"u{row.itemsize}")
    h = bits.size // 2
    return bool(np.array_equal(bits[:h], bits[h:]) and not np.all(bits == bits[0]))


def outcome(call, valid, what):
    """The result of a valid call, or None after an invalid call raised TypeError/ValueError.

    ``valid`` None: a call at the boundary (an angle at the exact limit), where a result and a
    ValueError are both right."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = call()
    except (TypeError, ValueError) as e:
        if valid or (valid is None and not isinstance(e, ValueError)):
            raise AssertionError(f"{what}: valid call refused: {type(e).__name__}: {e}") from None
        return None
    if valid is not None and not valid:
        raise AssertionError(f"{what}: invalid call accepted")
    return res


def check_rotation(got, want, x_used, tables_scale, result_dtype, what):
    got = np.asarray(got)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert got.dtype == result_dtype, (what, got.dtype, result_dtype)
    g = got.astype(np.float64)
    nan_w, nan_g = np.isnan(want), np.isnan(g)
    assert np.array_equal(nan_w, nan_g), f"{what}: NaN where the reference has none, or the other way round"
    inf_w = np.isinf(want)
    assert np.array_equal(g[inf_w], want[inf_w]), f"{what}: infinities differ"
    ok = ~(nan_w | inf_w)
    xs = np.abs(np.asarray(x_used, dtype=np.float64))
    xs = np.where(np.isfinite(xs), xs, 0.0)
    row = xs.max(axis=-1, keepdims=True) if xs.shape[-1] else np.zeros(xs.shape[:-1] + (1,))
    scale = 2.0 * np.maximum(row * tables_scale, 1e-300)
    # A result among the result type's subnormals is rounded to an absolute grid
    # (float16: 2**-24), which no tolerance relative to |x| can express when the
    # attention factor makes the results tiny: one grid step is always allowed.
    grid = float(np.finfo(np.dtype(result_dtype).newbyteorder("=")).smallest_subnormal)
    diff = np.where(ok, np.abs(g - np.where(ok, want, 0.0)), 0.0)
    err = np.maximum(diff - grid, 0.0) / scale
    if err.size:
        worst = float(err.max())
        assert worst <= TOL[np.dtype(result_dtype).newbyteorder("=")], f"{what}: error {worst:.3g} x |x|"


# --------------------------------------------------------------- strategies

def values(n_special):
    finite = st.floats(-1000, 1000, width=16)
    special = st.sampled_from([NAN, INF, -INF])
    return st.one_of(finite, special) if n_special else finite


@st.composite
def x_arrays(draw):
    """(x as passed, valid?, description): any layout; sometimes not a float array at all."""
    nlead = draw(st.integers(0, 3))
    lead = tuple(draw(st.lists(st.integers(0, 3), min_size=nlead, max_size=nlead)))
    r = draw(st.integers(0, 5))
    d = 2 * r + draw(st.sampled_from([0, 0, 0, 0, 0, 2, 4, 1]))
    shape = lead + (d,)
    kind = draw(st.sampled_from(FLOAT_KINDS * 8 + ["list", "list", "i4", "c8", "?", "O", "0d", "none", "str"]))
    base = draw(hnp.arrays(np.float64, shape, elements=values(draw(st.booleans()))))
    if kind in FLOAT_KINDS:
        layout = draw(st.sampled_from(["c", "c", "reversed", "strided", "swapped", "unaligned"]))
        x = make_layout(base.astype(kind), layout)
        return x, d % 2 == 0, r
    if kind == "list":
        lst = base.tolist()
        shape = np.asarray(lst).shape                # nested empties collapse: [[], []] is (2, 0)
        return lst, len(shape) >= 1 and shape[-1] % 2 == 0, r
    if kind == "0d":
        return np.float32(1.5), False, r
    if kind == "none":
        return None, False, r
    if kind == "str":
        return "x", False, r
    with np.errstate(invalid="ignore"):
        return base.astype(kind), False, r


def make_layout(a, layout):
    if layout == "reversed":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1] if a.ndim == 1 else \
            np.ascontiguousarray(a[::-1, ..., ::-1])[::-1, ..., ::-1]
    if layout == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if layout == "swapped" and a.ndim >= 3:
        return np.ascontiguousarray(np.swapaxes(a, 0, 1)).swapaxes(0, 1)
    if layout == "unaligned" and a.dtype.itemsize > 1:
        buf = np.zeros(a.nbytes + 1, np.uint8)
        u = np.ndarray(a.shape, a.dtype, buffer=buf, offset=1)
        u[...] = a
        return u
    return a


def sub_lead(draw, lead):
    """A leading shape that broadcasts down to `lead` (valid), or one that does not."""
    kind = draw(st.sampled_from(["down"] * 12 + ["grow", "mismatch"]))
    drop = draw(st.integers(0, len(lead)))
    sub = [1 if draw(st.booleans()) else n for n in lead[drop:]]
    if kind == "grow":
        return (2,) + tuple(lead), False
    if kind == "mismatch" and lead:
        i = draw(st.integers(0, len(lead) - 1))
        bad = list(lead)
        bad[i] = lead[i] + 1 if lead[i] != 0 else 2
        return tuple(bad), False
    return tuple(sub), True


def broadcasts_down(shape, lead):
    if len(shape) > len(lead):
        return False
    return all(a == 1 or a == b for a, b in zip(shape[::-1], lead[::-1]))


def flag(draw):
    v = draw(st.sampled_from([False, True] * 8 + [np.bool_(True), np.bool_(False), 0, 1, None, "yes"]))
    return v, isinstance(v, (bool, np.bool_))


def out_for(draw, x, x_ok):
    """(out, valid?, is_x)."""
    kind = draw(st.sampled_from(["none"] * 10 + ["fresh", "fresh", "x", "x", "reversed", "shape", "readonly",
                                                   "int", "list"]))
    if kind == "none":
        return None, True, False
    if not isinstance(x, np.ndarray) or x.ndim == 0:
        return np.zeros(3), False, False
    if kind == "x":
        return x, x_ok and x.flags.writeable, True
    dt = draw(st.sampled_from(FLOAT_KINDS))
    if kind == "fresh":
        return np.full(x.shape, 7, dt), True, False
    if kind == "reversed":
        return np.full(x.shape, 7, dt)[::-1], True, False
    if kind == "shape":
        return np.zeros(x.shape[:-1] + (x.shape[-1] + 2,), dt), False, False
    if kind == "readonly":
        return np.broadcast_to(np.zeros(1, dt), x.shape), False, False
    if kind == "int":
        return np.zeros(x.shape, np.int32), False, False
    return np.zeros(x.shape).tolist(), False, False


def result_dtype(x, out):
    dt = np.asarray(x).dtype if out is None else out.dtype
    return dt if out is not None else dt.newbyteorder("=")


@st.composite
def positions_for(draw, lead, free=False):
    """(positions, valid?, max |position| as a Python number or None); any shape if `free`."""
    shape, ok = (lead, True) if free else sub_lead(draw, lead)
    kind = draw(st.sampled_from(["i8", "i8", "i4", "i2", "u1", "u4", "u8", ">i8", "f8", "f8", "f4", "f2", ">f8",
                                 "list", "scalar"] * 2 + ["?", "c16", "O", "str", "none"]))
    mag = draw(st.sampled_from([10, 10, 100, 1000, 10**4, 10**6] * 2 + [2**31, 2**34, 2**40, 2**52, 2**52 + 2,
                                                                        2**62]))
    if kind in ("str", "none"):
        return ("0, 1" if kind == "str" else None), False, None
    if kind == "scalar":
        v = draw(st.integers(-mag, mag))
        return v, abs(v) <= MAX_POSITION, abs(v)
    dt = np.dtype("i8" if kind == "list" else kind)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo, hi = max(info.min, -mag), min(info.max, mag)
        ints = draw(hnp.arrays(np.int64 if dt != np.uint64 else np.uint64, shape,
                               elements=st.integers(max(lo, 0) if dt.kind == "u" else lo, hi)))
        p = ints.astype(dt)
        big = max((abs(int(v)) for v in p.ravel()), default=0)
        if kind == "list":
            lst = p.tolist()                         # nested empties may collapse the shape
            shape_ok = free or broadcasts_down(np.asarray(lst).shape, lead)
            return lst, shape_ok and big <= MAX_POSITION, big
        return p, ok and big <= MAX_POSITION, big
    if dt.kind == "f":
        special = draw(st.booleans()) and draw(st.booleans())
        width = min(64, dt.itemsize * 8)
        lim = float(np.asarray(min(float(mag), float(np.finfo(dt).max)), dtype=dt))   # exact at the width
        el = st.floats(-lim, lim, allow_nan=False, allow_infinity=False, width=width)
        if special:
            el = st.one_of(el, st.sampled_from([NAN, INF, -INF]))
        p = draw(hnp.arrays(np.float64, shape, elements=el)).astype(dt)
        pf = np.abs(p.astype(np.float64))
        finite = bool(np.all(np.isfinite(pf)))
        big = float(pf.max()) if pf.size else 0.0
        return p, ok and finite and big <= MAX_POSITION, (big if finite else None)
    # bool, complex, object
    return np.zeros(shape, dt), False, None


@st.composite
def inv_freqs(draw, r):
    """(inv_freq, valid?, max |theta|)."""
    kind = draw(st.sampled_from(["rope"] * 12 + ["random", "random", "f4", "int", "list"] * 2 +
                                ["empty", "2d", "nan", "huge", "str", "none", "complex"]))
    n = r if draw(st.integers(0, 9)) else r + 1
    n = max(n, 1)
    if kind == "rope":
        t = ropescale.reference.inv_freq(2 * n, draw(st.sampled_from([10.0, 1e4, 5e5, 1e7])))
        t = t / draw(st.sampled_from([1.0, 4.0, 32.0]))
    elif kind in ("random", "f4", "list"):
        t = np.array(draw(st.lists(st.floats(-10, 10, width=32), min_size=n, max_size=n)))
        if kind == "f4":
            t = t.astype(np.float32)
        if kind == "list":
            return t.tolist(), True, float(np.abs(t).max()), n
    elif kind == "int":
        t = np.array(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)), dtype=np.int64)
    elif kind == "empty":
        return np.zeros(0), False, 0.0, 0
    elif kind == "2d":
        return np.ones((1, n)), False, 1.0, n
    elif kind == "nan":
        t = np.ones(n)
        t[draw(st.integers(0, n - 1))] = draw(st.sampled_from([NAN, INF, -INF]))
        return t, False, None, n
    elif kind == "huge":
        return np.full(n, 1e301), False, None, n
    elif kind == "str":
        return "1.0", False, None, n
    elif kind == "complex":
        return np.ones(n, complex), False, None, n
    else:
        return None, False, None, n
    return t, True, float(np.abs(np.asarray(t, dtype=np.float64)).max()), n


def attention_factors():
    return st.sampled_from([1.0] * 3 + ["good"] * 6 + [0.0, -1.0, NAN, INF, "1", None, True]).flatmap(
        lambda v: st.floats(1e-3, 10.0) if v == "good" else st.just(v))


def attn_valid(a):
    return isinstance(a, float) and math.isfinite(a) and a > 0


def angle_ok(big, tmax):
    """True / False, or None at the 2**34 boundary where rounding may go either way."""
    if big is None or tmax is None:
        return False
    prod = float(big) * tmax
    if abs(prod - MAX_ANGLE) <= MAX_ANGLE * 1e-12:
        return None
    return prod <= MAX_ANGLE


# ------------------------------------------------------------------ targets

@st.composite
def rotary_calls(draw):
    x, x_ok, r = draw(x_arrays())
    xa = np.asarray(x) if isinstance(x, (np.ndarray, list)) and x_ok else None
    lead = xa.shape[:-1] if xa is not None else (2,)
    d = xa.shape[-1] if xa is not None else 2 * r
    sub, sub_ok = sub_lead(draw, lead)
    tkind = draw(st.sampled_from(["<f4", "<f8", "<f2", ">f8"] * 3 + ["i4", "none", "0d", "sin-shape", "wide"]))
    rr = r + 1 if tkind == "wide" else r
    tab_dt = tkind if tkind in ("<f4", "<f8", "<f2", ">f8") else "<f4"
    el = st.floats(-2, 2, width=16)
    c = draw(hnp.arrays(np.float64, sub + (rr,), elements=el)).astype(tab_dt)
    s = draw(hnp.arrays(np.float64, sub + (rr,), elements=el)).astype(tab_dt)
    tables_ok = tkind in ("<f4", "<f8", "<f2", ">f8", "wide") and sub_ok and 2 * rr <= d
    if tkind == "i4":
        c = c.astype(np.int32)
    elif tkind == "none":
        c = None
    elif tkind == "0d":
        c, s = np.float32(1), np.float32(0)
    elif tkind == "sin-shape":
        s = s[..., :-1] if rr else np.zeros(sub + (1,))
    c = make_layout(c, draw(st.sampled_from(["c", "reversed", "strided"]))) if isinstance(c, np.ndarray) \
        and c.ndim else c
    il, il_ok = flag(draw)
    inv, inv_ok = flag(draw)
    out, out_ok, out_is_x = out_for(draw, x, x_ok)
    valid = x_ok and tables_ok and il_ok and inv_ok and out_ok
    return x, c, s, il, inv, out, out_is_x, valid


def fuzz_apply_rotary(case):
    x, c, s, il, inv, out, out_is_x, valid = case
    tally("apply_rotary", valid)
    x_before = np.array(x, copy=True) if isinstance(x, np.ndarray) else None
    tabs_before = [np.array(t, copy=True) for t in (c, s) if isinstance(t, np.ndarray)]
    call = lambda: ropescale.apply_rotary(x, c, s, interleaved=il, inverse=inv, out=out)  # noqa: E731
    if valid and looks_full_width(s):
        # The documented refusal of an ambiguous table (ropescale.tables): the
        # call may run or be refused for that reason, and nothing else.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = call()
        except ValueError as e:
            assert "full-width table" in str(e), f"apply_rotary: valid call refused: {e}"
            res = None
    else:
        res = outcome(call, valid, "apply_rotary")
    for t, b in zip([t for t in (c, s) if isinstance(t, np.ndarray)], tabs_before):
        assert same(t, b), "apply_rotary modified cos/sin"
    if res is None:
        if x_before is not None and not out_is_x:
            assert same(x, x_before), "a refused call modified x"
        return
    rdt = result_dtype(x if x_before is None or not out_is_x else x_before, out)
    if out is not None:
        assert res is out
    src = x_before if out_is_x else np.asarray(x)
    x_used = src.astype(np.dtype(rdt).newbyteorder("=")).astype(np.float64)
    want = ref.apply_rotary(x_used, np.asarray(c, np.float64), np.asarray(s, np.float64), interleaved=bool(il),
                            inverse=bool(inv))
    cs = np.maximum(np.abs(np.asarray(c, np.float64)), np.abs(np.asarray(s, np.float64)))
    tscale = np.broadcast_to(cs.max(axis=-1, keepdims=True) if cs.shape[-1] else np.zeros(cs.shape[:-1] + (1,)),
                             x_used.shape[:-1] + (1,))
    check_rotation(res, want, x_used, np.maximum(tscale, 1.0), rdt, "apply_rotary")
    if x_before is not None and not out_is_x:
        assert same(x, x_before), "apply_rotary modified x"


@st.composite
def fused_calls(draw):
    x, x_ok, r = draw(x_arrays())
    xa = np.asarray(x) if isinstance(x, (np.ndarray, list)) and x_ok else None
    lead = xa.shape[:-1] if xa is not None else (2,)
    d = xa.shape[-1] if xa is not None else 2 * r
    pos, pos_ok, big = draw(positions_for(lead))
    theta, th_ok, tmax, n = draw(inv_freqs(max(r, 1)))
    attn = draw(attention_factors())
    il, il_ok = flag(draw)
    inv, inv_ok = flag(draw)
    out, out_ok, out_is_x = out_for(draw, x, x_ok)
    aok = angle_ok(big, tmax) if (pos_ok and th_ok) else False
    valid = x_ok and pos_ok and th_ok and 2 * n <= d and attn_valid(attn) and il_ok and inv_ok and out_ok
    if valid and aok is None:
        valid = None                      # at the boundary: either answer is right
    elif valid:
        valid = aok
    return x, pos, theta, attn, il, inv, out, out_is_x, valid


def fuzz_apply_rotary_positions(case):
    x, pos, theta, attn, il, inv, out, out_is_x, valid = case
    tally("apply_rotary_positions", bool(valid))
    x_before = np.array(x, copy=True) if isinstance(x, np.ndarray) else None
    call = lambda: ropescale.apply_rotary_positions(x, pos, theta, attention_factor=attn, interleaved=il,  # noqa
                                                   inverse=inv, out=out)
    res = outcome(call, valid, "apply_rotary_positions")
    if res is None:
        if x_before is not None and not out_is_x:
            assert same(x, x_before), "a refused call modified x"
        return
    rdt = result_dtype(x if not out_is_x else x_before, out)
    src = x_before if out_is_x else np.asarray(x)
    x_used = src.astype(np.dtype(rdt).newbyteorder("=")).astype(np.float64)
    c, s = exact_cos_sin(np.asarray(pos, dtype=np.float64), np.asarray(theta, dtype=np.float64))
    want = ref.apply_rotary(x_used, attn * c, attn * s, interleaved=bool(il), inverse=bool(inv))
    check_rotation(res, want, x_used, max(attn, 1e-300), rdt, "apply_rotary_positions")
    if x_before is not None and not out_is_x:
        assert same(x, x_before), "apply_rotary_positions modified x"


@st.composite
def cos_sin_calls(draw):
    nlead = draw(st.integers(0, 3))
    lead = tuple(draw(st.lists(st.integers(0, 4), min_size=nlead, max_size=nlead)))
    pos, pos_ok, big = draw(positions_for(lead, free=True))
    r = draw(st.integers(1, 6))
    theta, th_ok, tmax, n = draw(inv_freqs(r))
    attn = draw(attention_factors())
    dtype = draw(st.sampled_from([np.float32, np.float16, np.float64, "float64", ">f4", None, np.int32,
                                  np.complex64, "nonsense", object]))
    try:
        dt = np.dtype(dtype)
        dt_ok = dt.kind == "f" and dt.itemsize in (2, 4, 8)
    except TypeError:
        dt, dt_ok = None, False
    aok = angle_ok(big, tmax) if (pos_ok and th_ok) else False
    valid = pos_ok and th_ok and attn_valid(attn) and dt_ok
    if valid:
        valid = aok
    return pos, theta, attn, dtype, dt, valid


def fuzz_cos_sin(case):
    pos, theta, attn, dtype, dt, valid = case
    tally("cos_sin", bool(valid))
    call = lambda: ropescale.cos_sin(pos, theta, attention_factor=attn, dtype=dtype)  # noqa: E731
    res = outcome(call, valid, "cos_sin")
    if res is None:
        return
    c, s = res
    pf = np.asarray(pos, dtype=np.float64)
    tf = np.asarray(theta, dtype=np.float64)
    want_c, want_s = exact_cos_sin(pf, tf)
    native = dt.newbyteorder("=")
    for got, want in ((c, want_c), (s, want_s)):
        assert got.shape == pf.shape + tf.shape, (got.shape, pf.shape, tf.shape)
        assert got.dtype == native, (got.dtype, native)
        err = np.abs(got.astype(np.float64) - attn * want)
        if err.size:
            assert float(err.max()) <= TOL[native] * attn, f"cos_sin: error {float(err.max()):.3g} x attn"


# The methods whose parameters scaling_calls draws (each has its branch below), and their aliases.
_DRAWN = (UNSCALED, LINEAR, NTK, DYNAMIC, YARN, LLAMA3, LONGROPE, PROPORTIONAL)
METHOD_NAMES = [*_DRAWN, *(a for a, m in ALIASES.items() if m in _DRAWN)]


@st.composite
def scaling_calls(draw):
    """(dim, base, scaling, seq_len, reference args or None, valid?)."""
    valid = True
    dim = draw(st.sampled_from([2, 4, 6, 8, 16, 64, 128, 256]))
    bad_dim = draw(st.sampled_from([None] * 8 + [7, 0, -4, 8.0, "8", 2**40, True]))
    if bad_dim is not None:
        dim, valid = bad_dim, False
    base = draw(st.sampled_from([10.0, 1e4, 5e5, 1e6]) | st.floats(1.001, 1e7))
    if draw(st.integers(0, 9)) == 0:
        base, valid = draw(st.sampled_from([1.0, 0.5, -1e4, NAN, INF, "1e4", None])), False
    method = draw(st.sampled_from(METHOD_NAMES))
    canon = canonical(method)
    spec = SPECS[canon]
    sc = {draw(st.sampled_from(["rope_type", "type"])): method}
    p = {}
    factor = draw(st.floats(1.0, 64.0))
    m_l = float(draw(st.sampled_from([16, 2048, 4096, 8192, 131072]) | st.integers(1, 10**6)))
    prf = draw(st.sampled_from([None] * 4 + [0.5, 0.25, 0.75, 1.0]))
    d_int = dim if isinstance(dim, int) and not isinstance(dim, bool) and 2 <= dim <= 4096 else 8
    if prf is not None:
        sc["partial_rotary_factor"] = prf
    rd = d_int if canon == PROPORTIONAL else int(d_int * (prf or 1.0))
    if canon != PROPORTIONAL and (rd < 2 or rd % 2):
        valid = False
    if rd < spec.min_rotary_dim:
        valid = False
    if "factor" in spec.required:
        sc["factor"] = factor
        p["factor"] = factor
    if "original_max_position_embeddings" in spec.required:
        sc["original_max_position_embeddings"] = m_l
        p["original_max_position_embeddings"] = m_l
    if canon == YARN:
        bf = draw(st.sampled_from([None, 32.0, 16.0, 64.0]))
        bs = draw(st.sampled_from([None, 1.0, 2.0, 0.5]))
        if bf is not None:
            sc["beta_fast"] = bf
        if bs is not None:
            sc["beta_slow"] = bs
        p["beta_fast"], p["beta_slow"] = bf or 32.0, bs or 1.0
        for key in ("mscale", "mscale_all_dim"):
            v = draw(st.sampled_from([None, None, 0.0, 0.707, 1.0]))
            if v is not None:
                sc[key] = p[key] = v
        t = draw(st.sampled_from([None, True, False]))
        if t is not None:
            sc["truncate"] = t
        p["truncate"] = True if t is None else t
    if canon == LLAMA3:
        lff = draw(st.sampled_from([1.0, 2.0]))
        hff = lff + draw(st.sampled_from([0.5, 3.0]))
        sc["low_freq_factor"] = p["low_freq_factor"] = lff
        sc["high_freq_factor"] = p["high_freq_factor"] = hff
    if canon == LONGROPE:
        n = max(rd // 2, 0)
        sf = draw(st.lists(st.floats(1.0, 10.0), min_size=n, max_size=n))
        lf = draw(st.lists(st.floats(1.0, 10.0), min_size=n, max_size=n))
        sc["short_factor"], sc["long_factor"] = sf, lf
        p["short_factor"], p["long_factor"] = sf, lf
        if draw(st.booleans()):
            sc["factor"] = p["factor"] = factor
            if factor > 1 and not m_l > 1:
                valid = False   # the attention factor sqrt(1 + ln s / ln m_l) would divide by ln 1
        else:
            sc["attention_factor"] = draw(st.floats(0.5, 2.0))
    if canon == PROPORTIONAL:
        if draw(st.booleans()):
            sc["factor"] = p["factor"] = factor
        p["rotated_pairs"] = int((prf or 1.0) * d_int) // 2
    if canon not in (YARN, LONGROPE) and draw(st.integers(0, 4)) == 0:
        sc["attention_factor"] = draw(st.floats(0.5, 2.0))
    if "attention_factor" in sc:
        p["attention_factor"] = sc["attention_factor"]
    seq_len = draw(st.sampled_from([None, None, 0, 10, 4096, 10**5, 2**40]))
    if seq_len is not None:
        p["seq_len"] = float(seq_len)
    # one corruption, which must be refused
    corrupt = draw(st.sampled_from([None] * 6 + ["factor", "original", "type", "seq_len", "prf", "list",
                                                  "scaling", "betas", "freqs", "truncate"]))
    if corrupt == "factor" and "factor" in sc:
        sc["factor"] = draw(st.sampled_from([0.5, -2.0, NAN, INF, "2"]))
        valid = False
    elif corrupt == "original" and "original_max_position_embeddings" in sc:
        sc["original_max_position_embeddings"] = draw(st.sampled_from([0.5, 0, -1, NAN, INF, "4096"]))
        valid = False
    elif corrupt == "type":
        sc[draw(st.sampled_from(["rope_type", "type"]))] = draw(st.sampled_from(["bogus", 3, None, ""]))
        valid = False
    elif corrupt == "seq_len":
        seq_len = draw(st.sampled_from([-1, 1.5, "10", 2**60, 10**400]))
        valid = False
    elif corrupt == "prf":
        sc["partial_rotary_factor"] = draw(st.sampled_from([0.0, 1.5, -0.5, NAN, "1"]))
        valid = False
    elif corrupt == "list" and canon == LONGROPE:
        n = len(sc["long_factor"])
        sc["long_factor"] = draw(st.sampled_from([[1.0] * (n + 1), [0.0] * max(n, 1), "abc", [[1.0]] * max(n, 1),
                                                  [NAN] * max(n, 1)]))
        valid = False
    elif corrupt == "betas" and canon == YARN:
        sc["beta_fast"], sc["beta_slow"] = 0.5, 2.0
        valid = False
    elif corrupt == "freqs" and canon == LLAMA3:
        # (low > high is computable and accepted with a warning, as transformers does)
        sc[draw(st.sampled_from(["low_freq_factor", "high_freq_factor"]))] = draw(st.sampled_from([0.0, -1.0, NAN, "1"]))
        valid = False
    elif corrupt == "truncate" and canon == YARN:
        sc["truncate"] = draw(st.sampled_from([1, "no", None]))
        valid = False
    elif corrupt == "scaling":
        sc = draw(st.sampled_from([LINEAR, [("rope_type", LINEAR)], 3, ("factor", 2.0)]))
        valid = False
    if valid and method == UNSCALED and draw(st.booleans()):
        sc, rd, p = None, d_int, {}                         # None is the default rope
    return dim, base, sc, seq_len, (rd, canon, p), valid


def fuzz_scaled_inv_freq(case):
    dim, base, sc, seq_len, (rd, canon, p), valid = case
    tally("scaled_inv_freq", valid)
    res = outcome(lambda: ropescale.scaled_inv_freq(dim, base, sc, seq_len=seq_len), valid, "scaled_inv_freq")
    if res is None:
        return
    theta, attn = res
    with np.errstate(all="ignore"):
        want, want_attn = ref.scaled_inv_freq(rd, float(base), canon, **p)
    assert theta.dtype == np.float64 and theta.shape == want.shape, (theta.shape, want.shape)
    both_inf = np.isinf(theta) & np.isinf(want)
    err = np.abs(theta - want)
    bad = ~both_inf & ~(err <= 1e-12 * np.abs(want))
    assert not bad.any(), f"scaled_inv_freq {canon}: {theta[bad][:3]} vs {want[bad][:3]}"
    assert abs(attn - want_attn) <= 1e-12 * abs(want_attn), (attn, want_attn)


# ----------------------------------------------------------------- aliasing

@st.composite
def aliasing_calls(draw):
    """One float64 buffer holding out and any of the inputs (x, cos, sin or
    positions, inv_freq) as views that may overlap out and each other."""
    from numpy.lib.stride_tricks import as_strided
    form = draw(st.sampled_from(["rotary", "fused"]))
    rows, r = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    d = 2 * r + draw(st.sampled_from([0, 0, 2]))
    n = rows * d * 3 + 8
    buf = np.array(draw(st.lists(st.floats(-4, 4, width=32), min_size=n, max_size=n)))

    def view(shape, distinct):
        """A view of buf: random offset and element strides (distinct: no two
        elements share memory)."""
        if len(shape) == 1:
            strides = (draw(st.sampled_from([1, 1, 2, -1, 0 if not distinct else 1])),)
        else:
            fs = draw(st.sampled_from([1, 1, 2, -1]))
            lo = shape[1] * abs(fs) if distinct else 0
            rs = draw(st.integers(lo, lo + 3)) * draw(st.sampled_from([1, 1, -1]))
            strides = (rs, fs)
        span_lo = sum(min(0, st_ * (m - 1)) for st_, m in zip(strides, shape))
        span_hi = sum(max(0, st_ * (m - 1)) for st_, m in zip(strides, shape))
        start = draw(st.integers(-span_lo, n - 1 - span_hi))
        return as_strided(buf[start:], shape=shape, strides=tuple(8 * st_ for st_ in strides))

    def operand(shape, fresh):
        where = draw(st.sampled_from(["buffer", "buffer", "fresh"]))
        return view(shape, False) if where == "buffer" else fresh(shape)

    out = view((rows, d), True)
    x = out if draw(st.booleans()) else operand((rows, d), lambda sh: np.array(draw(
        hnp.arrays(np.float64, sh, elements=st.floats(-4, 4, width=32)))))
    if form == "rotary":
        lead = draw(st.sampled_from([(rows,), (1,)]))
        fresh = lambda sh: np.array(draw(hnp.arrays(np.float64, sh, elements=st.floats(-1, 1, width=32))))  # noqa
        extra = (operand(lead + (r,), fresh), operand(lead + (r,), fresh))
    else:
        fresh_pos = lambda sh: np.arange(sh[0], dtype=np.float64) * 3.0 - 2.0   # noqa: E731
        fresh_th = lambda sh: ref.inv_freq(2 * sh[0], 100.0)                     # noqa: E731
        extra = (operand((rows,), fresh_pos), operand((r,), fresh_th))
    il, inv = draw(st.booleans()), draw(st.booleans())
    return form, buf, out, x, extra, il, inv


def fuzz_aliasing(case):
    form, buf, out, x, extra, il, inv = case
    tally("aliasing", True)
    mark = np.zeros(buf.shape, bool)
    from numpy.lib.stride_tricks import as_strided
    as_strided(mark[(out.ctypes.data - buf.ctypes.data) // 8:], shape=out.shape,
               strides=tuple(st_ // 8 for st_ in out.strides))[...] = True   # bool: 1 byte per element
    before = buf.copy()
    xs, es = np.array(x), [np.array(e) for e in extra]      # what the call must read
    if form == "rotary":
        want = ref.apply_rotary(xs, es[0], es[1], interleaved=il, inverse=inv)
        got = ropescale.apply_rotary(x, extra[0], extra[1], interleaved=il, inverse=inv, out=out)
        scale = 1.0 + np.abs(xs).max() * max(np.abs(es[0]).max(), np.abs(es[1]).max(), 1.0)
    else:
        want = ref.apply_rotary_positions(xs, es[0], es[1], interleaved=il, inverse=inv)
        got = ropescale.apply_rotary_positions(x, extra[0], extra[1], interleaved=il, inverse=inv, out=out)
        scale = 1.0 + np.abs(xs).max()
    assert got is out
    err = float(np.abs(np.asarray(out) - want).max())
    assert err <= 1e-12 * scale, f"aliasing {form}: error {err:.3g} (an input read after out was written?)"
    assert np.array_equal(buf[~mark], before[~mark]), f"aliasing {form}: wrote outside out"


TARGETS = [
    ("apply_rotary", rotary_calls(), fuzz_apply_rotary),
    ("apply_rotary_positions", fused_calls(), fuzz_apply_rotary_positions),
    ("cos_sin", cos_sin_calls(), fuzz_cos_sin),
    ("scaled_inv_freq", scaling_calls(), fuzz_scaled_inv_freq),
    ("aliasing", aliasing_calls(), fuzz_aliasing),
]


def main(argv=None):
    # NaN/inf inside x make the NumPy reference warn; that is expected.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="ropescale.reference")
    return run(TARGETS, "FUZZ", __doc__.splitlines()[0], argv, examples=300, seed_value=20240501)


if __name__ == "__main__":
    sys.exit(main())
