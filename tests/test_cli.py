"""The ropescale command: report numbers against independent math, flags, and error handling."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import ropescale
from ropescale.cli import main

TWO_PI = 2.0 * math.pi


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def run_json(argv, capsys):
    code, out, err = run(list(argv) + ["--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_default_report_numbers(capsys):
    code, out, err = run([], capsys)
    assert code == 0 and err == ""
    lam = 8.0 ** (128 / 126)
    assert f"{lam:.6f}" in out
    assert f"{lam * 10000:,.2f}" in out
    assert "pairs 20 .. 46" in out
    assert "Critical dim: pair 46" in out
    header = next(line for line in out.splitlines() if line.split()[:1] == ["k"])
    assert header.split() == ["k", "default", "linear", "ntk", "dynamic", "yarn", "llama3", "note"]
    assert "yarn 1.20794" in out     # 0.1 ln 8 + 1


def test_json_periods_match_independent_formulas(capsys):
    r = run_json([], capsys)
    d, b, s = 128, 10000.0, 8.0
    k = np.array(r["pairs"])
    assert k[0] == 0 and k[-1] == 63 and list(k) == sorted(set(k))
    assert {0, 8, 16, 24, 32, 40, 48, 56, 63} <= set(k)
    base_p = TWO_PI * b ** (2 * k / d)
    lam = s ** (d / (d - 2))
    np.testing.assert_allclose(r["periods"]["default"], base_p, rtol=1e-13)
    np.testing.assert_allclose(r["periods"]["linear"], s * base_p, rtol=1e-13)
    np.testing.assert_allclose(r["periods"]["ntk"], TWO_PI * (lam * b) ** (2 * k / d), rtol=1e-12)
    eff = s * s - (s - 1)            # dynamic at L = target = s * m_l
    np.testing.assert_allclose(r["periods"]["dynamic"], TWO_PI * (eff ** (d / (d - 2)) * b) ** (2 * k / d), rtol=1e-12)
    assert r["ntk"]["lambda"] == pytest.approx(lam, rel=1e-15)
    assert r["ntk"]["new_base"] == pytest.approx(lam * b, rel=1e-15)
    assert r["ntk"]["relative_error"] < 1e-13
    assert r["ntk"]["lowest_period_linear"] == pytest.approx(s * TWO_PI * b ** (126 / 128), rel=1e-13)
    assert r["yarn_correction_range"] == [20.0, 46.0] and r["critical_dim"] == 46
    assert r["marks"]["46"] == "yarn hi, critical"
    assert r["model"]["original_len"] == 4096 and r["model"]["target_len"] == 32768


def test_flags_change_the_model(capsys):
    r = run_json(["--dim", "64", "--base", "500000", "--original", "8192", "--target", "65536"], capsys)
    assert r["model"]["rotary_dim"] == 64 and r["model"]["extension_ratio"] == 8.0
    assert r["ntk"]["lambda"] == pytest.approx(8.0 ** (64 / 62), rel=1e-15)
    c = 32 * math.log(8192 / TWO_PI) / math.log(500000.0)
    assert r["critical_dim"] == math.ceil(c)
    k = np.array(r["pairs"])
    np.testing.assert_allclose(r["periods"]["linear"], 8 * TWO_PI * 500000.0 ** (2 * k / 64), rtol=1e-13)


def test_method_restricts_columns(capsys):
    r = run_json(["--method", "yarn"], capsys)
    assert list(r["periods"]) == ["default", "yarn"]
    code, out, _ = run(["report", "--method", "llama3"], capsys)
    header = next(line for line in out.splitlines() if line.split()[:1] == ["k"])
    assert code == 0 and header.split() == ["k", "default", "llama3", "note"] and "dynamic" not in out


def test_hf_config_reads_model_and_lengths(tmp_path, capsys):
    cfg = {"hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 500000.0,
           "max_position_embeddings": 131072,
           "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    r = run_json(["--hf", str(path)], capsys)
    assert r["model"]["dim"] == 128 and r["model"]["base"] == 500000.0
    assert r["model"]["original_len"] == 8192 and r["model"]["target_len"] == 131072
    assert r["model"]["method"] == "llama3" and "model (llama3)" in r["periods"]
    # the model's own column is the llama3 frequencies of its config
    theta, _ = ropescale.scaled_inv_freq(128, 500000.0, cfg["rope_scaling"])
    np.testing.assert_allclose(r["periods"]["model (llama3)"], TWO_PI / theta[r["pairs"]], rtol=1e-13)
    plain = {"head_dim": 64, "rope_theta": 10000.0, "max_position_embeddings": 2048}
    path.write_text(json.dumps(plain))
    r = run_json(["--hf", str(path)], capsys)
    assert (r["model"]["original_len"], r["model"]["target_len"]) == (2048, 8 * 2048)
    r = run_json(["--hf", str(path), "--target", "4096"], capsys)
    assert r["model"]["extension_ratio"] == 2.0 and r["model"]["model_factor"] is None


@pytest.mark.parametrize("argv,needle", [
    (["--dim", "127"], "dim"),
    (["--dim", "abc"], "--dim"),
    (["--dim", "2"], "dim"),
    (["--base", "0.5"], "base"),
    (["--base", "inf"], "--base"),
    (["--original", "-5"], "--original"),
    (["--target", "100"], "--target"),
    (["--method", "rope"], "--method"),
    (["--frobnicate"], "--frobnicate"),
    (["--hf", "/nonexistent/config.json"], "cannot read"),
    (["--hf", "x.json", "--dim", "64"], "--hf"),
])
def test_bad_arguments_exit_2_with_one_line(argv, needle, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("ropescale: error:") and needle in err
    assert "Traceback" not in err


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"head_dim": 127, "max_position_embeddings": 10}',
                                     '{"rope_theta": 10000}'])
def test_invalid_config_files_exit_2(tmp_path, content, capsys):
    path = tmp_path / "config.json"
    path.write_text(content)
    code, out, err = run(["--hf", str(path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


def test_help_lists_flags_and_bench(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--dim", "--base", "--original", "--target", "--method", "--hf", "--plot", "--json", "bench"):
        assert flag in out


def test_plot_writes_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "periods.png"
    code, out, err = run(["--method", "yarn", "--plot", str(path)], capsys)
    assert code == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(path) in out


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out, err = run(["--plot", str(tmp_path / "p.png")], capsys)
    assert code == 2 and '".[plot]"' in err and err.count("\n") == 1
    assert not (tmp_path / "p.png").exists()


def test_bench_runs_the_checkouts_bench_script(capfd):
    from ropescale import cli
    if cli._bench_script() is None:
        pytest.skip("no bench/bench.py here (an installed package outside a checkout)")
    code = cli.main(["bench", "--help"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "--quick" in out and "--repeat" in out


def test_bench_outside_a_checkout_says_where_the_benchmarks_live(monkeypatch, capsys):
    from ropescale import cli
    monkeypatch.setattr(cli, "_bench_script", lambda: None)
    code, out, err = run(["bench"], capsys)
    assert code == 1 and "bench/bench.py" in err and "Traceback" not in err and err.count("\n") == 1


def test_python_dash_m_runs_the_report_and_errors_cleanly():
    ok = subprocess.run([sys.executable, "-m", "ropescale", "--method", "ntk"], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0 and "lambda = s^(d/(d-2))" in ok.stdout and ok.stderr == ""
    bad = subprocess.run([sys.executable, "-m", "ropescale", "--target", "10"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr and "--target" in bad.stderr


# ------------------------------------------------------------------ polish

LLAMA31 = {"hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 500000.0, "max_position_embeddings": 131072,
           "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 8192}}


def test_hf_report_names_the_model_factor_and_the_extension_ratio_apart(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA31))
    r = run_json(["--hf", str(path)], capsys)
    assert r["model"]["extension_ratio"] == 16.0 and r["model"]["model_factor"] == 8.0
    code, out, err = run(["--hf", str(path)], capsys)
    assert code == 0
    ratio = next(line for line in out.splitlines() if "extension ratio" in line)
    own = next(line for line in out.splitlines() if "model's own factor" in line)
    assert ratio.split()[3] == "16" and own.split()[4] == "8" and "model (llama3)" in own
    assert "s = 16" not in out


def test_json_lengths_are_integers(capsys):
    r = run_json(["--original", "4096", "--target", "32768"], capsys)
    assert type(r["model"]["original_len"]) is int and type(r["model"]["target_len"]) is int


def test_each_period_column_has_one_number_format(capsys):
    code, out, err = run(["--dim", "256", "--base", "1000000", "--original", "4096", "--target", "4096000"], capsys)
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["k"])
    head = lines[start].split()
    rows = [line.split() for line in lines[start + 1:] if line.strip() and line.split()[0].isdigit()]
    assert len(rows) > 5
    for col in range(1, head.index("note")):
        cells = [row[col] for row in rows]
        styles = {("e" if "e+" in c else "f" + str(len(c.split(".")[1]))) for c in cells if c != "inf"}
        assert len(styles) == 1, (head[col], cells)


@pytest.mark.parametrize("method", [m for m in ropescale.METHODS[1:] if not ropescale.methods.SPECS[m].layout_only])
def test_method_accepts_every_method_of_the_table(method, capsys):
    r = run_json(["--method", method, "--dim", "64"], capsys)
    assert list(r["periods"]) == ["default", method]
    rope = ropescale.Rope(64).extend(32768, method, original_len=4096)
    theta, _ = rope.inv_freq_at(32768)
    k = np.array(r["pairs"])
    np.testing.assert_allclose(r["periods"][method], TWO_PI / theta[k], rtol=1e-13)


def test_plot_without_suffix_writes_png_and_says_the_real_name(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, out, err = run(["--method", "ntk", "--plot", str(tmp_path / "noext")], capsys)
    assert code == 0, err
    written = tmp_path / "noext.png"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Plot saved to {written}" in out and not (tmp_path / "noext").exists()


@pytest.mark.parametrize("target, needle", [("", "file name"), ("{tmp}/missing/dir/p.png", "does not exist"),
                                            ("{tmp}/.png", "file name"), ("{tmp}/p.xyz", ".xyz"),
                                            ("/dev/full", "cannot write")])
def test_plot_into_a_bad_place_exits_2_with_one_line(tmp_path, target, needle, capsys):
    pytest.importorskip("matplotlib")
    if target == "/dev/full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    target = target.format(tmp=tmp_path)
    code, out, err = run(["--method", "ntk", "--plot", target], capsys)
    assert code == 2 and "Plot saved" not in out and needle in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("change, needle", [({"max_position_embeddings": "2"}, "max_position_embeddings"),
                                            ({"max_position_embeddings": True}, "max_position_embeddings"),
                                            ({"max_position_embeddings": 0}, "max_position_embeddings"),
                                            ({"rope_scaling": "yarn"}, "rope_scaling")])
def test_config_values_are_checked_and_named_with_the_file(tmp_path, change, needle, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"head_dim": 64, "rope_theta": 1e4, "max_position_embeddings": 4096, **change}))
    code, out, err = run(["--hf", str(path)], capsys)
    assert code == 2 and out == "" and needle in err and str(path) in err and err.count("\n") == 1


def test_hostile_config_inputs_exit_2_promptly(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.json"
    huge.write_text('{"head_dim": 64, "max_position_embeddings": 1' + "0" * 400 + "}")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for path in (fifo, huge, deep):
        code, out, err = run(["--hf", str(path)], capsys)
        assert code == 2 and str(path) in err and err.count("\n") == 1 and "Traceback" not in err


def test_overflowing_base_is_a_clear_error_not_a_json_failure(capsys):
    for extra in ([], ["--json"]):
        code, out, err = run(["--base", "1e308"] + extra, capsys)
        assert code == 2 and out == "" and "overflow" in err and err.count("\n") == 1


def test_huge_length_flags_exit_2_not_overflow(capsys):
    code, out, err = run(["--target", "1" + "0" * 400], capsys)
    assert code == 2 and "--target" in err and err.count("\n") == 1 and "Traceback" not in err


CONFIGS = os.path.join(os.path.dirname(__file__), "data", "configs")


def test_an_already_extended_model_without_its_original_length_is_not_extended_again(capsys):
    """Gemma 3 27B's config (linear x8, 131072 tokens, no original_max_position_embeddings) was planned as a
    further x8 from 131072 to 1M tokens; the report now says the model is already extended and asks for its
    length before the extension."""
    path = os.path.join(CONFIGS, "gemma-3-27b-it.json")
    for extra in ([], ["--target", "262144"], ["--json"]):
        code, out, err = run(["--hf", path] + extra, capsys)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert "already extended (linear x8 in its config) to 131,072 tokens" in err and "--original N" in err
    r = run_json(["--hf", path, "--original", "16384"], capsys)
    assert (r["model"]["original_len"], r["model"]["target_len"], r["model"]["model_factor"]) == (16384, 131072, 8)
    # a model that says its trained length (Llama 3.1: llama3 x8 from 8192) is planned as before
    r = run_json(["--hf", os.path.join(CONFIGS, "llama-3.1-8b.json")], capsys)
    assert (r["model"]["original_len"], r["model"]["target_len"]) == (8192, 131072)


@pytest.mark.parametrize("argv", [["precision", "--plot", "err.png", "--max-position", "1024"],
                                  ["--plot", "periods.png"]])
def test_plot_without_matplotlib_is_one_line_and_status_2(argv, tmp_path):
    """ropescale precision --plot printed a traceback and exited 1 without matplotlib (README: exit 2, one line)."""
    code = ("import sys; sys.modules['matplotlib'] = None\n"     # what an environment without it gives
            "from ropescale.cli import main\n"
            f"sys.exit(main({argv!r}))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))   # this ropescale, from tmp_path
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=str(tmp_path), env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr == 'ropescale: error: --plot needs matplotlib: pip install ".[plot]" in a ropescale clone\n'
    assert proc.stdout == "" and not os.listdir(tmp_path)


def test_ministral3_report_states_its_query_scale_and_no_softmax_factor(capsys):
    # Ministral 3 multiplies every layer's queries by 1 + 0.1 ln(1 + floor(p / 16384)) and keeps
    # 1/sqrt(d) (its mscale_all_dim is not applied): the report said softmax 1.63 and nothing of the queries
    path = os.path.join(os.path.dirname(__file__), "data", "configs", "ministral-3-8b-base.json")
    code, out, err = run(["--hf", path], capsys)
    assert code == 0, err
    assert "Query scale (on every layer's queries, the attention applies it): 1 + 0.1 ln(1 + floor(p / 16384))" in out
    assert "Softmax scale" not in out
    data = run_json(["--hf", path], capsys)
    assert data["query_scale"] == {"floor_scale": 16384.0, "attn_scale": 0.1, "offset": 0.0}
    assert "softmax_scale" not in data
