"""ropescale.analysis: per-pair quantities against independent formulas (docs/math.md)."""
import json
import math

import numpy as np
import pytest

import ropescale
from ropescale import reference as ref
from ropescale.analysis import RopeAnalysis, analyze, critical_dim, max_supported_length

TWO_PI = 2.0 * math.pi


def plain_periods(dim, base):
    k = np.arange(dim // 2)
    return TWO_PI * float(base) ** (2.0 * k / dim)


def extended(method, dim=128, base=10000.0, original=4096, target=32768, **kw):
    return ropescale.Rope(dim, base).extend(target, method, original_len=original, **kw)


# ------------------------------------------------------------------ fields

def test_fields_have_documented_shapes_dtypes_and_are_read_only():
    a = analyze(extended("yarn", dim=64))
    for name in ("theta", "theta_scaled", "stretch", "period_before", "period_after",
                 "rotations_original", "rotations_target"):
        arr = getattr(a, name)
        assert arr.shape == (32,) and arr.dtype == np.float64, name
        assert not arr.flags.writeable, name
    assert a.k.dtype == np.int64 and a.k.tolist() == list(range(32))
    assert a.regime.shape == (32,) and a.regime.dtype.kind == "U"
    with pytest.raises(ValueError):
        a.period_after[0] = 1.0


@pytest.mark.parametrize("dim,base", [(128, 10000.0), (64, 500000.0), (96, 1e6)])
def test_periods_and_rotations_follow_their_definitions(dim, base):
    a = analyze(extended("linear", dim=dim, base=base, original=2048, target=8192))
    expect = plain_periods(dim, base)
    np.testing.assert_allclose(a.period_before, expect, rtol=1e-13)
    np.testing.assert_allclose(a.period_after, 4 * expect, rtol=1e-13)
    np.testing.assert_allclose(a.rotations_original, 2048 / expect, rtol=1e-13)
    np.testing.assert_allclose(a.rotations_target, 8192 / (4 * expect), rtol=1e-13)
    np.testing.assert_allclose(a.stretch, 4.0, rtol=1e-13)


def test_default_rope_extrapolates_every_pair():
    a = analyze(ropescale.Rope(64), target_len=16384, original_len=4096)
    assert set(a.regime.tolist()) == {"extrapolate"}
    np.testing.assert_array_equal(a.period_after, a.period_before)
    assert a.counts == {"extrapolate": 32}


def test_linear_interpolates_every_pair():
    a = analyze(extended("linear"))
    assert a.counts == {"interpolate": 64}


def test_ntk_stretches_progressively_and_matches_linear_on_the_lowest_pair():
    d, s = 128, 8.0
    a = analyze(extended("ntk", dim=d))
    lam = s ** (d / (d - 2))
    k = np.arange(d // 2)
    np.testing.assert_allclose(a.stretch, lam ** (2 * k / d), rtol=1e-12)
    assert a.regime[0] == "extrapolate"
    assert a.regime[-1] == "interpolate"          # period matching: stretch = s exactly
    assert set(a.regime[1:-1].tolist()) == {"blend"}
    assert np.all(np.diff(a.stretch) > 0)


def test_dynamic_at_target_length_stretches_last_pair_by_effective_factor():
    d, s, m_l, m = 64, 4.0, 4096, 16384
    a = analyze(extended("dynamic", dim=d, original=m_l, target=m))
    eff = s * m / m_l - (s - 1)               # docs/math.md section 4, dynamic NTK at L = m
    assert a.stretch[-1] == pytest.approx(eff, rel=1e-12)
    assert a.regime[0] == "extrapolate"
    assert set(a.regime[1:].tolist()) == {"blend"}
    # at the trained length dynamic is the original rope
    b = analyze(extended("dynamic", dim=d, original=m_l, target=m), target_len=m_l)
    assert set(b.regime.tolist()) == {"extrapolate"}


@pytest.mark.parametrize("dim,base,m_l", [(128, 10000.0, 4096), (64, 500000.0, 8192), (128, 1e6, 32768)])
def test_yarn_regimes_follow_the_correction_range(dim, base, m_l):
    a = analyze(extended("yarn", dim=dim, base=base, original=m_l, target=4 * m_l))
    lo, hi = ref.yarn_correction_range(dim, base, m_l)
    assert a.yarn_range == (float(lo), float(hi))
    k = np.arange(dim // 2)
    assert np.all(a.regime[k <= lo] == "extrapolate")
    assert np.all(a.regime[k >= hi] == "interpolate")
    assert np.all(a.regime[(k > lo) & (k < hi)] == "blend")


def test_llama3_regimes_follow_wavelength_thresholds():
    d, b, m_l = 128, 500000.0, 8192
    a = analyze(extended("llama3", dim=d, base=b, original=m_l, target=8 * m_l))
    w = plain_periods(d, b)
    assert np.all(a.regime[w < m_l / 4] == "extrapolate")
    assert np.all(a.regime[w > m_l / 1] == "interpolate")
    mid = (w >= m_l / 4) & (w <= m_l)
    assert mid.any() and np.all(a.regime[mid] == "blend")


def test_proportional_marks_unrotated_pairs_static():
    rope = ropescale.Rope(64, 10000.0, {"rope_type": "proportional", "factor": 2.0, "partial_rotary_factor": 0.5})
    a = analyze(rope, original_len=4096)
    assert a.target_len == 8192.0
    assert np.all(a.regime[16:] == "static")
    assert np.all(np.isinf(a.period_after[16:])) and np.all(a.rotations_target[16:] == 0)
    assert np.all(a.regime[:16] == "interpolate")


def test_yarn_range_is_reported_for_every_method():
    for method in ("linear", "ntk", "llama3"):
        assert analyze(extended(method)).yarn_range == (20.0, 46.0)


# ------------------------------------------------------------------ critical dim

@pytest.mark.parametrize("dim", [32, 64, 128, 256])
@pytest.mark.parametrize("base", [10000.0, 500000.0, 1e6])
@pytest.mark.parametrize("m_l", [2048, 4096, 8192, 131072])
def test_critical_dim_is_the_papers_ceiling_formula(dim, base, m_l):
    # Liu et al. 2023: d_extra = 2 * ceil((d/2) * log_b(m_l / 2 pi)), here in pairs
    c = (dim / 2) * math.log(m_l / TWO_PI) / math.log(base)
    expect = min(max(math.ceil(c), 0), dim // 2)
    assert critical_dim(dim, base, m_l) == expect
    kc = critical_dim(dim, base, m_l)
    p = plain_periods(dim, base)
    assert np.all(p[:kc] <= m_l) and np.all(p[kc:] > m_l)


def test_critical_dim_extremes():
    assert critical_dim(128, 10000.0, 1) == 0           # pair 0 has period 2 pi > 1
    assert critical_dim(8, 2.0, 1e6) == 4               # every pair rotates in training
    with pytest.raises(ValueError, match="original_len"):
        critical_dim(128, 10000.0, 0)
    with pytest.raises(ValueError, match="dim"):
        critical_dim(127, 10000.0, 4096)


def test_max_supported_length_formula_and_limits():
    d, b, m_l = 128, 10000.0, 4096
    kc = critical_dim(d, b, m_l)
    for new in (b, 5e4, 1e6):
        assert max_supported_length(d, b, m_l, new) == pytest.approx(TWO_PI * new ** (2 * kc / d), rel=1e-14)
    # with the original base the bound is the critical pair's own period, just above m_l
    assert m_l < max_supported_length(d, b, m_l, b) < m_l * b ** (2 / d)
    assert max_supported_length(8, 2.0, 1e6, 4.0) == math.inf
    with pytest.raises(ValueError, match="new_base"):
        max_supported_length(d, b, m_l, b / 2)
    a = analyze(extended("ntk", dim=d, original=m_l))
    assert a.extrapolation_bound == pytest.approx(max_supported_length(d, b, m_l, ropescale.ntk_base(b, d, 8.0)), rel=1e-12)


# ------------------------------------------------------------------ lengths

def test_lengths_default_from_extend_and_from_hf():
    a = analyze(extended("ntk", original=4096, target=32768))
    assert (a.original_len, a.target_len) == (4096.0, 32768.0)
    cfg = {"head_dim": 128, "rope_theta": 500000.0, "max_position_embeddings": 131072,
           "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    b = ropescale.Rope.from_hf(cfg).analyze()
    assert (b.original_len, b.target_len) == (8192.0, 131072.0)
    c = ropescale.Rope(128, 10000.0, {"rope_type": "yarn", "factor": 4.0,
                                      "original_max_position_embeddings": 32768}).analyze()
    assert (c.original_len, c.target_len) == (32768.0, 131072.0)


def test_unknown_trained_length_is_a_value_error_naming_original_len():
    with pytest.raises(ValueError, match="original_len"):
        analyze(ropescale.Rope(128))
    with pytest.raises(ValueError, match="target_len"):
        analyze(ropescale.Rope(128), target_len=-1, original_len=4096)
    with pytest.raises(TypeError, match="rope"):
        analyze("ntk")


def test_rope_analyze_method_delegates():
    r = extended("yarn")
    assert r.analyze().to_dict() == analyze(r).to_dict()


# ------------------------------------------------------------------ output

def test_table_has_one_row_per_pair_and_selects_rows():
    a = analyze(extended("yarn", dim=32, original=1024, target=4096))
    lines = a.table().splitlines()
    assert len(lines) == 1 + 16
    assert lines[0].split()[0] == "k" and lines[1].split()[0] == "0"
    assert lines[-1].split()[-1] == "interpolate"
    rows = a.table(pairs=[0, -1]).splitlines()
    assert [r.split()[0] for r in rows[1:]] == ["0", "15"]
    with pytest.raises(ValueError, match="pairs"):
        a.table(pairs=[16])
    assert "critical dim" in str(a) and "RopeAnalysis(" in repr(a)


def test_to_dict_is_plain_and_json_serialisable():
    a = analyze(extended("yarn", dim=64))
    d = a.to_dict()
    text = json.dumps(d)
    back = json.loads(text)
    np.testing.assert_array_equal(np.array(back["period_after"]), a.period_after)
    assert back["regime"] == a.regime.tolist()
    assert back["yarn_range"] == list(a.yarn_range) and back["critical_dim"] == a.critical_dim


def test_html_reprs_render_tables():
    a = analyze(extended("yarn", dim=64))
    html = a._repr_html_()
    assert html.count("<table") == 2 and "RopeAnalysis" in html
    assert html.count("interpolate") == a.counts["interpolate"]
    big = analyze(ropescale.Rope(512).extend(8192, "ntk", original_len=2048))
    rows = big._repr_html_().count("<tr") - 1 - 7
    assert rows <= 65 and "<td" in big._repr_html_()
    rope = ropescale.Rope(128, 10000.0, {"rope_type": "yarn", "factor": 4.0,
                                         "original_max_position_embeddings": 4096})
    rh = rope._repr_html_()
    assert "<table" in rh and "yarn" in rh and "original_max_position_embeddings" in rh


def test_html_escapes_values():
    from ropescale._display import _kv_table
    assert "&lt;b&gt;" in _kv_table([("x", "<b>")])


def test_analysis_class_is_exported_type():
    assert isinstance(analyze(extended("linear")), RopeAnalysis)
