"""q and k in one pass: ``apply_rotary_qk`` and ``Rope.apply_qk`` (csrc/rotary.c, rs_rotate_qk).

The joint kernel makes each position's cos/sin once and rotates q's and k's
rows at it.  Its promise is the bits of two separate rotations, so every
case compares bit for bit with ``apply_rotary_positions`` (or ``Rope.apply``)
called on q and on k, and with the float64 NumPy reference within the
tolerance table: over dtypes, memory layouts (B, S, H, D) and (B, H, S, D),
GQA and MQA head counts, views of a packed (B, S, 3, H, D) qkv array in
place and out of place, both pairings, partial rotary, integer and
fractional positions, per-sequence decode offsets, inverse, every
instruction-set path and 1 to 3 C threads.  Refusals leave every array as
it was.
"""
import numpy as np
import pytest
from conftest import assert_close

import ropescale
from ropescale import _core, reference

RNG = np.random.default_rng(25)
DTYPES = [np.float16, np.float32, np.float64]


def _bits(a):
    a = np.asarray(a)
    return a.view({8: np.uint64, 4: np.uint32, 2: np.uint16}[a.itemsize])


def _same_bits(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(_bits(got), _bits(want))


@pytest.fixture
def joint(monkeypatch):
    """Counts the calls the joint kernel completed (a two-call fallback would give the same
    bits, so each test of the kernel asserts that it ran)."""
    done = []
    real = _core.rotate_qk

    def counted(*args):
        res = real(*args)
        done.append(1)
        return res

    monkeypatch.setattr(_core, "rotate_qk", counted)
    return done


def _x(shape, dtype):
    return (RNG.standard_normal(shape) * 3).astype(dtype)


# (q shape, k shape, positions): the pairings of heads and positions the joint kernel takes
LAYOUTS = {
    "prefill (B, S, H, D)": ((2, 9, 4, 64), (2, 9, 4, 64), np.arange(9)[:, None]),
    "GQA decode, per-sequence offsets": ((5, 1, 8, 64), (5, 1, 2, 64), np.array([3, 70, 1000, 2**20, 9])[:, None, None]),
    "MQA": ((2, 6, 4, 64), (2, 6, 1, 64), np.arange(6)[:, None] + 100),
    "(B, H, S, D), positions (S,)": ((2, 4, 7, 64), (2, 2, 7, 64), np.arange(7) * 13),
    "(B, H, S, D), positions (B, 1, S)": ((2, 4, 7, 64), (2, 1, 7, 64), RNG.integers(0, 5000, (2, 1, 7))),
    "no heads axis (S, D)": ((11, 64), (11, 64), np.arange(11) - 5),
    "fractional positions": ((3, 5, 2, 64), (3, 5, 2, 64), np.linspace(-7.25, 3e5, 15).reshape(3, 5, 1)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_apply_rotary_qk_gives_the_bits_of_two_calls_and_matches_the_reference(layout, dtype, interleaved, joint):
    qs, ks, pos = LAYOUTS[layout]
    q, k = _x(qs, dtype), _x(ks, dtype)
    th = ropescale.inv_freq(64, 5e5)
    qr, kr = ropescale.apply_rotary_qk(q, k, pos, th, attention_factor=0.875, interleaved=interleaved)
    for got, x in ((qr, q), (kr, k)):
        _same_bits(got, ropescale.apply_rotary_positions(x, pos, th, attention_factor=0.875, interleaved=interleaved))
        assert_close(got, reference.apply_rotary_positions(x.astype(np.float64), pos, th, 0.875, interleaved), x,
                     dtype)
    assert joint, "the joint kernel did not run"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("r", [32, 20, 1])
def test_partial_rotary_and_inverse_keep_the_two_call_bits(dtype, r, joint):
    q, k = _x((3, 4, 6, 64), dtype), _x((3, 4, 2, 64), dtype)
    pos = RNG.integers(0, 10**6, (3, 4, 1))
    th = ropescale.inv_freq(2 * r, 1e4)
    qr, kr = ropescale.apply_rotary_qk(q, k, pos, th, inverse=True)
    _same_bits(qr, ropescale.apply_rotary_positions(q, pos, th, inverse=True))
    _same_bits(kr, ropescale.apply_rotary_positions(k, pos, th, inverse=True))
    assert np.array_equal(_bits(qr[..., 2 * r:]), _bits(q[..., 2 * r:]))  # the tail passes through
    assert joint, "the joint kernel did not run"


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_qkv_views_rotate_in_place_and_leave_v_alone(dtype, joint):
    qkv = _x((2, 5, 3, 4, 64), dtype)
    before = qkv.copy()
    pos = np.arange(5)[:, None] + 40
    th = ropescale.inv_freq(64, 1e4)
    q, k = qkv[:, :, 0], qkv[:, :, 1]
    got = ropescale.apply_rotary_qk(q, k, pos, th, out=(q, k))
    assert got[0] is q and got[1] is k
    _same_bits(qkv[:, :, 0], ropescale.apply_rotary_positions(before[:, :, 0], pos, th))
    _same_bits(qkv[:, :, 1], ropescale.apply_rotary_positions(before[:, :, 1], pos, th))
    _same_bits(qkv[:, :, 2], before[:, :, 2])
    assert joint, "the joint kernel did not run"


def test_packed_qkv_out_of_place_into_a_packed_output(joint):
    qkv = _x((3, 1, 3, 8, 128), np.float32)
    before = qkv.copy()
    out = np.zeros_like(qkv)
    pos = np.array([5, 600, 70000])[:, None, None]
    rope = ropescale.Rope(128, 5e5)
    rope.apply_qk(qkv[:, :, 0], qkv[:, :, 1], pos, out=(out[:, :, 0], out[:, :, 1]))
    _same_bits(out[:, :, 0], rope.apply(qkv[:, :, 0], pos))
    _same_bits(out[:, :, 1], rope.apply(qkv[:, :, 1], pos))
    assert not out[:, :, 2].any()
    _same_bits(qkv, before)
    assert joint, "the joint kernel did not run"


def test_gqa_heads_packed_along_one_axis(joint):
    # q heads then k heads then v heads on one axis (fused qkv projections of GQA models)
    qkv = _x((4, 2, 32 + 8 + 8, 64), np.float32)
    q, k = qkv[:, :, :32], qkv[:, :, 32:40]
    pos = np.array([[7, 8], [100, 101], [0, 1], [9, 10]])[:, :, None]
    th = ropescale.inv_freq(64, 1e4)
    want = [ropescale.apply_rotary_positions(a, pos, th) for a in (q, k)]
    ropescale.apply_rotary_qk(q, k, pos, th, out=(q, k))
    _same_bits(q, want[0])
    _same_bits(k, want[1])
    assert joint, "the joint kernel did not run"


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_instruction_set_path_gives_the_two_call_bits(level, dtype, joint):
    q, k = _x((6, 1, 8, 128), dtype), _x((6, 1, 2, 128), dtype)
    pos = RNG.integers(0, 2**20, (6, 1, 1))
    th = ropescale.inv_freq(128, 5e5)
    _core._test_simd_cap(level)
    try:
        qr, kr = ropescale.apply_rotary_qk(q, k, pos, th)
        want = [ropescale.apply_rotary_positions(a, pos, th) for a in (q, k)]
    finally:
        _core._test_simd_cap(0)
    _same_bits(qr, want[0])
    _same_bits(kr, want[1])
    _same_bits(qr, ropescale.apply_rotary_qk(q, k, pos, th)[0])  # and the widest path's bits
    assert joint, "the joint kernel did not run"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_call_split_over_c_threads_gives_the_one_thread_bits(n, threads, joint):
    q, k = _x((64, 1, 32, 128), np.float32), _x((64, 1, 8, 128), np.float32)   # 1.25 MiB
    pos = (1000 + 37 * np.arange(64)).reshape(64, 1, 1)
    th = ropescale.inv_freq(128, 5e5)
    threads(1)
    want = ropescale.apply_rotary_qk(q, k, pos, th)
    threads(n)
    got = ropescale.apply_rotary_qk(q, k, pos, th)
    _same_bits(got[0], want[0])
    _same_bits(got[1], want[1])
    big_q, big_k = _x((1, 4096, 8, 64), np.float32), _x((1, 4096, 2, 64), np.float32)   # 10 MiB: always split
    bp = np.arange(4096)[:, None]
    th64 = ropescale.inv_freq(64, 1e4)
    got = ropescale.apply_rotary_qk(big_q, big_k, bp, th64)
    _same_bits(got[0], ropescale.apply_rotary_positions(big_q, bp, th64))
    _same_bits(got[1], ropescale.apply_rotary_positions(big_k, bp, th64))
    assert joint, "the joint kernel did not run"


def test_bfloat16_pairs_take_the_joint_kernel_with_the_two_call_bits(joint):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    q = _x((2, 3, 4, 64), np.float32).astype(ml_dtypes.bfloat16)
    k = _x((2, 3, 1, 64), np.float32).astype(ml_dtypes.bfloat16)
    pos = np.arange(3)[:, None] * 1000
    th = ropescale.inv_freq(64, 1e4)
    qr, kr = ropescale.apply_rotary_qk(q, k, pos, th)
    assert qr.dtype == q.dtype and kr.dtype == k.dtype
    _same_bits(qr.view(np.uint16), ropescale.apply_rotary_positions(q, pos, th).view(np.uint16))
    _same_bits(kr.view(np.uint16), ropescale.apply_rotary_positions(k, pos, th).view(np.uint16))
    assert joint, "the joint kernel did not run"


def test_pairs_the_joint_kernel_does_not_take_are_two_calls_with_their_bits():
    th = ropescale.inv_freq(64, 1e4)
    pos = np.arange(5)[:, None]
    q, k = _x((2, 5, 4, 64), np.float32), _x((2, 5, 4, 64), np.float64)   # two dtypes
    qr, kr = ropescale.apply_rotary_qk(q, k, pos, th)
    assert qr.dtype == np.float32 and kr.dtype == np.float64
    _same_bits(kr, ropescale.apply_rotary_positions(k, pos, th))
    q, k = _x((3, 5, 4, 64), np.float32), _x((1, 5, 2, 64), np.float32)     # two axes differ
    qr, kr = ropescale.apply_rotary_qk(q, k, pos, th)
    _same_bits(qr, ropescale.apply_rotary_positions(q, pos, th))
    _same_bits(kr, ropescale.apply_rotary_positions(k, pos, th))
    qr, kr = ropescale.apply_rotary_qk(q.tolist(), k, pos.tolist(), list(th))   # lists
    _same_bits(qr, ropescale.apply_rotary_positions(q.tolist(), pos.tolist(), list(th)))


def test_an_output_that_is_the_other_input_reads_it_first():
    th = ropescale.inv_freq(64, 1e4)
    pos = np.arange(4)[:, None]
    q, k = _x((4, 2, 64), np.float32), _x((4, 2, 64), np.float32)
    want_q = ropescale.apply_rotary_positions(q, pos, th)
    want_k = ropescale.apply_rotary_positions(k, pos, th)
    ropescale.apply_rotary_qk(q, k, pos, th, out=(k, q))   # swapped: q's result into k's memory
    _same_bits(k, want_q)
    _same_bits(q, want_k)


def test_rope_apply_qk_matches_apply_for_scaled_dynamic_and_mrope_ropes(joint):
    yarn = ropescale.Rope(128, 1e4).extend(32768, "yarn", original_len=4096)
    dyn = ropescale.Rope(128, 1e4, {"rope_type": "dynamic", "factor": 4.0, "original_max_position_embeddings": 64})
    mrope = ropescale.Rope(128, 1e6, {"mrope_section": [16, 24, 24]})
    q, k = _x((2, 6, 4, 128), np.float32), _x((2, 6, 2, 128), np.float32)
    pos = np.arange(6)[:, None] + 100
    for rope in (yarn, dyn):
        qr, kr = rope.apply_qk(q, k, pos)
        _same_bits(qr, rope.apply(q, pos))
        _same_bits(kr, rope.apply(k, pos))
    qh, kh = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)   # (B, H, S, D): text positions are 1-D
    t = np.arange(6) + 100
    for positions in (t, np.stack([t, t, t]), np.stack([t, t // 2, t % 5])):   # text, streams that differ
        qr, kr = mrope.apply_qk(qh, kh, positions)
        _same_bits(qr, mrope.apply(qh, positions))
        _same_bits(kr, mrope.apply(kh, positions))
    qr, kr = dyn.apply_qk(q, k, pos, seq_len=500)
    _same_bits(kr, dyn.apply(k, pos, seq_len=500))
    gptj = ropescale.Rope(64, 1e4, interleaved=True)
    qr, kr = gptj.apply_qk(q[..., :64], k[..., :64], pos)
    _same_bits(kr, ropescale.apply_rotary_positions(k[..., :64], pos, gptj.inv_freq, interleaved=True))
    assert joint, "the joint kernel did not run"


def test_torch_tensors_in_give_tensors_with_the_two_call_bits(joint):
    torch = pytest.importorskip("torch")
    q, k = _x((2, 3, 4, 64), np.float32), _x((2, 3, 2, 64), np.float32)
    pos = np.arange(3)[:, None]
    rope = ropescale.Rope(64, 1e4)
    qr, kr = rope.apply_qk(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(pos))
    assert isinstance(qr, torch.Tensor) and isinstance(kr, torch.Tensor)
    _same_bits(qr.numpy(), rope.apply(q, pos))
    _same_bits(kr.numpy(), rope.apply(k, pos))
    qb = torch.from_numpy(q).to(torch.bfloat16)
    kb = torch.from_numpy(k).to(torch.bfloat16)
    qr, kr = rope.apply_qk(qb, kb, torch.from_numpy(pos))
    assert qr.dtype == torch.bfloat16
    assert torch.equal(kr, rope.apply(kb, torch.from_numpy(pos)))
    assert joint, "the joint kernel did not run"


@pytest.mark.parametrize("call, error, words", [
    (lambda q, k, p, t: ropescale.apply_rotary_qk(q, k, p, t, out=q), TypeError, "pair"),
    (lambda q, k, p, t: ropescale.apply_rotary_qk(q, k[..., :32], p, t), ValueError, "D"),
    (lambda q, k, p, t: ropescale.apply_rotary_qk(q, k, np.arange(7), t), ValueError, "positions"),
    (lambda q, k, p, t: ropescale.apply_rotary_qk(q, k, p * 2.0**40, t), ValueError, r"2\*\*34"),
    (lambda q, k, p, t: ropescale.apply_rotary_qk(q, k, p, t, out=(np.empty_like(q), k.astype(np.int32))),
     TypeError, "out"),
    (lambda q, k, p, t: ropescale.apply_rotary_qk(q, k.astype(np.int64), p, t), TypeError, "k must"),
])
def test_bad_input_raises_naming_it_and_writes_nothing(call, error, words):
    q, k = _x((3, 4, 64), np.float32), _x((3, 2, 64), np.float32)
    keep_q, keep_k = q.copy(), k.copy()
    with pytest.raises(error, match=words):
        call(q, k, np.arange(3)[:, None], ropescale.inv_freq(64, 1e4))
    _same_bits(q, keep_q)
    _same_bits(k, keep_k)


def test_the_glue_refuses_what_the_joint_kernel_cannot_take():
    th = ropescale.inv_freq(64, 1e4)
    q, k = _x((3, 4, 64), np.float32), _x((2, 2, 64), np.float32)   # two axes differ
    pos = np.zeros((1, 1), np.int64)
    oq, ok = np.zeros_like(q), np.zeros_like(k)
    with pytest.raises(ValueError, match="same shape but for one axis"):
        _core.rotate_qk(q, k, pos, th, None, 1.0, oq, ok, False, False, 1)
    k = _x((3, 4, 64), np.float32)
    with pytest.raises(ValueError, match="shares memory"):
        _core.rotate_qk(q, k, np.arange(3)[:, None], th, None, 1.0, k, np.zeros_like(k), False, False, 1)
    with pytest.raises(TypeError, match="one dtype"):
        _core.rotate_qk(q, k.astype(np.float64), np.arange(3)[:, None], th, None, 1.0, oq, k.astype(np.float64),
                        False, False, 1)
    assert not oq.any() and not ok.any()
