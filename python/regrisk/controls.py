"""The perturbation's own displacement as a control variate for a dense family's spread.

A B-spline perturbation moves voxel x by d(x); the network partly follows it, and what it fails
to follow shows up in the composed sample g(x). So g and d are correlated voxel by voxel (on the
packaged pair, d explains about half of the B-spline family's spread), and d's variance at every
voxel is known exactly from the family's law: the control values are independent U(-m, m), so
along world axis c, Var(e_c(x)) = m_c^2 / 3 * sum_j W_j(x)^2 with e = M d and W_j the tensor
B-spline weights (:func:`known_variance`). Per world axis c the family's variance is then

    v_c = Var_hat(h_c) + lambda_c (Var(e_c) - Var_hat(e_c)),   h = M g,

the control-variate form: unbiased for any fixed lambda, least noisy near lambda = beta^2 with
beta the regression slope of h_c on e_c. beta is taken from co-moments smoothed by a Gaussian of
``POOL_MM`` FWHM (how far the network follows a perturbation changes slowly across the image;
a per-voxel slope from a dozen draws is itself noise).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .arrays import array_module

Array = Any
POOL_MM = 24.0  # FWHM of the slope smoothing, mm (benchmarks/EVALUATION.md, "Variance reduction")


def sum_sq_weights(grid: tuple[int, int, int], control: tuple[int, int, int]) -> np.ndarray:
    """sum_j W_j(x)^2 over the control points, at every voxel of ``grid`` (separable: the
    product of each axis' sum of squared weights, from the kernel's reference basis)."""
    from .reference import bspline_basis

    a, b, c = ((bspline_basis(n, k) ** 2).sum(1) for n, k in zip(grid, control))
    return a[:, None, None] * b[None, :, None] * c[None, None, :]


def known_variance(family: Any, grid: tuple[int, int, int], M: np.ndarray) -> np.ndarray:
    """(3, *grid) variance of the B-spline family's displacement along each world axis
    (mm^2), from its law (module docstring)."""
    M = np.asarray(M, dtype=np.float64)
    w2 = sum_sq_weights(grid, family.control_shape(grid))
    if family.max.unit == "mm":  # world-frame control vectors, U(-max, max) per component
        per_axis = np.full(3, family.max.value ** 2 / 3.0)
    else:                        # voxel-frame controls, U(-m_a, m_a) along array axis a
        m = np.asarray(family.max.voxels(grid, M), dtype=np.float64)
        per_axis = (M ** 2) @ (m ** 2 / 3.0)
    return (per_axis[:, None, None, None] * w2[None]).astype(np.float32)


def controlled_variance(var_h: Array, var_e: Array, var_sum: Array, known: Array,
                        spacing_mm: np.ndarray, pool_mm: float = POOL_MM) -> Array:
    """(3, ...) per-world-axis variance of a family from the sample variances of h, e and
    h + e along each axis and e's known variance (module docstring)."""
    from .variance import pool_covariance

    xp = array_module(var_h)
    # the arithmetic of 0.5 (var_sum - var_h - var_e), num / den where den > 0, and
    # var_h + beta^2 (known - var_e), in place: each fresh (3, ...) array is new pages to fault in
    cov_he = xp.subtract(var_sum, var_h)
    cov_he -= var_e
    cov_he *= np.float32(0.5)
    num = pool_covariance(cov_he, pool_mm, spacing_mm) if pool_mm else cov_he
    den = pool_covariance(var_e, pool_mm, spacing_mm) if pool_mm else var_e
    ok = den > 0
    beta = xp.divide(num, xp.where(ok, den, np.float32(1)), out=num)
    xp.copyto(beta, np.float32(0), where=~ok)
    beta *= beta
    beta *= xp.subtract(known, var_e)
    return xp.add(var_h, beta, out=beta)
