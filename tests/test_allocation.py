"""Neyman allocation across a mixture's families (regrisk.allocation, issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from regrisk import perturbations as P
from regrisk.allocation import PILOT, allocate, mixture_moments
from regrisk.errors import RegriskError

def test_pilot_comes_first_then_draws_follow_weight_times_score():
    assert allocate(16, [0.25] * 4, None, [0] * 4) == [4, 4, 4, 4]
    assert allocate(8, [0.25] * 4, None, [0] * 4) == [PILOT] * 4
    assert allocate(5, [0.25] * 4, None, [0] * 4) == [2, 2, 1, 0]  # the pilot, in order
    scores = [1.0, 1.0, 1.0, 97.0]
    got = allocate(1000, [0.25] * 4, scores, [2] * 4)
    assert sum(got) == 1000 and min(got) >= 0
    # running totals against n_f = total * w_f s_f / sum(w s), computed here directly
    totals = np.add(got, 2)
    ideal = 1008 * np.array(scores) / sum(scores)
    assert np.all(np.abs(totals - ideal) <= 2.0), (totals, ideal)


def test_a_family_over_its_share_keeps_its_draws_and_gets_none():
    got = allocate(10, [0.5, 0.5], [1.0, 1.0], [30, 2])
    assert got == [0, 10]
    assert allocate(3, [0.5, 0.5], [0.0, 0.0], [2, 2]) in ([2, 1], [1, 2])  # no signal: weights


def _normal_family(rng, n, mean, chol, voxels):
    """(n, 3, voxels) draws of N(mean, chol chol^T): each voxel an independent trial."""
    z = rng.standard_normal((n, 3, voxels))
    return mean[None, :, None] + np.einsum("ij,njv->niv", chol, z)


def test_the_mixture_variance_is_unbiased_for_any_allocation():
    """Each voxel is one independent trial of the estimator: its average over 200,000 trials
    is the true mixture variance along each world axis, diag(M Sigma M^T) with
    Sigma = sum_f w_f [C_f + (mu_f - mu)(mu_f - mu)^T], within Monte Carlo error; the same
    estimator without the 1 - (1 - w_f)/n_f factor is visibly biased upward (so this test can
    tell the two apart)."""
    rng = np.random.default_rng(3)
    V = 200_000
    M = np.array([[1.2, 0.3, 0.0], [0.0, 0.9, 0.2], [0.1, 0.0, 1.1]])
    means = [np.array([0.0, 1.0, -1.0]), np.array([2.0, 0.0, 0.0]), np.array([0.0, 0.0, 3.0])]
    chols = [np.diag([1.0, 0.5, 0.2]), np.array([[2.0, 0, 0], [1.0, 1.0, 0], [0, 0.3, 0.5]]),
             0.1 * np.eye(3)]
    counts, w = [2, 7, 3], [0.25, 0.5, 0.25]
    mus, variances = [], []
    for mean, chol, n in zip(means, chols, counts):
        x = _normal_family(rng, n, mean, chol, V)
        mus.append(x.mean(0).astype(np.float32))
        h = np.einsum("ci,niv->ncv", M, x)  # world frame
        variances.append(h.var(0, ddof=1).astype(np.float32))
    mu_true = sum(wf * m for wf, m in zip(w, means))
    sigma = sum(wf * (c @ c.T + np.outer(m - mu_true, m - mu_true))
                for wf, m, c in zip(w, means, chols))
    truth = np.diag(M @ sigma @ M.T)
    mu, var = mixture_moments(mus, variances, counts, w, M)
    np.testing.assert_allclose(mu.mean(1), mu_true, atol=0.02)
    se = var.std(1) / np.sqrt(V)
    assert np.all(np.abs(var.mean(1) - truth) < 5 * se + 1e-3), (var.mean(1), truth)
    naive = mixture_moments(mus, variances, [10**9] * 3, w, M)[1]  # factor 1: no correction
    assert np.abs(naive.mean(1) - truth).max() > 10 * se.max()


def test_equal_counts_draw_exactly_the_round_robin():
    pert = P.parse("paper")
    grid, M = (20, 22, 18), np.diag([1.0, 1.2, 0.9])
    a = pert.draw(12, grid, M, np.random.default_rng(4)).sample_order()
    b = pert.draw(12, grid, M, np.random.default_rng(4), counts=[3, 3, 3, 3]).sample_order()
    assert a.families == b.families
    np.testing.assert_array_equal(a.affine, b.affine)
    for ca, cb in zip(a.control, b.control):
        assert (ca is None and cb is None) or np.array_equal(ca, cb)
    assert sum(c is not None for c in a.control) == 3


def test_counts_number_the_samples_round_robin_and_are_checked():
    pert = P.parse("scale+translation")
    draws = pert.draw(6, (10, 10, 10), np.eye(3), np.random.default_rng(0), counts=[1, 5])
    assert draws.family_counts() == {"scale": 1, "translation": 5}
    assert sorted(np.concatenate([b.index for b in draws.blocks]).tolist()) == list(range(6))
    assert draws.blocks[0].index.tolist() == [0]
    with pytest.raises(RegriskError, match="summing to 6"):
        pert.draw(6, (10, 10, 10), np.eye(3), np.random.default_rng(0), counts=[1, 4])
    with pytest.raises(RegriskError, match="2 counts"):
        pert.draw(6, (10, 10, 10), np.eye(3), np.random.default_rng(0), counts=[6])
