"""Synthetic ground truth: a known transform applied to a real image.

Direction of maps (DESIGN.md: pull-back, phi(x) = x + u(x), S o phi ~= T). A case is built from
one base image ``I`` and a known pull-back ``G`` on I's voxel grid:

    new source  S' = I o G          (S'(y) = I(G(y)), made with the warp kernel)
    target      T  = I

The map the network should predict for the pair (S', T) satisfies S' o phi = T, i.e.
I(G(phi(x))) = I(x) for every x, so phi = G^{-1} and the true displacement is

    u_gt(x) = G^{-1}(x) - x          (voxels of I's grid, on the target grid)

For an affine G (y -> A y + b) the inverse is exact: G^{-1}(x) = A^{-1} (x - b). For a dense G
(y -> y + D(y)) the inverse v = G^{-1} - id solves v(x) = -D(x + v(x)); it is found by
fixed-point iteration (a contraction because every generated field has |grad D| < 1) and
checked by its residual.

Families (the paper's protocol; all parameters are voxel-space on the base grid):
  translation  t_c ~ U(-f, f) * n_c per axis, f = 0.10 (10% of the grid)
  affine       A = diag(s) (I + H) about the grid centre, s_c ~ U(0.8, 1.2), the three upper
               off-diagonal shears of H ~ U(-0.1, 0.1)
  nonlinear    G = G1 o G2, each G_i(y) = y + d_i(y) a cubic B-spline field (bspline_field
               contract); coarse (6 control points per axis) then fine (10), control values
               ~ U(-a, a) * spacing with a = 0.2; a draw that folds (det(I + grad D) <= 0.05
               somewhere) is redrawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import jacobian
from ..arrays import identity_grid
from ..errors import EvaluationError, InputError

KINDS = ("translation", "affine", "nonlinear")


def _ops() -> Any:
    """The kernel module: native kernels when built, else the NumPy reference."""
    try:
        from .. import kernels

        return kernels
    except ImportError:  # before the native core is built
        from .. import reference

        return reference


@dataclass
class GroundTruth:
    """One known transform on a grid of ``shape`` (D, H, W).

    ``affine`` (3, 4) or ``dense`` (3, D, H, W) is the pull-back G applied to the base image to
    make the new source; ``displacement`` is u_gt = G^{-1} - id, the displacement the network
    should predict for (I o G, I), in voxels, float32 (3, D, H, W)."""

    kind: str
    shape: tuple[int, int, int]
    displacement: np.ndarray
    affine: np.ndarray | None = None
    dense: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The new source I o G (trilinear; outside the image is 0)."""
        img = np.ascontiguousarray(image, dtype=np.float32)
        if img.shape != tuple(self.shape):
            raise InputError(f"image shape {img.shape} differs from the ground truth's {self.shape}")
        ops = _ops()
        if self.affine is not None:
            return ops.warp(img, affine=self.affine.astype(np.float32), fill=0.0, mode="fill")
        return ops.warp(img, self.dense, fill=0.0, mode="fill")

    def pullback_points(self, points: np.ndarray) -> np.ndarray:
        """G(y) for voxel coordinates ``points`` (N, 3), exact for affine G, trilinear otherwise."""
        pts = np.asarray(points, dtype=np.float64)
        if self.affine is not None:
            return pts @ self.affine[:, :3].T + self.affine[:, 3]
        from scipy.ndimage import map_coordinates

        d = np.stack([map_coordinates(self.dense[c].astype(np.float64), pts.T, order=1,
                                      mode="nearest") for c in range(3)], axis=1)
        return pts + d


def _affine_inverse_displacement(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    a, b = affine[:, :3].astype(np.float64), affine[:, 3].astype(np.float64)
    inv = np.linalg.inv(a)
    x = identity_grid(shape).astype(np.float64)
    phi = np.einsum("ij,j...->i...", inv, x - b[:, None, None, None])
    return np.ascontiguousarray(phi - x, dtype=np.float32)


def translation(shape: tuple[int, int, int], rng: np.random.Generator,
                fraction: float = 0.10) -> GroundTruth:
    shape = tuple(int(n) for n in shape)
    t = rng.uniform(-fraction, fraction, 3) * (np.array(shape) - 1)
    aff = np.concatenate([np.eye(3), t[:, None]], axis=1)
    disp = np.ascontiguousarray(np.broadcast_to((-t).astype(np.float32)[:, None, None, None],
                                                (3, *shape)))
    return GroundTruth("translation", shape, disp, affine=aff,
                       params={"translation_vox": t.round(4).tolist(), "fraction": fraction})


def affine(shape: tuple[int, int, int], rng: np.random.Generator,
           shear: float = 0.1, scale: tuple[float, float] = (0.8, 1.2)) -> GroundTruth:
    shape = tuple(int(n) for n in shape)
    s = rng.uniform(scale[0], scale[1], 3)
    h = rng.uniform(-shear, shear, 3)
    hmat = np.array([[1.0, h[0], h[1]], [0.0, 1.0, h[2]], [0.0, 0.0, 1.0]])
    a = np.diag(s) @ hmat
    c = (np.array(shape, dtype=np.float64) - 1) / 2
    aff = np.concatenate([a, (c - a @ c)[:, None]], axis=1)  # about the grid centre
    return GroundTruth("affine", shape, _affine_inverse_displacement(aff, shape), affine=aff,
                       params={"scale": s.round(4).tolist(), "shear": h.round(4).tolist()})


def invert_field(d: np.ndarray, iterations: int = 200, tol: float = 1e-4) -> tuple[np.ndarray, float]:
    """v with x + v(x) = G^{-1}(x) for G(y) = y + d(y): v = -d(x + v). Returns (v, residual)
    where residual = max |v(x) + d(x + v(x))| in voxels (0 for an exact inverse)."""
    ops = _ops()
    d = np.ascontiguousarray(d, dtype=np.float32)
    v = -d
    for _ in range(iterations):
        nxt = -ops.warp(d, v, mode="border")
        step = float(np.abs(nxt - v).max())
        v = nxt
        if step < tol:
            break
    residual = float(np.abs(v + ops.warp(d, v, mode="border")).max())
    return np.ascontiguousarray(v, dtype=np.float32), residual


def _min_jacobian(d: np.ndarray) -> float:
    """Smallest det(I + grad d) over the grid (central differences; d in voxels)."""
    return float(jacobian.determinant(d, np.eye(4)).min())


def nonlinear(shape: tuple[int, int, int], rng: np.random.Generator,
              controls: tuple[int, int] = (6, 10), amplitude: float = 0.2,
              attempts: int = 20) -> GroundTruth:
    shape = tuple(int(n) for n in shape)
    ops = _ops()
    amp = amplitude
    for attempt in range(attempts):
        fields = []
        for c in controls:
            cc = [max(4, min(c, n)) for n in shape]
            spacing = (np.array(shape, dtype=np.float64) - 1) / (np.array(cc) - 3)
            ctrl = rng.uniform(-amp, amp, (3, *cc)) * spacing[:, None, None, None]
            fields.append(ops.bspline_field(np.ascontiguousarray(ctrl, dtype=np.float32), shape))
        d1, d2 = fields
        # G = G1 o G2: G(y) = y + d2(y) + d1(y + d2(y)) -- the compose kernel's field rule.
        total = ops.compose(d2, field=d1, mode="border")
        if _min_jacobian(total) > 0.05:
            break
        if attempt % 5 == 4:
            amp *= 0.8  # persistent folding: soften
    else:
        raise EvaluationError(f"could not draw a non-folding nonlinear ground truth on a "
                              f"{shape} grid in {attempts} attempts")
    inv, residual = invert_field(total)
    if residual > 1e-2:
        raise EvaluationError(f"nonlinear ground truth did not invert (residual {residual:.3g} vox)")
    return GroundTruth("nonlinear", shape, inv, dense=np.ascontiguousarray(total, dtype=np.float32),
                       params={"controls": list(controls), "amplitude": amp,
                               "inverse_residual_vox": residual,
                               "max_displacement_vox": float(np.linalg.norm(total, axis=0).max())})


def make(kind: str, shape: tuple[int, int, int], rng: np.random.Generator) -> GroundTruth:
    if kind == "translation":
        return translation(shape, rng)
    if kind == "affine":
        return affine(shape, rng)
    if kind == "nonlinear":
        return nonlinear(shape, rng)
    raise InputError(f"ground truth must be one of {', '.join(KINDS)}, not {kind!r}")


def voxel_to_mm(displacement: np.ndarray, affine4: np.ndarray) -> np.ndarray:
    """World (mm) displacement vectors M u from voxel displacements u, M the affine's 3x3 part.
    Result (3, D, H, W), channel c = world axis c (scanner x, y, z)."""
    m = np.asarray(affine4, dtype=np.float64)[:3, :3]
    return np.einsum("ij,j...->i...", m, displacement.astype(np.float64)).astype(np.float32)
