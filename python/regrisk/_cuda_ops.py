"""Thin launchers from CuPy arrays to the CUDA kernels in ``regrisk._cuda``.

Internal: ``regrisk.kernels`` validates and normalises the arguments, allocates ``out`` and calls
these for CuPy inputs. Each passes the arrays themselves (the binding reads them through
``__cuda_array_interface__`` and checks them as ``regrisk._core`` checks NumPy arrays), the arrays'
device and CuPy's *current* stream, so the kernel is ordered after whatever CuPy work produced its
inputs and before whatever consumes its output, without copies or synchronisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from . import _cuda
except ImportError as exc:  # built without nvcc, or the extension failed to load
    raise ImportError(
        "regrisk._cuda is not available: this regrisk was built without a CUDA compiler "
        f"(reinstall with nvcc on PATH to get the GPU kernels) [{exc}]"
    ) from exc

import cupy

Array = Any  # cupy.ndarray, float32, C-contiguous


def _launch(*arrays: Array) -> tuple[int, int]:
    """launch = (device ordinal, current stream handle) for arrays that must share one device."""
    device = arrays[0].device.id
    for a in arrays[1:]:
        if a.device.id != device:
            raise ValueError(
                f"CUDA arrays on different devices ({device} and {a.device.id}); "
                "move them to one device first"
            )
    if cupy.cuda.runtime.getDevice() == device:
        return device, cupy.cuda.get_current_stream().ptr
    with cupy.cuda.Device(device):  # CuPy keeps one current stream per device
        return device, cupy.cuda.get_current_stream().ptr


def _small_device_array(x: Array, like: Array) -> Array:
    """A small parameter array (affine matrices) as float32 C-contiguous on ``like``'s device."""
    if isinstance(x, cupy.ndarray) and x.dtype == cupy.float32 and x.flags.c_contiguous:
        return x
    with cupy.cuda.Device(like.device.id):
        return cupy.ascontiguousarray(cupy.asarray(x, dtype=cupy.float32))


def _host_matrix(M: Any) -> np.ndarray:
    """The 3x3 voxel->mm matrix as host float32 (the kernels take it by value)."""
    return np.ascontiguousarray(cupy.asnumpy(M) if isinstance(M, cupy.ndarray) else M, np.float32)


def warp_displacement(volume: Array, disp: Array, out: Array, fill: float, border: bool) -> None:
    """out (B,C,d,h,w) = volume (Bv,C,D,H,W) sampled at x + disp (B,3,d,h,w)."""
    _cuda.warp_displacement(volume, disp, out, fill, border, _launch(volume, disp, out))


def warp_affine(volume: Array, affine: Array, out: Array, fill: float, border: bool) -> None:
    """out (B,C,d,h,w) = volume (Bv,C,D,H,W) sampled at A_b x + t_b, affine (B,3,4)."""
    affine = _small_device_array(affine, volume)
    _cuda.warp_affine(volume, affine, out, fill, border, _launch(volume, affine, out))


def compose_affine(disp: Array, affine: Array, out: Array) -> None:
    """out (B,3,D,H,W) = A (x + u(x)) + t - x; affine (Ba,3,4), Ba in {1, B}."""
    affine = _small_device_array(affine, disp)
    _cuda.compose_affine(disp, affine, out, _launch(disp, affine, out))


def compose_field(disp: Array, field: Array, out: Array, fill: float, border: bool) -> None:
    """out (B,3,D,H,W) = u(x) + f(x + u(x)); field (Bf,3,d,h,w), Bf in {1, B}."""
    _cuda.compose_field(disp, field, out, fill, border, _launch(disp, field, out))


def bspline_field(control: Array, out: Array) -> None:
    """out (B,3,D,H,W) from control points (B,3,cD,cH,cW)."""
    _cuda.bspline_field(control, out, _launch(control, out))


def welford_update(count_before: int, mean: Array, m2: Array, batch: Array) -> None:
    """In place: mean (3,N), m2 (6,N) holding ``count_before`` samples absorb batch (B,3,N)."""
    _cuda.welford_update(count_before, mean, m2, batch, _launch(mean, m2, batch))


def welford_merge(n_a: int, mean_a: Array, m2_a: Array, n_b: int, mean_b: Array,
                  m2_b: Array) -> None:
    """In place into a: (n_a, mean_a, m2_a) absorbs (n_b, mean_b, m2_b) (Chan et al.)."""
    _cuda.welford_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b, _launch(mean_a, m2_a, mean_b, m2_b))


def welford_sigma(count: int, m2: Array, M: Any, out: Array) -> None:
    """out (N,) = sqrt(tr(M Sigma M^T)), Sigma = m2 / (count - 1)."""
    _cuda.welford_sigma(count, m2, _host_matrix(M), out, _launch(m2, out))


def welford_axis_sigma(count: int, m2: Array, M: Any, out: Array) -> None:
    """out (3,N) = sqrt(diag(M Sigma M^T))."""
    _cuda.welford_axis_sigma(count, m2, _host_matrix(M), out, _launch(m2, out))


class SideStream:
    """A private non-blocking CUDA stream ordered against the caller's current CuPy stream.

    Backends that run a foreign runtime (ONNX Runtime, TensorRT) give it this stream:
    ``enter()`` makes it wait for everything already queued on the caller's stream (the inputs),
    ``leave()`` makes the caller's stream wait for everything queued on it (the outputs). The
    ordering is by CUDA events on the device; the host never blocks. A dedicated stream is needed
    because both runtimes treat handle 0 (CuPy's default legacy stream) as "no stream".
    """

    def __init__(self, device_id: int) -> None:
        self.device_id = int(device_id)
        with cupy.cuda.Device(self.device_id):
            self.stream = cupy.cuda.Stream(non_blocking=True)

    @property
    def ptr(self) -> int:
        return int(self.stream.ptr)

    def enter(self) -> Any:
        caller = cupy.cuda.get_current_stream()
        self.stream.wait_event(caller.record())
        return caller

    def leave(self, caller: Any) -> None:
        caller.wait_event(self.stream.record())
