"""Agreement between an uncertainty map and the true registration error.

All functions take flat (or any-shape, flattened here) arrays of the voxels inside the region of
interest: ``error`` the true error per voxel, ``uncertainty`` the map under test.

Sparsification (AURC): voxels are removed in order of decreasing uncertainty; after removing
all but ``k`` voxels the curve value is the mean true error of the ``k`` retained ones, plotted
against the fraction retained ``k / N``. AURC is the area under that curve with one step per
voxel, ``(1/N) * sum_k mean_k``. Tied uncertainties are removed in random order *in
expectation*: inside a tied group the retained error grows linearly, so a constant map scores
exactly like a random one. The random-order AURC is its expectation, the mean error (every
random subset has the global mean in expectation), and the oracle removes by true error.
``nAURC = (AURC - AURC_oracle) / (AURC_random - AURC_oracle)``: 0 is the oracle, 1 is random.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError


def _pair(error: np.ndarray, uncertainty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(error, dtype=np.float64).ravel()
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    if e.shape != u.shape:
        raise InputError(f"error and uncertainty differ in size ({e.size} vs {u.size})")
    if e.size < 2:
        raise InputError("need at least 2 voxels to compare error and uncertainty")
    if not (np.isfinite(e).all() and np.isfinite(u).all()):
        raise InputError("error and uncertainty must be finite")
    return e, u


def pearson(error: np.ndarray, uncertainty: np.ndarray) -> float:
    """Pearson correlation; NaN when either input is constant (undefined)."""
    from ..ranking import pearson_of

    return pearson_of(*_pair(error, uncertainty))


def spearman(error: np.ndarray, uncertainty: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from ..ranking import average_ranks

    e, u = _pair(error, uncertainty)
    return pearson(average_ranks(e), average_ranks(u))


def _retained_sums(error: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Cumulative error of the k lowest-score voxels, k = 1..N, ties resolved in expectation."""
    order = np.argsort(score, kind="stable")
    s = score[order]
    e = error[order]
    n = e.size
    # Tied groups: [start, end) runs of equal score in sorted order.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], n]
    group_sum = np.add.reduceat(e, starts)
    group_len = ends - starts
    before = np.r_[0.0, np.cumsum(group_sum)[:-1]]  # error of all groups before each group
    gid = np.repeat(np.arange(starts.size), group_len)
    k = np.arange(1, n + 1)
    # Inside a group a random order retains, in expectation, the group mean per voxel.
    return before[gid] + (k - starts[gid]) * (group_sum / group_len)[gid]


def sparsification_curve(
    error: np.ndarray, uncertainty: np.ndarray, points: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(fraction retained, mean error of the retained voxels), fraction ascending to 1.

    ``points`` subsamples the N-step curve to about that many points (for plots)."""
    e, u = _pair(error, uncertainty)
    n = e.size
    k = np.arange(1, n + 1)
    curve = _retained_sums(e, u) / k
    frac = k / n
    if points is not None and points < n:
        idx = np.unique(np.linspace(0, n - 1, points).round().astype(np.int64))
        frac, curve = frac[idx], curve[idx]
    return frac, curve


def aurc(error: np.ndarray, uncertainty: np.ndarray) -> float:
    """Area under the sparsification curve, one step of width 1/N per voxel."""
    e, u = _pair(error, uncertainty)
    k = np.arange(1, e.size + 1)
    return float(np.mean(_retained_sums(e, u) / k))


def aurc_oracle(error: np.ndarray) -> float:
    e = np.asarray(error, dtype=np.float64).ravel()
    return aurc(e, e)


def aurc_random(error: np.ndarray) -> float:
    """Expected AURC of a uniformly random removal order: the mean error."""
    return float(np.asarray(error, dtype=np.float64).mean())


def naurc(error: np.ndarray, uncertainty: np.ndarray) -> float:
    """(AURC - oracle) / (random - oracle); NaN when the error is constant (no ranking exists)."""
    e, u = _pair(error, uncertainty)
    oracle = aurc(e, e)
    rand = aurc_random(e)
    if rand - oracle <= 1e-12 * max(abs(rand), 1e-30):
        return float("nan")
    return float((aurc(e, u) - oracle) / (rand - oracle))


@dataclass
class Scores:
    pearson: float
    spearman: float
    aurc: float
    aurc_oracle: float
    aurc_random: float
    naurc: float
    voxels: int
    mean_error: float
    mean_uncertainty: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def score(error: np.ndarray, uncertainty: np.ndarray) -> Scores:
    """Every metric of one uncertainty map against one error map (same voxels)."""
    e, u = _pair(error, uncertainty)
    a, o, r = aurc(e, u), aurc(e, e), aurc_random(e)
    na = float("nan") if r - o <= 1e-12 * max(abs(r), 1e-30) else (a - o) / (r - o)
    return Scores(
        pearson=pearson(e, u), spearman=spearman(e, u), aurc=a, aurc_oracle=o, aurc_random=r,
        naurc=float(na), voxels=int(e.size), mean_error=float(e.mean()),
        mean_uncertainty=float(u.mean()),
    )
