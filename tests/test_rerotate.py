"""Re-rotating cached keys (``rerotate``) and changing their frequencies (``rebase``).

Ground truth is mpmath (exact angles, 40 digits) or the pure-NumPy reference,
never the C code itself.  The float32 inverse-then-forward re-rotation that
caches commonly use is run beside ours to show the drift these functions avoid.
"""
import os
import re
import runpy
import sys

import numpy as np
import pytest

import ropescale
from ropescale import reference as ref

mpmath = pytest.importorskip("mpmath")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- ground truth ---------------------------------------------------------------
def mp_rotate(k, delta, theta, interleaved=False, scale=1.0):
    """Rotate each pair of k's rows (2-D: rows x D) by delta[row] * theta exactly (mpmath, 40 digits).

    ``delta`` entries are mpf (exact); the result is float64.
    """
    mpmath.mp.dps = 40
    k = np.asarray(k, dtype=np.float64)
    out = k.copy()
    r = len(theta)
    for i in range(k.shape[0]):
        for j in range(r):
            ia, ib = (2 * j, 2 * j + 1) if interleaved else (j, j + r)
            phi = delta[i] * mpmath.mpf(float(theta[j]))
            c, s = mpmath.cos(phi) * scale, mpmath.sin(phi) * scale
            a, b = mpmath.mpf(float(k[i, ia])), mpmath.mpf(float(k[i, ib]))
            out[i, ia] = float(a * c - b * s)
            out[i, ib] = float(b * c + a * s)
    return out


def mp_delta(to, frm):
    """Exact to - from (40 digits hold any difference of two doubles below 2**52 exactly here)."""
    mpmath.mp.dps = 40
    return [mpmath.mpf(float(t)) - mpmath.mpf(float(f)) if isinstance(t, float) or isinstance(f, float)
            else mpmath.mpf(int(t) - int(f)) for t, f in zip(to, frm)]


def pair_norms(k, r):
    return np.hypot(k[..., :r], k[..., r:2 * r])


def unit_pairs(rng, shape, r, dtype):
    """Keys whose pairs have norm 1 (the budget in the issue is stated for unit-norm pairs)."""
    ang = rng.uniform(0, 2 * np.pi, shape[:-1] + (r,))
    k = np.zeros(shape)
    k[..., :r], k[..., r:2 * r] = np.cos(ang), np.sin(ang)
    k[..., 2 * r:] = rng.standard_normal(shape[:-1] + (shape[-1] - 2 * r,))
    return k.astype(dtype)


def f32_angles_move(k, frm, to, theta):
    """What caches commonly do: undo the old rotation and apply the new one, cos/sin from float32 t * theta."""
    th32 = theta.astype(np.float32)

    def table(p):
        a = np.asarray(p, dtype=np.float32)[..., None] * th32
        return np.cos(a), np.sin(a)

    c, s = table(frm)
    k = ropescale.apply_rotary(k, c, s, inverse=True)
    c, s = table(to)
    return ropescale.apply_rotary(k, c, s)


# -- accuracy -------------------------------------------------------------------
@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_one_shift_of_float32_keys_is_correctly_rounded_up_to_2_31(base):
    rng = np.random.default_rng(1)
    theta = ropescale.inv_freq(64, base)
    r = len(theta)
    frm = np.array([0, 5, 2**31, 123456789, 2**31 - 1, 4096, 2**30 + 17, 77], dtype=np.int64)
    to = np.array([2**31, 2**31 - 3, 0, 7, 1, 2**31 - 4096, 3, 2**20 + 1], dtype=np.int64)
    k = unit_pairs(rng, (len(frm), 64), r, np.float32)
    got = ropescale.rerotate(k, frm, to, theta)
    want = mp_rotate(k, mp_delta(to, frm), theta)
    # one rounding of cos/sin, of two products and of their sum: within one
    # float32 ulp of the pair's norm (here 1, ulp 2**-23)
    ulps = np.abs(got.astype(np.float64) - want)[:, :2 * r] / np.spacing(np.float32(1.0))
    assert ulps.max() <= 1.0, ulps.max()
    # the float32 inverse-then-forward way is far from it at the same positions
    peer = f32_angles_move(k, frm, to, theta).astype(np.float64)
    assert np.abs(peer - want).max() > 1e-2


def test_a_thousand_random_shifts_accumulate_only_the_rounding_of_the_stored_keys():
    rng = np.random.default_rng(7)
    theta = ropescale.inv_freq(128, 10000.0)
    r = len(theta)
    k0 = unit_pairs(rng, (4, 128), r, np.float32)
    path = rng.integers(0, 2**31, size=1001)
    ours, peer = k0.copy(), k0.copy()
    for a, b in zip(path[:-1], path[1:]):
        ropescale.rerotate(ours, a, b, theta, out=ours)
        peer = f32_angles_move(peer, a, b, theta)
    want = mp_rotate(k0, [mpmath.mpf(int(path[-1]) - int(path[0]))] * 4, theta)
    err = np.abs(ours.astype(np.float64) - want)[:, :2 * r].max()
    drift = np.abs(peer.astype(np.float64) - want)[:, :2 * r].max()
    # a random walk of 1000 roundings of unit-norm pairs: ~sqrt(1000) half-ulps
    assert err <= 6e-6, err
    assert drift >= 100 * err, (drift, err)
    # the untouched features went through 1000 calls unchanged
    assert np.array_equal(ours[:, 2 * r:], k0[:, 2 * r:])


def test_float64_many_shifts_stay_within_1e_12_of_one_direct_rotation():
    rng = np.random.default_rng(3)
    theta = ropescale.inv_freq(128, 500000.0)
    k0 = rng.standard_normal((3, 5, 128))
    path = rng.integers(-2**31, 2**31, size=501)
    k = k0.copy()
    for a, b in zip(path[:-1], path[1:]):
        ropescale.rerotate(k, a, b, theta, out=k)
    direct = ropescale.rerotate(k0, path[0], path[-1], theta)
    assert np.abs(k - direct).max() <= 1e-12
    want = mp_rotate(k0.reshape(-1, 128), [mpmath.mpf(int(path[-1]) - int(path[0]))] * 15, theta)
    assert np.abs(direct.reshape(-1, 128) - want).max() <= 1e-14


def test_float_positions_use_the_exact_difference_not_the_rounded_one():
    # to - from needs more than 53 bits here: dropping the two-sum's low part
    # moves the angle by ~1e-6 rad, which float64 keys show.
    # The last row leaves a low part of ~2**-13 (half an ulp of 2**40): its
    # angle, ~2**-20 rad, is large enough that its square counts as well.
    theta = ropescale.inv_freq(16, 10000.0) * 2.0**-7
    frm = np.array([0.3, 1.0 / 3.0, -0.1, 2.0**-13 + 2.0**-30])
    to = np.array([2.0**40 + 0.7, 2.0**39 + 1.0 / 7.0, 2.0**38, 2.0**40 + 2.0**-12])
    assert np.any((to - frm) - to != -frm)  # the subtraction is inexact
    k = np.random.default_rng(0).standard_normal((4, 16))
    got = ropescale.rerotate(k, frm, to, theta)
    want = mp_rotate(k, mp_delta(list(to), list(frm)), theta)
    assert np.abs(got - want).max() <= 1e-13
    rounded = ropescale.apply_rotary_positions(k, to - frm, theta)
    assert np.abs(rounded - want).max() > 1e-8  # what the low part is worth


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "bfloat16"])
@pytest.mark.parametrize("interleaved", [False, True])
def test_rerotate_matches_the_reference_over_dtypes_layouts_and_partial_rotary(dtype, interleaved):
    if dtype == "bfloat16":
        dt = np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    else:
        dt = np.dtype(dtype)
    rng = np.random.default_rng(11)
    theta = ropescale.inv_freq(24, 10000.0)  # R = 12 pairs of D = 32 features
    k = rng.standard_normal((2, 9, 3, 32)).astype(dt)
    frm = rng.integers(0, 10**6, size=(2, 9, 1))
    to = rng.integers(-10**6, 10**6, size=(9, 1))
    got = ropescale.rerotate(k, frm, to, theta, interleaved=interleaved)
    want = ref.apply_rotary_positions(k.astype(np.float64), to - frm, theta, interleaved=interleaved)
    assert got.dtype == dt and got.shape == k.shape
    tol = {"float16": 2e-3, "bfloat16": 2e-2, "float32": 1e-6, "float64": 1e-14}[dtype]
    assert np.abs(got.astype(np.float64) - want).max() <= tol * 4
    assert np.array_equal(got[..., 24:], k[..., 24:])  # pass-through features


def test_in_place_equals_new_array_and_leaves_other_memory_alone():
    rng = np.random.default_rng(5)
    theta = ropescale.inv_freq(64)
    cache = rng.standard_normal((1, 40, 4, 64)).astype(np.float32)
    before = cache.copy()
    frm, to = np.arange(10, 40)[:, None], np.arange(4, 34)[:, None]
    new = ropescale.rerotate(cache[:, 10:], frm, to, theta)
    assert np.array_equal(cache, before)  # out=None never writes k
    view = cache[:, 10:]
    res = ropescale.rerotate(view, frm, to, theta, out=view)
    assert res is view
    assert np.array_equal(cache[:, 10:], new)
    assert np.array_equal(cache[:, :10], before[:, :10])


def test_strided_and_transposed_caches():
    rng = np.random.default_rng(6)
    theta = ropescale.inv_freq(32)
    base = rng.standard_normal((2, 4, 50, 64))  # (B, H, S, D) with a wider buffer
    k = base[:, :, ::2, :32]  # non-contiguous rows and features
    frm, to = np.arange(25) * 3, np.arange(25)
    got = ropescale.rerotate(k, frm, to, theta)
    want = ref.apply_rotary_positions(k, to - frm, theta)
    assert np.abs(got - want).max() <= 1e-14
    kt = np.ascontiguousarray(k.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    assert np.array_equal(ropescale.rerotate(kt, frm, to, theta), got)


# -- rebase ---------------------------------------------------------------------
def scores_check(q_new, k_rebased, k_scratch):
    s1 = np.einsum("shd,thd->hst", q_new.astype(np.float64), k_rebased.astype(np.float64))
    s2 = np.einsum("shd,thd->hst", q_new.astype(np.float64), k_scratch.astype(np.float64))
    return np.abs(s1 - s2).max()


def test_dynamic_ntk_rebase_gives_the_scores_of_keys_rotated_with_the_new_base_from_scratch():
    rope = ropescale.Rope(128, 10000.0, {"rope_type": "dynamic", "factor": 4.0, "original_max_position_embeddings": 2048})
    rng = np.random.default_rng(2)
    pos = np.arange(3000)[:, None]
    k0 = rng.standard_normal((3000, 2, 128)).astype(np.float32)
    q0 = rng.standard_normal((3000, 2, 128)).astype(np.float32)
    cached = rope.apply(k0[:2500], pos[:2500], seq_len=2500)
    moved = rope.rebase_cache(cached, pos[:2500], 2500, 3000)
    scratch = ref.apply_rotary_positions(k0[:2500], pos[:2500], rope.inv_freq_at(3000)[0])
    q = ref.apply_rotary_positions(q0[-4:], pos[-4:], rope.inv_freq_at(3000)[0])
    # one float32 rotation of keys with |k| ~ 11: scores agree to float32 rounding
    assert scores_check(q, moved, scratch) <= 2e-4
    # and the old keys do not (the base did change)
    assert scores_check(q, cached, scratch) > 1.0


def test_rebase_with_frequencies_whose_difference_is_not_a_double():
    # theta' - theta rounds when the two are more than a factor 2 apart; its
    # low part times t = 2**31 is ~1e-7 rad, which float64 keys show.
    rng = np.random.default_rng(4)
    th_from = ropescale.inv_freq(16, 10000.0)
    th_to = th_from / rng.uniform(2.5, 40.0, size=8)
    assert np.any((th_to - th_from) + th_from != th_to)
    pos = np.array([2**31 - 1, 2**31 - 977, 10**9 + 7])
    k = rng.standard_normal((3, 16))
    got = ropescale.rebase(k, pos, th_from, th_to)
    mpmath.mp.dps = 40
    want = k.copy()
    for i, t in enumerate(pos):
        for j in range(8):
            phi = mpmath.mpf(int(t)) * (mpmath.mpf(float(th_to[j])) - mpmath.mpf(float(th_from[j])))
            c, s = mpmath.cos(phi), mpmath.sin(phi)
            a, b = mpmath.mpf(float(k[i, j])), mpmath.mpf(float(k[i, j + 8]))
            want[i, j], want[i, j + 8] = float(a * c - b * s), float(b * c + a * s)
    assert np.abs(got - want).max() <= 1e-13
    rounded = ropescale.apply_rotary_positions(k, pos, th_to - th_from)
    assert np.abs(rounded - want).max() > 1e-9


def test_longrope_short_to_long_switch_and_the_attention_factor_once():
    short = np.linspace(1.0, 1.5, 16)
    long_ = np.linspace(1.0, 40.0, 16)
    rope = ropescale.Rope(32, 10000.0, {"rope_type": "longrope", "short_factor": short.tolist(),
                                         "long_factor": long_.tolist(), "factor": 8.0,
                                         "original_max_position_embeddings": 512})
    assert rope.attention_factor != 1.0
    rng = np.random.default_rng(8)
    pos = np.arange(600)[:, None]
    k0 = rng.standard_normal((600, 1, 32))
    cached = rope.apply(k0[:400], pos[:400], seq_len=400)  # short factors
    moved = rope.rebase_cache(cached, pos[:400], 400, 600)
    scratch = rope.apply(k0[:400], pos[:400], seq_len=600)  # long factors, same attention factor
    assert np.abs(moved - scratch).max() <= 1e-12
    assert np.abs(cached - scratch).max() > 1e-2

    # a change of attention factor is applied once, to the rotated pairs only
    th = ropescale.inv_freq(16)
    k = rng.standard_normal((5, 24))
    got = ropescale.rebase(k, np.arange(5), th, th, attention_factor=1.25)
    assert np.allclose(got[:, :16], 1.25 * k[:, :16], rtol=0, atol=1e-15)
    assert np.array_equal(got[:, 16:], k[:, 16:])


def test_rebase_cache_applies_the_ratio_of_attention_factors_once(monkeypatch):
    # No published method changes its attention factor with the length, so
    # stand one in: factor 1.0 at the old length, 1.5 at the new one.
    rope = ropescale.Rope(16, 10000.0, {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 8})
    th_old, th_new = rope.inv_freq_at(10)[0], rope.inv_freq_at(30)[0]
    monkeypatch.setattr(type(rope), "inv_freq_at", lambda self, n: (th_old, 1.0) if n == 10 else (th_new, 1.5))
    k0 = np.random.default_rng(1).standard_normal((10, 16))
    pos = np.arange(10)
    moved = rope.rebase_cache(ropescale.apply_rotary_positions(k0, pos, th_old), pos, 10, 30)
    want = ropescale.apply_rotary_positions(k0, pos, th_new, attention_factor=1.5)
    assert np.abs(moved - want).max() <= 1e-14


def test_rebase_cache_of_a_method_without_length_dependence_copies():
    rope = ropescale.Rope(16, 10000.0, {"rope_type": "linear", "factor": 2.0})
    k = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    assert np.array_equal(rope.rebase_cache(k, np.arange(4), 4, 100), k)


def test_rebase_matches_transformers_dynamic_ntk():
    torch = pytest.importorskip("torch")
    rope_utils = pytest.importorskip("transformers.modeling_rope_utils")
    cfg_mod = pytest.importorskip("transformers")
    config = cfg_mod.LlamaConfig(hidden_size=256, num_attention_heads=2, max_position_embeddings=64,
                                 rope_theta=10000.0, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    fn = rope_utils.ROPE_INIT_FUNCTIONS["dynamic"]
    th_old = fn(config, "cpu", seq_len=80)[0].double().numpy()
    th_new = fn(config, "cpu", seq_len=200)[0].double().numpy()
    assert not np.allclose(th_old, th_new)
    rope = ropescale.Rope.from_hf(config.to_dict())
    # same frequencies as transformers at both lengths (HF computes in float32)
    assert np.allclose(rope.inv_freq_at(80)[0], th_old, rtol=1e-6)
    assert np.allclose(rope.inv_freq_at(200)[0], th_new, rtol=1e-6)
    k0 = torch.randn(80, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(80))
    pos = torch.arange(80, dtype=torch.float64)[:, None]

    def hf_rotate(k, th):
        ang = pos * torch.from_numpy(th)[None, :]
        emb = torch.cat((ang, ang), dim=-1)
        half = torch.cat((-k[..., 64:], k[..., :64]), dim=-1)
        return k * emb.cos() + half * emb.sin()

    cached = hf_rotate(k0, rope.inv_freq_at(80)[0]).numpy()
    moved = rope.rebase_cache(cached, np.arange(80), 80, 200)
    assert np.abs(moved - hf_rotate(k0, rope.inv_freq_at(200)[0]).numpy()).max() <= 1e-12


# -- bad input ------------------------------------------------------------------
TH = ropescale.inv_freq(8)
POS = np.arange(6)[:, None]

BAD = [
    (lambda k: ropescale.rerotate(k.astype(np.int32), POS, POS, TH), TypeError, "k"),
    (lambda k: ropescale.rerotate(k, np.arange(5)[:, None], POS, TH, out=k), ValueError, "from_positions"),
    (lambda k: ropescale.rerotate(k, POS, np.arange(7)[:, None], TH, out=k), ValueError, "to_positions"),
    (lambda k: ropescale.rerotate(k, POS, np.full((6, 1), np.nan), TH, out=k), ValueError, "to_positions"),
    (lambda k: ropescale.rerotate(k, POS, POS * 1.0 + np.inf, TH, out=k), ValueError, "to_positions"),
    (lambda k: ropescale.rerotate(k, POS, POS + 2**40, TH, out=k), ValueError, "to_positions - from_positions"),
    (lambda k: ropescale.rerotate(k, -(2**52), 2**52, TH * 0, out=k), ValueError, "to_positions - from_positions"),
    (lambda k: ropescale.rerotate(k, POS, 2**53, TH, out=k), ValueError, "to_positions"),
    (lambda k: ropescale.rerotate(k, POS, "3", TH, out=k), TypeError, "to_positions"),
    (lambda k: ropescale.rerotate(k, POS > 2, POS, TH, out=k), TypeError, "from_positions"),
    (lambda k: ropescale.rerotate(k, POS, POS, np.ones(5), out=k), ValueError, "inv_freq"),
    (lambda k: ropescale.rerotate(k, POS, POS, [1.0, np.nan], out=k), ValueError, "inv_freq"),
    (lambda k: ropescale.rerotate(k, POS, POS, TH, interleaved=1, out=k), TypeError, "interleaved"),
    (lambda k: ropescale.rerotate(k, POS, POS, TH, out=k[:3]), ValueError, "out"),
    (lambda k: ropescale.rerotate(k[..., :7], POS, POS, TH[:2]), ValueError, "D"),
    (lambda k: ropescale.rebase(k, POS, TH, TH[:3], out=k), ValueError, "inv_freq_to"),
    (lambda k: ropescale.rebase(k, POS, [np.inf] * 4, TH, out=k), ValueError, "inv_freq_from"),
    (lambda k: ropescale.rebase(k, POS, TH, TH, attention_factor=0.0, out=k), ValueError, "attention_factor"),
    (lambda k: ropescale.rebase(k, POS, TH, TH, attention_factor=np.nan, out=k), ValueError, "attention_factor"),
    (lambda k: ropescale.rebase(k, POS + 2**35, TH, TH / 2, out=k), ValueError, "positions"),
    (lambda k: ropescale.rebase(k, np.arange(4), TH, TH / 2, out=k), ValueError, "positions"),
    (lambda k: ropescale.rebase(k, POS, TH, None, out=k), TypeError, "inv_freq_to"),
    (lambda k: ropescale.Rope(8, 1e4, {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 4})
     .rebase_cache(k, POS, -1, 10, out=k), ValueError, "seq_len"),
]


@pytest.mark.parametrize("call, exc, word", BAD)
def test_bad_input_raises_naming_the_argument_and_leaves_the_cache_untouched(call, exc, word):
    k = np.random.default_rng(0).standard_normal((6, 2, 8)).astype(np.float32)
    before = k.copy()
    with pytest.raises(exc) as info:
        call(k)
    assert type(info.value) is exc
    assert re.search(r"(?<![A-Za-z_])" + re.escape(word) + r"(?![A-Za-z_])", str(info.value)), str(info.value)
    assert np.array_equal(k, before)


# -- example and docstrings -----------------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_streaming_sink_example_runs_and_checks_itself(capsys, monkeypatch, dtype):
    monkeypatch.setattr(sys, "argv", ["streaming_sink.py", "--tokens", "6000", "--dtype", dtype])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(os.path.join(ROOT, "examples", "streaming_sink.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert info.value.code == 0, out  # the example compares its scores with keys rotated from scratch
    assert "max |scores - scores from scratch|" in out


# -- property: any layout ---------------------------------------------------------
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@st.composite
def caches(draw):
    """A cache of random shape, dtype, byte order and strides, and from/to positions broadcasting onto it."""
    lead = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    r = draw(st.integers(1, 6))
    d = 2 * r + 2 * draw(st.integers(0, 2))
    dt = draw(st.sampled_from(["<f4", ">f4", "<f8", ">f8", "<f2"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    k = rng.standard_normal(tuple(lead) + (2 * d,)).astype(dt)
    if draw(st.booleans()):
        k = k[..., ::2]  # strided features
    else:
        k = k[..., :d]
    if len(lead) > 1 and draw(st.booleans()):
        k = np.swapaxes(k, 0, 1)  # transposed rows
    shape = k.shape[:-1]

    def positions():
        # each axis either the row's length or 1 (broadcast), maybe fewer axes
        n = draw(st.integers(0, len(shape)))
        pshape = tuple(s if draw(st.booleans()) else 1 for s in shape[len(shape) - n:])
        if draw(st.booleans()):
            return rng.integers(-10**6, 10**6, size=pshape)
        return np.round(rng.uniform(-10**5, 10**5, size=pshape), 3)

    theta = ropescale.inv_freq(2 * r, 10000.0)
    return k, positions(), positions(), theta


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(caches(), st.booleans(), st.booleans())
def test_rerotate_equals_the_reference_for_any_layout(case, interleaved, in_place):
    k, frm, to, theta = case
    before = k.copy()
    # the exact delta (long double holds the difference of these doubles), angles in long double
    delta = np.asarray(to).astype(np.longdouble) - np.asarray(frm).astype(np.longdouble)
    ang = delta[..., None] * theta.astype(np.longdouble)
    want = ref.apply_rotary(k.astype(np.float64), np.cos(ang).astype(np.float64), np.sin(ang).astype(np.float64),
                            interleaved=interleaved)
    if in_place:
        k = k.copy()
        got = ropescale.rerotate(k, frm, to, theta, interleaved=interleaved, out=k)
        assert got is k
    else:
        got = ropescale.rerotate(k, frm, to, theta, interleaved=interleaved)
        assert np.array_equal(k, before)  # k untouched
    tol = {2: 4e-3, 4: 2e-6, 8: 1e-12}[k.dtype.itemsize]
    assert np.abs(got.astype(np.float64) - want).max(initial=0.0) <= tol * (1 + np.abs(want).max(initial=0.0))
