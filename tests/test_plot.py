"""ropescale.plot: what is drawn equals the analysis / independent math; clear error without matplotlib."""
import math
import sys

import numpy as np
import pytest

import ropescale
from ropescale import reference as ref

TWO_PI = 2.0 * math.pi


@pytest.fixture
def mpl():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import ropescale.plot as plot
    return plot


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_plot_periods_draws_each_methods_periods(mpl):
    fig = mpl.plot_periods(original_len=4096, target_len=32768)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    lines = lines_by_label(ax)
    assert list(lines) == ["default", "linear", "ntk", "dynamic", "yarn", "llama3"]
    k = np.arange(64)
    np.testing.assert_allclose(lines["default"].get_ydata(), TWO_PI * 1e4 ** (2 * k / 128), rtol=1e-13)
    np.testing.assert_allclose(lines["linear"].get_ydata(), 8 * TWO_PI * 1e4 ** (2 * k / 128), rtol=1e-13)
    yarn_theta, _ = ref.scaled_inv_freq(128, 1e4, "yarn", factor=8.0, original_max_position_embeddings=4096)
    np.testing.assert_allclose(lines["yarn"].get_ydata(), TWO_PI / yarn_theta, rtol=1e-12)
    # reference lines at the two contexts, labelled
    hlines = [tuple(line.get_ydata()) for line in ax.get_lines() if line.get_label().startswith("_")]
    assert (4096, 4096) in hlines and (32768, 32768) in hlines
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "trained context 4,096" in texts and "target context 32,768" in texts and "critical pair 46" in texts


def test_plot_periods_accepts_ropes_dict_and_ax(mpl):
    from matplotlib.figure import Figure
    fig = Figure()
    ax = fig.add_subplot()
    r = ropescale.Rope(64).extend(16384, "ntk", original_len=4096)
    out = mpl.plot_periods({"mine": r, "base": "default"}, ax=ax, dim=64)
    assert out is fig
    lines = lines_by_label(ax)
    assert list(lines) == ["mine", "base"]
    np.testing.assert_allclose(lines["mine"].get_ydata(), r.periods, rtol=1e-14)
    # lengths came from the scaled rope
    assert any(tuple(l.get_ydata()) == (16384, 16384) for l in ax.get_lines())


def test_plot_periods_leaves_static_pairs_out(mpl):
    rope = ropescale.Rope(64, 10000.0, {"rope_type": "proportional", "factor": 2.0, "partial_rotary_factor": 0.5})
    fig = mpl.plot_periods(rope, original_len=4096, target_len=8192)
    y = lines_by_label(fig.axes[0])["proportional"].get_ydata()
    assert np.all(np.isnan(y[16:])) and np.all(np.isfinite(y[:16]))


def test_plot_periods_needs_lengths_for_names(mpl):
    with pytest.raises(ValueError, match="original_len"):
        mpl.plot_periods("ntk")
    with pytest.raises(TypeError, match="ropes"):
        mpl.plot_periods(3.5, original_len=1, target_len=2)


def test_attention_scores_match_the_closed_form(mpl):
    # q = k = ones: score(D) = (attn^2 * sum_k 2 cos(D theta'_k) + unrotated features) / D
    # (the attention factor scales cos and sin, so only the rotated features)
    rope = ropescale.Rope(64, 10000.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048,
                                        "partial_rotary_factor": 0.5})
    dist = np.array([0, 1, 7, 100, 5000])
    got = mpl.attention_scores(rope, dist)
    theta, attn = rope.inv_freq, rope.attention_factor
    assert attn > 1.1
    expect = (attn ** 2 * 2 * np.cos(np.outer(dist, theta)).sum(axis=1) + (64 - 2 * theta.size)) / 64
    np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-12)


def test_attention_scores_depend_only_on_distance(mpl):
    rope = ropescale.Rope(32).extend(8192, "ntk", original_len=2048)
    q = np.random.default_rng(1).standard_normal(32)
    dist = np.arange(0, 3000, 37)
    scores = mpl.attention_scores(rope, dist, q)
    for offset in (5, 1234):
        qm = rope.apply(np.tile(q, (dist.size, 1)), dist + offset)
        kn = rope.apply(q[None, :], np.array([offset]))[0]
        np.testing.assert_allclose(qm @ kn / (q @ q), scores, rtol=1e-9, atol=1e-9)
    assert mpl.attention_scores(rope, [0], "random")[0] == pytest.approx(1.0, rel=1e-12)


def test_attention_scores_validate(mpl):
    rope = ropescale.Rope(16)
    with pytest.raises(ValueError, match="vector"):
        mpl.attention_scores(rope, [1], "zeros")
    with pytest.raises(ValueError, match="vector"):
        mpl.attention_scores(rope, [1], np.ones(8))
    with pytest.raises(ValueError, match="distances"):
        mpl.attention_scores(rope, [-1])
    with pytest.raises(TypeError, match="distances"):
        mpl.attention_scores(rope, [0.5])


def test_plot_attention_draws_scores_and_saves(mpl, tmp_path):
    fig = mpl.plot_attention(["default", "yarn"], 4096, original_len=1024, target_len=4096, dim=64, num=200)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    lines = lines_by_label(ax)
    assert list(lines) == ["default", "yarn"]
    x = lines["default"].get_xdata()
    assert x[0] == 1 and x[-1] == 4096 and np.all(np.diff(x) > 0)
    np.testing.assert_allclose(lines["default"].get_ydata(),
                               np.cos(np.outer(x, ropescale.inv_freq(64))).mean(axis=1), rtol=1e-9, atol=1e-12)
    lin = mpl.plot_attention("default", 100, logx=False, dim=16)
    xl = lin.axes[0].get_lines()[0].get_xdata()
    assert xl[0] == 0 and xl[-1] == 100 and len(xl) == 101
    path = tmp_path / "att.png"
    fig.savefig(path)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_plot_attention_validates(mpl):
    with pytest.raises(ValueError, match="max_distance"):
        mpl.plot_attention("default", 0)
    with pytest.raises(TypeError, match="ax"):
        mpl.plot_attention("default", 10, ax="axes")


def test_missing_matplotlib_names_the_plot_extra(monkeypatch):
    import ropescale.plot as plot
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install \"\.\[plot\]\" in a ropescale clone"):
        plot.plot_periods("default", original_len=1, target_len=2)
    with pytest.raises(ImportError, match="matplotlib"):
        plot.plot_attention("default", 10)
