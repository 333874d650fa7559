"""Shared test helpers: one closeness rule with one tolerance table, one threads fixture.

Import the helpers with ``from conftest import assert_close, rel, TOL`` (pytest
puts this directory on ``sys.path``).

With ``ROPESCALE_EXPECT_INSTALLED=1`` (CI, see .ci/run) the session refuses to
start unless ``ropescale`` was imported from an installed copy in
site-packages, so a green run proves the installed wheel, not a checkout.
"""
import os

import numpy as np
import pytest

import ropescale

# Largest error allowed against the float64 reference, relative to the largest
# |x| of the row (a rotation preserves norms, so that is the natural scale):
# float64 computes in float64; float16 and float32 in float32, float16 then
# rounds its result (half an ulp of 2**-10); bfloat16 rounds to 8 bits.
TOL = {
    np.dtype(np.float64): 1e-13,
    np.dtype(np.float32): 2e-6,
    np.dtype(np.float16): 2e-3,
}
BFLOAT16_TOL = 1.6e-2


def tol(dtype) -> float:
    """The tolerance of the table for ``dtype`` (byte order ignored)."""
    dt = np.dtype(dtype)
    if dt.name == "bfloat16":
        return BFLOAT16_TOL
    return TOL[dt.newbyteorder("=")]


def rel(a, b) -> float:
    """Largest relative difference |a - b| / |b| (b == 0 compares absolutely)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def assert_close(got, want, x, dtype=None):
    """|got - want| <= tol(dtype) * max|x| per row, and NaN exactly where ``want`` has NaN.

    ``want`` is the float64 reference, ``x`` the input whose row scale bounds
    the error, ``dtype`` the compute dtype (default: ``got``'s).
    """
    dtype = np.asarray(got).dtype if dtype is None else dtype
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.array_equal(np.isnan(got), np.isnan(want)), "NaN in different places"
    ok = ~np.isnan(want)
    if got.size == 0:
        return
    xs = np.abs(np.asarray(x, dtype=np.float64))
    xs = xs.reshape(1) if xs.ndim == 0 else xs
    # fmax ignores NaN (a NaN in x only spoils its own pair, tested elsewhere)
    scale = np.maximum(np.fmax.reduce(xs, axis=-1, keepdims=True), 1e-300)
    with np.errstate(invalid="ignore"):
        err = np.where(ok, np.abs(got - np.where(ok, want, 0.0)) / scale, 0.0)
    limit = tol(dtype)
    worst = float(np.max(err)) if err.size else 0.0
    assert worst <= limit, f"error {worst:.3g} x max|x| > {limit:g} for {np.dtype(dtype)}"


@pytest.fixture
def threads():
    """Set ropescale's thread count for one test: ``threads(n)``; restored afterwards."""
    prev = ropescale.get_num_threads()

    def set_to(n):
        ropescale.set_num_threads(n)
        return n

    yield set_to
    ropescale.set_num_threads(prev)


def pytest_sessionstart(session):
    if os.environ.get("ROPESCALE_EXPECT_INSTALLED"):
        where = os.path.dirname(os.path.abspath(ropescale.__file__))
        if "site-packages" not in where.split(os.sep):
            raise pytest.UsageError(f"ROPESCALE_EXPECT_INSTALLED: ropescale was imported from {where}, "
                                    "not from an installed copy in site-packages")


def pytest_report_header(config):
    return f"ropescale {ropescale.__version__} from {os.path.dirname(ropescale.__file__)}"
