"""M-RoPE: position streams selected per rotary pair by the model's sections (chunked or interleaved).

The layouts are checked against transformers' own recomposition code (Qwen2-VL chunked,
Qwen3-VL interleaved); the published configs in tests/test_real_configs.py.
"""
import types
import warnings

import numpy as np
import pytest

import ropescale
from ropescale import reference as ref

SECTIONS = [([16, 24, 24], False), ([24, 20, 20], True), ([2, 3, 3], False), ([4, 2, 2], True), ([3, 3, 2], True),
            ([8, 8, 0], False), ([8, 4, 0], True)]


def _layout_from_transformers(section, interleaved):
    """Which stream each pair reads, by running transformers' recomposition on stream-tagged values."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if interleaved:
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding as cls
    else:
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding as cls
    n = sum(section)
    tagged = torch.arange(3, dtype=torch.float32)[:, None, None, None].expand(3, 1, 1, n).clone()
    out = cls.recomposition_frequencies(types.SimpleNamespace(mrope_section=section), tagged)
    return out[0, 0, :n].long().numpy()


@pytest.mark.parametrize("section, interleaved", SECTIONS)
def test_pair_streams_are_transformers_layouts(section, interleaved):
    n = sum(section)
    rope = ropescale.Rope(2 * n, 1e6, {"mrope_section": section, "mrope_interleaved": interleaved})
    np.testing.assert_array_equal(rope.pair_streams, _layout_from_transformers(section, interleaved))


@pytest.mark.parametrize("section, interleaved", SECTIONS)
def test_each_pair_takes_its_angle_from_its_stream(section, interleaved):
    n = sum(section)
    rope = ropescale.Rope(2 * n, 1e6, {"mrope_section": section, "mrope_interleaved": interleaved})
    rng = np.random.default_rng(1)
    streams = rng.integers(0, 5000, size=(3, 7, 2))
    c, s = rope.cos_sin(streams, dtype=np.float64)
    assert c.shape == (7, 2, n)
    idx = rope.pair_streams
    ang = np.take_along_axis(streams[..., None].astype(np.float64), idx[None, None, None, :].repeat(7, 1)
                             .repeat(2, 2), axis=0)[0] * rope.inv_freq
    np.testing.assert_allclose(c, np.cos(ang), atol=2e-12)
    np.testing.assert_allclose(s, np.sin(ang), atol=2e-12)


@pytest.mark.parametrize("section, interleaved", SECTIONS[:2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_text_only_streams_equal_plain_rope_exactly(section, interleaved, dtype):
    n = sum(section)
    rope = ropescale.Rope(2 * n, 1e6, {"mrope_section": section, "mrope_interleaved": interleaved})
    plain = rope.replace(scaling=None)
    t = np.arange(50)
    c3, s3 = rope.cos_sin(np.stack([t, t, t]), dtype=dtype)
    c1, s1 = plain.cos_sin(t, dtype=dtype)
    assert np.array_equal(c3, c1) and np.array_equal(s3, s1)
    # 1-D positions on an M-RoPE rope are text: plain rope
    c, s = rope.cos_sin(t, dtype=dtype)
    assert np.array_equal(c, c1) and np.array_equal(s, s1)
    x = np.random.default_rng(2).standard_normal((50, 4, 2 * n)).astype(dtype)
    y3 = rope.apply(x, np.stack([t, t, t])[:, :, None])
    y1 = plain.apply(x, t[:, None])
    assert np.array_equal(y3, y1)


def test_apply_with_streams_rotates_as_qwen_apply_functions():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.qwen2_vl import modeling_qwen2_vl as q2
    from transformers.models.qwen3_vl import modeling_qwen3_vl as q3
    rng = np.random.default_rng(3)
    pos = rng.integers(0, 3000, size=(3, 9))
    x = rng.standard_normal((1, 2, 9, 128))         # (batch, heads, seq, head_dim)
    for mod, cls, section, inter in ((q2, q2.Qwen2VLRotaryEmbedding, [16, 24, 24], False),
                                     (q3, q3.Qwen3VLTextRotaryEmbedding, [24, 20, 20], True)):
        rope = ropescale.Rope(128, 1e6, {"mrope_section": section, "mrope_interleaved": inter})
        fake = types.SimpleNamespace(mrope_section=section)
        freqs = torch.from_numpy(pos[:, None, :, None] * rope.inv_freq)       # (3, 1, seq, 64), float64
        cos = cls.recomposition_frequencies(fake, freqs.cos())
        sin = cls.recomposition_frequencies(fake, freqs.sin())
        xt = torch.from_numpy(x)
        want = (xt * cos[:, None] + mod.rotate_half(xt) * sin[:, None]).numpy()
        # ropescale: x as (batch, seq, heads, D), streams (3, batch, seq, 1)
        got = rope.apply(x.transpose(0, 2, 1, 3), pos[:, None, :, None]).transpose(0, 2, 1, 3)
        np.testing.assert_allclose(got, want, atol=1e-9)


@pytest.mark.parametrize("section, interleaved", [([4, 4, 0], False), ([0, 4, 4], False), ([4, 2, 0], True)])
def test_an_empty_section_is_still_a_stream(section, interleaved):
    """mrope_section [4, 4, 0] reported 2 streams and refused the 3 position streams the config declares."""
    rope = ropescale.Rope(2 * sum(section), 1e6, {"mrope_section": section, "mrope_interleaved": interleaved})
    assert rope.mrope_section == tuple(section)
    pos = np.random.default_rng(5).integers(0, 3000, size=(3, 6))
    x = np.random.default_rng(6).standard_normal((6, 2 * sum(section)))
    got = rope.apply(x, pos)
    want = np.empty_like(x)
    for t in range(6):   # pair by pair, each at the position of its stream
        c, s = ref.cos_sin(pos[rope.pair_streams, t], rope.inv_freq)
        want[t] = ref.apply_rotary(x[t], np.diag(c), np.diag(s))
    np.testing.assert_allclose(got, want, atol=1e-12)
    with pytest.raises(ValueError, match="leading axis of 3 position streams"):
        rope.apply(x, pos[:2])


def test_from_hf_reads_mrope_in_rope_scaling_with_yarn_and_to_hf_keeps_it():
    cfg = {"model_type": "qwen2_5_vl", "hidden_size": 3584, "num_attention_heads": 28, "rope_theta": 1e6,
           "max_position_embeddings": 128000,
           "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768,
                            "mrope_section": [16, 24, 24]}}
    rope = ropescale.Rope.from_hf(cfg)
    assert rope.method == "yarn" and rope.mrope_section == (16, 24, 24) and not rope.mrope_interleaved
    out = rope.to_hf()
    assert out["rope_scaling"]["mrope_section"] == [16, 24, 24]
    assert ropescale.Rope.from_hf(out) == rope
    mrope = ropescale.Rope.from_hf({**cfg, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}})
    assert mrope.method == "default" and mrope.mrope_section == (16, 24, 24)
    assert ropescale.Rope.from_hf(mrope.to_hf()) == mrope


@pytest.mark.parametrize("scaling, exc, word", [
    ({"mrope_section": [16, 24]}, ValueError, "add up"),
    ({"mrope_section": "16,24,24"}, TypeError, "mrope_section"),
    ({"mrope_section": [16.0, 24, 24]}, TypeError, "mrope_section"),
    ({"mrope_section": [16, 24, 24], "mrope_interleaved": "yes"}, TypeError, "mrope_interleaved"),
    ({"mrope_interleaved": True}, ValueError, "mrope_section"),
    ({"mrope_section": [16, 24, 24], "mrope_interleaved": True}, ValueError, "interleaved"),
    ({"mrope_section": [32, 32], "mrope_interleaved": True}, ValueError, "3 sections"),
])
def test_bad_mrope_sections_raise_naming_them(scaling, exc, word):
    with pytest.raises(exc, match=word):
        ropescale.Rope(128, 1e6, scaling)


def _through_the_stream_table(rope, x, streams, **kw):
    """What Rope.apply computes for M-RoPE in general: the stream table, then the cached rotation."""
    c, s = rope.cos_sin(streams, dtype=np.float64 if x.dtype == np.float64 else np.float32)
    kw.setdefault("interleaved", rope.interleaved)
    return ropescale.apply_rotary(x, c, s, **kw)


@pytest.mark.parametrize("section, interleaved", SECTIONS[:2])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("inverse", [False, True])
def test_equal_streams_rotate_with_the_stream_tables_bits(section, interleaved, dtype, inverse):
    # Rope.apply takes plain positions' fused lane when every stream is equal (text, decode):
    # it must give the bits of the stream table, including the yarn attention factor.
    n = sum(section)
    rope = ropescale.Rope(2 * n, 1e6, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                                       "mrope_section": section, "mrope_interleaved": interleaved})
    assert rope.attention_factor != 1.0
    rng = np.random.default_rng(6)
    x = rng.standard_normal((8, 1, 4, 2 * n)).astype(dtype)          # decode: (batch, 1, heads, D)
    p = (1000 + 37 * np.arange(8)).reshape(8, 1, 1)
    streams = np.stack([p, p, p])
    want = _through_the_stream_table(rope, x, streams, inverse=inverse)
    assert np.array_equal(rope.apply(x, streams, inverse=inverse), want)
    out = np.zeros_like(x)
    assert rope.apply(x, streams, inverse=inverse, out=out) is out and np.array_equal(out, want)


def test_one_differing_stream_position_takes_the_stream_table():
    rope = ropescale.Rope(128, 1e6, {"mrope_section": [16, 24, 24]})
    x = np.random.default_rng(7).standard_normal((6, 2, 128)).astype(np.float32)
    t = np.arange(6)
    streams = np.stack([t, t, t])[:, :, None]
    streams[2, 4, 0] = 40                                             # one image-like token
    got = rope.apply(x, streams)
    assert np.array_equal(got, _through_the_stream_table(rope, x, streams))
    plain = rope.replace(scaling=None).apply(x, t[:, None])
    assert np.array_equal(got[:4], plain[:4]) and not np.array_equal(got[4], plain[4])


@pytest.mark.parametrize("equal", [True, False])
def test_streams_that_do_not_broadcast_against_x_name_the_positions(equal):
    rope = ropescale.Rope(16, 1e4, {"mrope_section": [2, 3, 3]})
    x = np.ones((4, 2, 16), dtype=np.float32)
    streams = np.ones((3, 5, 1), dtype=np.int64)
    if not equal:
        streams[1] = 2
    out = np.zeros_like(x)
    with pytest.raises(ValueError, match=r"positions leading shape \(5, 1\) does not broadcast"):
        rope.apply(x, streams, out=out)
    assert not out.any()


def test_positions_with_a_wrong_leading_axis_are_refused_and_nothing_is_written():
    rope = ropescale.Rope(128, 1e6, {"mrope_section": [16, 24, 24]})
    x = np.ones((5, 128), dtype=np.float32)
    out = np.zeros_like(x)
    with pytest.raises(ValueError, match="leading axis of 3"):
        rope.apply(x, np.zeros((2, 5), dtype=np.int64), out=out)
    assert not out.any()
    with pytest.raises(ValueError, match="leading axis of 3"):
        rope.cos_sin(np.zeros((5, 1), dtype=np.int64))


# -- 2-D axial (vision) -------------------------------------------------------------

def test_axial_rope_matches_transformers_qwen2_vl_vision_rotary():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen2_vl import modeling_qwen2_vl as mod
    head_dim = 80
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = transformers.Qwen2VLConfig().vision_config
    cfg.embed_dim, cfg.num_heads = head_dim * 2, 2
    cfg.head_dim = head_dim
    emb = mod.Qwen2VLVisionRotaryEmbedding(cfg)
    rope = ropescale.Rope.axial(head_dim, cfg.rope_parameters["rope_theta"])
    np.testing.assert_allclose(rope.inv_freq, np.tile(emb.inv_freq.double().numpy(), 2), rtol=1e-6)
    rng = np.random.default_rng(4)
    hw = rng.integers(0, 64, size=(11, 2))                      # (N, 2): row, column
    cos, sin = emb(torch.zeros(1), torch.from_numpy(hw))
    x = rng.standard_normal((11, 2, head_dim)).astype(np.float32)
    want, _ = mod.apply_rotary_pos_emb_vision(torch.from_numpy(x), torch.from_numpy(x), cos, sin)
    got = rope.apply(x, hw.T[:, :, None])                        # streams (2, N, 1)
    np.testing.assert_allclose(got, want.numpy(), atol=2e-5 * 64)


def test_axial_interleaved_equals_rotary_embedding_torch_axial_frequencies():
    # rotary-embedding-torch: RotaryEmbedding(dim=D/2, freqs_for="lang").get_axial_freqs(H, W) concatenates
    # the row and the column angles, each freq repeated for a consecutive pair; written out here.
    D, H, W = 32, 5, 7
    freqs = 1.0 / (1e4 ** (np.arange(0, D // 2, 2)[: D // 4] / (D // 2)))
    rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    angles = np.concatenate([np.repeat(rows[..., None] * freqs, 2, -1), np.repeat(cols[..., None] * freqs, 2, -1)], -1)
    x = np.random.default_rng(5).standard_normal((H, W, D))
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rot = np.stack([-x2, x1], -1).reshape(x.shape)
    want = x * np.cos(angles) + rot * np.sin(angles)
    got = ropescale.Rope.axial(D, interleaved=True).apply(x, np.stack([rows, cols]))
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_axial_needs_a_dim_divisible_by_four():
    with pytest.raises(ValueError, match="multiple of 4"):
        ropescale.Rope.axial(6)


def test_extend_keeps_the_mrope_layout_and_the_query_temperature():
    rope = ropescale.Rope(128, 1e6, {"mrope_section": [24, 20, 20], "mrope_interleaved": True},
                          max_position_embeddings=32768, query_temperature=(8192.0, 0.1))
    ext = rope.extend(131072, "yarn")
    assert ext.method == "yarn" and ext.mrope_section == (24, 20, 20) and ext.mrope_interleaved
    np.testing.assert_array_equal(ext.pair_streams, rope.pair_streams)
    assert ext.query_temperature == (8192.0, 0.1, 1.0)
    assert "query_temperature=(8192.0, 0.1, 1.0)" in repr(ext)


@pytest.mark.parametrize("model_type, section, interleaved", [("qwen2_vl", (16, 24, 24), False),
                                                             ("qwen2_5_vl_text", (16, 24, 24), False),
                                                             ("qwen3_vl_text", (24, 20, 20), True)])
def test_qwen_vl_model_types_use_their_modeling_codes_default_sections(model_type, section, interleaved):
    # transformers' Qwen-VL rotary modules read rope_parameters.get("mrope_section", <default>)
    rope = ropescale.Rope.from_hf({"model_type": model_type, "head_dim": 128, "rope_theta": 1e6})
    assert rope.mrope_section == section and rope.mrope_interleaved == interleaved
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    import inspect
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES  # noqa: F401
    mod = __import__(f"transformers.models.{model_type.replace('_text', '')}.modeling_"
                     f"{model_type.replace('_text', '')}", fromlist=["x"])
    src = inspect.getsource(mod)
    assert f'get("mrope_section", {list(section)})' in src


def test_from_hf_reads_a_vision_towers_axial_rope():
    transformers = pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vision = transformers.Qwen2VLConfig().vision_config
    rope = ropescale.Rope.from_hf(vision)
    assert rope == ropescale.Rope.axial(vision.embed_dim // vision.num_heads, 1e4)
    assert rope.mrope_section == (20, 20)


# -- the C kernel (rs_cos_sin_streams) ------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("pos_kind", ["int", "float"])
@pytest.mark.parametrize("n", [1, 37, 5000])          # 5000 x 64 pairs: the threaded split
def test_stream_kernel_gives_each_pair_the_plain_tables_bits_at_its_streams_position(dtype, pos_kind, n):
    from ropescale import _rotary
    theta = ropescale.inv_freq(128, 1e6) / 3.0
    rng = np.random.default_rng(n)
    streams = rng.integers(0, 100000, size=(3, n))
    if pos_kind == "float":
        streams = streams + rng.random((3, n))
    pair_stream = np.array(rng.integers(0, 3, size=64), dtype=np.int64)
    c, s = _rotary.cos_sin_streams(streams, theta, pair_stream, attention_factor=1.25, dtype=dtype)
    for j in range(3):
        cj, sj = ropescale.cos_sin(streams[j], theta, attention_factor=1.25, dtype=dtype)
        sel = pair_stream == j
        assert np.array_equal(c[:, sel], cj[:, sel]) and np.array_equal(s[:, sel], sj[:, sel])


def test_stream_kernel_against_the_reference_angles():
    from ropescale import _rotary
    from ropescale import reference as ref
    theta = ropescale.inv_freq(64, 1e4)
    streams = np.random.default_rng(9).integers(0, 10**6, size=(2, 50))
    pair_stream = np.array([0, 1] * 16, dtype=np.int64)
    c, s = _rotary.cos_sin_streams(streams, theta, pair_stream, dtype=np.float64)
    for j in range(2):
        rc, rs = ref.cos_sin(streams[j], theta)
        # the reference rounds the product t * theta once (angle error <= t * eps); the core is exact
        np.testing.assert_allclose(c[:, pair_stream == j], rc[:, pair_stream == j], atol=3e-10, rtol=0)
        np.testing.assert_allclose(s[:, pair_stream == j], rs[:, pair_stream == j], atol=3e-10, rtol=0)


@pytest.mark.parametrize("args, word", [
    (lambda P, T, S, C: (P, T, S + 3, 1.0, C, C.copy(), 1), "pair_stream"),
    (lambda P, T, S, C: (P, T, S - 1, 1.0, C, C.copy(), 1), "pair_stream"),
    (lambda P, T, S, C: (P, T, S[:-1], 1.0, C, C.copy(), 1), "pair_stream"),
    (lambda P, T, S, C: (P, T, S.astype(np.int32), 1.0, C, C.copy(), 1), "pair_stream"),
    (lambda P, T, S, C: (P[0], T, S, 1.0, C, C.copy(), 1), "2-D"),
    (lambda P, T, S, C: (P, T, S, 1.0, C[:-1], C[:-1].copy(), 1), "cos"),
])
def test_stream_glue_refuses_bad_arguments_and_writes_nothing(args, word):
    from ropescale import _core
    P = np.zeros((3, 4), dtype=np.int64)
    T = ropescale.inv_freq(8)
    S = np.array([0, 1, 2, 0], dtype=np.int64)
    C = np.full((4, 4), 7.0)
    a = args(P, T, S, C)
    with pytest.raises(ValueError, match=word):
        _core.cos_sin_streams(*a)
    assert np.all(a[4] == 7.0)


def test_stream_kernel_out_of_memory_is_a_memory_error():
    from ropescale import _core
    P = np.zeros((3, 4), dtype=np.int64)
    C, S = np.zeros((4, 4)), np.zeros((4, 4))
    _core._test_fail_alloc(1)
    try:
        with pytest.raises(MemoryError):
            _core.cos_sin_streams(P, ropescale.inv_freq(8), np.array([0, 1, 2, 0], dtype=np.int64), 1.0, C, S, 1)
    finally:
        _core._test_fail_alloc(0)


# -- the fused stream kernel (rs_rotate_streams) ----------------------------------------
@pytest.mark.parametrize("section, interleaved", SECTIONS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("layout", ["prefill", "decode", "strided", "text-image-text", "some-off-integers"])
def test_fused_streams_give_the_stream_tables_bits(section, interleaved, dtype, layout, threads):
    """Rope.apply with differing streams rotates in one fused pass (each stream's row made as
    its position changes, scattered to its pairs, or made at once for a token whose streams
    agree); the bits are those of apply_rotary with cos_sin_streams' table, whatever the
    pairing, direction, place, partial width or threads."""
    n = sum(section)
    rope = ropescale.Rope(2 * n, 1e6, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                                       "mrope_section": section, "mrope_interleaved": interleaved})
    rng = np.random.default_rng(n)
    if layout == "decode":
        x = rng.standard_normal((16, 1, 4, 2 * n + 6)).astype(dtype)
        streams = rng.integers(-(1 << 20), 1 << 20, (3, 16, 1, 1))    # negative positions too
    else:
        x = rng.standard_normal((1, 600, 3, 2 * n)).astype(dtype)
        t = np.arange(600)
        streams = np.stack([t, 100 + t // 7, 100 + t % 7])[:, None, :, None]       # image-like grid
        if layout == "strided":
            x = x[:, ::-1, :, :]
            streams = streams.astype(np.float64) + 0.25
        if layout == "text-image-text":   # Qwen2-VL's layout: rows whose streams agree next to rows whose do not
            streams = np.stack([t, t, t])
            rows, cols = np.divmod(np.arange(196), 14)
            streams[:, 200:396] = 200 + np.stack([np.zeros(196, np.int64), rows, cols])
            streams[:, 396:] -= 396 - 214
            streams[2, 450:470:2] += 1    # one stream leaves and rejoins the others, token by token
            streams[0, 500:520:3] -= 1
            streams[:, 530:536] = np.array([[600, 610, 620], [601, 601, 601]] * 3).T   # back to a row's positions
            streams = streams[:, None, :, None]
        if layout == "some-off-integers":   # rows where one stream sits between integers, the others on them
            streams = np.stack([t, 100 + t // 7 + 0.5 * (t % 3 == 0), 100 + t % 7]).astype(np.float64)
            streams = streams[:, None, :, None]
    for n_threads in (1, 2):
        threads(n_threads)
        for inverse in (False, True):
            for interleave_pairs in (False, True):
                want = _through_the_stream_table(rope, x, streams, inverse=inverse, interleaved=interleave_pairs)
                got = rope.apply(x, streams, inverse=inverse, interleaved=interleave_pairs)
                assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
                inplace = x.copy()
                assert rope.apply(inplace, streams, inverse=inverse, interleaved=interleave_pairs,
                                  out=inplace) is inplace
                assert np.array_equal(inplace.view(np.uint8), want.view(np.uint8))


def test_fused_streams_against_the_reference_angles():
    """Independent of the C tables: pair j rotated by streams[stream(j)] * theta_j in float64 NumPy."""
    from ropescale import reference
    rope = ropescale.Rope(128, 1e6, {"mrope_section": [16, 24, 24]})
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 7, 2, 128))
    streams = rng.integers(0, 2000, (3, 5, 7, 1))   # float64 t*theta is then within 3e-13 rad
    got = rope.apply(x, streams)
    pair = rope.pair_streams
    ang = np.take(streams[..., 0], pair, axis=0)                       # (R, 5, 7)
    ang = np.moveaxis(ang, 0, -1) * rope.inv_freq                      # (5, 7, R)
    c, s = np.cos(ang)[:, :, None, :], np.sin(ang)[:, :, None, :]
    want = reference.apply_rotary(x, c, s)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_fused_streams_refuse_what_the_kernel_cannot_take_and_write_nothing():
    from ropescale._rotary import apply_rotary_streams
    theta = ropescale.inv_freq(16)
    x = np.ones((4, 16))
    out = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match="1 to 8 streams"):
        apply_rotary_streams(x, np.zeros((9, 4)), theta, np.zeros(8, np.int64), out=out)
    with pytest.raises(ValueError, match="not a stream of positions"):
        apply_rotary_streams(x, np.zeros((2, 4), np.int64), theta, np.full(8, 2, np.int64), out=out)
    with pytest.raises(ValueError, match="positions leading shape"):
        apply_rotary_streams(x, np.zeros((2, 5), np.int64), theta, np.zeros(8, np.int64), out=out)
    assert (out == 7.0).all()
