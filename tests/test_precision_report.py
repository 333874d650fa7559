"""``ropescale.precision``: the error budget of common cos/sin strategies.

The report's numbers are checked against mpmath at the same positions (not
against ropescale's own tables), the float32 strategy against transformers'
actual rotary embedding, and the README's documented table against a fresh run.
"""
import json
import pathlib
import re

import numpy as np
import pytest

import ropescale
from ropescale import precision
from ropescale.cli import main

mpmath = pytest.importorskip("mpmath")

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
HALF_ULP_F32 = 2.0**-25  # half a float32 ulp of values in [0.5, 1)


def mp_errors(c, s, pos, theta):
    """Per position: max over pairs of |c - cos(t theta)|, |s - sin(t theta)| with mpmath at 40 digits."""
    mpmath.mp.dps = 40
    out = np.empty(len(pos))
    for i, t in enumerate(pos):
        worst = 0.0
        for k, th in enumerate(theta):
            a = mpmath.mpf(int(t)) * mpmath.mpf(float(th))
            worst = max(worst, abs(float(mpmath.cos(a) - mpmath.mpf(float(c[i, k])))),
                        abs(float(mpmath.sin(a) - mpmath.mpf(float(s[i, k])))))
        out[i] = worst
    return out


@pytest.fixture(scope="module")
def rep31():
    return precision.report(ropescale.Rope(64, 10000.0), 2**31, per_octave=3)


def test_report_errors_agree_with_mpmath_at_the_sampled_positions(rep31):
    theta = ropescale.inv_freq(64, 10000.0)
    pos = rep31.positions[::5]
    sel = np.searchsorted(rep31.positions, pos)
    for name in ("float32", "float32_running", "bfloat16", "float64", "ropescale"):
        c, s = precision.STRATEGIES[name][0](pos, theta)
        want = mp_errors(np.asarray(c, np.float64), np.asarray(s, np.float64), pos, theta)
        got = rep31.abs_error[name][sel]
        # the reference is exact to ~1e-16, so the two measurements agree to that
        assert np.abs(got - want).max() <= 1e-15, name


def test_float32_angle_error_grows_with_the_position_as_t_theta_2_to_minus_24(rep31):
    t = rep31.positions.astype(np.float64)
    e = rep31.abs_error["float32"]
    small = t < 2**24
    # bounded by the rounding of t*theta (and of theta, and of t past 2**24)
    assert np.all(e[small] <= 3 * t[small] * 2.0**-24 + 2e-7)
    # and it is really there: every octave from 2**10 on reaches a third of the bound
    for r in rep31.rows():
        if 2**10 <= r["from"] < 2**24:
            assert r["float32"]["abs"] >= r["from"] * 2.0**-24 / 3, r
    # past 2**25 the angle is noise: errors of order 1
    assert rep31.max_error("float32")[0] > 1.0
    assert rep31.max_error("float32")[1] > 3.0


def test_ropescale_tables_stay_at_float32_rounding_up_to_2_31(rep31):
    e, ph = rep31.max_error("ropescale")
    assert e <= HALF_ULP_F32 + 1e-15
    assert ph <= 2 * HALF_ULP_F32 + 1e-15
    # while a float64 product loses it near 2**31 (its rounding is ~t * 2**-53)
    assert rep31.max_error("float64", up_to=2**20)[0] < 1e-9
    assert rep31.max_error("float64")[0] > HALF_ULP_F32


def test_bfloat16_and_float16_tables_are_bounded_below_by_their_rounding(rep31):
    # at short range the float32 angle adds < 2e-6 to the rounding of the table
    e16, _ = rep31.max_error("float16", up_to=15)
    eb, _ = rep31.max_error("bfloat16", up_to=15)
    assert 2.0**-13 <= e16 <= 2.0**-12 + 2e-6  # half an ulp of float16 values near 1 is 2**-12
    assert 2.0**-10 <= eb <= 2.0**-9 + 2e-6


def test_bfloat16_rounding_is_round_to_nearest_even():
    ml = pytest.importorskip("ml_dtypes")
    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32)
    x[:4] = [1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, -1.0 - 2.0**-8, 3.0]  # ties
    assert np.array_equal(precision._round_bfloat16(x), x.astype(ml.bfloat16).astype(np.float32))


def test_float32_strategy_matches_transformers_rotary_embedding():
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = tr.LlamaConfig(hidden_size=1024, num_attention_heads=8, rope_theta=10000.0,
                            max_position_embeddings=2**21)
    emb = LlamaRotaryEmbedding(config)
    pos = np.array([1, 777, 65537, 10**6 - 1, 2**21 - 5])
    x = torch.zeros(1, len(pos), 128)
    cos, sin = emb(x, torch.from_numpy(pos)[None, :])
    c_hf, s_hf = cos[0, :, :64].double().numpy(), sin[0, :, :64].double().numpy()
    c, s = precision.STRATEGIES["float32"][0](pos, ropescale.inv_freq(128, 10000.0))
    want = mp_errors(c_hf, s_hf, pos, ropescale.inv_freq(128, 10000.0))
    ours = mp_errors(np.asarray(c, np.float64), np.asarray(s, np.float64), pos, ropescale.inv_freq(128, 10000.0))
    # the same error, up to the few float32 ulps by which HF's float32 inv_freq
    # and torch's cos differ from ours
    far = pos > 1000
    assert np.all(ours[far] / want[far] < 3) and np.all(want[far] / ours[far] < 3)
    res = precision.check(cos[0, :, :64].numpy(), sin[0, :, :64].numpy(), pos, ropescale.Rope(128))
    assert np.allclose(res.abs_error, want, rtol=1e-9, atol=1e-15)


def test_user_functions_and_named_pairs_are_measured():
    def exact(pos, theta):
        return ropescale.cos_sin(pos, theta, dtype=np.float64)

    def shifted(pos, theta):  # a table one position off: error ~ theta_0 = 1 rad
        return ropescale.cos_sin(pos + 1, theta, dtype=np.float64)

    rep = precision.report(ropescale.inv_freq(32), 4096, [exact, ("off by one", shifted)], per_octave=2)
    assert rep.strategies == ("exact", "off by one")
    assert rep.max_error("exact")[0] == 0.0
    assert abs(rep.max_error("off by one")[1] - 1.0) < 1e-12  # the phase error of pair 0 is exactly 1 rad
    assert "user-supplied" in str(rep)


def test_check_says_where_a_table_deviates():
    rope = ropescale.Rope(32, 10000.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512})
    pos = np.arange(2048)
    c, s = rope.cos_sin(pos, dtype=np.float32)  # includes the attention factor
    res = precision.check(c, s, pos, rope)
    # entries up to 1.14 in magnitude: half a float32 ulp of [1, 2) is 2**-24
    assert res.max_abs_error <= 2.0**-24 * 1.01
    c = c.copy()
    c[1234, 5] += 0.01
    res = precision.check(c, s, pos, rope)
    assert res.worst_abs == (1234, 5) and res.worst_abs_position == 1234
    assert abs(res.max_abs_error - 0.01) < 1e-6
    assert res.abs_error.shape == (2048,) and res.abs_error[1234] == res.max_abs_error
    # without the rope's attention factor the whole table is off by it
    plain = precision.check(c, s, pos, rope.inv_freq)
    assert plain.max_abs_error > 0.05


def test_spot_check_of_the_reference_against_mpmath():
    mpmath = pytest.importorskip("mpmath")
    before = mpmath.mp.dps
    rep = precision.report(ropescale.Rope(128, 500000.0), 2**31, ["ropescale"], per_octave=1, spot_check=True)
    assert rep.reference_check is not None and rep.reference_check <= 1e-15
    assert mpmath.mp.dps == before, "the spot check changed the caller's mpmath precision"


def test_readme_table_matches_a_fresh_run():
    rows = {m.group(1): m.group(2)
            for m in re.finditer(r"^\| `(\w+)` \| (\d\.\de[-+]\d\d / .*) \|$", README, flags=re.M)}
    assert set(rows) == set(precision.STRATEGIES)
    cols = [(1e4, 2**20), (1e4, 2**31), (5e5, 2**20), (5e5, 2**31)]
    reps = {b: precision.report(ropescale.Rope(128, b), 2**31) for b in (1e4, 5e5)}
    for name, text in rows.items():
        cells = [c.strip() for c in text.split("|")]
        for (b, m), cell in zip(cols, cells):
            doc_e, doc_ph = (float(v) for v in cell.split("/"))
            e, ph = reps[b].max_error(name, up_to=m)
            # two significant digits; libm's cos may differ by an ulp elsewhere
            assert abs(e - doc_e) <= 0.06 * doc_e and abs(ph - doc_ph) <= 0.06 * doc_ph, (name, b, m, e, ph)


def test_readme_precision_and_rerotate_snippets_run():
    """Every ```py block of the README that needs only NumPy runs.  The torch
    training loop is left to tests/test_torch_compile.py, which runs it compiled
    and eager where torch is installed (it needs torch, and takes minutes)."""
    blocks = re.findall(r"```py\n(.*?)```", README, flags=re.S)
    numpy_only = [b for b in blocks if not re.search(r"^\s*(import|from)\s[^\n]*\btorch\b", b, flags=re.M)]
    assert len(numpy_only) >= 2 and any("precision" in b for b in numpy_only), len(numpy_only)
    for b in numpy_only:
        exec(compile(b, "README.md", "exec"), {})


# -- command line ---------------------------------------------------------------
def test_cli_prints_the_table(capsys):
    assert main(["precision", "--max-position", "70000", "--strategies", "float32,ropescale"]) == 0
    out = capsys.readouterr().out
    assert "65,536..70,000" in out and "max phase error" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("65,536..70,000"))
    f32, ours = (float(v) for v in line.split()[1:3])
    assert f32 > 1e-3 and ours <= HALF_ULP_F32 * 1.001


def test_cli_json_and_hf_config(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"rope_theta": 500000.0, "head_dim": 64, "max_position_embeddings": 8192}))
    assert main(["precision", "--hf", str(cfg), "--max-position", "4096", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["max_position"] == 4096 and set(d["max"]) == set(precision.STRATEGIES)
    assert d["octaves"][-1]["to"] == 4096


def test_cli_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib").use("Agg")
    out = tmp_path / "err.png"
    assert main(["precision", "--max-position", "5000", "--plot", str(out)]) == 0
    assert out.stat().st_size > 10000 and out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, word", [
    (["precision", "--strategies", "float33"], "float33"),
    (["precision", "--max-position", "0"], "max_position"),
    (["precision", "--max-position", "x"], "--max-position"),
    (["precision", "--max-position", str(2**40)], "2**34"),
    (["precision", "--hf", "/nonexistent/config.json"], "config"),
    (["precision", "--dim", "127"], "dim"),
])
def test_cli_bad_arguments_exit_2_with_one_line(argv, word, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert word in err and len(err.splitlines()) == 1


# -- bad input ------------------------------------------------------------------
@pytest.mark.parametrize("call, exc, word", [
    (lambda: precision.report("rope", 100), TypeError, "rope"),
    (lambda: precision.report(ropescale.Rope(8), 0), ValueError, "max_position"),
    (lambda: precision.report(ropescale.Rope(8), 2.5), TypeError, "max_position"),
    (lambda: precision.report(ropescale.Rope(8), 100, ["nope"]), ValueError, "nope"),
    (lambda: precision.report(ropescale.Rope(8), 100, [42]), TypeError, "strategies"),
    (lambda: precision.report(ropescale.Rope(8), 100, ["float32", "float32"]), ValueError, "distinct"),
    (lambda: precision.report(ropescale.Rope(8), 100, [lambda p, t: (p, p)]), ValueError, "<lambda>"),
    (lambda: precision.report(ropescale.Rope(8), 100, [lambda p, t: 1 / 0]), ValueError, "ZeroDivisionError"),
    (lambda: precision.report([1.0, np.nan], 100), ValueError, "finite"),
    (lambda: precision.check(np.ones((3, 4)), np.ones((3, 4)), np.arange(3), ropescale.inv_freq(16)), ValueError, "cos"),
    (lambda: precision.check(np.ones((3, 4), dtype=object), np.ones((3, 4)), np.arange(3), ropescale.inv_freq(8)),
     TypeError, "cos"),
    (lambda: precision.check(np.ones((3, 4)), np.ones((3, 4)), np.arange(3), ropescale.inv_freq(8),
                             attention_factor=-1.0), ValueError, "attention_factor"),
    (lambda: precision.plot("report"), TypeError, "rep"),
])
def test_bad_input_names_the_argument(call, exc, word):
    with pytest.raises(exc) as info:
        call()
    assert type(info.value) is exc
    assert word in str(info.value)
