"""Frequencies: the period-matching identity, every method against the reference."""
import math

import numpy as np
import pytest

import ropescale
from ropescale import reference as ref
from conftest import rel

DIMS = [16, 64, 128, 256]
FACTORS = [2, 4, 8, 32, 1000]


# ---------------------------------------------------------------- theta itself

@pytest.mark.parametrize("dim", DIMS + [2, 6])
@pytest.mark.parametrize("base", [10000.0, 500000.0, 1e6, 1.5])
def test_inv_freq_is_base_to_minus_2k_over_d(dim, base):
    theta = ropescale.inv_freq(dim, base)
    assert theta.dtype == np.float64 and theta.shape == (dim // 2,)
    # independent math: theta_k = exp(-2k ln(b)/d), in extended precision
    import mpmath
    mpmath.mp.dps = 40
    exact = [float(mpmath.power(mpmath.mpf(base), -mpmath.mpf(2 * k) / dim)) for k in range(dim // 2)]
    assert rel(theta, exact) <= 4e-16 * max(1, math.log2(base))
    assert theta[0] == 1.0


def test_periods_are_two_pi_over_theta():
    theta = ropescale.inv_freq(64, 10000.0)
    p = ropescale.periods(theta)
    assert rel(p * theta, np.full_like(p, 2 * math.pi)) < 1e-15
    assert np.all(np.diff(p) > 0)  # lower frequency, longer period
    assert ropescale.periods([0.0, 1.0])[0] == math.inf


# ------------------------------------------------------ the seed's identity

@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("s", FACTORS)
def test_ntk_lambda_solves_period_matching(d, s):
    lam = ropescale.ntk_lambda(d, s)
    assert rel(lam, s ** (d / (d - 2))) <= 1e-15
    assert ropescale.ntk_base(10000.0, d, s) == pytest.approx(10000.0 * lam, rel=1e-15)
    # the equation itself: 2 pi (lam b)^((d-2)/d) = s 2 pi b^((d-2)/d)
    b = 10000.0
    lhs = 2 * math.pi * (lam * b) ** ((d - 2) / d)
    rhs = s * 2 * math.pi * b ** ((d - 2) / d)
    assert rel(lhs, rhs) <= 1e-12


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("s", FACTORS)
@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_ntk_lowest_pair_period_equals_linear_and_highest_is_unchanged(d, s, base):
    orig = ropescale.periods(ropescale.inv_freq(d, base))
    ntk = ropescale.periods(ropescale.scaled_inv_freq(d, base, {"rope_type": "ntk", "factor": s})[0])
    lin = ropescale.periods(ropescale.scaled_inv_freq(d, base, {"rope_type": "linear", "factor": s})[0])
    assert rel(ntk[-1], s * orig[-1]) <= 1e-12
    assert rel(ntk[-1], lin[-1]) <= 1e-12
    assert ntk[0] == orig[0]
    # in between, stretched progressively: ratio grows monotonically from 1 to s
    ratio = ntk / orig
    assert np.all(np.diff(ratio) > 0)
    assert np.all((ratio >= 1) & (ratio <= s * (1 + 1e-12)))


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("s", FACTORS)
def test_scaled_rotation_equals_rotation_at_scaled_angles(d, s):
    """Ro'(x, t theta) = Ro(x, t theta'): scaling is a change of frequencies only.

    Left side: rotate by the original frequencies at positions t/s^(2k/(d-2))...
    is not expressible per position, so we check the defining property pair by
    pair: the angle t*theta'_k equals the original rope's angle at the
    rescaled position t * theta'_k / theta_k, which for linear is t/s and for
    ntk is t * lam^(-2k/d).
    """
    rng = np.random.default_rng(d * 1000 + s)
    x = rng.standard_normal((5, d))
    t = rng.uniform(0, 4096, size=5)
    theta = ropescale.inv_freq(d, 10000.0)
    for method, pos_scale in (("linear", np.full(d // 2, 1.0 / s)),
                              ("ntk", ropescale.ntk_lambda(d, s) ** (-2 * np.arange(d // 2) / d))):
        theta_p = ropescale.scaled_inv_freq(d, 10000.0, {"rope_type": method, "factor": s})[0]
        assert rel(theta_p, theta * pos_scale) <= 1e-12
        lhs = ref.apply_rotary(x, *ref.cos_sin(t, theta_p))                      # Ro(x, t theta')
        ang = np.multiply.outer(t, theta) * pos_scale                             # Ro'(x, t theta)
        rhs = ref.apply_rotary(x, np.cos(ang), np.sin(ang))
        np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-9)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("s", FACTORS)
def test_ntk_scores_are_the_closed_form_of_the_distance(d, s):
    """q.k after rotation at positions m, n is sum_k A_k cos((m-n) theta'_k) + B_k sin((m-n) theta'_k).

    That it depends on m - n alone holds for any theta (so it is not checked
    alone); here theta' is computed independently from the period-matching base
    (mpmath), so the scores pin the ntk frequencies down.
    """
    import mpmath
    mpmath.mp.dps = 40
    lam = mpmath.mpf(s) ** (mpmath.mpf(d) / (d - 2))
    theta_ind = np.array([float((10000 * lam) ** (-mpmath.mpf(2 * k) / d)) for k in range(d // 2)])
    rng = np.random.default_rng(7 + d + s)
    q, k = rng.standard_normal(d), rng.standard_normal(d)
    r = d // 2
    a_k = q[:r] * k[:r] + q[r:] * k[r:]
    b_k = q[:r] * k[r:] - q[r:] * k[:r]
    theta_p = ropescale.scaled_inv_freq(d, 10000.0, {"rope_type": "ntk", "factor": s})[0]

    def score(m, n):
        qm = ref.apply_rotary_positions(q, np.array(m, float), theta_p)
        kn = ref.apply_rotary_positions(k, np.array(n, float), theta_p)
        return float(qm @ kn)

    for dist in (0, 1, 17, 1000):
        want = float(np.sum(a_k * np.cos(dist * theta_ind) + b_k * np.sin(dist * theta_ind)))
        for m in (0, 5, 123, 4000):
            assert score(m + dist, m) == pytest.approx(want, rel=1e-9, abs=1e-9 * float(np.abs(a_k).sum())), (dist, m)


# ------------------------------------------------- every method vs reference

def _cases():
    yield 128, 10000.0, None
    yield 128, 10000.0, {"rope_type": "default"}
    yield 128, 10000.0, {"rope_type": "linear", "factor": 4.0}
    yield 128, 10000.0, {"type": "linear", "factor": 2.0}
    yield 96, 10000.0, {"rope_type": "ntk", "factor": 8.0}
    for L in (None, 100, 4096, 4097, 8192, 65536):
        yield 128, 10000.0, ({"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 4096}, L)
    for tr in (True, False):
        yield 64, 150000.0, {"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096,
                             "beta_fast": 32, "beta_slow": 1, "truncate": tr}
    yield 64, 10000.0, {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
                        "mscale": 1.0, "mscale_all_dim": 1.0}
    yield 64, 10000.0, {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
                        "mscale": 0.707, "mscale_all_dim": 1.0, "beta_fast": 16, "beta_slow": 2}
    yield 128, 1e6, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768,
                     "attention_factor": 1.25}
    yield 128, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192}
    rng = np.random.default_rng(3)
    sf, lf = rng.uniform(1, 2, 48).tolist(), rng.uniform(1, 60, 48).tolist()
    for L in (None, 4096, 4097):
        yield 96, 10000.0, ({"rope_type": "longrope", "short_factor": sf, "long_factor": lf, "factor": 32.0,
                             "original_max_position_embeddings": 4096}, L)
    yield 96, 10000.0, {"type": "su", "short_factor": sf, "long_factor": lf, "attention_factor": 1.1,
                        "original_max_position_embeddings": 4096}
    yield 128, 10000.0, {"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5}
    yield 256, 10000.0, {"rope_type": "proportional", "partial_rotary_factor": 0.25}
    yield 256, 10000.0, {"rope_type": "proportional", "partial_rotary_factor": 0.25, "factor": 8.0}


def _ref(dim, base, scaling, seq_len):
    method, p = ropescale._freq.normalize_scaling(scaling, dim)
    return ref.scaled_inv_freq(p["rotary_dim"], base, method, seq_len=seq_len,
                               **{k: v for k, v in p.items() if k != "rotary_dim"})


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: str(c[2] if not isinstance(c[2], tuple) else c[2][0].get("rope_type")))
def test_every_method_matches_reference(case):
    dim, base, scaling = case
    seq_len = None
    if isinstance(scaling, tuple):
        scaling, seq_len = scaling
    theta, attn = ropescale.scaled_inv_freq(dim, base, scaling, seq_len=seq_len)
    want, want_attn = _ref(dim, base, scaling, seq_len)
    assert theta.dtype == np.float64 and theta.shape == want.shape
    nz = want != 0
    assert np.array_equal(theta == 0, ~nz)
    assert rel(theta[nz], want[nz]) <= 1e-12
    assert attn == pytest.approx(want_attn, rel=1e-12)


def test_dynamic_is_default_up_to_trained_length_and_grows_after():
    sc = {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 4096}
    base = ropescale.inv_freq(128)
    for L in (None, 1, 4096):
        assert np.array_equal(ropescale.scaled_inv_freq(128, 10000.0, sc, seq_len=L)[0], base)
    t1 = ropescale.scaled_inv_freq(128, 10000.0, sc, seq_len=8192)[0]
    t2 = ropescale.scaled_inv_freq(128, 10000.0, sc, seq_len=16384)[0]
    assert np.all(t1[1:] < base[1:]) and np.all(t2[1:] < t1[1:])
    # at L = 2 m_l / ... the new base is b (s L/m_l - s + 1)^(d/(d-2))
    nb = 10000.0 * (2 * 8192 / 4096 - 1) ** (128 / 126)
    assert rel(t1, ropescale.inv_freq(128, nb)) < 1e-13


def test_yarn_keeps_fast_pairs_and_interpolates_slow_pairs():
    sc = {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096}
    theta = ropescale.inv_freq(128)
    tp, attn = ropescale.scaled_inv_freq(128, 10000.0, sc)
    lo, hi = ropescale.yarn_correction_range(128, 10000.0, 4096)
    k = np.arange(64)
    assert np.array_equal(tp[k < lo], theta[k < lo])
    assert rel(tp[k > hi], theta[k > hi] / 16) < 1e-15
    assert attn == pytest.approx(0.1 * math.log(16) + 1)
    # c(r) = d ln(m_l/(2 pi r)) / (2 ln b), floored / ceiled
    assert lo == math.floor(128 * math.log(4096 / (2 * math.pi * 32)) / (2 * math.log(10000)))
    assert hi == math.ceil(128 * math.log(4096 / (2 * math.pi * 1)) / (2 * math.log(10000)))


def test_llama3_regions():
    sc = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}
    theta = ropescale.inv_freq(128, 500000.0)
    tp = ropescale.scaled_inv_freq(128, 500000.0, sc)[0]
    wl = 2 * math.pi / theta
    assert np.array_equal(tp[wl < 8192 / 4], theta[wl < 8192 / 4])
    assert rel(tp[wl > 8192], theta[wl > 8192] / 8) < 1e-15
    mid = (wl >= 2048) & (wl <= 8192)
    assert mid.any() and np.all((tp[mid] < theta[mid]) & (tp[mid] > theta[mid] / 8))


def test_longrope_picks_long_factors_past_trained_length():
    sf, lf = [1.0] * 32, [4.0] * 32
    sc = {"rope_type": "longrope", "short_factor": sf, "long_factor": lf, "factor": 16.0,
          "original_max_position_embeddings": 4096}
    theta = ropescale.inv_freq(64)
    assert np.array_equal(ropescale.scaled_inv_freq(64, 1e4, sc, seq_len=4096)[0], theta)
    long, attn = ropescale.scaled_inv_freq(64, 1e4, sc, seq_len=4097)
    assert rel(long, theta / 4) < 1e-15
    assert attn == pytest.approx(math.sqrt(1 + math.log(16) / math.log(4096)))


def test_solve_base_inverts_period_matching():
    nb = ropescale.solve_base(128, 10000.0, 4096, 32768)
    assert nb == pytest.approx(ropescale.ntk_base(10000.0, 128, 8.0), rel=1e-15)
    assert ropescale.solve_factor(128, 10000.0, nb) == pytest.approx(8.0, rel=1e-13)


# ------------------------------------------------------------------ Rope

def test_rope_attributes_and_repr():
    r = ropescale.Rope(128, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    assert (r.dim, r.base, r.method, r.rotary_dim) == (128, 500000.0, "llama3", 128)
    assert r.inv_freq.shape == (64,) and not r.inv_freq.flags.writeable
    assert np.array_equal(r.periods, 2 * math.pi / r.inv_freq)
    assert r.attention_factor == 1.0
    text = repr(r)
    assert "llama3" in text and "dim=128" in text and "500000" in text
    # the caller's dict is copied, not kept
    sc = {"rope_type": "linear", "factor": 2.0}
    r2 = ropescale.Rope(64, scaling=sc)
    sc["factor"] = 100.0
    assert r2.scaling["factor"] == 2.0


def test_rope_from_hf_dict_and_path(tmp_path):
    cfg = {"rope_theta": 500000.0, "hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 131072,
           "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 8192}}
    r = ropescale.Rope.from_hf(cfg)
    assert (r.dim, r.base, r.method) == (128, 500000.0, "llama3")
    p = tmp_path / "config.json"
    import json
    p.write_text(json.dumps(cfg))
    r2 = ropescale.Rope.from_hf(str(p))
    assert np.array_equal(r.inv_freq, r2.inv_freq)
    r3 = ropescale.Rope.from_hf(r.to_hf())
    assert np.array_equal(r.inv_freq, r3.inv_freq)
    with pytest.raises(ValueError, match="config"):
        ropescale.Rope.from_hf(str(tmp_path / "missing.json"))


def test_rope_from_hf_partial_rotary_and_head_dim():
    cfg = {"rope_theta": 10000.0, "hidden_size": 2560, "num_attention_heads": 32, "partial_rotary_factor": 0.4,
           "max_position_embeddings": 2048}
    r = ropescale.Rope.from_hf(cfg)
    assert r.dim == 80 and r.rotary_dim == 32 and r.inv_freq.shape == (16,)
    assert rel(r.inv_freq, ropescale.inv_freq(32)) < 1e-15


# ---------------------------------------------------------------- bad input

BAD = [
    (lambda: ropescale.inv_freq(127), ValueError, "dim"),
    (lambda: ropescale.inv_freq(0), ValueError, "dim"),
    (lambda: ropescale.inv_freq(-4), ValueError, "dim"),
    (lambda: ropescale.inv_freq(64.0), TypeError, "dim"),
    (lambda: ropescale.inv_freq("64"), TypeError, "dim"),
    (lambda: ropescale.inv_freq(True), TypeError, "dim"),
    (lambda: ropescale.inv_freq(64, 1.0), ValueError, "base"),
    (lambda: ropescale.inv_freq(64, 0.5), ValueError, "base"),
    (lambda: ropescale.inv_freq(64, float("nan")), ValueError, "base"),
    (lambda: ropescale.inv_freq(64, float("inf")), ValueError, "base"),
    (lambda: ropescale.ntk_lambda(64, 0.5), ValueError, "factor"),
    (lambda: ropescale.ntk_lambda(64, float("nan")), ValueError, "factor"),
    (lambda: ropescale.ntk_lambda(64, float("inf")), ValueError, "factor"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "linear", "factor": 0.5}), ValueError, "factor"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "linear", "factor": float("inf")}), ValueError, "factor"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "bogus"}), ValueError, "yarn"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "linear"}), ValueError, "factor"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "yarn", "factor": 4.0}), ValueError,
     "original_max_position_embeddings"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "original_max_position_embeddings": 8192}), ValueError, "high_freq_factor"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "yarn", "factor": 4.0, "beta_fast": 1, "beta_slow": 32,
                                                 "original_max_position_embeddings": 4096}), ValueError, "beta_fast"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": -4.0, "original_max_position_embeddings": 8192}),
     ValueError, "high_freq_factor"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "longrope", "short_factor": [1.0] * 31,
                                                 "long_factor": [1.0] * 32, "factor": 2.0,
                                                 "original_max_position_embeddings": 4096}), ValueError, "short_factor"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "longrope", "short_factor": [1.0] * 32,
                                                 "long_factor": [1.0] * 31 + [0.0], "factor": 2.0,
                                                 "original_max_position_embeddings": 4096}), ValueError, "long_factor"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "longrope", "short_factor": [1.0] * 32,
                                                 "long_factor": [-1.0] * 32, "factor": 2.0,
                                                 "original_max_position_embeddings": 4096}), ValueError, "long_factor"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, [("rope_type", "linear")]), TypeError, "scaling"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, "linear"), TypeError, "scaling"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "linear", "factor": 2.0,
                                                 "partial_rotary_factor": 0.0}), ValueError, "partial_rotary_factor"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "linear", "factor": 2.0,
                                                 "partial_rotary_factor": 1.5}), ValueError, "partial_rotary_factor"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, None, seq_len=-1), ValueError, "seq_len"),
    (lambda: ropescale.scaled_inv_freq(64, 1e4, None, seq_len=2.5), TypeError, "seq_len"),
    (lambda: ropescale.Rope(63), ValueError, "dim"),
]


@pytest.mark.parametrize("call,exc,word", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_frequency_input_names_the_argument(call, exc, word):
    with pytest.raises(exc) as info:
        call()
    assert word in str(info.value)


def test_unknown_rope_type_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        ropescale.scaled_inv_freq(64, 1e4, {"rope_type": "ntk-by-parts"})
    for m in ropescale.METHODS:
        assert m in str(info.value)


# ------------------------------------------------------------ the method registry

from ropescale import _core, methods  # noqa: E402

# Smallest valid rope_scaling for each method, built only from the spec table.
def minimal_scaling(name, dim=16):
    spec = methods.SPECS[name]
    values = {"factor": 4.0, "original_max_position_embeddings": 4096, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "short_factor": [1.0] * (dim // 2), "long_factor": [2.0] * (dim // 2),
              "alpha": 4.0, "mixed_b": 0.75}
    # a real parameter a new method brings gets 2.0 (valid for the `_real` checks of _KEY_CHECKS), so
    # CONTRIBUTING's recipe needs no edit here; optional keys are left to their defaults
    return {"rope_type": name, **{k: values.get(k, 2.0) for k in spec.required + spec.optional
                                  if k in values or k in spec.required}}


def test_c_table_and_python_table_list_the_same_methods_in_code_order():
    assert _core.METHOD_NAMES == ropescale.METHODS == tuple(methods.SPECS)
    for code, name in enumerate(_core.METHOD_NAMES):
        assert getattr(_core, name.upper()) == code == methods.CODES[name]
    assert set(ropescale.ALIASES) == {"su", "mistral_yarn", "mrope"}
    assert all(target in ropescale.METHODS for target in ropescale.ALIASES.values())


@pytest.mark.parametrize("name", ropescale.METHODS)
def test_every_parameter_the_spec_sends_is_a_field_the_core_reads(name):
    method, p = methods.normalize_scaling({**minimal_scaling(name), "attention_factor": 1.5}, 16)
    kw = methods.core_params(p, seq_len=8192)
    assert set(kw) <= set(_core.SCALING_PARAMS), set(kw) - set(_core.SCALING_PARAMS)
    theta, attn = _core.scaled_inv_freq(16, 1e4, methods.CODES[method], **kw)
    want, want_attn = ref.scaled_inv_freq(p["rotary_dim"], 1e4, method, seq_len=8192,
                                          **{k: v for k, v in p.items() if k != "rotary_dim"})
    assert rel(theta, want) <= 1e-15 and attn == want_attn == 1.5


@pytest.mark.parametrize("name", [m for m in ropescale.METHODS if methods.SPECS[m].required])
def test_core_refuses_each_missing_required_parameter_by_method_name(name):
    """The glue trusts nothing: without a parameter it needs, a method raises instead of computing NaN."""
    method, p = methods.normalize_scaling(minimal_scaling(name), 16)
    full = methods.core_params(p)
    for key in methods.SPECS[name].required:
        ckey = methods._C_NAMES.get(key, key)
        kw = {k: v for k, v in full.items() if k != ckey}
        with pytest.raises(ValueError, match=f"rope_type '{name}'") as info:
            _core.scaled_inv_freq(16, 1e4, methods.CODES[name], **kw)
        assert ckey.split("_")[0] in str(info.value)
        assert "method 4" not in str(info.value)


def test_core_yarn_with_a_factor_only_raises_not_nan():
    with pytest.raises(ValueError, match="rope_type 'yarn': original_max"):
        _core.scaled_inv_freq(8, 1e4, _core.YARN, factor=2.0)


@pytest.mark.parametrize("kw, word", [({"bogus": 1.0}, "bogus"), ({"factor": "2"}, "factor"),
                                      ({"factor": True}, "factor"), ({"truncate": 1}, "truncate"),
                                      ({"short_factor": [1.0]}, "short_factor")])
def test_core_refuses_unknown_or_mistyped_keywords(kw, word):
    with pytest.raises((TypeError, ValueError), match=word):
        _core.scaled_inv_freq(8, 1e4, _core.LINEAR, **{"factor": 2.0, **kw})


def test_core_refuses_a_method_code_outside_the_table():
    for code in (-1, len(_core.METHOD_NAMES)):
        with pytest.raises(ValueError, match="METHOD_NAMES"):
            _core.scaled_inv_freq(8, 1e4, code)


@pytest.mark.parametrize("alias", sorted(ropescale.ALIASES))
def test_every_alias_is_accepted_everywhere_the_method_is(alias):
    name = ropescale.ALIASES[alias]
    sc = minimal_scaling(name, 64)
    want = ropescale.scaled_inv_freq(64, 1e4, sc, seq_len=100)
    got = ropescale.scaled_inv_freq(64, 1e4, {**sc, "rope_type": alias}, seq_len=100)
    assert np.array_equal(got[0], want[0]) and got[1] == want[1]
    cfg = {"rope_theta": 1e4, "head_dim": 64, "max_position_embeddings": 16384,
           "rope_scaling": {**{k: v for k, v in sc.items() if k != "rope_type"}, "type": alias}}
    rope = ropescale.Rope.from_hf(cfg)
    assert rope.method == name
    assert np.array_equal(rope.inv_freq_at(100)[0], want[0])
    assert ropescale.Rope(64).extend(16384, alias, original_len=4096).method == name


def test_mistral_yarn_config_reads_as_yarn():
    cfg = {"rope_theta": 1e6, "head_dim": 128, "max_position_embeddings": 131072,
           "rope_scaling": {"type": "mistral_yarn", "factor": 32.0, "original_max_position_embeddings": 4096,
                            "beta_fast": 32, "beta_slow": 1}}
    rope = ropescale.Rope.from_hf(cfg)
    want, attn = ref.scaled_inv_freq(128, 1e6, "yarn", factor=32.0, original_max_position_embeddings=4096)
    assert rope.method == "yarn" and rel(rope.inv_freq, want) <= 1e-15
    assert rope.attention_factor == pytest.approx(attn, rel=1e-15)


@pytest.mark.parametrize("name", [m for m in ropescale.METHODS if not methods.SPECS[m].layout_only])
def test_extend_builds_every_method_from_the_table(name):
    base = ropescale.Rope(64, 1e4)
    ext = base.extend(32768, name, original_len=4096)
    assert ext.method == name and ext.max_position_embeddings == 32768
    theta = ext.inv_freq_at(32768)[0]
    if methods.SPECS[name].extend is None:
        assert ext.scaling is None and np.array_equal(theta, base.inv_freq)
        return
    if "factor" in methods.SPECS[name].keys or name == "ntk_alpha":   # dynamic_yarn: s follows the length
        assert ext.factor == 8.0
    want, _ = ref.scaled_inv_freq(64, 1e4, name, seq_len=32768, **{k: v for k, v in ext.scaling.items()
                                                                    if k != "rope_type"})
    assert rel(theta, want) <= 1e-14
    # the slowest pair's period is stretched by the factor at the target length (dynamic, by HF's
    # definition, by s * 8 - (s - 1) = 57)
    stretch = 57 if name == "dynamic" else 8
    assert ropescale.periods(theta)[-1] == pytest.approx(stretch * base.periods[-1], rel=1e-12), name


def test_extend_refuses_an_unknown_method_listing_the_table():
    with pytest.raises(ValueError) as info:
        ropescale.Rope(64).extend(8192, "ntk-by-parts", original_len=4096)
    assert all(m in str(info.value) for m in ropescale.METHODS)


@pytest.mark.parametrize("call", [lambda: _core.ntk_lambda(8, 0.5), lambda: _core.ntk_lambda(8, float("nan")),
                                  lambda: _core.yarn_range(8, 1e4, 4096.0, 1.0, 32.0, True),
                                  lambda: _core.yarn_range(8, 0.5, 4096.0, 32.0, 1.0, True),
                                  lambda: _core.yarn_range(8, 1e4, 0.0, 32.0, 1.0, True)])
def test_core_frequency_helpers_refuse_what_they_cannot_compute(call):
    with pytest.raises(ValueError):
        call()
