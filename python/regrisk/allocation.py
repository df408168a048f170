"""Neyman allocation: the samples of a mixture spent where the map's noise comes from.

The ``paper`` mixture gives each of its four families a quarter of the weight, and the plain
estimator draws them in that proportion. But the families' spreads differ by orders of
magnitude (on the packaged pair the B-spline family's per-voxel variance is about 30 times the
scale family's and 100 times the translation's), so a K = 16 map spends 12 passes refining the
quarter of the map that is nearly noise-free and estimates the part that dominates it from 4.

Stratified sampling with Neyman allocation keeps the estimand and moves the passes: family f
(weight w_f) gets n_f proportional to w_f times the spread of its squared deviations, which for
a per-voxel variance is proportional to the variance itself (``score``: its mean over the
target's foreground, from a pilot of 2 draws per family). The map is then the mixture
covariance rebuilt from per-family accumulators,

    Sigma = sum_f w_f [ C_f (1 - (1 - w_f) / n_f) + (mu_f - mu)(mu_f - mu)^T ],  mu = sum_f w_f mu_f,

(kept as its diagonal along the world axes, which is what sigma and the per-axis maps read),

which is unbiased for the mixture covariance whatever the n_f (>= 2): the factor on C_f removes
the spread the sample means add to the between-family term (E|mu_f - mu|^2 exceeds its limit by
sum_g w_g (1 - w_g) C_g / n_g, weighted as above).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .arrays import array_module

Array = Any
PILOT = 2  # draws per family before the first allocation (a covariance needs 2)


def allocate(n: int, weights: Sequence[float], scores: Sequence[float] | None,
             drawn: Sequence[int]) -> list[int]:
    """How many of the next ``n`` draws each family gets: first up to PILOT per family (in
    order), then the rest so that the running totals approach n_f proportional to
    w_f * score_f (largest remainders; without scores, proportional to the weights)."""
    have = [int(d) for d in drawn]
    new = [0] * len(have)
    for f in range(len(have)):
        new[f] = min(max(0, PILOT - have[f]), n - sum(new))
    left = n - sum(new)
    if left <= 0:
        return new
    w = np.asarray(weights, float)
    need = w if scores is None else w * np.maximum(np.asarray(scores, float), 0.0)
    if not np.all(np.isfinite(need)) or need.sum() <= 0:
        need = w
    now = np.asarray(have, float) + new
    extra = np.maximum(need / need.sum() * (now.sum() + left) - now, 0.0)
    share = extra / extra.sum() * left if extra.sum() > 0 else w / w.sum() * left
    add = np.floor(share).astype(int)
    for f in np.argsort(-(share - add), kind="stable")[: left - int(add.sum())]:
        add[f] += 1
    return [int(a + b) for a, b in zip(new, add)]


def mixture_moments(means: Sequence[Array], variances: Sequence[Array], counts: Sequence[int],
                    weights: Sequence[float], M: np.ndarray) -> tuple[Array, Array]:
    """(mean (3, ...) in voxels, variance (3, ...) along each world axis) of the mixture from
    its families' sample means (voxels), unbiased per-world-axis variances and sample counts;
    M the voxel -> mm matrix (module docstring)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu = sum(np.float32(wf) * m for wf, m in zip(w, means))
    M32 = np.asarray(M, dtype=np.float32)
    xp = array_module(mu)
    buf, prod = xp.empty_like(mu[0]), xp.empty_like(mu[0])  # reused: no fresh pages per term
    var = None
    for wf, m, v, n in zip(w, means, variances, counts):
        dm = m - mu
        term = np.float32(wf * (1.0 - (1.0 - wf) / n)) * v
        for c in range(3):  # += wf (M (mu_f - mu))_c^2, summed in the order of the rows
            xp.multiply(dm[0], M32[c, 0], out=buf)
            buf += xp.multiply(dm[1], M32[c, 1], out=prod)
            buf += xp.multiply(dm[2], M32[c, 2], out=prod)
            xp.square(buf, out=buf)
            buf *= np.float32(wf)
            term[c] += buf
        var = term if var is None else xp.add(var, term, out=var)
    return mu, var
