"""Displacement-field files in ITK's convention, so that ANTs, ITK, SimpleITK, ITK-SNAP and
3D Slicer apply them as they are.

On disk (``displacement.nii.gz``, ``mean_displacement.nii.gz``): NIfTI of shape (X, Y, Z, 1, 3)
with the vector intent, on the target's grid and header; each voxel holds the vector from the
target point to its matched source point, in millimetres along ITK's LPS+ world axes (x towards
the patient's left, y towards posterior, z towards superior). That is what
``antsApplyTransforms`` and SimpleITK's ``DisplacementFieldTransform`` expect.

In memory and in the API the fields keep the project's convention: (3, X, Y, Z) world
millimetres along NIfTI's RAS+ axes (what nibabel affines use). LPS and RAS differ by the sign
of the first two components; this module is the one place that flips them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import io
from .errors import InputError

# Multiply RAS+ components by this to get LPS+ ones (and back: the flip is its own inverse).
RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])

CONVENTION = ("ITK/ANTs displacement field: (X, Y, Z, 1, 3) vector intent, LPS+ mm, on the "
              "target grid, target point -> matched source point")


def save_displacement(path: str | os.PathLike[str], world_ras: np.ndarray, affine: np.ndarray,
                      description: str) -> None:
    """Write a (3, X, Y, Z) RAS+ mm field as an ITK displacement-field NIfTI (LPS+ vectors)."""
    lps = np.asarray(world_ras, dtype=np.float32) * RAS_TO_LPS.astype(np.float32)[:, None, None, None]
    io.save_nifti(Path(path), lps, affine, vector=True, description=description)


def load_displacement(path: str | os.PathLike[str], role: str = "displacement"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(field (3, X, Y, Z) float32 in RAS+ mm, 4x4 affine of its grid) from an ITK
    displacement-field file such as regrisk's ``displacement.nii.gz``."""
    data, affine, label = io.load_array(path, role)
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim != 4 or data.shape[3] != 3:
        raise InputError(f"{label}: expected a 3-D displacement field (X, Y, Z, 1, 3), got "
                         f"shape {tuple(data.shape)}")
    field = np.moveaxis(np.asarray(data, dtype=np.float32), -1, 0)
    if not np.isfinite(field).all():
        raise InputError(f"{label}: the displacement field holds NaN or Inf")
    lps_to_ras = RAS_TO_LPS.astype(np.float32)[:, None, None, None]
    return np.ascontiguousarray(field * lps_to_ras), affine
