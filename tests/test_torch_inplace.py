"""``out=`` a torch tensor behaves as torch's own in-place operations, and torch's view bits are honoured.

Properties over dtypes, entry points, shapes and in-place/not:

* the version counter moves, so autograd refuses a backward through an
  earlier use of the overwritten values (as after ``y.mul_(2)``);
* an inference tensor is refused outside ``torch.inference_mode()`` and
  left as it was (torch: "Inplace update to inference tensor outside
  InferenceMode"), and accepted inside it;
* a tensor with the negative bit (``z.conj().imag``, ``torch._neg_view``) is
  read as the values it shows, and written as such when it is ``out``.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings, strategies as st  # noqa: E402

import ropescale  # noqa: E402

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
THETA = ropescale.inv_freq(8)


def _call(entry, x, out=None):
    pos = torch.arange(x.shape[0])[:, None]
    if entry == "tables":
        c, s = ropescale.cos_sin(pos, THETA, attention_factor=1.1)
        return ropescale.apply_rotary(x, c, s, out=out)
    return ropescale.apply_rotary_positions(x, pos, THETA, attention_factor=1.1, out=out)


CASES = st.tuples(st.sampled_from(DTYPES), st.sampled_from(["tables", "positions"]), st.integers(1, 5),
                  st.integers(1, 3), st.booleans())


def _x(dtype, s, h, seed):
    return torch.randn(s, h, 8, generator=torch.Generator().manual_seed(seed)).to(dtype)


class TestOutLikeTorchInPlace:
    @settings(max_examples=40, deadline=None)
    @given(CASES, st.integers(0, 2**16))
    def test_the_version_counter_moves_and_autograd_notices(self, case, seed):
        dtype, entry, s, h, in_place = case
        x = _x(dtype, s, h, seed)
        out = x if in_place else torch.zeros_like(x)
        w = torch.ones_like(out, requires_grad=True)
        loss = (w * out).sum()  # saves out for the backward
        before = out._version
        _call(entry, x, out=out)
        assert out._version > before
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()

    @settings(max_examples=40, deadline=None)
    @given(CASES, st.integers(0, 2**16))
    def test_an_inference_tensor_is_written_only_inside_inference_mode(self, case, seed):
        dtype, entry, s, h, in_place = case
        with torch.inference_mode():
            x = _x(dtype, s, h, seed)
            out = x if in_place else torch.zeros_like(x)
        kept = out.clone()
        want = _call(entry, x.clone())
        with pytest.raises(ValueError, match="out is an inference tensor"):
            _call(entry, x, out=out)
        assert torch.equal(out, kept)
        with torch.inference_mode():
            _call(entry, x, out=out)
        assert torch.equal(out, want)


class TestNegativeBit:
    @staticmethod
    def _neg_view(t):
        return torch._neg_view(-t)  # shows t's values, stores -t

    @settings(max_examples=40, deadline=None)
    @given(CASES, st.integers(0, 2**16))
    def test_a_negative_view_is_read_and_written_as_the_values_it_shows(self, case, seed):
        dtype, entry, s, h, _ = case
        x = _x(dtype, s, h, seed)
        nx = self._neg_view(x)
        assert nx.is_neg() and torch.equal(nx, x)
        want = _call(entry, x)
        assert torch.equal(_call(entry, nx), want)
        out = self._neg_view(torch.zeros_like(x))
        assert out.is_neg()
        _call(entry, x, out=out)
        assert torch.equal(out, want)

    @pytest.mark.parametrize("cdtype", [torch.complex64, torch.complex128])
    def test_the_imaginary_part_of_a_conjugate(self, cdtype):
        z = torch.randn(4, 2, 8, dtype=cdtype)
        im = z.conj().imag
        assert im.is_neg()
        want = _call("tables", im.resolve_neg().clone())
        assert torch.equal(_call("tables", im), want)
        import ropescale.torch as rt
        got = rt.apply_rotary_positions(im, torch.arange(4)[:, None], THETA, attention_factor=1.1)
        assert torch.equal(got, _call("positions", im.resolve_neg().clone()))
        r = im.clone().requires_grad_()  # and through autograd
        assert torch.equal(rt.apply_rotary_positions(im, torch.arange(4)[:, None], THETA, attention_factor=1.1),
                           rt.apply_rotary_positions(r, torch.arange(4)[:, None], THETA, attention_factor=1.1).detach())
