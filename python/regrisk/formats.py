"""Images that nibabel does not read: NRRD, MetaImage and DICOM series, through SimpleITK.

SimpleITK (the optional ``itk`` extra) works in ITK's LPS+ world; regrisk's affines are NIfTI's
RAS+ (nibabel). The geometry is converted once, here: the voxel array is put in ITK index order
(i, j, k) like a NIfTI array, and the affine is ``diag(-1, -1, 1, 1) @ [[D diag(s), o], [0, 1]]``
with ITK's direction D, spacing s and origin o, taken exactly as stored.

A DICOM series is given as the folder that holds it. The folder must hold exactly one image
series whose slices share one orientation and are stacked along its normal at one spacing;
anything else (several series, missing slices, uneven spacing, non-image DICOM only) is refused
with one line naming the problem, never resampled.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

# File suffixes read through SimpleITK (a folder is read as a DICOM series).
SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_DICOM_FILE = (".dcm", ".ima")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_TAG_POSITION, _TAG_ORIENTATION = "0020|0032", "0020|0037"


def handles(path: Path) -> bool:
    """Whether ``path`` is read here rather than by nibabel."""
    return path.is_dir() or path.name.lower().endswith(SUFFIXES + _DICOM_FILE)


def read(path: Path, label: str, budget: int | None = None
         ) -> tuple[np.ndarray, np.ndarray, str]:
    """(voxel array in (i, j, k[, c]) order, 4x4 RAS+ affine, label) of a file or series; its
    size is checked from the headers first (:func:`regrisk.io.check_claimed_size`)."""
    if path.is_dir() and not any(_is_dicom(p) for p in path.iterdir() if p.is_file()):
        raise InputError(f"{label}: a folder with no DICOM files (a folder is read as one "
                         "DICOM series)")
    if path.is_file() and path.name.lower().endswith(_DICOM_FILE):
        raise InputError(f"{label}: a single DICOM file; give the folder that holds its series")
    sitk = _simpleitk(label)
    with _quiet(sitk):
        if path.is_dir():
            image = _read_series(sitk, path, label, budget)
        else:
            image = _read_file(sitk, path, label, budget)
    return to_array_affine(image, label) + (label,)


def to_array_affine(image: Any, label: str) -> tuple[np.ndarray, np.ndarray]:
    """A SimpleITK image as (array in ITK index order, RAS+ voxel->world affine)."""
    import SimpleITK as sitk

    if image.GetDimension() != 3:
        raise InputError(f"{label}: a {image.GetDimension()}-D image; regrisk reads 3-D volumes")
    array = sitk.GetArrayFromImage(image)            # (k, j, i[, c])
    array = np.ascontiguousarray(np.moveaxis(array, (0, 1, 2), (2, 1, 0)))
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return array, LPS_TO_RAS @ lps


def _simpleitk(label: str) -> Any:
    try:
        import SimpleITK as sitk
    except ImportError:
        raise InputError(f"{label}: reading this format needs SimpleITK "
                         "(pip install 'regrisk[itk]')") from None
    return sitk


@contextmanager
def _quiet(sitk: Any) -> Iterator[None]:
    """ITK prints warnings to stderr; regrisk reports problems as its own one-line errors."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _read_file(sitk: Any, path: Path, label: str, budget: int | None) -> Any:
    if not path.is_file():
        raise InputError(f"{label}: not a file")
    try:
        _check_size(_header(sitk, str(path)), 1, label, budget)
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{label}: not a readable image ({_itk_reason(exc)})") from None


def _header(sitk: Any, name: str) -> Any:
    """A reader that has read ``name``'s header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(name)
    reader.ReadImageInformation()
    return reader


def _check_size(header: Any, files: int, label: str, budget: int | None) -> None:
    """The size the header claims (times ``files`` slices of a series) against io's limits."""
    import SimpleITK as sitk

    from .io import check_claimed_size

    shape = list(header.GetSize())
    shape[-1] *= files                            # a series: one (X, Y, 1) header per slice
    if header.GetNumberOfComponents() > 1:
        shape.append(header.GetNumberOfComponents())
    bits = re.search(r"(\d+)-bit", sitk.GetPixelIDValueAsString(header.GetPixelIDValue()))
    check_claimed_size(tuple(shape), int(bits.group(1)) // 8 if bits else 8, label, budget)


def _read_series(sitk: Any, folder: Path, label: str, budget: int | None) -> Any:
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise InputError(f"{label}: {_why_no_series(folder)}")
    if len(ids) > 1:
        raise InputError(f"{label}: the folder holds {len(ids)} DICOM series "
                         f"({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}); "
                         "give a folder with exactly one")
    files = list(reader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    try:
        _check_size(_header(sitk, files[0]), len(files), label, budget)
    except RuntimeError as exc:
        raise InputError(f"{label}: the DICOM series is unreadable ({_itk_reason(exc)})") from None
    if len(files) > 1:
        files = _stacked_slices(sitk, files, label)
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{label}: the DICOM series is unreadable ({_itk_reason(exc)})") from None


def _why_no_series(folder: Path) -> str:
    """Why GDCM found no image series in a folder that holds DICOM files."""
    count = sum(1 for p in folder.iterdir() if p.is_file() and _is_dicom(p))
    return (f"the folder's {count} DICOM file(s) hold no image data (non-image DICOM such as "
            "a report or structure set)")


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _stacked_slices(sitk: Any, files: list[str], label: str) -> list[str]:
    """``files`` ordered along the slice normal once every slice shares one orientation and
    the positions are evenly spaced along that normal; InputError naming the defect."""
    orientations, positions = [], []
    for name in files:
        try:
            info = _header(sitk, name)
            orientations.append(_numbers(info.GetMetaData(_TAG_ORIENTATION), 6))
            positions.append(_numbers(info.GetMetaData(_TAG_POSITION), 3))
        except (RuntimeError, ValueError):
            raise InputError(f"{label}: slice {Path(name).name} has no readable position or "
                             "orientation") from None
    first = orientations[0]
    if any(np.abs(o - first).max() > 1e-4 for o in orientations):
        raise InputError(f"{label}: the slices do not share one orientation")
    normal = np.cross(first[:3], first[3:])
    pos = np.asarray(positions)
    along = pos @ normal
    order = np.argsort(along)
    _check_spacing(np.diff(along[order]), pos[order] - pos[order][:1], normal, label)
    return [files[i] for i in order]


def _check_spacing(gaps: np.ndarray, offsets: np.ndarray, normal: np.ndarray, label: str) -> None:
    step = float(np.median(gaps))
    if step <= 1e-6 or gaps.min() <= 1e-6:
        raise InputError(f"{label}: two or more slices share one position")
    tol = 0.01 * step
    wide = gaps > step + tol
    if wide.any() and np.all(np.abs(gaps[wide] / step - np.round(gaps[wide] / step)) < 0.01):
        missing = int(np.round(gaps[wide] / step).sum() - wide.sum())
        raise InputError(f"{label}: {missing} slice(s) missing from the series (gap of "
                         f"{gaps.max():.4g} mm where slices are {step:.4g} mm apart)")
    if np.abs(gaps - step).max() > tol:
        raise InputError(f"{label}: inconsistent slice spacing ({gaps.min():.4g} to "
                         f"{gaps.max():.4g} mm between slices)")
    sideways = offsets - np.outer(offsets @ normal, normal)
    if np.linalg.norm(sideways, axis=1).max() > tol:
        raise InputError(f"{label}: the slices are not stacked along their normal (gantry "
                         "tilt or sheared series)")


def _numbers(text: str, count: int) -> np.ndarray:
    values = np.array([float(v) for v in text.strip().split("\\")])
    if values.shape != (count,) or not np.isfinite(values).all():
        raise ValueError(text)
    return values


def _itk_reason(exc: BaseException) -> str:
    """ITK's multi-line exception text, cut to its message line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "ERROR:" in ln:
            return ln.split("ERROR:", 1)[1].strip()[:160]
    return (lines[-1] if lines else type(exc).__name__)[:160]
