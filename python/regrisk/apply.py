"""Resample an image through an estimate's transform: what ``regrisk apply`` does.

A result's ``displacement.nii.gz`` maps each target point x to its matched source point
x + u(x) (world mm). An image in the source's world space, on any grid (a label map at another
resolution, a second contrast, a multi-channel image), is sampled there:
out(x) = I(A_I^-1 (x + u(x))), A_I the image's voxel->world affine. Points outside the image
get 0.

- Intensities and channels: trilinear, with the kernel that made ``warped_source`` (so applying
  a result to its own source gives its ``warped_source``).
- Label maps: ``nearest`` neighbour, or ``majority`` of the 8 neighbours weighted by their
  trilinear weights (what ANTs calls genericLabel); label values are copied, never computed, so
  they are kept exactly, in the image's own voxel type.

The output grid is the target's (the field's grid) unless a reference image gives another; the
field is then sampled trilinearly at the reference's voxels, with zero displacement beyond half
a voxel outside the field's grid (as ITK's displacement-field transform does).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import fieldfiles, io, kernels
from .errors import InputError, OutputError

LABEL_METHODS = ("majority", "nearest")
_CHUNK = 1 << 18  # output voxels per step of the label vote (bounds its (8, 8, n) work array)


def apply(result: str | os.PathLike[str], image: Any, out: str | os.PathLike[str], *,
          labels: str | None = None, reference: Any = None, overwrite: bool = False,
          threads: int | None = None) -> Path:
    """Write ``image`` resampled through ``result``'s transform to ``out`` (NIfTI, atomically).
    labels: None (intensities), "majority" or "nearest". reference: output grid (default the
    target's). Returns the written path."""
    if labels is not None and labels not in LABEL_METHODS:
        raise InputError(f"labels: use one of {', '.join(LABEL_METHODS)}, got {labels!r}")
    target = _output_path(out, overwrite)
    field, field_affine = load_result_field(result)
    volume, image_affine, label = _load_volume(image, labels is not None)
    if reference is None:
        shape, affine = tuple(field.shape[1:]), field_affine
    else:
        ref, affine, ref_label = io.load_array(reference, "reference")
        _check_affine(affine, ref_label)
        shape = tuple(ref.shape[:3])
        field = field_on_grid(field, field_affine, shape, affine, threads)
    disp = image_displacement(field, affine, image_affine)
    if labels is None:
        warped = kernels.warp(volume, disp, mode="fill", threads=threads)
    else:
        warped = sample_labels(volume, disp, labels)
    what = f"labels, {labels}" if labels else "trilinear"
    with io.atomic_file(target) as tmp:
        io.save_nifti(tmp, warped, affine, dtype=warped.dtype,
                      description=f"regrisk apply ({what}) of {Path(str(label)).name}"[:79])
    return target


def _output_path(out: str | os.PathLike[str], overwrite: bool) -> Path:
    path = Path(out)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise OutputError(f"output {path}: give a .nii or .nii.gz file name")
    if path.is_dir():
        raise OutputError(f"output {path}: is a folder")
    if path.exists() and not overwrite:
        raise OutputError(f"output {path}: already exists (use --overwrite / overwrite=True)")
    if not path.absolute().parent.is_dir():
        raise OutputError(f"output {path}: parent folder {path.absolute().parent} does not exist")
    return path


def load_result_field(result: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """(RAS+ mm field (3, X, Y, Z), its grid's affine) of an estimate's output folder."""
    folder = Path(result)
    if not folder.is_dir():
        raise InputError(f"result {folder}: not a folder (give an estimate's output folder)")
    path = folder / "displacement.nii.gz"
    if not path.is_file():
        raise InputError(f"result {folder}: no displacement.nii.gz (not a regrisk estimate's "
                         "output folder?)")
    return fieldfiles.load_displacement(path, "result displacement")


def _load_volume(spec: Any, labels: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """(volume (X, Y, Z) or channels first (C, X, Y, Z), affine, label). Intensities become
    float32; label maps keep their voxel type."""
    data, affine, label = io.load_array(spec, "image")
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0]
    if data.ndim not in (3, 4) or min(data.shape[:3]) < 2:
        raise InputError(f"{label}: expected a 3-D image, or 3-D with channels on the 4th axis, "
                         f"got shape {tuple(data.shape)}")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise InputError(f"{label}: voxel type {data.dtype} is not a real number type")
    if labels and data.ndim == 4 and data.shape[3] > 1:
        raise InputError(f"{label}: a label map has one channel, got {data.shape[3]}")
    if not np.isfinite(data).all():
        raise InputError(f"{label}: some voxels are NaN or Inf")
    _check_affine(affine, label)
    if data.ndim == 4:
        data = data[..., 0] if data.shape[3] == 1 else np.moveaxis(data, -1, 0)
    if labels:
        return np.ascontiguousarray(data), affine, label
    return np.ascontiguousarray(data, dtype=np.float32).view(np.float32), affine, label


def _check_affine(affine: np.ndarray, label: str) -> None:
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{label}: the affine is not invertible")


def field_on_grid(field: np.ndarray, field_affine: np.ndarray, shape: tuple[int, ...],
                  affine: np.ndarray, threads: int | None = None) -> np.ndarray:
    """A world-mm field sampled trilinearly at the voxels of another grid. As ITK's
    displacement-field transform: clamped to the edge voxels up to half a voxel beyond them,
    zero displacement further out."""
    if shape == field.shape[1:] and np.allclose(affine, field_affine, atol=1e-6):
        return field
    to_field = (np.linalg.inv(field_affine) @ affine)[:3]
    out = kernels.warp(np.ascontiguousarray(field, dtype=np.float32), affine=to_field,
                       shape=shape, mode="border", threads=threads)
    q = to_field[:, :3] @ np.indices(shape, dtype=np.float64).reshape(3, -1) + to_field[:, 3:]
    top = np.asarray(field.shape[1:], dtype=np.float64)[:, None] - 0.5
    outside = ~np.all((q >= -0.5) & (q <= top), axis=0).reshape(shape)
    out[:, outside] = 0
    return out


def image_displacement(field: np.ndarray, grid_affine: np.ndarray,
                       image_affine: np.ndarray) -> np.ndarray:
    """(3, *grid) float32: image voxel of x + u(x), less the grid voxel, for ``kernels.warp``."""
    shape = field.shape[1:]
    y = np.indices(shape, dtype=np.float64).reshape(3, -1)
    to_image = np.linalg.inv(image_affine) @ grid_affine         # grid voxel -> image voxel
    p = to_image[:3, :3] @ y + to_image[:3, 3:]
    p += np.linalg.inv(image_affine[:3, :3]) @ field.reshape(3, -1).astype(np.float64)
    p -= y
    return np.ascontiguousarray(p.reshape((3,) + shape), dtype=np.float32)


def sample_labels(labels: np.ndarray, disp: np.ndarray, method: str) -> np.ndarray:
    """Label map sampled at grid voxel + ``disp`` (image voxels); 0 outside the image."""
    shape = disp.shape[1:]
    p = (np.indices(shape, dtype=np.float64).reshape(3, -1)
         + disp.reshape(3, -1).astype(np.float64))
    out = np.zeros(p.shape[1], dtype=labels.dtype)
    for a in range(0, p.shape[1], _CHUNK):
        q = p[:, a:a + _CHUNK]
        out[a:a + _CHUNK] = (_nearest(labels, q) if method == "nearest"
                             else _majority(labels, q))
    return out.reshape(shape)


def _nearest(labels: np.ndarray, q: np.ndarray) -> np.ndarray:
    idx = np.floor(q + 0.5).astype(np.int64)  # round half up, as ITK's nearest neighbour
    return _lookup(labels, idx)


def _majority(labels: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per point, the label whose corners carry the largest total trilinear weight."""
    base = np.floor(q).astype(np.int64)
    frac = q - base
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    lab = np.stack([_lookup(labels, base + c[:, None]) for c in corners])       # (8, n)
    w = np.stack([np.prod(np.where(c[:, None] == 1, frac, 1 - frac), axis=0) for c in corners])
    score = np.einsum("bn,abn->an", w, lab[None, :, :] == lab[:, None, :])     # (8, n)
    return lab[np.argmax(score, axis=0), np.arange(q.shape[1])]


def _lookup(labels: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """labels[idx] with 0 for indices outside the volume."""
    n = np.asarray(labels.shape)[:, None]
    inside = np.all((idx >= 0) & (idx < n), axis=0)
    clipped = np.clip(idx, 0, n - 1)
    values = labels[clipped[0], clipped[1], clipped[2]]
    return np.where(inside, values, np.zeros((), dtype=labels.dtype))
