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

from .arrays import to_numpy
from .controls import POOL_MM
from .kernels import Bound, Welford
from .strata import Strata
from .errors import InputError
from .variance import pool_covariance, split_half_precision

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

    def finalise(self, M: np.ndarray, perturbations: int,
                 stats: "SampleStatistics") -> tuple[Array, Array]:
        intrinsic = self.intrinsic_sum / np.float32(perturbations)
        if stats.pool_mm:
            return stats._sigma(intrinsic, M), stats.sigma_of(self.outer, M)
        return self.ops.covariance_sigma(intrinsic, M), self.outer.sigma(M)


class SampleStatistics:
    """All accumulators of one run. ``family_counts`` (samples per family) turns on the
    per-family maps for a mixture of two or more families. ``pool_mm`` (FWHM) smooths every
    covariance before its sigma is taken (see :mod:`regrisk.variance`). Two half accumulators,
    fed alternate perturbations of each family, give the map's split-half precision."""

    def __init__(self, grid: tuple[int, int, int], like: Array, xp: Any, *, passes: int = 1,
                 family_counts: dict[str, int] | None = None, ops: Bound | None = None,
                 pool_mm: float = 0.0, strata: list[Any] | None = None, control: bool = False,
                 control_mm: float = POOL_MM, grid_to_mm: np.ndarray | None = None) -> None:
        ops = ops or Bound()
        self.xp, self.passes, self.ops, self.pool_mm = xp, passes, ops, pool_mm
        self.strata = None
        if strata:  # per-family estimators (neyman, control): regrisk.strata
            if passes > 1:
                raise InputError("neyman allocation and control variates take one pass per "
                                 "perturbation (passes > 1 is the nested design)")
            M = np.eye(3) if grid_to_mm is None else grid_to_mm
            self.strata = Strata(strata, grid, like, xp, ops, M, control, control_mm)
            self.nested, self.families = None, {}
            self.per_family = bool(family_counts and len(family_counts) > 1)
            return
        self.all = ops.Welford(grid, like=like)
        self.halves = (ops.Welford(grid, like=like), ops.Welford(grid, like=like))
        self._seen: dict[str, int] = {}
        self.nested = _Nested(grid, like, xp, passes, ops) if passes > 1 else None
        self.families: dict[str, Welford] = {}
        if family_counts and len(family_counts) > 1:
            if any(n * passes < 2 for n in family_counts.values()):
                total = sum(family_counts.values())
                raise InputError(f"per-family maps need >= 2 samples per family; {total} samples "
                                 f"over {len(family_counts)} families is too few")
            self.families = {f: ops.Welford(grid, like=like) for f in family_counts}

    @property
    def count(self) -> int:
        return sum(self.strata.counts()) if self.strata is not None else self.all.count

    def update(self, g: Array, family: str, fields: Array | None = None) -> None:
        """Fold in composed samples g (b, 3, *grid) drawn from ``family`` (``fields``: their
        dense displacements, which a controlled family uses)."""
        if self.strata is not None:
            self.strata.update(g, family, fields)
            return
        self.all.update(g)
        if self.families:
            self.families[family].update(g)
        if self.nested is not None:
            self.nested.update(g, self.xp)
        for j in range(g.shape[0]):  # alternate perturbations (not passes) of each family
            seen = self._seen.get(family, 0)
            self.halves[(seen // self.passes) % 2].update(g[j:j + 1])
            self._seen[family] = seen + 1

    def _sigma(self, cov6: Array, M: np.ndarray, axes: bool = False) -> Array:
        if self.pool_mm:
            cov6 = pool_covariance(cov6, self.pool_mm, np.linalg.norm(M, axis=0))
        return (self.ops.covariance_axis_sigma if axes else self.ops.covariance_sigma)(cov6, M)

    def sigma_of(self, acc: Welford, M: np.ndarray) -> Array:
        """An accumulator's sigma map, pooled when the run pools."""
        return self._sigma(acc.covariance, M) if self.pool_mm else acc.sigma(M)

    def precision(self, M: np.ndarray, region: np.ndarray) -> dict[str, float] | None:
        """Split-half precision of the current map (None until each half has 2 samples)."""
        if self.strata is not None:
            if min(self.strata.counts()) < 2:
                return None
            return self._strata_precision(region)
        if min(h.count for h in self.halves) < 2:
            return None
        return split_half_precision(*(self.sigma_of(h, M) for h in self.halves), region)

    def _strata_precision(self, region: np.ndarray) -> dict[str, float]:
        """The split-half precision of a per-family map. Without pooling every step after the
        families' variances is per voxel, so the mixture is taken on the region's voxels only
        (the same values as on the whole grid, a tenth of the work at 128^3)."""
        strata = self.strata
        if self.pool_mm:
            return split_half_precision(*(strata.sigma(strata.mixture(strata.family_table(h))[1],
                                                       self.pool_mm) for h in (0, 1)), region)
        halves = [strata.sigma(strata.mixture(strata.family_table(h, region))[1], 0.0)
                  for h in (0, 1)]
        return split_half_precision(*halves, np.arange(region.size))

    def family_variances(self, M: np.ndarray, region: np.ndarray) -> list[float] | None:
        """Neyman allocation's scores: each family's sigma^2 (mm^2) averaged over ``region``
        (None before every family has 2 samples)."""
        if self.strata is None or min(self.strata.counts()) < 2:
            return None
        table = self.strata.family_table(voxels=region)  # scores read only the region
        return [float(np.maximum(to_numpy(table[n][1].sum(0)).astype(np.float64), 0).mean())
                for n in self.strata.names]

    def finalise(self, M: np.ndarray) -> GridMaps:
        if self.strata is not None:
            strata, xp = self.strata, self.xp
            table = strata.family_table()
            mean, var = strata.mixture(table)
            var = strata.pooled(var, self.pool_mm)  # once, for sigma and the per-axis maps
            maps = GridMaps(xp.sqrt(var.sum(0)), xp.sqrt(var), mean)
            if self.per_family:
                maps.families = {n: strata.sigma(table[n][1], self.pool_mm) for n in strata.names}
            return maps
        if self.pool_mm:
            cov = self.all.covariance
            maps = GridMaps(self._sigma(cov, M), self._sigma(cov, M, axes=True), self.all.mean)
        else:
            maps = GridMaps(self.all.sigma(M), self.all.axis_sigma(M), self.all.mean)
        if self.nested is not None:
            perturbations = self.all.count // self.passes
            maps.intrinsic, maps.bias_jitter = self.nested.finalise(M, perturbations, self)
        maps.families = {f: self.sigma_of(w, M) for f, w in self.families.items()}
        return maps
