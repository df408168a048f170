"""The native kernels' Python face: one function per operation.

Each function validates and normalises its arguments (ValueError naming the argument for
anything wrong), allocates the output, and dispatches on the array type: NumPy arrays run on
the C++/OpenMP kernels in ``regrisk._core``, CuPy arrays on the CUDA kernels through
``regrisk._cuda_ops``. Conventions (DESIGN.md): float32 C-contiguous arrays, volumes
``(D,H,W)``/``(C,D,H,W)``/``(B,C,D,H,W)``, displacement fields ``(3,D,H,W)``/``(B,3,D,H,W)`` in
voxels of the grid they live on, align-corners trilinear sampling, pull-back maps, 3x4
voxel-space affines ``y = A x + b``.

Small parameter matrices (affines, the 3x3 ``M``) may be any real dtype or nested lists; they
are converted to float32 and must be finite. Large arrays are never converted: a float64 or
non-contiguous volume or field is an error, so that no hidden copy doubles memory.

Threads travel with the call: ``threads`` (on warp, compose, bspline_field, covariance_sigma and
the Welford constructor) is the OpenMP team size of the CPU kernels for that call; None or 0
takes the process default, which ``set_num_threads`` sets. Results never depend on it. CuPy
arrays ignore it.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from numbers import Real
from types import ModuleType
from typing import Any

import numpy as np

from . import _core
from .arrays import is_cupy

__all__ = [
    "warp",
    "compose",
    "bspline_field",
    "covariance_sigma",
    "Welford",
    "demons_step",
    "gaussian_smooth",
    "set_num_threads",
    "get_num_threads",
    "build_info",
]

_MODES = ("fill", "border")
_MAX_THREADS = 4096  # as regrisk._core (csrc/common/parallel.h)


# --- dispatch -------------------------------------------------------------------------------


_is_cupy = is_cupy  # the one array-module test lives in regrisk.arrays


class _CpuKernels:
    """regrisk._core with one thread count bound to every call (0: the process default)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __getattr__(self, name: str) -> Any:
        return functools.partial(getattr(_core, name), threads=self.threads)


def _backend(name: str, a: Any, threads: Any = None) -> tuple[ModuleType, Any]:
    """(array module, kernels) for a NumPy or CuPy array; ValueError for anything else. The CPU
    kernels come with `threads` bound to every call."""
    if isinstance(a, np.ndarray):
        return np, _CpuKernels(_threads(threads))
    if _is_cupy(a) and hasattr(a, "__cuda_array_interface__"):
        import cupy

        from . import _cuda_ops

        _threads(threads)  # checked alike, though the GPU has no use for it
        return cupy, _cuda_ops
    raise ValueError(f"{name}: expected a numpy or cupy array, got {type(a).__name__}")


def _threads(threads: Any) -> int:
    """A call's thread count for regrisk._core: None -> 0 (the default), else 0..4096."""
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) \
            or not 0 <= threads <= _MAX_THREADS:
        raise ValueError(f"threads: expected None or an integer from 0 to {_MAX_THREADS}, got {threads!r}")
    return int(threads)


def _same_backend(name: str, a: Any, xp: ModuleType) -> None:
    if not isinstance(a, xp.ndarray):
        raise ValueError(f"{name}: must be a {xp.__name__} array like the first argument, "
                         f"got {type(a).__module__}.{type(a).__name__}")


# --- argument checks ------------------------------------------------------------------------


def _check_array(name: str, a: Any, xp: ModuleType, ndims: tuple[int, ...]) -> None:
    _same_backend(name, a, xp)
    if a.dtype != np.float32:
        raise ValueError(f"{name}: expected float32, got {a.dtype} (convert with .astype(np.float32))")
    if a.ndim not in ndims:
        allowed = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{name}: expected {allowed} dimensions, got {a.ndim} (shape {tuple(a.shape)})")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous (use np.ascontiguousarray)")
    if a.size == 0:
        raise ValueError(f"{name}: is empty (shape {tuple(a.shape)})")


def _check_field(name: str, a: Any, xp: ModuleType) -> bool:
    """A (3,D,H,W) or (B,3,D,H,W) field; returns whether it is batched."""
    _check_array(name, a, xp, (4, 5))
    batched = a.ndim == 5
    if a.shape[1 if batched else 0] != 3:
        where = "axis 1" if batched else "axis 0"
        raise ValueError(f"{name}: {where} must hold the 3 components, shape is {tuple(a.shape)}")
    return batched


def _as5(a: Any) -> Any:
    return a if a.ndim == 5 else a.reshape((1,) * (5 - a.ndim) + tuple(a.shape))


def _small_matrix(name: str, m: Any, xp: ModuleType, shapes: tuple[tuple[int, ...], ...]) -> Any:
    """A small parameter matrix as a float32 C-contiguous array of `xp`, checked finite."""
    if _is_cupy(m):
        import cupy

        m = cupy.asnumpy(m)
    try:
        host = np.array(m, dtype=np.float32, order="C")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: not a numeric matrix ({exc})") from None
    if not any(host.shape == s for s in shapes):
        want = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{name}: expected shape {want}, got {host.shape}")
    if host.size == 0:
        raise ValueError(f"{name}: is empty")
    if not np.isfinite(host).all():
        raise ValueError(f"{name}: must be finite (contains NaN or inf)")
    return host if xp is np else xp.asarray(host)


def _shape3(name: str, shape: Any) -> tuple[int, int, int]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"{name}: expected 3 integers (D, H, W), got {shape!r}") from None
    if len(dims) != 3 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                                 for n in dims):
        raise ValueError(f"{name}: expected 3 integers (D, H, W), got {shape!r}")
    if min(dims) < 1:
        raise ValueError(f"{name}: every size must be >= 1, got {dims}")
    return int(dims[0]), int(dims[1]), int(dims[2])


def _mode(mode: Any) -> bool:
    if not isinstance(mode, str) or mode not in _MODES:
        raise ValueError(f"mode: expected 'fill' or 'border', got {mode!r}")
    return mode == "border"


def _fill(fill: Any) -> float:
    if isinstance(fill, bool) or not isinstance(fill, Real):
        raise ValueError(f"fill: expected a real number, got {fill!r}")
    value = float(fill)
    # A zero-weight corner still multiplies `fill`; NaN or inf would leak into in-range samples.
    if not math.isfinite(value):
        raise ValueError(f"fill: must be finite, got {value}")
    return value


def _batch(name: str, n: int, other: str, m: int) -> None:
    raise ValueError(f"{name}: batch size {n} does not match {other}'s {m} (must be equal or 1)")


# --- warp -----------------------------------------------------------------------------------


def warp(volume: Any, displacement: Any = None, *, affine: Any = None, shape: Any = None,
         fill: float = 0.0, mode: str = "fill", threads: int | None = None) -> Any:
    """Trilinear pull-back of `volume` onto an output grid.

    volume: (D,H,W), (C,D,H,W) or (B,C,D,H,W). Exactly one of
    displacement: (3,d,h,w) or (B,3,d,h,w) on the output grid; out(x) = volume(x + u(x));
    affine: (3,4) or (B,3,4) voxel-space map; out(x) = volume(A x + b), output grid `shape`
    (default: the volume's). A single volume with B transforms broadcasts; B volumes with one
    transform too. mode "fill": corners outside contribute `fill`; "border": coordinates are
    clamped to [0, n-1]. Returns float32 (B,C,d,h,w) if either input is batched, else the
    volume's rank. threads: CPU team size for this call (None: the default).
    """
    xp, impl = _backend("volume", volume, threads)
    _check_array("volume", volume, xp, (3, 4, 5))
    border, fill_value = _mode(mode), _fill(fill)
    if (displacement is None) == (affine is None):
        raise ValueError("displacement/affine: give exactly one of them")
    vol5 = _as5(volume)
    vb, channels = vol5.shape[0], vol5.shape[1]

    if displacement is not None:
        disp_batched = _check_field("displacement", displacement, xp)
        out_grid = tuple(displacement.shape[-3:])
        if shape is not None and _shape3("shape", shape) != out_grid:
            raise ValueError(f"shape: {tuple(shape)} differs from the displacement grid {out_grid}")
        transform = _as5(displacement)
        tb = transform.shape[0]
        batched = disp_batched or volume.ndim == 5
        op = impl.warp_displacement
    else:
        transform, aff_batched = _affine(affine, xp)
        out_grid = tuple(volume.shape[-3:]) if shape is None else _shape3("shape", shape)
        batched = aff_batched or volume.ndim == 5
        tb = transform.shape[0]
        op = impl.warp_affine

    if vb > 1 and tb == 1:
        # B volumes, one transform: fold the batch into channels (a free reshape).
        src = vol5.reshape((1, vb * channels) + vol5.shape[2:])
        out = xp.empty((1, vb * channels) + out_grid, dtype=np.float32)
        op(src, transform, out, fill_value, border)
        out = out.reshape((vb, channels) + out_grid)
    else:
        if vb != 1 and vb != tb:
            _batch("volume", vb, "displacement" if displacement is not None else "affine", tb)
        out = xp.empty((tb, channels) + out_grid, dtype=np.float32)
        op(vol5, transform, out, fill_value, border)
    if batched:
        return out
    return out[0] if volume.ndim == 4 else out[0, 0]


def warp_grid(volume: Any, grid: Any, *, align_corners: bool, mode: str = "fill",
              fill: float = 0.0, threads: int | None = None) -> Any:
    """ONNX GridSample (linear) of ``volume`` (B or 1, C, D, H, W) at ``grid`` (B, d, h, w, 3),
    normalised x, y, z in [-1, 1] under either ``align_corners`` convention: mode "fill" (zeros
    padding with ``fill``) or "border". Returns float32 (B, C, d, h, w). The grid is read as it
    is (no displacement field is made from it); NumPy only (staged graphs run on the CPU)."""
    _host_only("warp_grid", volume=volume, grid=grid)
    border, fill_value = _mode(mode), _fill(fill)
    if getattr(grid, "ndim", 0) != 5:
        raise ValueError(f"grid: expected (B, d, h, w, 3), got shape {np.shape(grid)}")
    out = np.empty((grid.shape[0], volume.shape[1], *grid.shape[1:4]), dtype=np.float32)
    _core.warp_grid(volume, grid, out, fill_value, border, bool(align_corners), _threads(threads))
    return out


def _affine(affine: Any, xp: ModuleType) -> tuple[Any, bool]:
    """A (3,4) or (B,3,4) affine as float32 (B,3,4) on `xp`, and whether it was batched."""
    try:
        shape = tuple(affine.shape) if _is_cupy(affine) else np.shape(affine)
    except ValueError:  # ragged nested lists; _small_matrix reports it
        shape = ()
    batch = shape[0] if len(shape) == 3 else 0
    aff = _small_matrix("affine", affine, xp, ((3, 4), (batch, 3, 4)))
    return aff.reshape(-1, 3, 4), aff.ndim == 3


# --- compose --------------------------------------------------------------------------------


def _broadcast_disp(xp: ModuleType, disp5: Any, b: int) -> Any:
    # One displacement, B perturbations: rare, so materialise the copies.
    return xp.ascontiguousarray(xp.broadcast_to(disp5, (b,) + tuple(disp5.shape[1:])))


def compose(displacement: Any, *, affine: Any = None, field: Any = None, fill: float = 0.0,
            mode: str = "border", threads: int | None = None) -> Any:
    """The sample's estimate g = tau o phi on the displacement's grid.

    displacement u: (3,D,H,W) or (B,3,D,H,W). Exactly one of
    affine (3,4)/(B,3,4): u_g(x) = A (x + u(x)) + b - x, exact;
    field d (3,d,h,w)/(B,3,d,h,w) on the source grid: u_g(x) = u(x) + d(x + u(x)), trilinear,
    points outside d's grid handled by `mode` ("border" clamps, "fill" uses `fill`).
    Returns float32 (B,3,D,H,W) if either input is batched, else (3,D,H,W). threads: CPU team
    size for this call (None: the default).
    """
    xp, impl = _backend("displacement", displacement, threads)
    disp_batched = _check_field("displacement", displacement, xp)
    border, fill_value = _mode(mode), _fill(fill)
    if (affine is None) == (field is None):
        raise ValueError("affine/field: give exactly one of them")
    disp5 = _as5(displacement)
    b = disp5.shape[0]

    if affine is not None:
        other, other_batched = _affine(affine, xp)
        name = "affine"
    else:
        other_batched = _check_field("field", field, xp)
        other, name = _as5(field), "field"
    ob = other.shape[0]
    if ob != 1 and b != ob:
        if b != 1:
            _batch(name, ob, "displacement", b)
        disp5 = _broadcast_disp(xp, disp5, ob)
        b = ob
    out = xp.empty(disp5.shape, dtype=np.float32)
    if affine is not None:
        impl.compose_affine(disp5, other, out)
    else:
        impl.compose_field(disp5, other, out, fill_value, border)
    return out if (disp_batched or other_batched) else out[0]


# --- B-spline -------------------------------------------------------------------------------


def bspline_field(control: Any, shape: Any, threads: int | None = None) -> Any:
    """Dense (3,*shape) or (B,3,*shape) displacement from a cubic B-spline control grid.

    control: (3,cD,cH,cW) or (B,3,cD,cH,cW), every c >= 4. Per axis with n voxels and c control
    points: spacing s = (n-1)/(c-3), t = x/s + 1, i = min(floor(t), c-3), u = t - i, value =
    sum_k B_k(u) ctrl[i-1+k] (uniform cubic basis); tensor product over the axes. threads: CPU
    team size for this call (None: the default).
    """
    xp, impl = _backend("control", control, threads)
    batched = _check_field("control", control, xp)
    if min(control.shape[-3:]) < 4:
        raise ValueError(f"control: every spatial axis needs >= 4 control points, got {tuple(control.shape[-3:])}")
    grid = _shape3("shape", shape)
    ctrl5 = _as5(control)
    out = xp.empty((ctrl5.shape[0], 3) + grid, dtype=np.float32)
    impl.bspline_field(ctrl5, out)
    return out if batched else out[0]


# --- demons ---------------------------------------------------------------------------------


def demons_step(sw: Any, t: Any, gt: Any, u: Any, kernel: Any, *, tau: float, alpha: float,
                eps: float, threads: int | None = None) -> Any:
    """One step of unrolled ESM demons (the default network's refinement), fused:
    G * (u - tau d g / (|g|^2 + alpha d^2 + eps)) with d = sw - t and g = (gt + grad sw) / 2.

    sw, t: (B,1,D,H,W) the source warped by u, and the target; gt: (B,3,D,H,W) the target's
    central-difference gradient (zero on the faces); u: (B,3,D,H,W) in voxels; kernel: the
    odd-length 1-D Gaussian G applies along i, j and k with replicated borders. NumPy only (the
    staged graphs that use it run on CPU backends).
    """
    _host_only("demons_step", sw=sw, t=t, gt=gt, u=u)
    out = np.empty_like(u)
    _core.demons_step(sw, t, gt, u, _kernel1d(kernel), out, float(tau), float(alpha), float(eps),
                      _threads(threads))
    return out


def demons_steps(s: Any, t: Any, gt: Any, u: Any, kernel: Any, *, steps: int, tau: float,
                 alpha: float, eps: float, threads: int | None = None) -> Any:
    """``steps`` demons steps on one level in one call: u <- demons_step(warp(s, u, border),
    t, gt, u, ...) repeated; returns the last u (a copy of u for 0 steps). Bit for bit the same
    as calling :func:`warp` and :func:`demons_step` in turn. s: (B,1,D,H,W) on u's grid; the
    other arguments as for :func:`demons_step`. NumPy only."""
    _host_only("demons_steps", s=s, t=t, gt=gt, u=u)
    out = np.empty_like(u)
    _core.demons_steps(s, t, gt, u, _kernel1d(kernel), out, int(steps), float(tau), float(alpha),
                       float(eps), _threads(threads))
    return out


def gaussian_smooth(volume: Any, kernel: Any, threads: int | None = None) -> Any:
    """A (B,C,D,H,W) float32 volume filtered along i, j and k by odd-length 1-D kernels
    (``kernel``: one for all three axes, or a sequence of three), borders replicated: a
    separable Gaussian for Gaussian kernels. At most 513 taps. NumPy only."""
    _host_only("gaussian_smooth", volume=volume)
    if isinstance(kernel, (list, tuple)) and len(kernel) == 3 and np.ndim(kernel[0]) == 1:
        ki, kj, kk = (_kernel1d(k) for k in kernel)
    else:
        ki = kj = kk = _kernel1d(kernel)
    out = np.empty_like(volume)
    _core.gaussian_smooth(volume, ki, kj, kk, out, _threads(threads))
    return out



# --- resampling by whole factors ------------------------------------------------------------


def upsample2(volume: Any, threads: int | None = None) -> Any:
    """A (B,C,D,H,W) float32 volume upsampled x2 along i, j and k: linear, half-pixel centres,
    edges clamped (ONNX Resize ``linear`` + ``half_pixel``; torch ``interpolate`` with
    ``align_corners=False``). Returns (B,C,2D,2H,2W). NumPy only."""
    _host_only("upsample2", volume=volume)
    _check_array("volume", volume, np, (5,))
    out = np.empty((*volume.shape[:2], *(2 * n for n in volume.shape[2:])), np.float32)
    _core.upsample2(volume, out, _threads(threads))
    return out


def average_pool(volume: Any, factor: int, threads: int | None = None) -> Any:
    """The mean of each factor^3 block of a (B,C,D,H,W) float32 volume, stride factor, trailing
    remainders dropped (ONNX ``AveragePool`` with a cubic kernel and no padding). NumPy only."""
    _host_only("average_pool", volume=volume)
    _check_array("volume", volume, np, (5,))
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or not 1 <= factor <= 64:
        raise ValueError(f"factor: expected an integer from 1 to 64, got {factor!r}")
    if min(volume.shape[2:]) < factor:
        raise ValueError(f"volume: every spatial axis needs at least {factor} voxels, shape is "
                         f"{tuple(volume.shape)}")
    out = np.empty((*volume.shape[:2], *(n // factor for n in volume.shape[2:])), np.float32)
    _core.average_pool(volume, int(factor), out, _threads(threads))
    return out


def conv3x3x3(volume: Any, weight: Any, bias: Any, threads: int | None = None) -> Any:
    """bias + the 3x3x3 convolution (zero padding 1, stride 1) of a (B,C,D,H,W) float32 volume
    with a (O,C,3,3,3) float32 weight: a network's last layer (ONNX ``Conv``). Returns
    (B,O,D,H,W), equal to reference.conv3x3x3 to float32 rounding (fused multiply-adds where
    the CPU has them) and the same bits whatever the thread count. NumPy only."""
    _host_only("conv3x3x3", volume=volume, weight=weight, bias=bias)
    _check_array("volume", volume, np, (5,))
    _check_array("weight", weight, np, (5,))
    _check_array("bias", bias, np, (1,))
    out = np.empty((volume.shape[0], weight.shape[0], *volume.shape[2:]), np.float32)
    _core.conv3x3x3(volume, weight, bias, out, _threads(threads))
    return out


def _host_only(op: str, **arrays: Any) -> None:
    for name, a in arrays.items():
        if _is_cupy(a):
            raise ValueError(f"{name}: {op} runs on the CPU; got a CuPy array")


def _kernel1d(kernel: Any) -> np.ndarray:
    w = np.ascontiguousarray(np.asarray(kernel, dtype=np.float64), dtype=np.float32)
    if w.ndim != 1 or not np.isfinite(w).all():
        raise ValueError("kernel: expected a finite 1-D array")
    return w


# --- sigma from a covariance ---------------------------------------------------------------


def covariance_sigma(cov6: Any, M: Any, threads: int | None = None) -> Any:
    """(D,H,W) sqrt(tr(M C M^T)) from a (6,D,H,W) covariance C (components xx, xy, xz, yy, yz,
    zz), M the 3x3 voxel->mm matrix; clamped at 0 before the root. Double precision per voxel.

    The native Welford sigma with count 2 computes exactly this: it scales M2 by 1/(count-1),
    which is 1, so C passes through unchanged.
    """
    xp, impl = _backend("cov6", cov6, threads)
    _check_array("cov6", cov6, xp, (4,))
    if cov6.shape[0] != 6:
        raise ValueError(f"cov6: axis 0 must hold the 6 covariance terms, shape is {tuple(cov6.shape)}")
    m = _small_matrix("M", M, np, ((3, 3),))
    out = xp.empty(cov6.shape[1:], dtype=np.float32)
    impl.welford_sigma(2, cov6.reshape(6, -1), m, out.reshape(-1))
    return out


def covariance_axis_sigma(cov6: Any, M: Any, threads: int | None = None) -> Any:
    """(3,D,H,W) sqrt(diag(M C M^T)) from a (6,D,H,W) covariance C: the standard deviation
    along each world axis (the native Welford axis sigma with count 2, as covariance_sigma)."""
    xp, impl = _backend("cov6", cov6, threads)
    _check_array("cov6", cov6, xp, (4,))
    if cov6.shape[0] != 6:
        raise ValueError(f"cov6: axis 0 must hold the 6 covariance terms, shape is {tuple(cov6.shape)}")
    m = _small_matrix("M", M, np, ((3, 3),))
    out = xp.empty((3,) + tuple(cov6.shape[1:]), dtype=np.float32)
    impl.welford_axis_sigma(2, cov6.reshape(6, -1), m, out.reshape(3, -1))
    return out


# --- Welford --------------------------------------------------------------------------------


class Welford:
    """Streaming per-voxel mean and covariance of 3-vector fields on a (D,H,W) grid.

    Memory is 9 float32 values per voxel whatever the number of samples; each batch is folded
    in with double-precision per-voxel arithmetic. `like` picks the array module (a CuPy array
    puts the accumulator on the GPU); `threads` is the CPU team size of every call this
    accumulator makes (None: the process default).
    """

    def __init__(self, shape: Any, like: Any = None, threads: int | None = None) -> None:
        self.shape = _shape3("shape", shape)
        self._xp, self._impl = _backend("like", np.empty(0, np.float32) if like is None else like,
                                        threads)
        n = self.shape[0] * self.shape[1] * self.shape[2]
        self._count, self._stale = 0, False  # stale: cleared, its memory not yet zeroed
        self._mean = self._xp.zeros((3, n), dtype=np.float32)
        self._m2 = self._xp.zeros((6, n), dtype=np.float32)

    @property
    def count(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulator (mean and M2)."""
        return int(self._mean.nbytes + self._m2.nbytes)

    def update(self, batch: Any) -> "Welford":
        """Fold in samples: (B,3,D,H,W), or one (3,D,H,W) field."""
        b3 = self._samples("batch", batch)
        self._zero_if_stale()
        self._impl.welford_update(self._count, self._mean, self._m2, b3)
        self._count += int(b3.shape[0])
        return self

    def _samples(self, name: str, batch: Any) -> Any:
        """A checked batch of fields on this grid, as the (B, 3, N) the kernels take."""
        _check_field(name, batch, self._xp)
        if tuple(batch.shape[-3:]) != self.shape:
            raise ValueError(f"{name}: grid {tuple(batch.shape[-3:])} differs from the accumulator's {self.shape}")
        b5 = _as5(batch)
        return b5.reshape(b5.shape[0], 3, -1)

    def _zero_if_stale(self) -> None:
        if self._stale:
            self._mean.fill(0)
            self._m2.fill(0)
            self._stale = False

    def at(self, voxels: Any) -> "Welford":
        """A copy of the state at some voxels only (flat indices): an accumulator on a
        (len(voxels), 1, 1) grid whose maps are this one's at those voxels, bit for bit."""
        idx = self._xp.asarray(voxels)
        if idx.ndim != 1:
            raise ValueError(f"voxels: expected flat indices (1-D), got shape {tuple(idx.shape)}")
        out = Welford.__new__(Welford)
        out.shape = (int(idx.shape[0]), 1, 1)
        out._xp, out._impl = self._xp, self._impl
        out._count, out._stale = self._count, False
        out._mean = self._xp.ascontiguousarray(self._mean[:, idx])
        out._m2 = self._xp.ascontiguousarray(self._m2[:, idx])
        return out

    def clear(self) -> "Welford":
        """Back to no samples, in the memory it holds: zeroed at the next update (a merge
        into an empty accumulator overwrites it whole and needs no zeros)."""
        self._count, self._stale = 0, True
        return self

    def merge(self, other: "Welford") -> "Welford":
        """Absorb another accumulator (Chan et al.); order of merges does not matter."""
        if not isinstance(other, Welford):
            raise ValueError(f"other: expected a Welford accumulator, got {type(other).__name__}")
        if other.shape != self.shape:
            raise ValueError(f"other: grid {other.shape} differs from this accumulator's {self.shape}")
        if other._xp is not self._xp:
            raise ValueError(f"other: lives on {other._xp.__name__}, this accumulator on {self._xp.__name__}")
        if other._count == 0:
            return self
        if self._count == 0:  # Chan's update from nothing is the other's state: copy it
            self._xp.copyto(self._mean, other._mean)
            self._xp.copyto(self._m2, other._m2)
            self._count, self._stale = other._count, False
            return self
        mean_b, m2_b = other._mean, other._m2
        if other is self:
            mean_b, m2_b = mean_b.copy(), m2_b.copy()
        self._impl.welford_merge(self._count, self._mean, self._m2, other._count, mean_b, m2_b)
        self._count += other._count
        return self

    def _need(self, n: int, what: str) -> None:
        if self._count < n:
            raise ValueError(f"{what} needs at least {n} sample(s), the accumulator has {self._count}")

    @property
    def mean(self) -> Any:
        """(3,D,H,W) float32 copy of the per-voxel mean."""
        self._need(1, "mean")
        return self._mean.reshape((3,) + self.shape).copy()

    @property
    def covariance(self) -> Any:
        """(6,D,H,W) unbiased covariance, components xx, xy, xz, yy, yz, zz."""
        self._need(2, "covariance")
        cov = self._m2 * np.float32(1.0 / (self._count - 1))
        return cov.reshape((6,) + self.shape)

    def sigma(self, M: Any = None) -> Any:
        """(D,H,W) sqrt(tr(M Sigma M^T)); M the 3x3 voxel->mm matrix (identity: voxels)."""
        self._need(2, "sigma")
        m = _small_matrix("M", np.eye(3) if M is None else M, np, ((3, 3),))
        out = self._xp.empty(self.shape, dtype=np.float32)
        self._impl.welford_sigma(self._count, self._m2, m, out.reshape(-1))
        return out

    def axis_sigma(self, M: Any = None) -> Any:
        """(3,D,H,W) sqrt(diag(M Sigma M^T)): the per-axis standard deviation in mm."""
        self._need(2, "axis_sigma")
        m = _small_matrix("M", np.eye(3) if M is None else M, np, ((3, 3),))
        out = self._xp.empty((3,) + self.shape, dtype=np.float32)
        self._impl.welford_axis_sigma(self._count, self._m2, m, out.reshape(3, -1))
        return out

    def __repr__(self) -> str:
        return f"Welford(shape={self.shape}, count={self._count}, on={self._xp.__name__})"


def update_controlled(g_acc: Welford, d_acc: Welford, sum_acc: Welford, g: Any, d: Any) -> None:
    """``g_acc``, ``d_acc`` and ``sum_acc`` absorb the samples ``g``, the displacements ``d``
    and ``g + d`` (float32): a controlled family's three updates (regrisk.strata), bit for bit,
    in one pass over the voxels on the CPU; on CuPy, or with accumulators out of step, the
    three updates themselves."""
    accs = (g_acc, d_acc, sum_acc)
    for name, a in zip(("g_acc", "d_acc", "sum_acc"), accs):
        if not isinstance(a, Welford):
            raise ValueError(f"{name}: expected a Welford accumulator, got {type(a).__name__}")
    if tuple(getattr(d, "shape", ())) != tuple(getattr(g, "shape", (None,))):
        raise ValueError(f"d: shape {tuple(getattr(d, 'shape', ()))} differs from g's "
                         f"{tuple(getattr(g, 'shape', ()))}")
    native = (all(a._xp is np and a.shape == g_acc.shape and a.count == g_acc.count for a in accs)
              and isinstance(g, np.ndarray) and isinstance(d, np.ndarray))
    if not native:
        g_acc.update(g)
        d_acc.update(d)
        sum_acc.update(g + d)
        return
    g3, d3 = g_acc._samples("g", g), g_acc._samples("d", d)
    for a in accs:
        a._zero_if_stale()
    g_acc._impl.welford_update_controlled(  # g_acc's thread count
        g_acc.count, g_acc._mean, g_acc._m2, d_acc._mean, d_acc._m2, sum_acc._mean, sum_acc._m2,
        g3, d3)
    for a in accs:
        a._count += int(g3.shape[0])


# --- threads and build ----------------------------------------------------------------------


def set_num_threads(n: int) -> None:
    """The process default team size of the CPU kernels: what calls with threads=None use
    (results do not depend on it). An explicit call, never a side effect of other regrisk calls;
    prefer the per-call `threads`."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= _MAX_THREADS:
        raise ValueError(f"n: expected an integer from 1 to {_MAX_THREADS}, got {n!r}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """The team size of calls with threads=None (OpenMP's default until set_num_threads)."""
    return int(_core.get_num_threads())


def build_info() -> dict[str, Any]:
    """How the native modules were built.

    Keys: openmp (bool), openmp_version, openmp_max_threads, compiler, flags (baseline ISA and
    optimisation), avx2_clones (hot loops also built for AVX2), cpu_avx2 (this CPU runs them),
    avx512_gathers (warps and compositions sample by AVX-512 gathers here: built in, and this
    CPU has AVX-512F; the same bits as the other build), cplusplus, cuda_module (regrisk._cuda is present; says nothing about a usable GPU).
    """
    info = dict(_core.build_info())
    info["cuda_module"] = importlib.util.find_spec("regrisk._cuda") is not None
    return info


class Bound:
    """The kernels with one thread count bound to every call: what an estimator passes to the
    parts of its pipeline (``Bound(threads).warp(...)`` is ``warp(..., threads=threads)``), so
    a run's team size travels with the run, never through process-wide state."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = None if threads is None else _threads(threads)

    def warp(self, *args: Any, **kw: Any) -> Any:
        return warp(*args, threads=self.threads, **kw)

    def compose(self, *args: Any, **kw: Any) -> Any:
        return compose(*args, threads=self.threads, **kw)

    def warp_grid(self, *args: Any, **kw: Any) -> Any:
        return warp_grid(*args, threads=self.threads, **kw)

    def bspline_field(self, control: Any, shape: Any) -> Any:
        return bspline_field(control, shape, threads=self.threads)

    def covariance_sigma(self, cov6: Any, M: Any) -> Any:
        return covariance_sigma(cov6, M, threads=self.threads)

    def covariance_axis_sigma(self, cov6: Any, M: Any) -> Any:
        return covariance_axis_sigma(cov6, M, threads=self.threads)

    def Welford(self, shape: Any, like: Any = None) -> "Welford":  # noqa: N802 (the class's name)
        return Welford(shape, like=like, threads=self.threads)
