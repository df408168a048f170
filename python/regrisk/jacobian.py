"""Jacobian determinant of a displacement field's map, in world millimetres.

For a field u on a grid with voxel->world affine (linear part M), the map is
phi(x) = x + u(x) with x and u in mm, and its Jacobian is I + (du/dv) M^-1, du/dv the
derivative along the voxel axes (central differences inside, one-sided on the faces). This is
what ANTs' ``CreateJacobianDeterminantImage`` computes from the same field (the LPS/RAS flip
of u and x leaves the determinant unchanged). It equals det(M + du/dv) / det(M), which is how it
is computed. det <= 0 marks folding: the map turns inside out.

An output-only computation (once per estimate, not per sample): plain NumPy, in slabs so that
the work arrays stay small on large grids.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_SLAB_VOXELS = 1 << 20  # voxels per slab along the first axis


def determinant(field_mm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """det(I + du/dx) (X, Y, Z) float32 of a (3, X, Y, Z) world-mm field on ``affine``'s grid."""
    u = np.asarray(field_mm, dtype=np.float32)
    n0 = u.shape[1]
    M = np.asarray(affine, dtype=np.float64)[:3, :3]
    # I + G M^-1 = (M + G) M^-1 with G = du/dv: so det = det(M + G) / det(M), no matrix product
    scale = 1.0 / np.linalg.det(M)
    step = max(1, _SLAB_VOXELS // max(1, u.shape[2] * u.shape[3]))
    out = np.empty(u.shape[1:], dtype=np.float32)
    for a in range(0, n0, step):
        b = min(n0, a + step)
        lo, hi = max(0, a - 1), min(n0, b + 1)  # one halo slice for the central differences
        keep = slice(a - lo, a - lo + (b - a))
        # m[c][k] = M[c, k] + d u_c / d v_k (v_k: voxel axis k)
        m = [[g[keep] + np.float32(M[c, k]) for k, g in enumerate(_gradient(u[c, lo:hi]))]
             for c in range(3)]
        out[a:b] = _det3(m) * np.float32(scale)
    return out


def _det3(m: list[list[np.ndarray]]) -> np.ndarray:
    """Element-wise determinant of a 3x3 matrix of arrays (cofactors along the first row)."""
    return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))


def _gradient(volume: np.ndarray) -> list[np.ndarray]:
    return [np.gradient(volume, axis=k) if volume.shape[k] > 1 else np.zeros_like(volume)
            for k in range(3)]


def folding(det: np.ndarray, region: np.ndarray) -> dict[str, Any]:
    """What ``summary.json`` records: folding fraction (det <= 0) and range in ``region``."""
    inside = det[region]
    folded = int(np.count_nonzero(inside <= 0))
    return {"folding_fraction": folded / inside.size if inside.size else None,
            "folding_voxels": folded, "region_voxels": int(inside.size),
            "min": float(inside.min()) if inside.size else None,
            "max": float(inside.max()) if inside.size else None}
