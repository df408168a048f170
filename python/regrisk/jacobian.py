"""Jacobian determinant of a displacement field's map, in world millimetres.

For a field u on a grid with voxel->world affine (linear part M), the map is
phi(x) = x + u(x) with x and u in mm, and its Jacobian is I + (du/dv) M^-1, du/dv the
derivative along the voxel axes (central differences inside, one-sided on the faces). This is
what ANTs' ``CreateJacobianDeterminantImage`` computes from the same field (the LPS/RAS flip
of u and x leaves the determinant unchanged). det <= 0 marks folding: the map turns inside out.

An output-only computation (once per estimate, not per sample): plain NumPy, in slabs so that
the float64 work arrays stay small on large grids.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_SLAB_VOXELS = 1 << 20  # voxels per slab along the first axis


def determinant(field_mm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """det(I + du/dx) (X, Y, Z) float32 of a (3, X, Y, Z) world-mm field on ``affine``'s grid."""
    u = np.asarray(field_mm)
    n0 = u.shape[1]
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64)[:3, :3])
    step = max(1, _SLAB_VOXELS // max(1, u.shape[2] * u.shape[3]))
    out = np.empty(u.shape[1:], dtype=np.float32)
    for a in range(0, n0, step):
        b = min(n0, a + step)
        lo, hi = max(0, a - 1), min(n0, b + 1)  # one halo slice for the central differences
        slab = u[:, lo:hi].astype(np.float64)
        # grad[c, k] = d u_c / d v_k (voxel axis k); a single-slice axis has no derivative
        grad = np.stack([np.stack(_gradient(slab[c]), 0) for c in range(3)], 0)
        jac = np.einsum("ck...,kj->...cj", grad[:, :, a - lo:a - lo + (b - a)], inv)
        jac += np.eye(3)
        out[a:b] = np.linalg.det(jac)
    return out


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
