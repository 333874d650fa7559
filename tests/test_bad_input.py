"""Bad input raises TypeError/ValueError naming the argument; odd but valid input works.

The table below covers every public function: wrong types, wrong dtypes,
wrong shapes, broadcasting failures, NaN/inf where finite is required,
out-of-range scalars, read-only or mis-shaped ``out``, absurd sizes, and
empty or 0-d arrays where they make no sense.  Each case names the exception
type and a word the message must contain (the argument's name).

The second half checks that odd but valid input (empty batch, one token,
negative positions, NaN inside ``x``, reversed and unaligned memory, huge
zero-strided broadcasts) gives what ``ropescale.reference`` gives.
"""
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import ropescale
from ropescale import reference as ref
from conftest import assert_close, tol

NAN, INF = float("nan"), float("inf")
TH = ropescale.inv_freq(8)                      # R = 4
X = np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8)
C, S = ropescale.cos_sin(np.arange(3), TH)      # (3, 4) float32
RO = np.broadcast_to(np.zeros(8, np.float32), (3, 8))   # read-only
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}
LONG = {"rope_type": "longrope", "factor": 2.0, "original_max_position_embeddings": 4096,
        "short_factor": [1.0] * 4, "long_factor": [2.0] * 4}
DYN = {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 16}


def ANALYSIS():
    return ropescale.analyze(ropescale.Rope(64).extend(32768, "yarn", original_len=4096))


def with_(base, **kw):
    d = dict(base)
    d.update(kw)
    return d


def without(base, key):
    return {k: v for k, v in base.items() if k != key}


# (id, callable, exception, word the message must contain)
CASES = [
    # ---- inv_freq
    ("inv_freq-odd-dim", lambda: ropescale.inv_freq(7), ValueError, "dim"),
    ("inv_freq-zero-dim", lambda: ropescale.inv_freq(0), ValueError, "dim"),
    ("inv_freq-negative-dim", lambda: ropescale.inv_freq(-4), ValueError, "dim"),
    ("inv_freq-float-dim", lambda: ropescale.inv_freq(8.0), TypeError, "dim"),
    ("inv_freq-str-dim", lambda: ropescale.inv_freq("8"), TypeError, "dim"),
    ("inv_freq-bool-dim", lambda: ropescale.inv_freq(True), TypeError, "dim"),
    ("inv_freq-none-dim", lambda: ropescale.inv_freq(None), TypeError, "dim"),
    ("inv_freq-array-dim", lambda: ropescale.inv_freq(np.array([8])), TypeError, "dim"),
    ("inv_freq-dim-2**40", lambda: ropescale.inv_freq(2**40), ValueError, "dim"),
    ("inv_freq-dim-2**200", lambda: ropescale.inv_freq(2**200), ValueError, "dim"),
    ("inv_freq-base-1", lambda: ropescale.inv_freq(8, 1.0), ValueError, "base"),
    ("inv_freq-base-negative", lambda: ropescale.inv_freq(8, -1e4), ValueError, "base"),
    ("inv_freq-base-nan", lambda: ropescale.inv_freq(8, NAN), ValueError, "base"),
    ("inv_freq-base-inf", lambda: ropescale.inv_freq(8, INF), ValueError, "base"),
    ("inv_freq-base-str", lambda: ropescale.inv_freq(8, "1e4"), TypeError, "base"),
    ("inv_freq-base-complex", lambda: ropescale.inv_freq(8, 1e4 + 1j), TypeError, "base"),
    ("inv_freq-base-none", lambda: ropescale.inv_freq(8, None), TypeError, "base"),
    ("inv_freq-base-array", lambda: ropescale.inv_freq(8, np.array([1e4])), TypeError, "base"),
    # ---- ntk_lambda / ntk_base
    ("ntk_lambda-dim-2", lambda: ropescale.ntk_lambda(2, 2.0), ValueError, "dim"),
    ("ntk_lambda-odd-dim", lambda: ropescale.ntk_lambda(127, 2.0), ValueError, "dim"),
    ("ntk_lambda-factor-below-1", lambda: ropescale.ntk_lambda(128, 0.5), ValueError, "factor"),
    ("ntk_lambda-factor-nan", lambda: ropescale.ntk_lambda(128, NAN), ValueError, "factor"),
    ("ntk_lambda-factor-str", lambda: ropescale.ntk_lambda(128, "2"), TypeError, "factor"),
    ("ntk_base-base-1", lambda: ropescale.ntk_base(1.0, 128, 2.0), ValueError, "base"),
    ("ntk_base-factor-inf", lambda: ropescale.ntk_base(1e4, 128, INF), ValueError, "factor"),
    ("ntk_base-dim-2**40", lambda: ropescale.ntk_base(1e4, 2**40, 2.0), ValueError, "dim"),
    # ---- periods
    ("periods-2d", lambda: ropescale.periods([[1.0, 0.5]]), ValueError, "inv_freq"),
    ("periods-0d", lambda: ropescale.periods(1.0), ValueError, "inv_freq"),
    ("periods-strings", lambda: ropescale.periods(["a", "b"]), TypeError, "inv_freq"),
    ("periods-none", lambda: ropescale.periods(None), TypeError, "inv_freq"),
    ("periods-nan", lambda: ropescale.periods([1.0, NAN]), ValueError, "inv_freq"),
    ("periods-negative", lambda: ropescale.periods([1.0, -0.5]), ValueError, "inv_freq"),
    ("periods-ragged", lambda: ropescale.periods([[1.0], [1.0, 2.0]]), ValueError, "inv_freq"),
    # ---- solve_base / solve_factor
    ("solve_base-shrink", lambda: ropescale.solve_base(128, 1e4, 4096, 2048), ValueError, "target_len"),
    ("solve_base-original-0", lambda: ropescale.solve_base(128, 1e4, 0, 2048), ValueError, "original_len"),
    ("solve_base-target-nan", lambda: ropescale.solve_base(128, 1e4, 4096, NAN), ValueError, "target_len"),
    ("solve_base-original-str", lambda: ropescale.solve_base(128, 1e4, "4096", 8192), TypeError, "original_len"),
    ("solve_base-odd-dim", lambda: ropescale.solve_base(127, 1e4, 4096, 8192), ValueError, "dim"),
    ("solve_factor-smaller-base", lambda: ropescale.solve_factor(128, 1e4, 5e3), ValueError, "new_base"),
    ("solve_factor-inf", lambda: ropescale.solve_factor(128, 1e4, INF), ValueError, "new_base"),
    ("solve_factor-base-below-1", lambda: ropescale.solve_factor(128, 0.5, 1e5), ValueError, "base"),
    # ---- yarn_correction_range
    ("yarn_range-original-below-1", lambda: ropescale.yarn_correction_range(128, 1e4, 0.5), ValueError,
     "original_max_position_embeddings"),
    ("yarn_range-beta_fast-0", lambda: ropescale.yarn_correction_range(128, 1e4, 4096, beta_fast=0.0), ValueError,
     "beta_fast"),
    ("yarn_range-betas-swapped", lambda: ropescale.yarn_correction_range(128, 1e4, 4096, 1.0, 32.0), ValueError,
     "beta_fast"),
    ("yarn_range-beta_slow-nan", lambda: ropescale.yarn_correction_range(128, 1e4, 4096, beta_slow=NAN), ValueError,
     "beta_slow"),
    ("yarn_range-truncate-str", lambda: ropescale.yarn_correction_range(128, 1e4, 4096, truncate="yes"), TypeError,
     "truncate"),
    ("yarn_range-dim-2**40", lambda: ropescale.yarn_correction_range(2**40, 1e4, 4096), ValueError, "dim"),
    # ---- scaled_inv_freq
    ("scaled-scaling-list", lambda: ropescale.scaled_inv_freq(8, 1e4, [("rope_type", "linear")]), TypeError,
     "scaling"),
    ("scaled-scaling-str", lambda: ropescale.scaled_inv_freq(8, 1e4, "linear"), TypeError, "scaling"),
    ("scaled-unknown-type", lambda: ropescale.scaled_inv_freq(8, 1e4, {"rope_type": "bogus"}), ValueError,
     "rope_type"),
    ("scaled-type-not-str", lambda: ropescale.scaled_inv_freq(8, 1e4, {"rope_type": 3}), TypeError, "rope_type"),
    ("scaled-type-conflict", lambda: ropescale.scaled_inv_freq(8, 1e4, {"rope_type": "linear", "type": "ntk",
                                                                       "factor": 2.0}), ValueError, "rope_type"),
    ("scaled-linear-missing-factor", lambda: ropescale.scaled_inv_freq(8, 1e4, {"rope_type": "linear"}), ValueError,
     "factor"),
    ("scaled-factor-below-1", lambda: ropescale.scaled_inv_freq(8, 1e4, {"rope_type": "linear", "factor": 0.5}),
     ValueError, "factor"),
    ("scaled-factor-nan", lambda: ropescale.scaled_inv_freq(8, 1e4, {"rope_type": "ntk", "factor": NAN}),
     ValueError, "factor"),
    ("scaled-factor-str", lambda: ropescale.scaled_inv_freq(8, 1e4, {"rope_type": "linear", "factor": "2"}),
     TypeError, "factor"),
    ("scaled-ntk-rotary-dim-2", lambda: ropescale.scaled_inv_freq(2, 1e4, {"rope_type": "ntk", "factor": 2.0}),
     ValueError, "dim"),
    ("scaled-yarn-missing-original", lambda: ropescale.scaled_inv_freq(
        8, 1e4, without(YARN, "original_max_position_embeddings")), ValueError, "original_max_position_embeddings"),
    ("scaled-yarn-original-0", lambda: ropescale.scaled_inv_freq(
        8, 1e4, with_(YARN, original_max_position_embeddings=0)), ValueError, "original_max_position_embeddings"),
    ("scaled-yarn-original-inf", lambda: ropescale.scaled_inv_freq(
        8, 1e4, with_(YARN, original_max_position_embeddings=INF)), ValueError, "original_max_position_embeddings"),
    ("scaled-yarn-betas-swapped", lambda: ropescale.scaled_inv_freq(
        8, 1e4, with_(YARN, beta_fast=1.0, beta_slow=32.0)), ValueError, "beta_fast"),
    ("scaled-yarn-mscale-negative", lambda: ropescale.scaled_inv_freq(8, 1e4, with_(YARN, mscale=-1.0)),
     ValueError, "mscale"),
    ("scaled-yarn-truncate-str", lambda: ropescale.scaled_inv_freq(8, 1e4, with_(YARN, truncate="no")),
     TypeError, "truncate"),
    ("scaled-attention-factor-0", lambda: ropescale.scaled_inv_freq(8, 1e4, with_(YARN, attention_factor=0.0)),
     ValueError, "attention_factor"),
    ("scaled-llama3-lff-0", lambda: ropescale.scaled_inv_freq(
        8, 1e4, with_(LLAMA3, low_freq_factor=0.0)), ValueError, "low_freq_factor"),
    ("scaled-llama3-missing-hff", lambda: ropescale.scaled_inv_freq(8, 1e4, without(LLAMA3, "high_freq_factor")),
     ValueError, "high_freq_factor"),
    ("scaled-longrope-short-length", lambda: ropescale.scaled_inv_freq(8, 1e4, with_(LONG, short_factor=[1.0] * 3)),
     ValueError, "short_factor"),
    ("scaled-longrope-long-negative", lambda: ropescale.scaled_inv_freq(
        8, 1e4, with_(LONG, long_factor=[1.0, -1.0, 1.0, 1.0])), ValueError, "long_factor"),
    ("scaled-longrope-short-str", lambda: ropescale.scaled_inv_freq(8, 1e4, with_(LONG, short_factor="1111")),
     TypeError, "short_factor"),
    ("scaled-longrope-short-2d", lambda: ropescale.scaled_inv_freq(8, 1e4, with_(LONG, short_factor=[[1.0] * 4])),
     TypeError, "short_factor"),
    ("scaled-longrope-no-factor", lambda: ropescale.scaled_inv_freq(8, 1e4, without(LONG, "factor")),
     ValueError, "factor"),
    ("scaled-prf-0", lambda: ropescale.scaled_inv_freq(8, 1e4, {"rope_type": "default",
                                                               "partial_rotary_factor": 0.0}),
     ValueError, "partial_rotary_factor"),
    ("scaled-prf-above-1", lambda: ropescale.scaled_inv_freq(8, 1e4, {"rope_type": "linear", "factor": 2.0,
                                                                     "partial_rotary_factor": 1.5}),
     ValueError, "partial_rotary_factor"),
    ("scaled-prf-odd-rotary-dim", lambda: ropescale.scaled_inv_freq(12, 1e4, {"rope_type": "linear", "factor": 2.0,
                                                                             "partial_rotary_factor": 0.25}),
     ValueError, "partial_rotary_factor"),
    ("scaled-seq_len-negative", lambda: ropescale.scaled_inv_freq(8, 1e4, DYN, seq_len=-1), ValueError, "seq_len"),
    ("scaled-seq_len-float", lambda: ropescale.scaled_inv_freq(8, 1e4, DYN, seq_len=1.5), TypeError, "seq_len"),
    ("scaled-seq_len-2**62", lambda: ropescale.scaled_inv_freq(8, 1e4, DYN, seq_len=2**62), ValueError, "seq_len"),
    ("scaled-seq_len-10**400", lambda: ropescale.scaled_inv_freq(8, 1e4, DYN, seq_len=10**400), ValueError,
     "seq_len"),
    ("scaled-dim-2**40", lambda: ropescale.scaled_inv_freq(2**40, 1e4, None), ValueError, "dim"),
    ("scaled-base-inf", lambda: ropescale.scaled_inv_freq(8, INF, None), ValueError, "base"),
    # ---- cos_sin
    ("cos_sin-positions-str", lambda: ropescale.cos_sin("0123", TH), TypeError, "positions"),
    ("cos_sin-positions-none", lambda: ropescale.cos_sin(None, TH), TypeError, "positions"),
    ("cos_sin-positions-nan", lambda: ropescale.cos_sin([0.0, NAN], TH), ValueError, "positions"),
    ("cos_sin-positions-inf", lambda: ropescale.cos_sin([-INF], TH), ValueError, "positions"),
    ("cos_sin-positions-bool", lambda: ropescale.cos_sin([True, False], TH), TypeError, "positions"),
    ("cos_sin-positions-complex", lambda: ropescale.cos_sin([1j], TH), TypeError, "positions"),
    ("cos_sin-positions-object", lambda: ropescale.cos_sin(np.array([1, None], dtype=object), TH), TypeError,
     "positions"),
    ("cos_sin-positions-2**62", lambda: ropescale.cos_sin(np.int64(2**62), TH), ValueError, "positions"),
    ("cos_sin-positions-uint64-max", lambda: ropescale.cos_sin(np.array([2**64 - 1], np.uint64), TH), ValueError,
     "positions"),
    ("cos_sin-positions-2**70", lambda: ropescale.cos_sin(2**70, TH), TypeError, "positions"),
    ("cos_sin-angle-beyond-2**34", lambda: ropescale.cos_sin([2**40], TH), ValueError, "positions"),
    ("cos_sin-positions-ragged", lambda: ropescale.cos_sin([[1, 2], [3]], TH), ValueError, "positions"),
    ("cos_sin-inv_freq-empty", lambda: ropescale.cos_sin([1], []), ValueError, "inv_freq"),
    ("cos_sin-inv_freq-0d", lambda: ropescale.cos_sin([1], 1.0), ValueError, "inv_freq"),
    ("cos_sin-inv_freq-2d", lambda: ropescale.cos_sin([1], [[1.0, 0.1]]), ValueError, "inv_freq"),
    ("cos_sin-inv_freq-nan", lambda: ropescale.cos_sin([1], [1.0, NAN]), ValueError, "inv_freq"),
    ("cos_sin-inv_freq-inf", lambda: ropescale.cos_sin([1], [INF]), ValueError, "inv_freq"),
    ("cos_sin-inv_freq-str", lambda: ropescale.cos_sin([1], ["a"]), TypeError, "inv_freq"),
    ("cos_sin-inv_freq-none", lambda: ropescale.cos_sin([1], None), TypeError, "inv_freq"),
    ("cos_sin-inv_freq-ragged", lambda: ropescale.cos_sin([1], [[1.0], [1.0, 2.0]]), ValueError, "inv_freq"),
    ("cos_sin-attn-0", lambda: ropescale.cos_sin([1], TH, attention_factor=0.0), ValueError, "attention_factor"),
    ("cos_sin-attn-negative", lambda: ropescale.cos_sin([1], TH, attention_factor=-1.0), ValueError,
     "attention_factor"),
    ("cos_sin-attn-nan", lambda: ropescale.cos_sin([1], TH, attention_factor=NAN), ValueError, "attention_factor"),
    ("cos_sin-attn-str", lambda: ropescale.cos_sin([1], TH, attention_factor="1"), TypeError, "attention_factor"),
    ("cos_sin-attn-array", lambda: ropescale.cos_sin([1], TH, attention_factor=np.ones(2)), TypeError,
     "attention_factor"),
    ("cos_sin-dtype-int", lambda: ropescale.cos_sin([1], TH, dtype=np.int32), TypeError, "dtype"),
    ("cos_sin-dtype-complex", lambda: ropescale.cos_sin([1], TH, dtype=np.complex64), TypeError, "dtype"),
    ("cos_sin-dtype-object", lambda: ropescale.cos_sin([1], TH, dtype=object), TypeError, "dtype"),
    ("cos_sin-dtype-nonsense", lambda: ropescale.cos_sin([1], TH, dtype="nonsense"), TypeError, "dtype"),
    ("cos_sin-dtype-instance", lambda: ropescale.cos_sin([1], TH, dtype=object()), TypeError, "dtype"),
    ("cos_sin-dtype-float128", lambda: ropescale.cos_sin([1], TH, dtype=np.longdouble), TypeError, "dtype"),
    # ---- apply_rotary
    ("apply-x-int", lambda: ropescale.apply_rotary(np.ones((3, 8), int), C, S), TypeError, "x"),
    ("apply-x-complex", lambda: ropescale.apply_rotary(X.astype(complex), C, S), TypeError, "x"),
    ("apply-x-float128", lambda: ropescale.apply_rotary(X.astype(np.longdouble), C, S), TypeError, "x"),
    ("apply-x-object", lambda: ropescale.apply_rotary(np.ones((3, 8), object), C, S), TypeError, "x"),
    ("fused-x-object", lambda: ropescale.apply_rotary_positions(np.ones((3, 8), object), [0, 1, 2], TH), TypeError, "x"),
    ("apply-x-str", lambda: ropescale.apply_rotary("x", C, S), TypeError, "x"),
    ("apply-x-none", lambda: ropescale.apply_rotary(None, C, S), TypeError, "x"),
    ("apply-x-0d", lambda: ropescale.apply_rotary(np.float32(1), C, S), ValueError, "x"),
    ("apply-x-odd-D", lambda: ropescale.apply_rotary(np.ones((3, 9), np.float32), C, S), ValueError, "x"),
    ("apply-x-ragged", lambda: ropescale.apply_rotary([[1.0, 2.0], [3.0]], C, S), ValueError, "x"),
    ("apply-cos-int", lambda: ropescale.apply_rotary(X, np.ones((3, 4), int), S), TypeError, "cos"),
    ("apply-sin-object", lambda: ropescale.apply_rotary(X, C, np.ones((3, 4), object)), TypeError, "sin"),
    ("apply-cos-none", lambda: ropescale.apply_rotary(X, None, S), TypeError, "cos"),
    ("apply-cos-sin-shapes", lambda: ropescale.apply_rotary(X, C, S[:, :3]), ValueError, "cos"),
    ("apply-cos-0d", lambda: ropescale.apply_rotary(X, np.float32(1), np.float32(0)), ValueError, "cos"),
    ("apply-2R-above-D", lambda: ropescale.apply_rotary(X[:, :6], C, S), ValueError, "cos"),
    ("apply-cos-no-broadcast", lambda: ropescale.apply_rotary(X, C[:2], S[:2]), ValueError, "cos"),
    ("apply-cos-broadcasts-up", lambda: ropescale.apply_rotary(X, np.stack([C, C]), np.stack([S, S])), ValueError,
     "cos"),
    ("apply-interleaved-int", lambda: ropescale.apply_rotary(X, C, S, interleaved=1), TypeError, "interleaved"),
    ("apply-interleaved-str", lambda: ropescale.apply_rotary(X, C, S, interleaved="yes"), TypeError, "interleaved"),
    ("apply-inverse-none", lambda: ropescale.apply_rotary(X, C, S, inverse=None), TypeError, "inverse"),
    ("apply-out-read-only", lambda: ropescale.apply_rotary(X, C, S, out=RO), ValueError, "out"),
    ("apply-out-shape", lambda: ropescale.apply_rotary(X, C, S, out=np.zeros((3, 6), np.float32)), ValueError, "out"),
    ("apply-out-transposed", lambda: ropescale.apply_rotary(X, C, S, out=np.zeros((8, 3), np.float32)), ValueError,
     "out"),
    ("apply-out-0d", lambda: ropescale.apply_rotary(X, C, S, out=np.zeros((), np.float32)), ValueError, "out"),
    ("apply-out-list", lambda: ropescale.apply_rotary(X, C, S, out=[[0.0] * 8] * 3), TypeError, "out"),
    ("apply-out-int", lambda: ropescale.apply_rotary(X, C, S, out=np.zeros((3, 8), int)), TypeError, "out"),
    # ---- apply_rotary_positions
    ("fused-x-int", lambda: ropescale.apply_rotary_positions(np.ones((3, 8), np.int16), [0, 1, 2], TH), TypeError,
     "x"),
    ("fused-x-0d", lambda: ropescale.apply_rotary_positions(np.float64(1), 0, TH), ValueError, "x"),
    ("fused-x-bool", lambda: ropescale.apply_rotary_positions(np.ones((3, 8), bool), [0, 1, 2], TH), TypeError, "x"),
    ("fused-positions-nan", lambda: ropescale.apply_rotary_positions(X, [0, NAN, 2], TH), ValueError, "positions"),
    ("fused-positions-bool", lambda: ropescale.apply_rotary_positions(X, [True] * 3, TH), TypeError, "positions"),
    ("fused-positions-no-broadcast", lambda: ropescale.apply_rotary_positions(X, [0, 1, 2, 3], TH), ValueError,
     "positions"),
    ("fused-positions-broadcast-up", lambda: ropescale.apply_rotary_positions(X, np.zeros((2, 3)), TH), ValueError,
     "positions"),
    ("fused-positions-2**62", lambda: ropescale.apply_rotary_positions(X, np.full(3, 2**62), TH), ValueError,
     "positions"),
    ("fused-angle-beyond-2**34", lambda: ropescale.apply_rotary_positions(X, [0, 1, 2**35], TH), ValueError,
     "positions"),
    ("fused-inv_freq-too-long", lambda: ropescale.apply_rotary_positions(X, [0, 1, 2], ropescale.inv_freq(10)),
     ValueError, "inv_freq"),
    ("fused-inv_freq-2d", lambda: ropescale.apply_rotary_positions(X, [0, 1, 2], TH[None]), ValueError, "inv_freq"),
    ("fused-inv_freq-empty", lambda: ropescale.apply_rotary_positions(X, [0, 1, 2], np.zeros(0)), ValueError,
     "inv_freq"),
    ("fused-inv_freq-inf", lambda: ropescale.apply_rotary_positions(X, [0, 1, 2], [1.0, INF]), ValueError,
     "inv_freq"),
    ("fused-inv_freq-complex", lambda: ropescale.apply_rotary_positions(X, [0, 1, 2], TH + 0j), TypeError,
     "inv_freq"),
    ("fused-attn-inf", lambda: ropescale.apply_rotary_positions(X, [0, 1, 2], TH, attention_factor=INF), ValueError,
     "attention_factor"),
    ("fused-attn-bool", lambda: ropescale.apply_rotary_positions(X, [0, 1, 2], TH, attention_factor=True), TypeError,
     "attention_factor"),
    ("fused-inverse-str", lambda: ropescale.apply_rotary_positions(X, [0, 1, 2], TH, inverse="no"), TypeError,
     "inverse"),
    ("fused-out-read-only", lambda: ropescale.apply_rotary_positions(X, [0, 1, 2], TH, out=RO), ValueError, "out"),
    ("fused-out-shape", lambda: ropescale.apply_rotary_positions(X, [0, 1, 2], TH, out=np.zeros(8)), ValueError,
     "out"),
    ("fused-out-tuple", lambda: ropescale.apply_rotary_positions(X, [0, 1, 2], TH, out=(0.0,) * 8), TypeError, "out"),
    # ---- set_num_threads
    ("threads-0", lambda: ropescale.set_num_threads(0), ValueError, "n"),
    ("threads-65", lambda: ropescale.set_num_threads(65), ValueError, "n"),
    ("threads-2**62", lambda: ropescale.set_num_threads(2**62), ValueError, "n"),
    ("threads-float", lambda: ropescale.set_num_threads(1.5), TypeError, "n"),
    ("threads-str", lambda: ropescale.set_num_threads("4"), TypeError, "n"),
    # ---- apply_rotary_qk
    ("apply_rotary_qk-q-int", lambda: ropescale.apply_rotary_qk(X.astype(np.int16), X, [0, 1, 2], TH), TypeError,
     "q"),
    ("apply_rotary_qk-k-odd-D", lambda: ropescale.apply_rotary_qk(X, X[:, :7], [0, 1, 2], TH), ValueError, "k"),
    ("apply_rotary_qk-positions-no-broadcast", lambda: ropescale.apply_rotary_qk(X, X, [0, 1], TH), ValueError,
     "positions"),
    ("apply_rotary_qk-out-one-array", lambda: ropescale.apply_rotary_qk(X, X, [0, 1, 2], TH, out=X.copy()),
     TypeError, "out"),
    ("apply_rotary_qk-out_k-read-only", lambda: ropescale.apply_rotary_qk(X, X, [0, 1, 2], TH, out=(X.copy(), RO)),
     ValueError, "out_k"),
    ("apply_rotary_qk-out_q-shape", lambda: ropescale.apply_rotary_qk(X, X, [0, 1, 2], TH, out=(X[:2].copy(), X.copy())),
     ValueError, "out_q"),
    ("Rope.apply_qk-k-str", lambda: ropescale.Rope(8).apply_qk(X, "k", [0, 1, 2]), TypeError, "k"),
    # ---- Rope
    ("Rope-odd-dim", lambda: ropescale.Rope(63), ValueError, "dim"),
    ("Rope-dim-2**40", lambda: ropescale.Rope(2**40), ValueError, "dim"),
    ("Rope-base-1", lambda: ropescale.Rope(64, 1.0), ValueError, "base"),
    ("Rope-scaling-str", lambda: ropescale.Rope(64, 1e4, "linear"), TypeError, "scaling"),
    ("Rope-scaling-factor-0", lambda: ropescale.Rope(64, 1e4, {"rope_type": "linear", "factor": 0}), ValueError,
     "factor"),
    ("Rope.from_hf-int", lambda: ropescale.Rope.from_hf(3), TypeError, "config"),
    ("Rope.from_hf-missing-file", lambda: ropescale.Rope.from_hf("/nonexistent/ropescale/config.json"), ValueError,
     "config"),
    ("Rope.from_hf-no-head-dim", lambda: ropescale.Rope.from_hf({}), ValueError, "head_dim"),
    ("Rope.from_hf-odd-head-dim", lambda: ropescale.Rope.from_hf({"rope_theta": 1e4, "head_dim": 63}), ValueError, "dim"),
    ("Rope-base-10**400", lambda: ropescale.Rope(64, 10**400), ValueError, "base"),
    ("Rope-max_position_embeddings-str", lambda: ropescale.Rope(64, max_position_embeddings="2"), TypeError,
     "max_position_embeddings"),
    ("Rope-max_position_embeddings-0", lambda: ropescale.Rope(64, max_position_embeddings=0), ValueError,
     "max_position_embeddings"),
    ("Rope-max_position_embeddings-bool", lambda: ropescale.Rope(64, max_position_embeddings=True), TypeError,
     "max_position_embeddings"),
    ("Rope-setattr-base", lambda: setattr(ropescale.Rope(64), "base", 5e5), AttributeError, "base"),
    ("Rope-setattr-scaling", lambda: setattr(ropescale.Rope(64), "scaling", None), AttributeError, "scaling"),
    ("Rope.replace-unknown", lambda: ropescale.Rope(64).replace(method="ntk"), TypeError, "method"),
    ("Rope.replace-base-0", lambda: ropescale.Rope(64).replace(base=0), ValueError, "base"),
    ("Rope.from_hf-rope_scaling-str", lambda: ropescale.Rope.from_hf({"head_dim": 64, "rope_scaling": "yarn"}),
     ValueError, "rope_scaling"),
    ("Rope.from_hf-rope_scaling-list", lambda: ropescale.Rope.from_hf({"head_dim": 64, "rope_scaling": [1]}),
     ValueError, "rope_scaling"),
    ("Rope.from_hf-rope_type-list", lambda: ropescale.Rope.from_hf(
        {"rope_theta": 1e4, "head_dim": 64, "rope_scaling": {"rope_type": ["yarn"]}}), ValueError, "rope_type"),
    ("Rope.from_hf-max_pos-str", lambda: ropescale.Rope.from_hf({"rope_theta": 1e4, "head_dim": 64, "max_position_embeddings": "2"}),
     ValueError, "max_position_embeddings"),
    ("Rope.from_hf-max_pos-true", lambda: ropescale.Rope.from_hf({"rope_theta": 1e4, "head_dim": 64, "max_position_embeddings": True}),
     ValueError, "max_position_embeddings"),
    ("Rope.from_hf-max_pos-0", lambda: ropescale.Rope.from_hf({"rope_theta": 1e4, "head_dim": 64, "max_position_embeddings": 0}),
     ValueError, "max_position_embeddings"),
    ("Rope.from_hf-dev-zero", lambda: ropescale.Rope.from_hf("/dev/zero"), ValueError, "file"),
    ("Rope.from_hf-longrope-original-1", lambda: ropescale.Rope.from_hf(
        {"rope_theta": 1e4, "head_dim": 8, "rope_scaling": {"rope_type": "longrope", "factor": 2.0,
                                                            "original_max_position_embeddings": 1,
                                                            "short_factor": [1.0] * 4, "long_factor": [1.0] * 4}}),
     ValueError, "original_max_position_embeddings"),
    ("Rope.extend-method-int", lambda: ropescale.Rope(64).extend(1000, 3, original_len=100), TypeError, "method"),
    ("scaled-dynamic-overflow", lambda: ropescale.scaled_inv_freq(8, 1e4, with_(DYN, factor=1e300), seq_len=17),
     ValueError, "dynamic"),
    ("scaled-ntk-base-overflow", lambda: ropescale.scaled_inv_freq(8, 1e300, {"rope_type": "ntk", "factor": 1e10}),
     ValueError, "ntk"),
    ("scaled-longrope-tiny-factor", lambda: ropescale.scaled_inv_freq(8, 1e4, with_(LONG, long_factor=[5e-324] * 4)),
     ValueError, "long_factor"),
    ("scaled-longrope-str-entries", lambda: ropescale.scaled_inv_freq(8, 1e4, with_(LONG, short_factor=["1"] * 4)),
     TypeError, "short_factor"),
    ("scaled-longrope-bool-entries", lambda: ropescale.scaled_inv_freq(8, 1e4, with_(LONG, long_factor=[True] * 4)),
     TypeError, "long_factor"),
    ("scaled-attention-factor-10**400", lambda: ropescale.scaled_inv_freq(8, 1e4, with_(YARN, attention_factor=10**400)),
     ValueError, "attention_factor"),
    ("scaled-factor-10**400", lambda: ropescale.scaled_inv_freq(8, 1e4, with_(YARN, factor=10**400)),
     ValueError, "factor"),
    ("scaled-yarn-truncate-null", lambda: ropescale.scaled_inv_freq(8, 1e4, with_(YARN, truncate=None)),
     TypeError, "truncate"),
    ("ntk_base-overflow", lambda: ropescale.ntk_base(1e300, 128, 1e10), ValueError, "ntk_base"),
    ("ntk_lambda-overflow", lambda: ropescale.ntk_lambda(4, 1e300), ValueError, "factor"),
    ("Rope.extend-method", lambda: ropescale.Rope(64).extend(1000, "bogus", original_len=100), ValueError, "method"),
    ("Rope.extend-shrink", lambda: ropescale.Rope(64).extend(50, "ntk", original_len=100), ValueError, "target_len"),
    ("Rope.extend-no-original", lambda: ropescale.Rope(64).extend(1000, "ntk"), ValueError, "original_len"),
    ("Rope.extend-target-str", lambda: ropescale.Rope(64).extend("x", "ntk", original_len=10), TypeError,
     "target_len"),
    ("Rope.apply-positions-nan", lambda: ropescale.Rope(8).apply(X, [0, 1, NAN]), ValueError, "positions"),
    ("Rope.apply-x-odd-D", lambda: ropescale.Rope(8).apply(np.ones((3, 7)), [0, 1, 2]), ValueError, "x"),
    ("Rope.apply-seq_len-negative", lambda: ropescale.Rope(8, 1e4, DYN).apply(X, [0, 1, 2], seq_len=-1),
     ValueError, "seq_len"),
    ("Rope.cos_sin-dtype-int", lambda: ropescale.Rope(8).cos_sin([0, 1], dtype=np.int8), TypeError, "dtype"),
    ("Rope.cos_sin-positions-str", lambda: ropescale.Rope(8, 1e4, DYN).cos_sin("abc"), TypeError, "positions"),
    # ---- analysis
    ("critical_dim-odd-dim", lambda: ropescale.critical_dim(7, 1e4, 4096), ValueError, "dim"),
    ("critical_dim-base-1", lambda: ropescale.critical_dim(128, 1.0, 4096), ValueError, "base"),
    ("critical_dim-original-0", lambda: ropescale.critical_dim(128, 1e4, 0), ValueError, "original_len"),
    ("critical_dim-original-nan", lambda: ropescale.critical_dim(128, 1e4, NAN), ValueError, "original_len"),
    ("max_supported_length-new-base-small", lambda: ropescale.max_supported_length(128, 1e4, 4096, 5e3), ValueError,
     "new_base"),
    ("max_supported_length-original-str", lambda: ropescale.max_supported_length(128, 1e4, "4096", 1e5), TypeError,
     "original_len"),
    ("max_supported_length-dim-2**40", lambda: ropescale.max_supported_length(2**40, 1e4, 4096, 1e5), ValueError,
     "dim"),
    ("analyze-not-a-rope", lambda: ropescale.analyze({"head_dim": 64}), TypeError, "rope"),
    ("analyze-no-original", lambda: ropescale.analyze(ropescale.Rope(64)), ValueError, "original_len"),
    ("analyze-target-negative", lambda: ropescale.analyze(ropescale.Rope(64), -1, 4096), ValueError, "target_len"),
    ("analyze-original-inf", lambda: ropescale.analyze(ropescale.Rope(64), 8192, INF), ValueError, "original_len"),
    ("analyze-target-str", lambda: ropescale.analyze(ropescale.Rope(64), "8192", 4096), TypeError, "target_len"),
    ("RopeAnalysis.table-pair-out-of-range", lambda: ANALYSIS().table(pairs=[1000]), ValueError, "pairs"),
    ("RopeAnalysis.table-pair-str", lambda: ANALYSIS().table(pairs=["a"]), TypeError, "pairs"),
    ("RopeAnalysis.table-pairs-int", lambda: ANALYSIS().table(pairs=5), TypeError, "pairs"),
    ("rerotate-positions-shape", lambda: ropescale.rerotate(X, [0, 1, 2], [0, 1], ropescale.inv_freq(8)), ValueError,
     "to_positions"),
    ("rerotate-to-nan", lambda: ropescale.rerotate(X, [0, 1, 2], [0, 1, NAN], ropescale.inv_freq(8)), ValueError,
     "to_positions"),
    ("rerotate-int-keys", lambda: ropescale.rerotate(np.ones((3, 8), np.int32), [0, 1, 2], [1, 2, 3],
                                                    ropescale.inv_freq(8)), TypeError, "k"),
    ("rebase-lengths-differ", lambda: ropescale.rebase(X, [0, 1, 2], ropescale.inv_freq(8), ropescale.inv_freq(6)),
     ValueError, "inv_freq"),
    ("rebase-positions-inf", lambda: ropescale.rebase(X, [0, 1, INF], ropescale.inv_freq(8), ropescale.inv_freq(8, 2e4)),
     ValueError, "positions"),
    ("analyze-target-1e300-dynamic", lambda: ropescale.analyze(ropescale.Rope(64, 1e4, DYN), 1e300), ValueError,
     "target_len"),
    # ---- per-layer ropes, M-RoPE, position builders (issue 11; more in test_layers / test_mrope / test_positions)
    ("layer_ropes-no-layer-count", lambda: ropescale.layer_ropes({"head_dim": 64, "rope_theta": 1e4}), ValueError,
     "num_hidden_layers"),
    ("layer_ropes-layer_types-str", lambda: ropescale.layer_ropes({"head_dim": 64, "layer_types": "full"}),
     ValueError, "layer_types"),
    ("LayerRopes-missing-fields", lambda: ropescale.LayerRopes(), TypeError, "by_type"),
    ("Rope.from_hf-layer_type-unknown", lambda: ropescale.Rope.from_hf({"head_dim": 64, "rope_theta": 1e4},
                                                                       layer_type="sliding_attention"),
     ValueError, "layer_type"),
    ("Rope.from_hf-mrope-section-sum", lambda: ropescale.Rope.from_hf(
        {"head_dim": 128, "rope_theta": 1e6, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24]}}),
     ValueError, "mrope_section"),
    ("Rope.cos_sin-mrope-streams", lambda: ropescale.Rope(128, 1e6, {"mrope_section": [16, 24, 24]}).cos_sin(
        np.zeros((2, 4), np.int64)), ValueError, "position streams"),
    ("Rope.query_scale-nan", lambda: ropescale.Rope(8).query_scale([NAN]), ValueError, "positions"),
    ("packed_positions-not-from-0", lambda: ropescale.packed_positions([2, 5]), ValueError, "cu_seqlens"),
    ("packed_positions-negative-length", lambda: ropescale.packed_positions(lengths=[3, -1]), ValueError,
     "lengths"),
    ("self_extend_positions-group-0", lambda: ropescale.self_extend_positions([0, 1], 0, 4), ValueError,
     "group_size"),
    ("self_extend_positions-float-positions", lambda: ropescale.self_extend_positions([0.5], 2, 4), TypeError,
     "positions"),
]


# Short row ids for the functions whose names are long.
ROW_PREFIX = {"apply": "apply_rotary", "fused": "apply_rotary_positions", "scaled": "scaled_inv_freq",
              "threads": "set_num_threads", "yarn_range": "yarn_correction_range"}


def test_the_table_is_large_and_covers_every_public_function():
    assert len(CASES) >= 80
    assert len({c[0] for c in CASES}) == len(CASES)
    # exact names (the id up to its first '-'), not substrings of other ids
    called = {ROW_PREFIX.get(p, p) for p in (c[0].split("-", 1)[0] for c in CASES)}
    public = {name for name in ropescale.__all__
              if callable(getattr(ropescale, name)) and name not in ("get_num_threads", "RopeAnalysis")}
    assert not public - called, sorted(public - called)
    for name in ("Rope.from_hf", "Rope.extend", "Rope.apply", "Rope.apply_qk", "Rope.cos_sin", "RopeAnalysis.table"):
        assert name in called, name


# Cases that fail today in code this suite does not own; reported to the lead.
# Cases that are known to fail, with the reason (none at present).
KNOWN: dict = {}


@pytest.mark.parametrize("call, exc, word", [
    pytest.param(*c[1:], id=c[0], marks=[pytest.mark.xfail(reason=KNOWN[c[0]], strict=False)] if c[0] in KNOWN else [])
    for c in CASES])
def test_bad_call_raises_and_names_the_argument(call, exc, word):
    before = ropescale.get_num_threads()
    with pytest.raises(exc) as info, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    # a refusal says one thing: no warning about a value it assumed on the way (these leaked from the suite)
    assert not caught, [str(w.message) for w in caught]
    assert type(info.value) is exc, f"{type(info.value).__name__} is a subclass, not {exc.__name__}"
    msg = str(info.value)
    assert re.search(r"(?<![A-Za-z_])" + re.escape(word) + r"(?![A-Za-z])", msg), msg
    # A refused call changes nothing global.
    assert ropescale.get_num_threads() == before


def test_bad_calls_leave_their_inputs_untouched():
    x, c, s = X.copy(), C.copy(), S.copy()
    for call in (lambda: ropescale.apply_rotary(x, c, s, out=RO),
                 lambda: ropescale.apply_rotary(x, c[:2], s[:2]),
                 lambda: ropescale.apply_rotary_positions(x, [0, NAN, 2], TH, out=x)):
        with pytest.raises(ValueError):
            call()
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(c, C)
    np.testing.assert_array_equal(s, S)


@pytest.mark.parametrize("config, word", [({"head_dim": "abc"}, "head_dim"),
                                          ({"head_dim": 64, "rope_theta": "x"}, "rope_theta")])
def test_from_hf_bad_values_name_the_key(config, word):
    with pytest.raises(ValueError, match=word):
        ropescale.Rope.from_hf(config)


# ------------------------------------------------------------- odd but valid

@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("interleaved", [False, True])
def test_empty_batch_and_one_token(dtype, interleaved):
    for lead in [(0,), (0, 3), (3, 0), (1,), (1, 1), ()]:
        x = np.arange(np.prod(lead + (8,)), dtype=np.float64).reshape(lead + (8,)).astype(dtype) / 7
        pos = np.arange(int(np.prod(lead)), dtype=np.int64).reshape(lead) + 5
        c, s = ropescale.cos_sin(pos, TH, dtype=np.float64)
        want = ref.apply_rotary_positions(x, pos, TH, interleaved=interleaved)
        got = ropescale.apply_rotary(x, c.astype(np.float32 if dtype != np.float64 else dtype),
                                     s.astype(np.float32 if dtype != np.float64 else dtype), interleaved=interleaved)
        assert got.dtype == dtype and got.shape == x.shape
        assert_close(got, want, x, dtype)
        got = ropescale.apply_rotary_positions(x, pos, TH, interleaved=interleaved)
        assert got.dtype == dtype and got.shape == x.shape
        assert_close(got, want, x, dtype)


def test_empty_tables_and_zero_features():
    c, s = ropescale.cos_sin(np.zeros((0, 3), int), TH)
    assert c.shape == s.shape == (0, 3, 4)
    c, s = ropescale.cos_sin(7, TH, dtype=np.float64)          # 0-d positions: one row
    assert c.shape == (4,)
    np.testing.assert_allclose(c, np.cos(7 * TH), rtol=0, atol=1e-15)
    x = np.ones((3, 0))
    assert ropescale.apply_rotary(x, np.ones((3, 0)), np.ones((3, 0))).shape == (3, 0)
    # an empty batch still broadcasts: (S, 1, R) tables for (0, S, H, D)
    x = np.ones((0, 3, 2, 8))
    c, s = ropescale.cos_sin(np.arange(3)[:, None], TH, dtype=np.float64)
    assert ropescale.apply_rotary(x, c, s).shape == x.shape
    assert ropescale.periods(np.zeros(0)).shape == (0,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_negative_and_fractional_positions_match_reference(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 2, 8)).astype(dtype)
    for pos in ([-5, -1, 0, 1, -1000, -123456], [-0.5, 2.25, -3.75, 1e-9, -1e-300, 0.0]):
        p = np.asarray(pos)[:, None]
        got = ropescale.apply_rotary_positions(x, p, TH, attention_factor=1.5)
        assert_close(got, ref.apply_rotary_positions(x, p, TH, attention_factor=1.5), x, dtype)
        c, s = ropescale.cos_sin(p, TH, attention_factor=1.5, dtype=dtype)
        assert_close(ropescale.apply_rotary(x, c, s), ref.apply_rotary_positions(x, p, TH, 1.5), x, dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("interleaved", [False, True])
def test_nan_and_inf_in_x_propagate_like_the_reference(dtype, interleaved):
    x = np.linspace(-2, 2, 4 * 12).reshape(4, 12).astype(dtype)
    x[0, 1] = np.nan
    x[2, 4] = np.inf
    x[3, 10] = -np.inf                     # a pass-through feature (2R = 8 < 12)
    pos = np.array([0, 3, 7, 11])
    want = ref.apply_rotary_positions(x, pos, TH, interleaved=interleaved)
    got = ropescale.apply_rotary_positions(x, pos, TH, interleaved=interleaved)
    assert np.isnan(got[0]).sum() == 2     # only the NaN's own pair
    assert np.isneginf(got[3, 10])
    finite_rows = [1]
    assert np.all(np.isfinite(got[finite_rows]))
    # compare where both are defined; NaN exactly where the reference has it
    assert np.array_equal(np.isnan(got.astype(np.float64)), np.isnan(want))
    ok = np.isfinite(want)
    limit = tol(dtype) * 4.0                # |x| <= 2
    assert np.all(np.abs(got.astype(np.float64)[ok] - want[ok]) <= limit)


def test_zero_and_negative_frequencies_are_valid():
    x = np.arange(16.0).reshape(2, 8)
    theta = np.array([1, 0, -1, 0], dtype=np.int64)   # integer inv_freq is accepted
    got = ropescale.apply_rotary_positions(x, [3, -2], theta)
    assert_close(got, ref.apply_rotary_positions(x, [3, -2], theta), x, np.float64)
    assert np.isinf(ropescale.periods([1.0, 0.0])[1])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_reversed_strided_unaligned_and_byteswapped_memory(dtype):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((5, 2, 16)).astype(dtype)
    pos = np.arange(5)[:, None] * 17 - 30
    tdt = np.float64 if dtype == np.float64 else np.float32
    for x in (base[::-1, :, ::-2], base[:, ::-1, 8:], base.transpose(1, 0, 2)[:, ::-1, :8],
              base[..., :8].astype(np.dtype(dtype).newbyteorder(">"))):
        p = pos if x.shape[0] == 5 else pos.T
        for interleaved in (False, True):
            want = ref.apply_rotary_positions(x, p, TH, interleaved=interleaved)
            assert_close(ropescale.apply_rotary_positions(x, p, TH, interleaved=interleaved), want, x, dtype)
            c, s = ropescale.cos_sin(p, TH, dtype=tdt)
            ax = 0 if c.shape[0] > 1 else 1
            c, s = np.flip(np.ascontiguousarray(np.flip(c, ax)), ax), np.ascontiguousarray(s[..., ::-1])[..., ::-1]
            assert c.strides[ax] < 0 and s.strides[-1] < 0      # negative-stride tables
            assert_close(ropescale.apply_rotary(x, c, s, interleaved=interleaved), want, x, dtype)
            # out with negative strides, and in place on a reversed view
            out = np.zeros(x.shape, dtype)[::-1, ::-1]
            ropescale.apply_rotary(x, c, s, interleaved=interleaved, out=out)
            assert_close(out, want, x, dtype)
            if x.dtype.isnative:
                y = np.ascontiguousarray(x[::-1])[::-1]
                ropescale.apply_rotary_positions(y, p, TH, interleaved=interleaved, out=y)
                assert_close(y, want, x, dtype)
    # unaligned x and out (a byte offset into a buffer)
    item = np.dtype(dtype).itemsize
    if item > 1:
        buf = np.zeros(item * 3 * 8 + 1, np.uint8)
        xu = np.frombuffer(buf.data, dtype=dtype, count=24, offset=1).reshape(3, 8)
        xu = np.ndarray((3, 8), dtype=dtype, buffer=buf, offset=1)
        xu[...] = rng.standard_normal((3, 8)).astype(dtype)
        assert not xu.flags.aligned
        ou = np.ndarray((3, 8), dtype=dtype, buffer=np.zeros_like(buf), offset=1)
        want = ref.apply_rotary_positions(xu, [1, 2, 3], TH)
        ropescale.apply_rotary_positions(xu, [1, 2, 3], TH, out=ou)
        assert_close(ou, want, xu, dtype)
        assert_close(ropescale.apply_rotary_positions(xu, [1, 2, 3], TH), want, xu, dtype)


def test_tables_that_alias_x_in_place_use_the_values_before_rotation():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 8))
    c, s = x[::-1, :4], x[1::-1, 4:].repeat(2, axis=0)   # views of x, other rows
    want = ref.apply_rotary(x.copy(), c.copy(), s.copy())
    got = ropescale.apply_rotary(x, c, s, out=x)
    assert got is x
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-15)


def test_many_axes_up_to_numpy_limit():
    nd = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32
    x = np.arange(8.0).reshape((1,) * (nd - 2) + (2, 4))
    pos = np.zeros((1,) * (nd - 2) + (2,))
    pos[..., 1] = 3
    got = ropescale.apply_rotary_positions(x, pos, TH[:2])
    want = ref.apply_rotary_positions(x, pos, TH[:2])
    assert_close(got, want, x, np.float64)


def test_out_of_another_dtype_and_tiny_attention_factor():
    x = np.linspace(-1, 1, 16).reshape(2, 8)
    out = np.zeros((2, 8), np.float16)
    ropescale.apply_rotary_positions(x, [1, 2], TH, out=out)
    assert_close(out, ref.apply_rotary_positions(x, [1, 2], TH), x, np.float16)
    c, s = ropescale.cos_sin([1, 2], TH, attention_factor=1e-300, dtype=np.float64)
    np.testing.assert_allclose(c / 1e-300, np.cos(np.outer([1, 2], TH)), rtol=1e-12)


def test_extreme_but_valid_scalars(threads):
    theta, attn = ropescale.scaled_inv_freq(8, 1e4, DYN, seq_len=2**53)
    assert np.all(np.isfinite(theta)) and attn == 1.0
    theta, _ = ropescale.scaled_inv_freq(8, 1e4, DYN, seq_len=0)
    np.testing.assert_allclose(theta, ref.inv_freq(8, 1e4), rtol=1e-14)
    big = ropescale.inv_freq(8, 1e300)
    np.testing.assert_allclose(big, ref.inv_freq(8, 1e300), rtol=1e-13)
    threads(64)
    assert ropescale.get_num_threads() == 64


def test_angle_at_the_exact_range_end_is_correctly_reduced():
    """|position * inv_freq| == 2**34 radians, the largest angle the exact
    reduction promises: cos and sin there against 50-digit arithmetic."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    pos = [2**34, -2**34, 2**33 + 1]
    c, s = ropescale.cos_sin(pos, [1.0], dtype=np.float64)
    want_c = [float(mpmath.cos(mpmath.mpf(p))) for p in pos]
    want_s = [float(mpmath.sin(mpmath.mpf(p))) for p in pos]
    np.testing.assert_allclose(c[:, 0], want_c, rtol=0, atol=2**-52)
    np.testing.assert_allclose(s[:, 0], want_s, rtol=0, atol=2**-52)
    assert s[0, 0] == -s[1, 0] and c[0, 0] == c[1, 0]


@pytest.mark.parametrize("theta", [1e301, -1.5e300, 1.7976931348623157e308])
def test_huge_frequency_is_refused_or_exact_never_nan(theta):
    """rs_sincos_exact's Veltkamp split overflowed for |theta| > ~1.3e300 (NaN at
    position 0); such frequencies must now be refused, or give cos 1, sin 0."""
    for call in (lambda: ropescale.cos_sin([0, 0.0], [theta], dtype=np.float64),
                 lambda: (ropescale.apply_rotary_positions(np.ones(2), 0, [theta]),)):
        try:
            res = call()
        except ValueError as e:
            assert "inv_freq" in str(e)
            continue
        assert not np.any(np.isnan(res[0]))


# ------------------------------------------------------ sizes and strides

def test_absurd_sizes_are_refused_or_out_of_memory_never_a_crash():
    tiny = np.ones(8, np.float32)
    # 2**48 rows of a zero-strided x: the result alone needs 8 PiB
    huge = np.broadcast_to(tiny, (2**48, 8))
    with pytest.raises(MemoryError):
        ropescale.apply_rotary(huge, np.ones(4, np.float32), np.zeros(4, np.float32))
    with pytest.raises(MemoryError):
        ropescale.apply_rotary_positions(huge, 0, TH)
    with pytest.raises(MemoryError):
        ropescale.cos_sin(np.broadcast_to(0.0, (2**50,)), TH)
    # 2**41 zero-strided features, tables of 2**40 zero-strided pairs and an
    # out that is zero-strided too: refused before the kernel sizes a row buffer.
    x = np.broadcast_to(np.float32(1), (2**41,))
    out = as_strided(np.zeros(1, np.float32), shape=(2**41,), strides=(0,))
    cs = np.broadcast_to(np.float32(1), (2**40,))
    with pytest.raises(ValueError, match="cos"):
        ropescale.apply_rotary(x, cs, cs, out=out)


def test_row_buffer_size_cannot_overflow_into_a_small_allocation():
    """R = 2**59 + 1 zero-strided pairs made the kernel's row buffer R * 32 bytes
    wrap to 32 bytes, then write past it (a segfault).  In a child process, so
    a regression is a failed test, not a dead test run."""
    code = (
        "import numpy as np, ropescale\n"
        "from numpy.lib.stride_tricks import as_strided\n"
        "R = 2**59 + 1\n"
        "x = np.broadcast_to(np.float16(1), (2 * R,))\n"
        "out = as_strided(np.zeros(1, np.float16), shape=(2 * R,), strides=(0,))\n"
        "cs = np.broadcast_to(np.float32(0.5), (R,))\n"
        "try:\n"
        "    ropescale.apply_rotary(x, cs, cs, out=out)\n"
        "except (ValueError, MemoryError) as e:\n"
        "    print('refused', type(e).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "refused" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr[-3000:])


def test_huge_zero_strided_broadcast_over_a_tiny_x():
    """2**20 rows over 24 bytes of x (and tables over 8), into a fresh array."""
    x1 = np.array([1.0, -2.0, 0.5, 3.0, 7.0, 8.0], np.float32)
    x = np.broadcast_to(x1, (2**10, 2**10, 6))
    c, s = ropescale.cos_sin(5, TH[:2], dtype=np.float32)
    got = ropescale.apply_rotary(x, np.broadcast_to(c, (2**10, 2)), np.broadcast_to(s, (2**10, 2)))
    want = ref.apply_rotary_positions(x1, 5, TH[:2])
    for row in (got[0, 0], got[-1, -1], got[2**9, 7]):
        np.testing.assert_allclose(row, want, rtol=0, atol=2e-6 * 8)
    pos = np.broadcast_to(np.array(5.0), (2**10, 2**10))
    got = ropescale.apply_rotary_positions(x, pos, TH[:2], interleaved=True)
    np.testing.assert_allclose(got[-1, -1], ref.apply_rotary_positions(x1, 5, TH[:2], interleaved=True),
                               rtol=0, atol=2e-6 * 8)


@pytest.mark.parametrize("form", ["cached", "fused", "rerotate"])
def test_an_out_whose_elements_share_memory_is_refused_unless_it_is_x(form, threads):
    """Rows written to one zero-strided row of out: which survives depended on the thread count (0.2.0 wrote
    them; in place on such an x is handled, see tests/test_rotary.py).  Refused before anything is written."""
    threads(2)
    x = np.random.default_rng(3).standard_normal((512, 8, 64)).astype(np.float32)   # 1 MiB: two threads
    pos = np.arange(512)[:, None]
    theta = ropescale.inv_freq(64)
    base = np.full(8 * 64, 7, np.float32)
    out = as_strided(base, shape=x.shape, strides=(0, 256, 4))
    c, s = ropescale.cos_sin(pos, theta)
    call = {"cached": lambda: ropescale.apply_rotary(x, c, s, out=out),
            "fused": lambda: ropescale.apply_rotary_positions(x, pos, theta, out=out),
            "rerotate": lambda: ropescale.rerotate(x, pos, pos + 3, theta, out=out)}[form]
    with pytest.raises(ValueError, match="out has elements that share memory"):
        call()
    assert (base == 7).all()


def test_zero_strided_x_with_real_out_and_negative_strided_tables():
    """x broadcast over a batch axis, tables read backwards, result per row."""
    x1 = np.linspace(-3, 3, 8)
    x = np.broadcast_to(x1, (1000, 8))
    pos = np.arange(1000)[::-1]
    c, s = ropescale.cos_sin(pos[::-1], TH, dtype=np.float64)
    got = ropescale.apply_rotary(x, c[::-1], s[::-1])
    want = ref.apply_rotary_positions(x, pos, TH)
    assert_close(got, want, x, np.float64)
    assert_close(ropescale.apply_rotary_positions(x, pos, TH), want, x, np.float64)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_byte_strides_beyond_32_bits_forward_and_backward(dtype):
    """Rows 2**31 + a few bytes apart (in a 4 GiB zeroed buffer whose untouched
    pages are never made resident): offsets need 64-bit arithmetic."""
    item = np.dtype(dtype).itemsize
    step = 2**31 + 16 * item
    buf = np.zeros(2 * step + 32 * item, np.uint8)
    x = np.ndarray((3, 8), dtype=dtype, buffer=buf, strides=(step, 2 * item))
    x[...] = np.arange(24).reshape(3, 8) / 5 - 2
    x0 = x.copy()
    for view, pos in ((x, [0, 70000, -9]), (x[::-1, ::-1], [3, -1, 2**20])):
        want = ref.apply_rotary_positions(view, pos, TH)
        assert_close(ropescale.apply_rotary_positions(view, pos, TH), want, view, dtype)
        c, s = ropescale.cos_sin(pos, TH, dtype=np.float64 if dtype == np.float64 else np.float32)
        out = np.ndarray((3, 8), dtype=dtype, buffer=buf, offset=item, strides=(step, 2 * item))
        if view.strides[0] < 0:
            out = out[::-1, ::-1]
        ropescale.apply_rotary(view, c, s, out=out)
        assert_close(out, want, view, dtype)
        np.testing.assert_array_equal(x, x0)      # interleaved with out, never written
        ropescale.apply_rotary(view, c, s, out=view, inverse=True)
        ropescale.apply_rotary(view, c, s, out=view)
        orig = x0 if view is x else x0[::-1, ::-1]
        assert_close(view, orig.astype(np.float64), orig, dtype)   # inverse, then forward, in place
        x[...] = x0
    del x, out, buf


# ------------------------------------------------ the internal module guards itself

def test_core_refuses_out_of_range_rotated_pairs():
    from ropescale import _core
    for bad in (-3, 5):
        with pytest.raises(ValueError, match="rotated_pairs"):
            _core.scaled_inv_freq(8, 1e4, _core.PROPORTIONAL, rotated_pairs=bad)


def test_core_refuses_absurd_dim():
    from ropescale import _core
    with pytest.raises(ValueError, match="dim"):
        _core.inv_freq(2**32, 1e4)


def test_huge_finite_position_is_named_as_too_large_not_nan():
    with pytest.raises(ValueError, match=r"\|position\| <= 2\*\*52"):
        ropescale.cos_sin(np.array([1e301]), np.array([1e-310]))

