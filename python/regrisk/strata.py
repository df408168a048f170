"""Per-family accumulators: the map as a mixture rebuilt from its families.

Neyman allocation (:mod:`regrisk.allocation`) draws the families in unequal numbers, and the
control variate (:mod:`regrisk.controls`) corrects a dense family's spread with its own
displacement; both need each family's moments apart. Each family keeps two halves fed alternate
perturbations (so the split-half precision compares independent maps); a half holds the
composed samples g and, for a controlled family, the displacements d and the sums g + d, each
in a Welford accumulator. Everything here ends as variances along the world axes, which is what
sigma (their sum) and the per-axis maps read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .allocation import mixture_moments
from .controls import POOL_MM, controlled_variance, known_variance
from .errors import InputError
from .kernels import Bound, Welford, update_controlled
from .perturbations import BSpline
from .variance import pool_covariance

Array = Any


@dataclass
class _Half:
    g: Welford
    d: Welford | None = None      # the family's displacement (controlled families)
    gd: Welford | None = None     # g + d: their cross-covariance, per axis

    def accumulators(self) -> list[Welford]:
        return [a for a in (self.g, self.d, self.gd) if a is not None]


@dataclass
class _Stratum:
    halves: tuple[_Half, _Half]
    known: Array | None = None    # (3, *grid) world-axis variance of d (controlled families)
    seen: int = field(default=0)


class Strata:
    """``families`` (distinct names) on ``grid``; ``control``: dense families carry their
    displacement as a control variate (``known`` variances from their law)."""

    def __init__(self, families: list[Any], grid: tuple[int, int, int], like: Array, xp: Any,
                 ops: Bound, M: np.ndarray, control: bool, control_mm: float = POOL_MM) -> None:
        names = [f.name for f in families]
        if len(set(names)) != len(names):
            raise InputError(f"per-family estimators (neyman, control) need distinct families; "
                             f"{'+'.join(names)} repeats one")
        self.names, self.grid, self.like, self.xp, self.ops = names, grid, like, xp, ops
        self.weights = [1.0 / len(names)] * len(names)
        self.M = np.asarray(M, dtype=np.float64)
        self.control_mm = float(control_mm)
        self.spacing = np.linalg.norm(self.M, axis=0)
        self.strata: dict[str, _Stratum] = {}
        self._scratch: dict[str, _Half] = {}  # merged halves (see _merged)
        for fam in families:
            dense = control and isinstance(fam, BSpline)
            self.strata[fam.name] = _Stratum(
                (self._half(dense), self._half(dense)),
                xp.asarray(known_variance(fam, grid, self.M)) if dense else None)

    def _half(self, dense: bool) -> _Half:
        new = lambda: self.ops.Welford(self.grid, like=self.like)  # noqa: E731
        return _Half(new(), new(), new()) if dense else _Half(new())

    def counts(self) -> list[int]:
        return [sum(h.g.count for h in self.strata[n].halves) for n in self.names]

    def update(self, g: Array, family: str, fields: Array | None) -> None:
        stratum = self.strata[family]
        for j in range(g.shape[0]):
            half = stratum.halves[stratum.seen % 2]
            if half.d is None:
                half.g.update(g[j:j + 1])
            elif fields is None:
                raise InputError(f"family {family}: a controlled family needs its fields")
            else:  # g, d and g + d in one pass
                update_controlled(half.g, half.d, half.gd, g[j:j + 1], fields[j:j + 1])
            stratum.seen += 1

    def _merged(self, name: str) -> _Half:
        """Both halves of a family in one set of accumulators: scratch kept between calls
        (refilled in place, so each call costs no fresh 72 MB of pages at 128^3)."""
        a, b = self.strata[name].halves
        out = self._scratch.get(name)
        if out is None:
            out = self._scratch[name] = self._half(a.d is not None)
        for dst, src_a, src_b in zip(out.accumulators(), a.accumulators(), b.accumulators()):
            dst.clear().merge(src_a).merge(src_b)
        return out

    def _axis_var(self, acc: Welford) -> Array:
        s = acc.axis_sigma(self.M)
        return self.xp.multiply(s, s, out=s)

    def family_moments(self, name: str, half: int | None = None,
                       voxels: Array | None = None) -> tuple[Array, Array, int]:
        """(mean (3, ...) voxels, variance (3, ...) per world axis, count) of one family,
        from every sample or one half; a half of one sample has no variance (zeros).
        ``voxels`` (flat indices): only those voxels, as (3, len(voxels)) arrays; a family
        without a control is then read at those voxels alone (every step is per voxel), a
        controlled one needs its whole grid first (its slope is smoothed across voxels)."""
        stratum = self.strata[name]
        if voxels is not None and stratum.known is None:
            parts = [stratum.halves[half]] if half is not None else list(stratum.halves)
            g = parts[0].g.at(voxels)
            for part in parts[1:]:
                g.merge(part.g.at(voxels))
            return self._moments(g, None, None, None, (3, len(voxels)))
        h = stratum.halves[half] if half is not None else self._merged(name)
        mean, var, n = self._moments(h.g, h.d, h.gd, stratum.known, (3, *self.grid))
        if voxels is None:
            return mean, var, n
        at = self.xp.asarray(voxels)
        return mean.reshape(3, -1)[:, at], var.reshape(3, -1)[:, at], n

    def _moments(self, g: Welford, d: Welford | None, gd: Welford | None, known: Array | None,
                 shape: tuple[int, ...]) -> tuple[Array, Array, int]:
        n = g.count
        if n < 2:
            return g.mean.reshape(shape), self.xp.zeros(shape, dtype=np.float32), n
        var = self._axis_var(g)
        if known is not None:
            var = controlled_variance(var, self._axis_var(d), self._axis_var(gd), known,
                                      self.spacing, self.control_mm)
        return g.mean.reshape(shape), var.reshape(shape), n

    def family_table(self, half: int | None = None,
                     voxels: Array | None = None) -> dict[str, tuple[Array, Array, int]]:
        """:meth:`family_moments` of every family with a sample (in all, or in ``half``),
        over the whole grid or at ``voxels``."""
        totals = self.counts()
        return {name: self.family_moments(name, half, voxels)
                for name, total in zip(self.names, totals)
                if (total if half is None else self.strata[name].halves[half].g.count) > 0}

    def mixture(self, table: dict[str, tuple[Array, Array, int]]) -> tuple[Array, Array]:
        """Mixture (mean voxels, variance per world axis) of the families in ``table`` (a
        family with no sample in a half is left out of that half)."""
        weights = [w for n, w in zip(self.names, self.weights) if n in table]
        means, variances, counts = zip(*(table[n] for n in self.names if n in table))
        return mixture_moments(means, variances, counts, weights, self.M)

    def pooled(self, var3: Array, pool_mm: float) -> Array:
        """Variances pooled when asked; negative ones (sampling noise of the control) clamp at
        0, NaN stays NaN."""
        if pool_mm:
            var3 = pool_covariance(var3, pool_mm, self.spacing)
        return self.xp.maximum(var3, 0)

    def sigma(self, var3: Array, pool_mm: float) -> Array:
        """sigma: the root of the summed (pooled) variances."""
        return self.xp.sqrt(self.pooled(var3, pool_mm).sum(0))


def accumulators(families: list[Any], control: bool) -> int:
    """Welford accumulators a :class:`Strata` holds: per family two halves of one, or of three
    for a controlled family (g, d, g + d)."""
    return sum(2 * (3 if control and isinstance(f, BSpline) else 1) for f in families)
