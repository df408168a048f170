"""Reliability, tried as a hostile user would (issue 16): a broken model is never reported as
certain, nothing a user owns is deleted, bombs are refused before they are read, every bad
input gets one line.

The catalogue below runs the real command line in a child process for every case and checks
the same contract each time: exit status 2, exactly one stderr line naming the problem, no
traceback, the output folder absent (or the previous one intact), inputs and model
byte-identical, no temporary folder left; for bombs, the child's peak memory (getrusage of the
child) far below what the header claims.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernel_builders import array_module, array_module_params, to_host
from regrisk import kernels as K
from regrisk import reference as R


@pytest.fixture(params=array_module_params())
def xp(request):
    return array_module(request.param)


# -- (a) the statistics never turn NaN into a number ------------------------------------------


def _broken_samples(rng, shape):
    """(6, 3, *shape) samples; voxel (0,0,0) holds one NaN, voxel (1,1,1) one +Inf, voxel
    (0,1,2) a NaN in the z component only."""
    s = rng.standard_normal((6, 3) + shape).astype(np.float32)
    s[2, 0, 0, 0, 0] = np.nan
    s[4, 1, 1, 1, 1] = np.inf
    s[1, 2, 0, 1, 2] = np.nan
    return s


BROKEN = [(0, 0, 0), (1, 1, 1), (0, 1, 2)]


def test_welford_sigma_keeps_nan_native_and_reference(xp, rng):
    shape = (2, 3, 4)
    samples = _broken_samples(rng, shape)
    M = np.diag([1.5, 1.0, 2.0])
    acc = K.Welford(shape, like=xp.zeros(1, np.float32)).update(xp.asarray(samples))
    ref = R.Welford(shape).update(samples)
    bad = np.zeros(shape, bool)
    for v in BROKEN:
        bad[v] = True
    for got in (to_host(acc.sigma(M)), ref.sigma(M)):
        assert np.isnan(got[bad]).all(), got[bad]  # never 0, never a number
        assert np.isfinite(got[~bad]).all() and (got[~bad] > 0).all()
    for got in (to_host(acc.axis_sigma(M)), ref.axis_sigma(M)):
        assert np.isnan(got[:, bad]).any(axis=0).all()  # every broken voxel shows NaN
        assert np.isfinite(got[:, ~bad]).all()
    # the covariance route (count 2 sigma) too, and native equals reference where finite
    cov = acc.covariance
    for got in (to_host(K.covariance_sigma(cov, M)), R.covariance_sigma(to_host(cov), M)):
        assert np.isnan(got[bad]).all() and np.isfinite(got[~bad]).all()
    np.testing.assert_allclose(to_host(acc.sigma(M))[~bad], ref.sigma(M)[~bad], rtol=1e-5)


def test_negative_rounding_residue_is_still_clamped_to_zero(xp):
    """The clamp that used to swallow NaN still turns a tiny negative variance into 0."""
    cov = np.zeros((6, 1, 1, 2), np.float32)
    cov[0, 0, 0, 0] = -1e-12  # rounding residue
    cov[0, 0, 0, 1] = np.nan
    got = to_host(K.covariance_sigma(xp.asarray(cov), np.eye(3)))
    assert got[0, 0, 0] == 0.0 and np.isnan(got[0, 0, 1])
    ref = R.covariance_sigma(cov, np.eye(3))
    assert ref[0, 0, 0] == 0.0 and np.isnan(ref[0, 0, 1])
