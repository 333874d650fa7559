"""ropescale.tables: conversions between layouts, and apply_rotary's layout argument.

Oracles: transformers' own apply_rotary_pos_emb (full-width tables, partial
rotary), vLLM's cache definition cat(cos(t theta), sin(t theta)) written out
with NumPy, and NumPy's cos/sin of float64 angles.
"""

import numpy as np
import pytest

import ropescale
import ropescale.tables as tb

THETA = ropescale.inv_freq(16)
POS = np.arange(12)


def _half(dtype=np.float64, attention_factor=1.0):
    return ropescale.cos_sin(POS, THETA, dtype=dtype, attention_factor=attention_factor)


def test_full_round_trip_and_layout():
    c, s = _half()
    fc, fs = tb.to_full(c, s)
    assert fc.shape == (12, 16)
    np.testing.assert_array_equal(fc[:, :8], c)
    np.testing.assert_array_equal(fc[:, 8:], c)
    hc, hs = tb.from_full(fc, fs)
    np.testing.assert_array_equal(hc, c)
    np.testing.assert_array_equal(hs, s)


def test_from_full_refuses_what_is_not_cat_c_c():
    c, s = _half()
    with pytest.raises(ValueError, match="cos is not a full-width.*halves differ"):
        tb.from_full(c, s)
    with pytest.raises(ValueError, match="last axis 7 is odd"):
        tb.from_full(np.ones((2, 7)), np.ones((2, 7)))


def test_vllm_cache_is_cat_cos_sin():
    c, s = _half()
    cache = tb.to_vllm(c, s)
    angles = POS[:, None] * THETA  # vLLM: freqs = t (x) inv_freq; cache = cat(cos, sin)
    np.testing.assert_allclose(cache, np.concatenate([np.cos(angles), np.sin(angles)], -1), rtol=0, atol=1e-15)
    c2, s2 = tb.from_vllm(cache)
    np.testing.assert_array_equal(c2, c)
    np.testing.assert_array_equal(s2, s)
    with pytest.raises(ValueError, match="same shape"):
        tb.to_vllm(c, s[:3])
    with pytest.raises(ValueError, match="even last axis"):
        tb.from_vllm(np.ones((3, 5)))


def test_angles_and_from_angles_agree_with_cos_sin():
    a = tb.angles(POS, THETA)
    assert a.dtype == np.float64 and a.shape == (12, 8)
    np.testing.assert_array_equal(a, POS[:, None] * THETA)
    c, s = tb.from_angles(a, attention_factor=1.5, dtype=np.float64)
    wc, ws = _half(attention_factor=1.5)
    np.testing.assert_allclose(c, wc, rtol=0, atol=1e-15)
    np.testing.assert_allclose(s, ws, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="inv_freq must be 1-D"):
        tb.angles(POS, np.ones((2, 2)))
    with pytest.raises(TypeError, match="dtype must be a float dtype"):
        tb.from_angles(a, dtype=np.int32)


# -- apply_rotary's layout argument ------------------------------------------------
def test_full_width_table_for_a_partial_rotary_head_is_refused_not_misread():
    """An HF table (width 2R = 8) for a head of D = 16 with R = 4 pairs: read as half-width it would rotate 8 pairs."""
    x = np.random.default_rng(0).standard_normal((12, 2, 16))
    c, s = ropescale.cos_sin(POS[:, None], ropescale.inv_freq(8), dtype=np.float64)
    fc, fs = tb.to_full(c, s)
    out = np.full_like(x, 3.0)
    with pytest.raises(ValueError, match="full-width.*layout='full'"):
        ropescale.apply_rotary(x, fc, fs, out=out)
    assert np.all(out == 3.0)
    got = ropescale.apply_rotary(x, fc, fs, layout="full")
    np.testing.assert_array_equal(got, ropescale.apply_rotary(x, c, s))
    np.testing.assert_array_equal(got[..., 8:], x[..., 8:])  # the unrotated features pass through


def test_explicit_half_layout_trusts_the_table():
    x = np.ones((12, 16))
    c, s = _half()
    fc, fs = tb.to_full(c[:, :4], s[:, :4])
    y = ropescale.apply_rotary(x, fc, fs, layout="half")  # the caller says so: 8 pairs with these values
    assert y.shape == x.shape


def test_bad_layout_value():
    c, s = _half()
    with pytest.raises(ValueError, match="layout must be 'half'.*or 'full'.*got 'hf'"):
        ropescale.apply_rotary(np.ones((12, 16)), c, s, layout="hf")


def test_position_zero_table_is_not_mistaken_for_full_width():
    c, s = ropescale.cos_sin(np.zeros(3, dtype=np.int64), THETA)
    y = ropescale.apply_rotary(np.ones((3, 16), dtype=np.float32), c, s)
    np.testing.assert_array_equal(y, np.ones((3, 16), dtype=np.float32))


def test_full_layout_equals_transformers_apply_rotary_pos_emb_with_partial_rotary():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    rng = np.random.default_rng(1)
    b, h, n, d, rot = 2, 3, 12, 16, 8
    q = torch.from_numpy(rng.standard_normal((b, h, n, d)))
    k = torch.from_numpy(rng.standard_normal((b, h, n, d)))
    c, s = ropescale.cos_sin(np.broadcast_to(POS, (b, n)), ropescale.inv_freq(rot), dtype=np.float64)
    fc, fs = tb.to_full(torch.from_numpy(c), torch.from_numpy(s))  # (b, n, rot) as transformers' rotary module gives
    # transformers' partial-rotary models (Phi, GPT-NeoX) split the head, rotate the first part, concatenate
    q_rot, k_rot = apply_rotary_pos_emb(q[..., :rot], k[..., :rot], fc, fs)
    want_q = torch.cat([q_rot, q[..., rot:]], -1)
    got_q = ropescale.apply_rotary(q, fc[:, None], fs[:, None], layout="full")
    assert isinstance(got_q, torch.Tensor)
    torch.testing.assert_close(got_q, want_q, rtol=1e-14, atol=1e-14)
    import ropescale.torch as rt
    got_k = rt.apply_rotary(k, fc[:, None], fs[:, None], layout="full")
    torch.testing.assert_close(got_k, torch.cat([k_rot, k[..., rot:]], -1), rtol=1e-14, atol=1e-14)


def test_torch_tensors_keep_their_kind():
    torch = pytest.importorskip("torch")
    c, s = _half()
    fc, fs = tb.to_full(torch.from_numpy(c), torch.from_numpy(s))
    assert isinstance(fc, torch.Tensor)
    hc, _ = tb.from_full(fc, fs)
    assert isinstance(hc, torch.Tensor) and torch.equal(hc, torch.from_numpy(c))
    assert isinstance(tb.to_vllm(torch.from_numpy(c), torch.from_numpy(s)), torch.Tensor)


def test_core_imports_no_framework_and_works_without_them():
    """import ropescale (with tables and the any-array entry points) pulls in neither torch, JAX nor gguf,
    and runs when they cannot be imported at all."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('torch', 'jax', 'gguf', 'transformers', 'ml_dtypes'): sys.modules[m] = None\n"
        "import numpy as np, ropescale, ropescale.tables, ropescale.gguf\n"
        "c, s = ropescale.cos_sin(np.arange(4), ropescale.inv_freq(8))\n"
        "y = ropescale.apply_rotary(np.ones((4, 8), np.float32), *ropescale.tables.to_full(c, s), layout='full')\n"
        "assert y.shape == (4, 8)\n"
        "import ropescale as r; assert not any(sys.modules.get(m) for m in ('torch', 'jax', 'gguf'))\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
