"""The B-spline displacement as a control variate (regrisk.controls, issue 13)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from regrisk import Estimator, kernels
from regrisk import perturbations as P
from regrisk.controls import controlled_variance, known_variance, sum_sq_weights
from builders import reliability


@pytest.mark.parametrize("grid, control", [((17, 9, 30), (4, 6, 12)), ((24, 20, 16), (10, 10, 10))])
def test_sum_of_squared_weights_matches_the_kernel(grid, control):
    """The kernel is linear in its control values and its weights sum to 1 along each axis,
    so a control grid of ones on one plane j (along axis a) gives that axis' weight b_j(x_a):
    summing their squares over j, axis by axis, is sum_j W_j(x)^2 from the kernel itself."""
    expected = np.ones(grid)
    for a in range(3):
        s = np.zeros(grid[a])
        for j in range(control[a]):
            c = np.zeros((3, *control), np.float32)
            index = [slice(None)] * 3
            index[a] = j
            c[(0, *index)] = 1.0
            f = np.moveaxis(kernels.bspline_field(c, grid)[0], a, 0).reshape(grid[a], -1)
            s += f[:, 0].astype(np.float64) ** 2
        shape = [1, 1, 1]
        shape[a] = grid[a]
        expected = expected * s.reshape(shape)
    np.testing.assert_allclose(sum_sq_weights(grid, control), expected, rtol=1e-5)


@pytest.mark.parametrize("spec", ["bspline(count=6,max=3)", "bspline(count=5,max=4mm)"])
def test_known_variance_is_the_variance_of_drawn_fields(spec):
    """The family's own draws (4000 fields), each axis' world displacement's sample variance,
    against the formula; oblique voxels so that voxel and mm magnitudes differ."""
    grid = (12, 10, 14)
    M = np.array([[1.5, 0.2, 0.0], [0.0, 1.0, 0.3], [0.1, 0.0, 2.0]])
    fam = P.parse(spec).families[0]
    block = fam.from_uniform(np.random.default_rng(0).random((4000, fam.dims(grid))), grid, M)
    d = np.asarray(kernels.bspline_field(block.control, grid), np.float64)
    world = np.einsum("wi,nixyz->nwxyz", M, d)
    measured = world.var(0)
    predicted = known_variance(fam, grid, M)
    # 4000 draws of a near-uniform sum: relative standard error ~ sqrt(1.2 / 4000) ~ 1.7%
    np.testing.assert_allclose(measured.mean((1, 2, 3)), predicted.mean((1, 2, 3)), rtol=0.03)
    assert np.abs(measured / predicted - 1).max() < 0.12


@pytest.mark.parametrize("pool_mm", [0.0, 8.0])
def test_the_control_variate_is_unbiased_and_less_noisy(pool_mm):
    """h = beta e + r per voxel, e with known variance: over 100,000 voxel-trials of n = 10
    draws the controlled variance averages to the truth beta^2 Var(e) + Var(r). With the
    slope pooled over neighbours (as the engine does) it is close to beta, and the estimate
    keeps only the noise of Var_hat(r) + 2 beta Cov_hat(e, r): the beta^2 Var_hat(e) part of
    the plain sample variance's noise is gone (that spread, computed here from the same
    draws with the true beta, is what the estimate's spread must match)."""
    rng = np.random.default_rng(5)
    n, grid = 10, (40, 50, 50)
    beta, ve, vr = 0.6, 2.0, 0.3
    e = rng.uniform(-1, 1, (n, 3, *grid)) * np.sqrt(3 * ve)
    h = beta * e + rng.standard_normal((n, 3, *grid)) * np.sqrt(vr)
    var = lambda x: x.var(0, ddof=1).astype(np.float32)  # noqa: E731
    got = controlled_variance(var(h), var(e), var(h + e), np.full((3, *grid), ve, np.float32),
                              np.ones(3), pool_mm=pool_mm)
    truth = beta ** 2 * ve + vr
    assert abs(got.mean() / truth - 1) < 0.02
    if pool_mm:
        r = h - beta * e
        cov_er = ((e - e.mean(0)) * (r - r.mean(0))).sum(0) / (n - 1)
        left = var(r) + 2 * beta * cov_er
        assert abs(got.std() / left.std() - 1) < 0.1
        assert got.std() < 0.9 * var(h).std()


def _still(s, t):
    """A network that never moves anything: composed back, each sample is its perturbation's
    own displacement, so the spread is exactly the family's known variance."""
    return np.zeros((s.shape[0], 3, *s.shape[2:]), np.float32)


def test_on_a_network_with_a_known_map_the_control_variate_is_exact():
    grid = (16, 18, 20)
    M = np.diag([1.5, 1.0, 2.0])
    aff = np.eye(4)
    aff[:3, :3] = M
    g = np.random.default_rng(2)
    S = gaussian_filter(g.random(grid), 2).astype(np.float32)
    spec = "bspline(count=6,max=2)"
    truth = np.sqrt(known_variance(P.parse(spec).families[0], grid, M).sum(0))
    est = Estimator(_still)
    kw = dict(samples=8, seed=1, perturbation=spec)
    plain = est.estimate((S, aff), (S, aff), variance_reduction="none", **kw).grid_uncertainty
    ctrl = est.estimate((S, aff), (S, aff), variance_reduction="control", **kw).grid_uncertainty
    assert np.abs(ctrl / truth - 1).max() < 0.02
    assert np.abs(plain / truth - 1).max() > 0.2  # 8 draws alone are far from it


def test_controlled_precision_tracks_how_well_two_independent_maps_agree():
    estimated, measured = reliability(16, "neyman+control",
                                      "bspline(count=6,max=2)+translation(max=0.3)")
    assert abs(estimated - measured) < 0.15, (estimated, measured)
