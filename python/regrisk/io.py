"""Images in and out: load and validate images and masks, write files and folders atomically.

NIfTI and MGZ are read by nibabel; NRRD, MetaImage and DICOM series folders by SimpleITK
(:mod:`regrisk.formats`, which converts ITK's LPS+ geometry to the RAS+ affines used here).

Inputs are 3-D scalar images (a 4-D image with a single volume is accepted), finite and not
constant, with an invertible affine; masks are read the same way but may be constant. Output
folders are built in a temporary folder beside the destination and renamed into place at the
end (:class:`OutputFolder`), single files through a temporary sibling (:func:`atomic_file`), so
a failure or Ctrl-C leaves nothing behind. Every atomic write in regrisk goes through here.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import formats, outputs, signals
from .errors import BudgetError, InputError, NonFiniteError, OutputError, first_line


@dataclass
class Image:
    """A volume (D, H, W) float32 with its voxel->world (mm) affine (4, 4) float64."""

    data: np.ndarray
    affine: np.ndarray
    label: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def load_image(spec: Any, role: str = "image", budget: int | None = None) -> Image:
    """An :class:`Image` from a path, a nibabel image, or an ``(array, affine)`` pair. The size
    its header claims is checked (:func:`check_claimed_size`, against ``budget`` bytes) before
    a voxel is read or decompressed."""
    if isinstance(spec, Image):
        return spec
    data, affine, label = _read(spec, role, budget)
    return validate(data, affine, label)


def load_mask(spec: Any, role: str = "mask",
              budget: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(bool (D, H, W) array of the voxels > 0.5, affine) from what :func:`load_image` takes.
    A mask may be constant (all inside); it must select at least one voxel."""
    data, affine, label = _read(spec, role, budget)
    img = validate(data, affine, label, allow_constant=True)
    mask = img.data > 0.5
    if not mask.any():
        raise InputError(f"{label}: the mask selects no voxels")
    return mask, img.affine


def load_array(spec: Any, role: str = "image",
               budget: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(voxel array as stored, any rank and type, 4x4 affine, label for messages) from what
    :func:`load_image` takes: for label maps (exact values) and multi-channel images."""
    return _read(spec, role, budget)


def check_claimed_size(shape: tuple[int, ...], itemsize: int, label: str,
                       budget: int | None = None) -> None:
    """Refuse an image from the size its header claims, before anything is read: more than
    limits.MAX_IMAGE_VOXELS values, or more bytes (as stored plus the float32 copy) than
    ``budget`` (default: the engine's, half the available memory up to 16 GiB)."""
    from .limits import MAX_IMAGE_VOXELS
    from .memory import default_budget, gib

    dims = "x".join(str(int(n)) for n in shape)
    values = math.prod(int(n) for n in shape)
    if any(int(n) < 0 for n in shape) or values > MAX_IMAGE_VOXELS:
        raise InputError(f"{label}: the header claims {dims} = {values} values; regrisk reads "
                         f"images of at most {MAX_IMAGE_VOXELS} (2^28) voxels")
    need = values * (int(itemsize) + 4)
    limit = default_budget() if budget is None else int(budget)
    if need > limit:
        raise BudgetError(f"{label}: reading its {dims} voxels needs {gib(need)}, over the "
                          f"memory budget of {gib(limit)}")


def _read(spec: Any, role: str, budget: int | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(voxel array as stored, 4x4 affine, label for messages); InputError when unreadable."""
    if isinstance(spec, (str, os.PathLike)):
        return _read_file(Path(spec), role, budget)
    if isinstance(spec, tuple) and len(spec) == 2:
        label = f"{role} array"
        try:
            data, affine = np.asarray(spec[0]), np.asarray(spec[1], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{label}: the affine is not a 4x4 array of numbers "
                             f"({_reason(exc)})") from None
        if affine.shape != (4, 4):
            raise InputError(f"{label}: affine must be 4x4, got {affine.shape}")
        check_claimed_size(data.shape, 0, label, budget)
        return data, affine, label
    if hasattr(spec, "dataobj") and hasattr(spec, "affine"):
        label = f"{role} image"
        dtype = getattr(spec, "get_data_dtype", lambda: np.float64)()
        check_claimed_size(tuple(spec.shape), np.dtype(dtype).itemsize, label, budget)
        try:
            data = np.asanyarray(spec.dataobj)
        except Exception as exc:
            raise InputError(f"{label}: image data is unreadable ({_reason(exc)})") from None
        return data, np.asarray(spec.affine, dtype=np.float64), label
    raise InputError(f"{role}: expected a path, a nibabel image or an (array, affine) pair, "
                     f"got {type(spec).__name__}")


def _read_file(path: Path, role: str, budget: int | None) -> tuple[np.ndarray, np.ndarray, str]:
    import nibabel as nib

    label = f"{role} {path}"
    if "\0" in str(path):
        raise InputError(f"{label}: a path cannot hold a NUL character")
    if not path.exists():
        raise InputError(f"{label}: no such file")
    if formats.handles(path):  # NRRD, MetaImage, DICOM series folders: through SimpleITK
        return formats.read(path, label, budget)
    if not path.is_file():
        raise InputError(f"{label}: not a file")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for unknown/corrupt headers
        raise InputError(f"{label}: not a readable NIfTI image ({_reason(exc)})") from None
    _check_nifti_size(img, label, budget)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated or corrupt payload (EOFError, zlib.error, ...)
        raise InputError(f"{label}: image data is truncated or corrupt ({_reason(exc)})") from None
    return data, np.asarray(img.affine, dtype=np.float64), label


def _check_nifti_size(img: Any, label: str, budget: int | None) -> None:
    """The header's claim against the limits, and against the file's length where the data
    is stored uncompressed (a short file is refused without reading it)."""
    itemsize = np.dtype(img.get_data_dtype()).itemsize
    check_claimed_size(tuple(img.shape), itemsize, label, budget)
    data_file = getattr(img.file_map.get("image"), "filename", None)
    offset = getattr(img.dataobj, "offset", None)
    if data_file is None or offset is None or str(data_file).lower().endswith(_COMPRESSED):
        return
    need = int(offset) + math.prod(int(n) for n in img.shape) * itemsize
    have = os.path.getsize(data_file)
    if have < need:
        raise InputError(f"{label}: image data is truncated or corrupt (the header claims "
                         f"{need} bytes, the file holds {have})")


_COMPRESSED = (".gz", ".bz2", ".zst", ".mgz")  # .mgz: gzip-compressed MGH


def _reason(exc: BaseException) -> str:
    return first_line(exc, typed=True, limit=160)


def validate(data: np.ndarray, affine: np.ndarray, label: str, *,
             allow_constant: bool = False) -> Image:
    """An :class:`Image` of ``data`` once it is a finite, non-constant (unless
    ``allow_constant``) real 3-D volume with an invertible affine; InputError otherwise."""
    vol = _scalar_volume(data, label)
    finite = np.isfinite(vol)
    if not finite.all():
        bad = int(vol.size - finite.sum())
        raise InputError(f"{label}: {bad} voxel(s) are NaN or Inf")
    if not allow_constant and float(vol.max()) == float(vol.min()):
        raise InputError(f"{label}: the image is constant ({float(vol.min()):g} everywhere)")
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{label}: the affine is not invertible")
    return Image(vol, affine, label)


def _scalar_volume(data: np.ndarray, label: str) -> np.ndarray:
    """``data`` as a native float32 (D, H, W) array; a single trailing volume/vector is dropped."""
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 5 and data.shape[3:] == (1, 1):
        data = data[..., 0, 0]
    if data.ndim != 3:
        raise InputError(f"{label}: expected a 3-D scalar image, got shape {tuple(data.shape)}")
    if min(data.shape) < 2:
        raise InputError(f"{label}: every axis needs at least 2 voxels, got shape {tuple(data.shape)}")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise InputError(f"{label}: voxel type {data.dtype} is not a real number type")
    vol = np.ascontiguousarray(data, dtype=np.float32)
    # nibabel may hand back an explicit '<f4' dtype object; the native kernels want the native
    # float32 descriptor itself, so re-view (no copy) once here at the boundary.
    return vol.view(np.float32)


# -- output ------------------------------------------------------------------------------------

def check_output(out_dir: str | os.PathLike[str], overwrite: bool,
                 protect: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Refuse early (before any computation) when ``out_dir`` cannot be written as asked.
    ``overwrite`` replaces only a folder regrisk wrote, never one that is or holds a path in
    ``protect`` (the inputs and the model): :mod:`regrisk.outputs`."""
    out = Path(out_dir)
    if len(out.name.encode()) > _name_max(out.absolute().parent):
        raise OutputError(f"output {out}: the name is longer than the file system allows")
    try:  # one stat: another run replacing the folder must not make it look like a file
        st: os.stat_result | None = out.stat()
    except OSError as exc:  # what Path.exists() takes for "not there"
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            raise
        st = None
        if out.is_symlink():
            raise OutputError(f"output {out}: is a dangling symbolic link") from None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"output {out}: exists and is not a folder")
    if st is not None and not overwrite:
        raise OutputError(f"output {out}: already exists (use --overwrite / overwrite=True)")
    if st is not None:
        outputs.check_replaceable(out, protect)
    if not out.name or out.name in (".", ".."):
        raise OutputError(f"output {out}: name a folder to create")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise OutputError(f"output {out}: parent folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output {out}: parent folder {parent} is not writable")
    return out


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


class OutputFolder:
    """Context manager: yields a temporary folder beside ``out_dir``; on success it replaces
    ``out_dir`` (only if ``overwrite``, and only a folder regrisk wrote that holds none of
    ``protect``), on any exception (Ctrl-C, SIGTERM and SIGHUP included) it is removed. An
    OSError while writing into it becomes an OutputError naming the output."""

    def __init__(self, out_dir: str | os.PathLike[str], overwrite: bool = False,
                 protect: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.protect = list(protect)
        self.out = check_output(out_dir, overwrite, self.protect)
        self.overwrite = overwrite
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        parent = self.out.absolute().parent
        with signals.deferred():  # the folder exists only once __exit__ will remove it
            try:
                self.tmp = Path(tempfile.mkdtemp(
                    prefix=f".{outputs.short_name(self.out.name)}.tmp-", dir=parent))
            except OSError as exc:
                raise OutputError(f"output {self.out}: cannot create a folder beside it "
                                  f"({exc.strerror})") from None
        # mkdtemp makes the folder private (0700); the result should read like a plain mkdir.
        umask = os.umask(0)
        os.umask(umask)
        self.tmp.chmod(0o777 & ~umask)
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.tmp is None:  # never entered: nothing was staged
            return
        with signals.deferred():  # neither the cleanup nor the renames are cut in half
            if exc_type is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                # a failed write (disk full, file too large) often names no file
                if isinstance(exc, OSError) and str(self.tmp) in str(exc.filename or self.tmp):
                    raise OutputError(f"output {self.out}: writing failed "
                                      f"({exc.strerror or first_line(exc)})") from exc
                return
            try:
                outputs.commit(self.tmp, self.out, self.overwrite, self.protect)
            except OSError as exc:
                raise OutputError(f"output {self.out}: cannot be put in place "
                                  f"({exc.strerror or first_line(exc)})") from None
            finally:
                shutil.rmtree(self.tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` (same suffix, so writers that go by the extension
    still work); renamed onto ``path`` when the block succeeds, removed when it fails, so a
    reader never sees a half-written file."""
    target = Path(path)
    # keep a compressed file's two suffixes (.nii.gz): nibabel picks the format from both
    suffix = "".join(target.suffixes[-2:]) if target.suffix == ".gz" else target.suffix
    stem = target.name[: len(target.name) - len(suffix)]
    tmp = target.with_name(f".{outputs.short_name(stem)}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        with signals.deferred():
            os.replace(tmp, target)
    finally:
        with signals.deferred():
            if tmp.exists():
                tmp.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, *, vector: bool = False,
               mm: bool = True, description: str = "", dtype: Any = np.float32) -> None:
    """Write ``data`` with the ``affine`` (sform and qform). ``vector``: data is (3, D, H, W)
    and is stored as (D, H, W, 1, 3) with the NIfTI vector intent (one vector per voxel).
    ``dtype``: the stored voxel type (label maps keep theirs)."""
    import nibabel as nib

    arr = np.asarray(data, dtype=dtype)
    if vector:
        arr = np.moveaxis(arr, 0, -1)[:, :, :, None, :]
    elif arr.ndim == 4:  # a stack of scalar volumes: (C, D, H, W) -> (D, H, W, C)
        arr = np.moveaxis(arr, 0, -1)
    img = nib.Nifti1Image(np.ascontiguousarray(arr), affine)
    hdr = img.header
    hdr.set_data_dtype(arr.dtype)
    img.set_sform(affine, code=2)
    img.set_qform(affine, code=2)
    hdr.set_xyzt_units(xyz="mm")
    if vector:
        hdr.set_intent("vector", (), name="displacement_mm")
    if description:
        hdr["descrip"] = description[:79].encode()
    write_nifti(img, Path(path))


def write_nifti(img: Any, path: Path) -> None:
    """A nibabel image written to ``path``. A ``.nii.gz`` is deflated by ISA-L (python-isal),
    about 14x faster than zlib's level 1 for the same size on float maps (0.024 against 0.35 s
    for a 3-channel 80x96x80 field), with mtime 0 so that the same map gives the same bytes;
    without python-isal nibabel writes it (zlib)."""
    import nibabel as nib

    if path.name.endswith(".gz"):
        try:
            from isal import igzip
        except ImportError:  # a platform without its wheels
            igzip = None
        if igzip is not None:
            path.write_bytes(igzip.compress(img.to_bytes(), compresslevel=1, mtime=0))
            return
    nib.save(img, str(path))


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` as JSON; a NaN or Inf anywhere in it is an error, never a number."""
    try:
        text = json.dumps(payload, indent=2, sort_keys=True, default=_json_default,
                          allow_nan=False)
    except ValueError:
        raise NonFiniteError(f"{path.name}: a value to record is NaN or Inf; nothing is "
                             "reported as a number that is not one") from None
    path.write_text(text + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)
