"""regrisk.ranking against scipy.stats on random inputs, ties included."""

import numpy as np
import pytest
from scipy import stats

from regrisk.ranking import average_ranks, spearman


@pytest.mark.parametrize("seed", range(6))
def test_average_ranks_and_spearman_match_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 5000))
    a = rng.normal(size=n).astype(np.float32)
    b = (a + rng.normal(size=n)).astype(np.float32)
    if seed % 2:  # many ties: a few distinct values, and exact zeros as a background has
        a = np.round(a * 2) / 2
        b[rng.random(n) < 0.3] = 0.0
    np.testing.assert_array_equal(average_ranks(a), stats.rankdata(a))
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_of_a_constant_is_nan() -> None:
    assert np.isnan(spearman(np.ones(10), np.arange(10.0)))
    assert spearman(np.arange(10.0), -np.arange(10.0) ** 3) == pytest.approx(-1.0)
