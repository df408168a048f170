"""Rank statistics without scipy.stats, whose import (~0.6 s) would be the largest fixed cost
of an estimate that only needs one Spearman for its split-half precision."""

from __future__ import annotations

import numpy as np


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, tied values sharing their mean rank (scipy's "average")."""
    x = np.asarray(x).ravel()
    order = np.argsort(x, kind="stable")
    s = x[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first index of each run of ties
    ends = np.r_[starts[1:], x.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def pearson_of(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-length vectors; NaN when either is constant."""
    a = np.asarray(a, dtype=np.float64) - np.mean(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64) - np.mean(b, dtype=np.float64)
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float(np.clip((a * b).sum() / denom, -1.0, 1.0)) if denom > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either is constant."""
    return pearson_of(average_ranks(a), average_ranks(b))
