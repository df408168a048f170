"""Plain NumPy references of every native kernel in ``regrisk.kernels``, same signatures (less
the kernels' ``threads``).

Written for clarity, not speed: float64 arithmetic, whole-array NumPy, the textbook formulas
(the B-spline field is the full 64-tap tensor product, the affine composition is A p + b - x
as written). The tests compare the native kernels against these on random inputs, and these
against SciPy where SciPy has the operation. NumPy arrays only. Outputs are float32 like the
kernels'; argument checking is minimal (the kernels' own checks are tested separately).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["trilinear", "warp", "compose", "bspline_basis", "bspline_field", "covariance_sigma",
           "covariance_axis_sigma", "Welford", "demons_step", "gaussian_smooth"]


def trilinear(vol: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray,
              mode: str = "fill", fill: float = 0.0) -> np.ndarray:
    """Sample one (D,H,W) volume at voxel coordinates (z, y, x), align-corners, float64.

    "fill": each of the 8 corners outside the volume contributes `fill`; NaN coordinates give
    `fill`. "border": each coordinate is clamped to [0, n-1] first.
    """
    vol = np.asarray(vol, dtype=np.float64)
    coords = [np.asarray(c, dtype=np.float64) for c in (z, y, x)]
    if mode == "border":
        coords = [np.clip(c, 0, n - 1) for c, n in zip(coords, vol.shape)]
    valid = np.ones(coords[0].shape, dtype=bool)
    for c in coords:
        valid &= np.isfinite(c)
    coords = [np.where(valid, c, -10.0) for c in coords]  # far outside: every corner is fill
    base = [np.floor(c) for c in coords]
    frac = [c - b for c, b in zip(coords, base)]
    base = [b.astype(np.int64) for b in base]
    out = np.zeros(coords[0].shape, dtype=np.float64)
    for corner in range(8):
        offs = ((corner >> 2) & 1, (corner >> 1) & 1, corner & 1)
        weight = np.ones_like(out)
        inside = np.ones(out.shape, dtype=bool)
        index = []
        for axis in range(3):
            idx = base[axis] + offs[axis]
            weight *= frac[axis] if offs[axis] else 1.0 - frac[axis]
            inside &= (idx >= 0) & (idx < vol.shape[axis])
            index.append(np.clip(idx, 0, vol.shape[axis] - 1))
        value = vol[index[0], index[1], index[2]]
        if mode != "border":
            value = np.where(inside, value, fill)
        out += weight * value
    if mode == "border":
        out[~valid] = np.nan  # a clamped NaN is still NaN
    return out


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    return list(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))


def _as5(a: np.ndarray) -> np.ndarray:
    return a.reshape((1,) * (5 - a.ndim) + a.shape)


def warp(volume: np.ndarray, displacement: np.ndarray | None = None, *, affine: Any = None,
         shape: Any = None, fill: float = 0.0, mode: str = "fill") -> np.ndarray:
    """Reference of kernels.warp: out(x) = volume(x + u(x)) or volume(A x + b)."""
    vol5 = _as5(np.asarray(volume))
    if displacement is not None:
        disp = np.asarray(displacement, dtype=np.float64)
        disp5 = _as5(disp)
        out_grid = disp5.shape[2:]
        grid = _grid(out_grid)
        coords = [[grid[a] + disp5[b, a] for a in range(3)] for b in range(disp5.shape[0])]
        batched = disp.ndim == 5 or np.ndim(volume) == 5
    else:
        aff = np.asarray(affine, dtype=np.float64)
        batched = aff.ndim == 3 or np.ndim(volume) == 5
        aff = aff.reshape(-1, 3, 4)
        out_grid = tuple(np.shape(volume)[-3:]) if shape is None else tuple(shape)
        grid = _grid(out_grid)
        coords = [[aff[b, a, 0] * grid[0] + aff[b, a, 1] * grid[1] + aff[b, a, 2] * grid[2]
                   + aff[b, a, 3] for a in range(3)] for b in range(aff.shape[0])]
    n = max(vol5.shape[0], len(coords))
    out = np.empty((n, vol5.shape[1]) + tuple(out_grid), dtype=np.float32)
    for b in range(n):
        c = coords[b if len(coords) > 1 else 0]
        v = vol5[b if vol5.shape[0] > 1 else 0]
        for ch in range(vol5.shape[1]):
            out[b, ch] = trilinear(v[ch], *c, mode=mode, fill=fill)
    if batched:
        return out
    return out[0] if np.ndim(volume) == 4 else out[0, 0]


def gridsample_displacement(grid: np.ndarray, volume_shape: tuple[int, ...],
                            align_corners: bool) -> np.ndarray:
    """ONNX GridSample's grid (B, d, h, w, 3), normalised x, y, z, as a float32 displacement
    (B, 3, d, h, w) of a volume of ``volume_shape`` (..., D, H, W) on the output grid: the grid
    becomes voxel positions along (i, j, k), minus the output grid's own coordinates (float32
    steps: kernels.warp_grid forms each position with the same roundings)."""
    grid = np.asarray(grid, dtype=np.float32)
    out_grid = grid.shape[1:4]
    disp = np.empty((grid.shape[0], 3, *out_grid), dtype=np.float32)
    for axis in range(3):  # array axis i, j, k is the grid's z, y, x
        n = float(volume_shape[-3 + axis])
        scale = 0.5 * (n - 1.0) if align_corners else 0.5 * n  # the two conventions
        shape = [1, 1, 1]
        shape[axis] = out_grid[axis]
        shift = np.float32(0.5 * (n - 1.0)) - np.arange(out_grid[axis], dtype=np.float32)
        np.multiply(grid[..., 2 - axis], np.float32(scale), out=disp[:, axis])
        disp[:, axis] += shift.reshape(shape)
    return disp


def gridsample(volume: np.ndarray, grid: np.ndarray, align_corners: bool, mode: str = "fill",
               fill: float = 0.0) -> np.ndarray:
    """Reference of kernels.warp_grid (linear GridSample, zeros padding as "fill")."""
    disp = gridsample_displacement(grid, np.shape(volume), align_corners)
    return warp(np.asarray(volume), disp, mode=mode, fill=fill)


def compose(displacement: np.ndarray, *, affine: Any = None, field: np.ndarray | None = None,
            fill: float = 0.0, mode: str = "border") -> np.ndarray:
    """Reference of kernels.compose: u_g(x) = tau(x + u(x)) - x, with tau(y) = A y + b or
    tau(y) = y + d(y) (d sampled trilinearly)."""
    disp = np.asarray(displacement, dtype=np.float64)
    disp5 = _as5(disp)
    grid = _grid(disp5.shape[2:])
    if affine is not None:
        aff = np.asarray(affine, dtype=np.float64)
        params, other_batched = aff.reshape(-1, 3, 4), aff.ndim == 3

        def tau(a: np.ndarray, y: list[np.ndarray]) -> list[np.ndarray]:
            return [a[r, 0] * y[0] + a[r, 1] * y[1] + a[r, 2] * y[2] + a[r, 3] for r in range(3)]
    else:
        f = np.asarray(field)
        params, other_batched = _as5(f), f.ndim == 5

        def tau(d: np.ndarray, y: list[np.ndarray]) -> list[np.ndarray]:
            return [y[r] + trilinear(d[r], *y, mode=mode, fill=fill) for r in range(3)]
    n = max(disp5.shape[0], params.shape[0])
    out = np.empty((n, 3) + disp5.shape[2:], dtype=np.float32)
    for b in range(n):
        u = disp5[b if disp5.shape[0] > 1 else 0]
        g = tau(params[b if params.shape[0] > 1 else 0], [grid[i] + u[i] for i in range(3)])
        for r in range(3):
            out[b, r] = g[r] - grid[r]
    return out if (disp.ndim == 5 or other_batched) else out[0]


def bspline_basis(n: int, c: int) -> np.ndarray:
    """(n, c) matrix W with field = W @ ctrl along one axis (uniform cubic B-spline)."""
    x = np.arange(n, dtype=np.float64)
    t = x * (c - 3) / (n - 1) + 1.0 if n > 1 else np.ones(1)
    i = np.minimum(np.floor(t), c - 3).astype(np.int64)
    u = t - i
    w = np.stack([(1 - u) ** 3 / 6, (3 * u**3 - 6 * u**2 + 4) / 6,
                  (-3 * u**3 + 3 * u**2 + 3 * u + 1) / 6, u**3 / 6], axis=1)
    mat = np.zeros((n, c))
    for k in range(4):
        mat[np.arange(n), i - 1 + k] += w[:, k]
    return mat


def bspline_field(control: np.ndarray, shape: Any) -> np.ndarray:
    """Reference of kernels.bspline_field: the full tensor product, 64 taps per voxel."""
    ctrl = np.asarray(control, dtype=np.float64)
    c5 = _as5(ctrl)
    wz, wy, wx = (bspline_basis(int(n), c) for n, c in zip(shape, c5.shape[2:]))
    out = np.einsum("zi,yj,xk,bcijk->bczyx", wz, wy, wx, c5).astype(np.float32)
    return out if ctrl.ndim == 5 else out[0]


_UPPER = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))  # xx, xy, xz, yy, yz, zz


def _full_covariance(cov6: np.ndarray) -> np.ndarray:
    """(3, 3, ...) symmetric float64 covariance from its six terms (xx, xy, xz, yy, yz, zz)."""
    c6 = np.asarray(cov6, dtype=np.float64)
    cov = np.empty((3, 3) + c6.shape[1:])
    for k, (r, c) in enumerate(_UPPER):
        cov[r, c] = cov[c, r] = c6[k]
    return cov


def covariance_sigma(cov6: np.ndarray, M: Any) -> np.ndarray:
    """Reference of kernels.covariance_sigma: sqrt(tr(M C M^T)) with C rebuilt as a full
    symmetric 3x3 per voxel from its six terms."""
    m = np.asarray(M, dtype=np.float64)
    trace = np.einsum("ri,ij...,rj->...", m, _full_covariance(cov6), m)
    return np.sqrt(np.maximum(trace, 0)).astype(np.float32)


def covariance_axis_sigma(cov6: np.ndarray, M: Any) -> np.ndarray:
    """Reference of kernels.covariance_axis_sigma: sqrt((M C M^T)_rr) for each row r of M."""
    m = np.asarray(M, dtype=np.float64)
    diag = np.einsum("ri,ij...,rj->r...", m, _full_covariance(cov6), m)
    return np.sqrt(np.maximum(diag, 0)).astype(np.float32)


class Welford:
    """Reference accumulator: float64 Welford one sample at a time, Chan's merge."""

    def __init__(self, shape: Any, like: Any = None) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.count = 0
        self._mean = np.zeros((3,) + self.shape)
        self._m2 = np.zeros((3, 3) + self.shape)

    def update(self, batch: np.ndarray) -> "Welford":
        b5 = _as5(np.asarray(batch, dtype=np.float64))
        for x in b5:
            self.count += 1
            delta = x - self._mean
            self._mean += delta / self.count
            self._m2 += delta[:, None] * (x - self._mean)[None, :]
        return self

    def merge(self, other: "Welford") -> "Welford":
        n = self.count + other.count
        if other.count:
            delta = other._mean - self._mean
            self._m2 += other._m2 + delta[:, None] * delta[None, :] * (self.count * other.count / n)
            self._mean += delta * (other.count / n)
            self.count = n
        return self

    @property
    def mean(self) -> np.ndarray:
        return self._mean.astype(np.float32)

    def _cov33(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError("covariance needs at least 2 samples")
        return self._m2 / (self.count - 1)

    @property
    def covariance(self) -> np.ndarray:
        c = self._cov33()
        return np.stack([c[0, 0], c[0, 1], c[0, 2], c[1, 1], c[1, 2], c[2, 2]]).astype(np.float32)

    def _mapped(self, M: Any) -> np.ndarray:
        m = np.eye(3) if M is None else np.asarray(M, dtype=np.float64)
        # (M S M^T)_rr for every voxel.
        return np.einsum("ri,ij...,rj->r...", m, self._cov33(), m)

    def sigma(self, M: Any = None) -> np.ndarray:
        return np.sqrt(np.maximum(self._mapped(M).sum(axis=0), 0)).astype(np.float32)

    def axis_sigma(self, M: Any = None) -> np.ndarray:
        return np.sqrt(np.maximum(self._mapped(M), 0)).astype(np.float32)


def _central(x: np.ndarray, axis: int) -> np.ndarray:
    """(x[n+1] - x[n-1]) / 2 along ``axis``, zero on its first and last plane."""
    g = np.zeros_like(x)
    inner = [slice(None)] * x.ndim
    hi, lo = list(inner), list(inner)
    inner[axis], hi[axis], lo[axis] = slice(1, -1), slice(2, None), slice(None, -2)
    g[tuple(inner)] = 0.5 * (x[tuple(hi)] - x[tuple(lo)])
    return g


def central_gradient(x: np.ndarray) -> np.ndarray:
    """(B, 3, ...) central differences of a (B, 1, D, H, W) volume along i, j, k, zero on the
    faces (the demons force's gradient; also the native demons' gradient of each level's
    target, computed once per level)."""
    return np.concatenate([_central(x, axis) for axis in (2, 3, 4)], axis=1)


def _replicate_smooth(v: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """sum_q w[q] v[clamp(n + q - R)] along ``axis``."""
    r = len(kernel) // 2
    pad = [(0, 0)] * v.ndim
    pad[axis] = (r, r)
    padded = np.pad(v, pad, mode="edge")
    n = v.shape[axis]
    return sum(w * np.take(padded, np.arange(q, q + n), axis=axis) for q, w in enumerate(kernel))


def demons_step(sw: np.ndarray, t: np.ndarray, gt: np.ndarray, u: np.ndarray, kernel: Any,
                tau: float, alpha: float, eps: float) -> np.ndarray:
    """Reference of kernels.demons_step: G * (u - tau d g / (|g|^2 + alpha d^2 + eps)) with
    d = sw - t, g = (gt + grad sw) / 2; (B, 1, ...) images, (B, 3, ...) fields."""
    sw, t, gt, u = (np.asarray(a, dtype=np.float64) for a in (sw, t, gt, u))
    w = np.asarray(kernel, dtype=np.float64)
    d = sw - t
    g = 0.5 * (gt + central_gradient(sw))
    v = u - tau * d * g / ((g * g).sum(axis=1, keepdims=True) + alpha * d * d + eps)
    return gaussian_smooth(v, w)


def demons_steps(s: np.ndarray, t: np.ndarray, gt: np.ndarray, u: np.ndarray, kernel: Any,
                 steps: int, tau: float, alpha: float, eps: float) -> np.ndarray:
    """Reference of kernels.demons_steps: ``steps`` times u <- demons_step(warp(s, u, border),
    t, gt, u)."""
    u = np.asarray(u, dtype=np.float32)
    for _ in range(steps):
        sw = warp(s, u, mode="border")
        u = demons_step(sw, t, gt, u, kernel, tau, alpha, eps)
    return u


def gaussian_smooth(volume: np.ndarray, kernel: Any) -> np.ndarray:
    """Reference of kernels.gaussian_smooth: ``kernel`` (or one per axis) along axes 2, 3, 4,
    edges replicated."""
    per_axis = kernel if isinstance(kernel, (list, tuple)) and len(kernel) == 3 \
        and np.ndim(kernel[0]) == 1 else [kernel] * 3
    v = np.asarray(volume, dtype=np.float64)
    for axis, k in zip((2, 3, 4), per_axis):
        v = _replicate_smooth(v, np.asarray(k, dtype=np.float64), axis)
    return v.astype(np.float32)


def upsample2(volume: np.ndarray) -> np.ndarray:
    """Reference of kernels.upsample2: (B, C, D, H, W) linear x2 along axes 2, 3, 4 in turn,
    half-pixel centres, edges clamped (ONNX Resize ``half_pixel``, torch ``align_corners=
    False``): out[2m] = .75 x[m] + .25 x[m-1], out[2m+1] = .75 x[m] + .25 x[m+1], in float32."""
    u = np.asarray(volume, dtype=np.float32)
    for axis in (2, 3, 4):
        n = u.shape[axis]
        lo = np.take(u, np.maximum(np.arange(n) - 1, 0), axis=axis)
        hi = np.take(u, np.minimum(np.arange(n) + 1, n - 1), axis=axis)
        even, odd = np.float32(0.75) * u + np.float32(0.25) * lo, np.float32(0.75) * u + np.float32(0.25) * hi
        u = np.stack([even, odd], axis=axis + 1).reshape(
            *u.shape[:axis], 2 * n, *u.shape[axis + 1:])
    return np.ascontiguousarray(u)


def conv3x3x3(volume: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Reference of kernels.conv3x3x3: out[:, o] = bias[o] + the sum over input channels c, then
    taps (a, b, e) in that order, of weight[o, c, a, b, e] times the zero-padded volume shifted
    by (a - 1, b - 1, e - 1), each product added in float32 (padding taps add a product with
    0)."""
    x = np.asarray(volume, dtype=np.float32)
    w = np.asarray(weight, dtype=np.float32)
    B, C, D, H, W = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (1, 1)))
    out = np.empty((B, w.shape[0], D, H, W), np.float32)
    for o in range(w.shape[0]):
        acc = np.full((B, D, H, W), np.float32(bias[o]), np.float32)
        for c in range(C):
            for a in range(3):
                for b in range(3):
                    for e in range(3):
                        acc += w[o, c, a, b, e] * padded[:, c, a:a + D, b:b + H, e:e + W]
        out[:, o] = acc
    return out


def average_pool(volume: np.ndarray, factor: int) -> np.ndarray:
    """Reference of kernels.average_pool: the mean of each factor^3 block of (B, C, D, H, W),
    stride factor, trailing remainders dropped (ONNX AveragePool without padding); summed in
    float32 over the block's offsets in the order i, j, k, then scaled by float32(1 / f^3)."""
    x = np.asarray(volume, dtype=np.float32)
    f = int(factor)
    n = [s // f for s in x.shape[2:]]
    out = np.zeros((*x.shape[:2], *n), np.float32)
    for i in range(f):
        for j in range(f):
            for k in range(f):
                out += x[:, :, i:n[0] * f:f, j:n[1] * f:f, k:n[2] * f:f]
    out *= np.float32(1.0 / f ** 3)
    return out
