"""Native image grid <-> model grid, as voxel-space affines applied with ``kernels.warp``.

A :class:`GridMap` holds the pull-back y = A x + b from model-grid voxel x to native voxel y.
Both card methods keep the native voxel axes (no reorientation):

- ``stretch``: the whole image is resized to the grid shape with align-corners, corner voxel
  centres on corner voxel centres (uniGradICON): A = diag((n - 1) / (g - 1)), b = 0.
- ``reslice``: a grid of ``spacing`` mm centred on the image centre, padded with zeros or
  cropped to the grid shape: A = diag(spacing / native_spacing), b = c_n - A c_g.

The model grid's voxel->world matrix is ``native_affine @ [[A, b], [0, 1]]``; its 3x3 linear
part M converts model-grid voxel displacements and covariances to mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .arrays import identity_grid
from .card import ModelCard

Array = Any


@dataclass
class GridMap:
    native_shape: tuple[int, int, int]
    grid_shape: tuple[int, int, int]
    native_affine: np.ndarray        # (4, 4) native voxel -> mm
    A: np.ndarray                    # (3, 3) model voxel -> native voxel, linear part
    b: np.ndarray                    # (3,)
    method: str

    @property
    def pullback(self) -> np.ndarray:
        """(3, 4) model voxel -> native voxel (to sample a native volume onto the grid)."""
        return np.concatenate([self.A, self.b[:, None]], axis=1).astype(np.float32)

    @property
    def pushforward(self) -> np.ndarray:
        """(3, 4) native voxel -> model voxel (to sample a model-grid volume back)."""
        Ainv = np.linalg.inv(self.A)
        return np.concatenate([Ainv, (-Ainv @ self.b)[:, None]], axis=1).astype(np.float32)

    @property
    def grid_affine(self) -> np.ndarray:
        """(4, 4) model voxel -> world mm."""
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.A, self.b
        return self.native_affine @ T

    @property
    def to_mm(self) -> np.ndarray:
        """(3, 3) model voxel displacement -> mm (world axes)."""
        return self.grid_affine[:3, :3]

    @property
    def fill_mode(self) -> str:
        # stretch covers the native grid exactly (clamp absorbs rounding); reslice pads with 0
        return "border" if self.method == "stretch" else "fill"

    @property
    def is_identity(self) -> bool:
        """The model grid is the native grid (no resampling needed either way)."""
        return (self.native_shape == self.grid_shape and np.array_equal(self.A, np.eye(3))
                and not np.any(self.b))

    def covered(self) -> np.ndarray:
        """(native shape) bool: the native voxels inside the model grid's field of view whose
        neighbours are too (a field brought back from the grid, and its derivatives, are
        defined there). Stretch covers every voxel; reslice may leave a margin uncovered."""
        if self.method == "stretch":
            return np.ones(self.native_shape, dtype=bool)
        from scipy.ndimage import binary_erosion

        y = np.indices(self.native_shape, dtype=np.float64).reshape(3, -1)
        q = np.linalg.solve(self.A, y - self.b[:, None])     # model-grid voxel of each native one
        top = np.asarray(self.grid_shape, dtype=np.float64)[:, None] - 1
        inside = np.all((q >= -1e-6) & (q <= top + 1e-6), axis=0).reshape(self.native_shape)
        return binary_erosion(inside, border_value=1)

    def to_grid(self, volume: Array, kernels: Any) -> Array:
        """Native (D,H,W) or (C,D,H,W) volume -> model grid."""
        if self.is_identity:
            return volume.copy()
        return kernels.warp(volume, affine=self.pullback, shape=self.grid_shape,
                            mode=self.fill_mode)

    def to_native(self, volume: Array, kernels: Any) -> Array:
        """Model-grid (D,H,W) or (C,D,H,W) volume -> native grid. Stretch covers the native
        grid exactly (border clamp absorbs rounding); with reslice, native voxels outside the
        model grid's field of view get 0 (the network never saw them)."""
        if self.is_identity:
            return volume.copy()
        return kernels.warp(volume, affine=self.pushforward, shape=self.native_shape,
                            mode="border" if self.method == "stretch" else "fill")


def grid_map(native_shape: tuple[int, ...], native_affine: np.ndarray, card: ModelCard) -> GridMap:
    n = np.asarray(native_shape, dtype=np.float64)
    g = np.asarray(card.grid, dtype=np.float64)
    if card.resample.method == "stretch":
        A = np.diag((n - 1) / (g - 1))
        b = np.zeros(3)
    else:
        spacing_native = np.linalg.norm(np.asarray(native_affine)[:3, :3], axis=0)
        A = np.diag(np.asarray(card.resample.spacing, dtype=np.float64) / spacing_native)
        b = (n - 1) / 2 - A @ ((g - 1) / 2)
    return GridMap(tuple(int(x) for x in native_shape), tuple(int(x) for x in card.grid),  # type: ignore[arg-type]
                   np.asarray(native_affine, dtype=np.float64), A, b, card.resample.method)


def native_fields(smap: GridMap, tmap: GridMap, u: Array, kernels: Any, xp: Any) -> tuple[Array, Array]:
    """A canonical model-grid field ``u`` seen on the target's native grid.

    Returns (world displacement in mm (3, *native target), displacement into the source's
    native voxels (3, *native target), for warping the native source). The world displacement
    at native target voxel y is world(P(y)) - world(y), P the source native voxel matched to y:
    P(x) = A_s (x + u(x)) + b_s on the model grid, pushed to the native grid.
    """
    P_grid = kernels.compose(u, affine=smap.pullback)
    P_grid += identity_grid(tmap.grid_shape, xp)
    P = tmap.to_native(P_grid, kernels)                      # (3, native target)
    y = identity_grid(tmap.native_shape, xp)
    Ls = xp.asarray(smap.native_affine[:3, :3].astype(np.float32))
    Lt = xp.asarray(tmap.native_affine[:3, :3].astype(np.float32))
    off = xp.asarray((smap.native_affine[:3, 3] - tmap.native_affine[:3, 3]).astype(np.float32))
    n = int(np.prod(tmap.native_shape))
    world = (Ls @ P.reshape(3, n) - Lt @ y.reshape(3, n) + off[:, None]).reshape(P.shape)
    P -= y
    return xp.ascontiguousarray(world, dtype=xp.float32), P
