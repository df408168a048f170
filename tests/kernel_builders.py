"""Shared builders for the kernel tests (test_kernels*.py, test_cuda_kernels.py): random inputs
in the kernels' conventions, the array modules a kernel test runs on, and a stand-in CUDA array
for checking the CUDA binding's argument checks on a machine without a GPU. A helpers module,
not a test file: pytest collects nothing here."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from regrisk import device

CUDA_READY, CUDA_REASON = device.cuda_ready()


def volume(rng, shape, channels=None, batch=None) -> np.ndarray:
    """Uniform values in [-1, 2): (D,H,W), with optional channel and batch axes in front."""
    lead = (() if batch is None else (batch,)) + (() if channels is None else (channels,))
    return rng.uniform(-1, 2, lead + tuple(shape)).astype(np.float32)


def field(rng, shape, scale, batch=None) -> np.ndarray:
    """Gaussian displacements (3,D,H,W) or (B,3,D,H,W) of standard deviation `scale` voxels."""
    lead = () if batch is None else (batch,)
    return (rng.standard_normal(lead + (3,) + tuple(shape)) * scale).astype(np.float32)


def affine(rng, batch=None, jitter=0.2, shift=3.0) -> np.ndarray:
    """Near-identity (3,4) or (B,3,4) voxel affines: A = I + U(-jitter, jitter), t = U(-shift, shift)."""
    lead = () if batch is None else (batch,)
    a = np.broadcast_to(np.eye(3, 4), lead + (3, 4)).copy()
    a[..., :3] += rng.uniform(-jitter, jitter, lead + (3, 3))
    a[..., 3] += rng.uniform(-shift, shift, lead + (3,))
    return a.astype(np.float32)


def array_module_params() -> list[Any]:
    """pytest params for the `xp` fixture: NumPy always, CuPy where the CUDA path can run."""
    no_gpu = pytest.mark.skip(reason=f"CuPy kernels need a CUDA GPU with CuPy and regrisk._cuda: {CUDA_REASON}")
    return [pytest.param("numpy", id="numpy"),
            pytest.param("cupy", id="cupy", marks=() if CUDA_READY else no_gpu)]


def array_module(name: str):
    if name == "numpy":
        return np
    import cupy

    return cupy


def to_host(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.get()


_ADDRESSES = itertools.count(1)


class FakeCudaArray:
    """An object with __cuda_array_interface__ whose memory is never touched: each instance gets
    its own address range, so only the binding's checks see it."""

    def __init__(self, shape, typestr="<f4", strides=None, readonly=False, address=None):
        itemsize = int(typestr[2:])
        self.nbytes = int(np.prod(shape)) * itemsize
        self.ptr = next(_ADDRESSES) << 32 if address is None else address
        self.__cuda_array_interface__ = {
            "shape": tuple(shape), "typestr": typestr, "data": (self.ptr, readonly),
            "strides": strides, "version": 3,
        }
