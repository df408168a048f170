"""Streaming statistics of the composed samples, and the maps they finalise into.

- plain: one Welford accumulator over all samples (mean and covariance per voxel);
- per family: one more accumulator per perturbation family of a mixture (the paper reports
  one map per family);
- nested (M stochastic passes per perturbation): the law of total variance splits the spread
  into the intrinsic part E_tau[Cov_eps] (mean of the per-perturbation covariances) and the bias
  jitter Cov_tau[E_eps] (covariance of the per-perturbation means).

Memory is O(1) in the number of samples: a few accumulators of 9 float32 values per voxel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .kernels import Bound, Welford
from .errors import InputError

Array = Any


@dataclass
class GridMaps:
    """Finalised maps on the model grid (mm, except ``mean``: voxels)."""

    sigma: Array                      # (g0, g1, g2) sqrt(tr(M Sigma M^T))
    axes: Array                       # (3, g0, g1, g2) per world axis
    mean: Array                       # (3, g0, g1, g2) mean composed displacement
    intrinsic: Array | None = None    # nested design only
    bias_jitter: Array | None = None  # nested design only
    families: dict[str, Array] = field(default_factory=dict)


class _Nested:
    """Groups each perturbation's ``passes`` consecutive samples (law of total variance)."""

    def __init__(self, grid: tuple[int, int, int], like: Array, xp: Any, passes: int,
                 ops: Bound) -> None:
        self.grid, self.like, self.passes, self.ops = grid, like, passes, ops
        self.outer = ops.Welford(grid, like=like)
        self.intrinsic_sum = xp.zeros((6, *grid), dtype=np.float32)
        self.inner: Welford | None = None

    def update(self, g: Array, xp: Any) -> None:
        for j in range(g.shape[0]):
            if self.inner is None:
                self.inner = self.ops.Welford(self.grid, like=self.like)
            self.inner.update(g[j:j + 1])
            if self.inner.count == self.passes:
                self.outer.update(xp.ascontiguousarray(self.inner.mean[None]))
                self.intrinsic_sum += self.inner.covariance
                self.inner = None

    def finalise(self, M: np.ndarray, perturbations: int) -> tuple[Array, Array]:
        intrinsic = self.ops.covariance_sigma(self.intrinsic_sum / np.float32(perturbations), M)
        return intrinsic, self.outer.sigma(M)


class SampleStatistics:
    """All accumulators of one run. ``family_counts`` (samples per family) turns on the
    per-family maps for a mixture of two or more families."""

    def __init__(self, grid: tuple[int, int, int], like: Array, xp: Any, *, passes: int = 1,
                 family_counts: dict[str, int] | None = None, ops: Bound | None = None) -> None:
        ops = ops or Bound()
        self.xp, self.passes = xp, passes
        self.samples = 0
        self.all = ops.Welford(grid, like=like)
        self.nested = _Nested(grid, like, xp, passes, ops) if passes > 1 else None
        self.families: dict[str, Welford] = {}
        if family_counts and len(family_counts) > 1:
            if any(n * passes < 2 for n in family_counts.values()):
                total = sum(family_counts.values())
                raise InputError(f"per-family maps need >= 2 samples per family; {total} samples "
                                 f"over {len(family_counts)} families is too few")
            self.families = {f: ops.Welford(grid, like=like) for f in family_counts}

    def update(self, g: Array, family: str) -> None:
        """Fold in composed samples g (b, 3, *grid) drawn from ``family``."""
        self.all.update(g)
        if self.families:
            self.families[family].update(g)
        if self.nested is not None:
            self.nested.update(g, self.xp)

    def finalise(self, M: np.ndarray) -> GridMaps:
        maps = GridMaps(self.all.sigma(M), self.all.axis_sigma(M), self.all.mean)
        if self.nested is not None:
            perturbations = self.all.count // self.passes
            maps.intrinsic, maps.bias_jitter = self.nested.finalise(M, perturbations)
        maps.families = {f: w.sigma(M) for f, w in self.families.items()}
        return maps
