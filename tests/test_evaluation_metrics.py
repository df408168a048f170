"""Metrics against hand-computed cases and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from regrisk.evaluation import metrics


def test_hand_computed_aurc() -> None:
    e = np.array([1.0, 2.0, 3.0, 4.0])
    worst = np.array([4.0, 3.0, 2.0, 1.0])  # high uncertainty on the smallest errors
    # Retained (lowest uncertainty first) errors 4,3,2,1 -> means 4, 3.5, 3, 2.5 -> 13/4.
    assert metrics.aurc(e, worst) == pytest.approx(3.25)
    # Oracle: retained 1,2,3,4 -> means 1, 1.5, 2, 2.5 -> 7/4.
    assert metrics.aurc_oracle(e) == pytest.approx(1.75)
    assert metrics.aurc_random(e) == pytest.approx(2.5)
    assert metrics.naurc(e, worst) == pytest.approx((3.25 - 1.75) / (2.5 - 1.75))


def test_perfect_ranking_is_zero_any_monotone_map() -> None:
    rng = np.random.default_rng(0)
    e = rng.gamma(2.0, 1.0, 5000)
    assert metrics.naurc(e, e) == pytest.approx(0.0, abs=1e-12)
    assert metrics.naurc(e, np.exp(0.3 * e) + 7.0) == pytest.approx(0.0, abs=1e-12)


def test_constant_map_scores_exactly_random() -> None:
    e = np.array([5.0, 1.0, 3.0, 0.5, 2.0])
    frac, curve = metrics.sparsification_curve(e, np.zeros_like(e))
    np.testing.assert_allclose(curve, np.full(5, e.mean()))
    np.testing.assert_allclose(frac, np.arange(1, 6) / 5)
    assert metrics.naurc(e, np.ones_like(e)) == pytest.approx(1.0)


def test_ties_resolved_in_expectation_by_brute_force() -> None:
    # Average AURC over every order of the tied voxels equals the tie-aware value.
    import itertools

    e = np.array([3.0, 1.0, 4.0, 1.5, 9.0])
    u = np.array([0.2, 0.2, 0.2, 0.7, 0.1])
    tied = [0, 1, 2]
    totals = []
    for perm in itertools.permutations(range(3)):
        v = u.copy()
        for rank, idx in zip(perm, tied):
            v[idx] = 0.2 + 1e-6 * rank
        totals.append(metrics.aurc(e, v))
    assert metrics.aurc(e, u) == pytest.approx(np.mean(totals))


def test_random_ranking_has_expectation_one() -> None:
    rng = np.random.default_rng(1)
    e = rng.gamma(1.5, 2.0, 400)
    draws = [metrics.naurc(e, rng.random(e.size)) for _ in range(2000)]
    # Standard error of the mean is about 0.006 here; 0.03 is 5 of them.
    assert np.mean(draws) == pytest.approx(1.0, abs=0.03)


def test_pearson_spearman_match_scipy() -> None:
    rng = np.random.default_rng(2)
    for _ in range(5):
        e = rng.standard_normal(300)
        u = 0.5 * e + rng.standard_normal(300)
        u[::7] = u[0]  # ties exercise average ranks
        assert metrics.pearson(e, u) == pytest.approx(stats.pearsonr(e, u)[0], abs=1e-12)
        assert metrics.spearman(e, u) == pytest.approx(stats.spearmanr(e, u)[0], abs=1e-12)


def test_score_bundle_and_validation() -> None:
    rng = np.random.default_rng(3)
    e = rng.random((4, 5, 6))
    u = e + 0.1 * rng.random((4, 5, 6))
    s = metrics.score(e, u)
    assert s.voxels == 120
    assert s.naurc == pytest.approx(metrics.naurc(e, u))
    assert 0.0 <= s.naurc < 0.5
    assert np.isnan(metrics.pearson(e, np.ones_like(e)))
    with pytest.raises(ValueError, match="differ in size"):
        metrics.score(e, u[:2])
    with pytest.raises(ValueError, match="finite"):
        metrics.score(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


def test_curve_subsampling_keeps_endpoints() -> None:
    rng = np.random.default_rng(4)
    e, u = rng.random(1000), rng.random(1000)
    frac, curve = metrics.sparsification_curve(e, u, points=50)
    assert frac[-1] == 1.0 and curve[-1] == pytest.approx(e.mean())
    assert len(frac) <= 50
