"""Position builders: packed sequences and Self-Extend's grouped positions."""
import numpy as np
import pytest

import ropescale


def test_packed_positions_restart_at_every_document_boundary():
    lengths = [3, 0, 1, 5, 2]
    want, docs = [], []
    for i, n in enumerate(lengths):          # independent: a plain loop
        want += list(range(n))
        docs += [i] * n
    cu = np.concatenate([[0], np.cumsum(lengths)])
    for pos, doc in (ropescale.packed_positions(cu, document_ids=True),
                     ropescale.packed_positions(lengths=lengths, document_ids=True)):
        assert pos.dtype == np.int64 and pos.tolist() == want and doc.tolist() == docs
    assert ropescale.packed_positions([0]).tolist() == []


def test_packed_positions_rotate_each_document_as_if_alone():
    rope = ropescale.Rope(16, 1e4, {"rope_type": "linear", "factor": 2.0})
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((n, 2, 16)) for n in (5, 7, 3)]
    packed = rope.apply(np.concatenate(docs), ropescale.packed_positions(lengths=[5, 7, 3])[:, None])
    alone = np.concatenate([rope.apply(d, np.arange(len(d))[:, None]) for d in docs])
    np.testing.assert_array_equal(packed, alone)


@pytest.mark.parametrize("G, w", [(1, 0), (2, 4), (4, 4), (8, 512), (3, 7)])
def test_self_extend_positions_follow_longlm(G, w):
    t = np.arange(2000)
    q, k = ropescale.self_extend_positions(t, group_size=G, window=w)
    # LongLM (datamllab/LongLM): grouped key position t // G, query t // G + w - w // G
    assert q.tolist() == [i // G + w - w // G for i in t.tolist()]
    assert k.tolist() == [i // G for i in t.tolist()]
    # the grouped distance continues the neighbour distance at the window's edge, within G
    i = np.arange(w, 2000)
    d = q[i] - k[i - w]
    assert np.all(np.abs(d - w) < G)
    if G == 1:
        assert np.array_equal(q, t) and np.array_equal(k, t)


def test_self_extend_positions_keep_the_shape():
    pos = np.arange(24).reshape(2, 3, 4)
    q, k = ropescale.self_extend_positions(pos, 4, 8)
    assert q.shape == k.shape == pos.shape


@pytest.mark.parametrize("call, exc, word", [
    (lambda: ropescale.packed_positions(), TypeError, "cu_seqlens"),
    (lambda: ropescale.packed_positions([0, 1], lengths=[1]), TypeError, "cu_seqlens"),
    (lambda: ropescale.packed_positions([1, 3]), ValueError, "cu_seqlens"),
    (lambda: ropescale.packed_positions([0, 3, 2]), ValueError, "non-decreasing"),
    (lambda: ropescale.packed_positions([0.0, 3.0]), TypeError, "cu_seqlens"),
    (lambda: ropescale.packed_positions([[0, 3]]), ValueError, "1-D"),
    (lambda: ropescale.packed_positions(lengths=[2, -1]), ValueError, "lengths"),
    (lambda: ropescale.packed_positions(lengths=["a"]), TypeError, "lengths"),
    (lambda: ropescale.packed_positions(lengths=[2**41]), ValueError, "2\\*\\*40"),
    (lambda: ropescale.self_extend_positions(np.arange(4), 0, 4), ValueError, "group_size"),
    (lambda: ropescale.self_extend_positions(np.arange(4), 2.0, 4), TypeError, "group_size"),
    (lambda: ropescale.self_extend_positions(np.arange(4), 2, -1), ValueError, "window"),
    (lambda: ropescale.self_extend_positions(np.arange(4), 2, True), TypeError, "window"),
    (lambda: ropescale.self_extend_positions(np.arange(4.0), 2, 4), TypeError, "positions"),
    (lambda: ropescale.self_extend_positions(np.array([-1, 2]), 2, 4), ValueError, "positions"),
])
def test_bad_position_builder_input_raises_naming_it(call, exc, word):
    with pytest.raises(exc, match=word):
        call()
