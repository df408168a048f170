"""How well two images, or a field and its reverse, agree, voxel by voxel: the measures behind
the calibration's cues (:mod:`.cues` applies them to an estimate with a calibration's settings).

- :func:`local_ncc`: local normalised cross-correlation in a Gaussian window;
- :func:`residual_flow`: the misalignment left between two images, in mm (one damped
  Lucas-Kanade step);
- :func:`inverse_consistency`: |u_f(x) + u_b(x + u_f(x))| in mm.
"""

from __future__ import annotations

import numpy as np

Window = float | tuple[float, ...]  # Gaussian sigma in voxels: one, or one per axis


def local_ncc(a: np.ndarray, b: np.ndarray, window: Window) -> np.ndarray:
    """Local normalised cross-correlation with a Gaussian window of ``window`` voxels (one
    sigma, or one per axis)."""
    from scipy import ndimage  # here, not at import: the CLI's parser imports this module

    a = a.astype(np.float64)
    b = b.astype(np.float64)
    g = lambda v: ndimage.gaussian_filter(v, window, mode="nearest")  # noqa: E731
    ma, mb = g(a), g(b)
    va = np.maximum(g(a * a) - ma * ma, 0.0)
    vb = np.maximum(g(b * b) - mb * mb, 0.0)
    cov = g(a * b) - ma * mb
    # a floor relative to the image's variance: flat background gives 0 correlation, not 0/0
    eps = 1e-4 * max(float(a.var()), float(b.var()), 1e-12)
    return (cov / np.sqrt(va * vb + eps * eps)).astype(np.float32)


def residual_flow(warped: np.ndarray, target: np.ndarray, affine: np.ndarray,
                  window: Window, damping: float) -> np.ndarray:
    """|d| in mm, d the damped Lucas-Kanade shift that best explains ``warped - target`` from
    the mean of both images' gradients within a Gaussian window of ``window`` voxels (with the
    mean gradient, one step is exact for a locally quadratic image). The damping is ``damping``
    times the mean trace of the structure tensor over the image, so flat regions read as no
    evidence (0), not as an arbitrary shift."""
    from scipy import ndimage

    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    w = warped.astype(np.float32)
    t = target.astype(np.float32)
    g = [(a + b) / np.float32(2.0 * h) for a, b, h in zip(np.gradient(w), np.gradient(t), spacing)]
    smooth = lambda v: ndimage.gaussian_filter(v, window, mode="nearest").astype(np.float64)  # noqa: E731
    diff = w - t
    (xx, xy, xz), (yy, yz), (zz,) = [[smooth(g[i] * g[j]) for j in range(i, 3)] for i in range(3)]
    rhs = [smooth(gi * diff) for gi in g]
    lam = damping * float((xx + yy + zz).mean()) + 1e-12
    xx, yy, zz = xx + lam, yy + lam, zz + lam
    # the symmetric 3x3 system solved by its adjugate, voxel by voxel
    cxx, cxy, cxz = yy * zz - yz * yz, xz * yz - xy * zz, xy * yz - xz * yy
    cyy, cyz, czz = xx * zz - xz * xz, xy * xz - xx * yz, xx * yy - xy * xy
    det = xx * cxx + xy * cxy + xz * cxz
    dx = cxx * rhs[0] + cxy * rhs[1] + cxz * rhs[2]
    dy = cxy * rhs[0] + cyy * rhs[1] + cyz * rhs[2]
    dz = cxz * rhs[0] + cyz * rhs[1] + czz * rhs[2]
    return (np.sqrt(dx * dx + dy * dy + dz * dz) / det).astype(np.float32)


def inverse_consistency(forward_mm: np.ndarray, target_affine: np.ndarray,
                        backward_mm: np.ndarray, source_affine: np.ndarray) -> np.ndarray:
    """|u_f(x) + u_b(x + u_f(x))| in mm: ``forward_mm`` (3, ...) RAS mm on the target grid,
    ``backward_mm`` the reversed pass's field on the source grid (grids may differ)."""
    from scipy import ndimage

    shape = forward_mm.shape[1:]
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = target_affine[:3, :3] @ idx + target_affine[:3, 3:4] + forward_mm.reshape(3, -1)
    inv = np.linalg.inv(source_affine)
    src_vox = inv[:3, :3] @ world + inv[:3, 3:4]
    back = np.stack([ndimage.map_coordinates(backward_mm[c].astype(np.float32), src_vox, order=1,
                                             mode="nearest") for c in range(3)])
    loop = forward_mm.reshape(3, -1) + back
    return np.linalg.norm(loop, axis=0).reshape(shape).astype(np.float32)
