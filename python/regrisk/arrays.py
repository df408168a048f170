"""Array modules: whether an array lives on the host (NumPy) or the GPU (CuPy), bringing it to
the host, and the identity grid that coordinate computations start from.

CuPy is never imported here unless an array already is a CuPy array, so these helpers cost
nothing on a machine without a GPU.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

Array = Any  # numpy.ndarray or cupy.ndarray


def is_cupy(a: Any) -> bool:
    """True when ``a`` is a CuPy object (checked by type, without importing CuPy)."""
    return type(a).__module__.split(".")[0] == "cupy"


def array_module(a: Any) -> ModuleType:
    """``cupy`` for a CuPy array, else ``numpy``."""
    if is_cupy(a):
        import cupy

        return cupy
    return np


def to_numpy(a: Array) -> np.ndarray:
    """``a`` on the host: NumPy arrays as they are, CuPy arrays copied back."""
    if isinstance(a, np.ndarray):
        return a
    if is_cupy(a):
        return a.get()
    return np.asarray(a)


_IDENTITY_CACHE: dict[tuple[str, tuple[int, ...]], Array] = {}
_IDENTITY_CACHE_SIZE = 8  # a run touches two or three grids; a small cache bounds memory


def identity_grid(shape: tuple[int, int, int], xp: ModuleType = np) -> Array:
    """(3, D, H, W) float32 voxel coordinates (channel c = index along axis c), cached per
    shape and array module. Callers must not write into the result."""
    key = (xp.__name__, tuple(int(n) for n in shape))
    grid = _IDENTITY_CACHE.get(key)
    if grid is None:
        axes = [xp.arange(n, dtype=xp.float32) for n in key[1]]
        grid = xp.stack(xp.meshgrid(*axes, indexing="ij"))
        if len(_IDENTITY_CACHE) > _IDENTITY_CACHE_SIZE:
            _IDENTITY_CACHE.clear()
        _IDENTITY_CACHE[key] = grid
    return grid
