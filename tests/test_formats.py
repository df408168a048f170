"""Inputs beyond NIfTI: MGZ (nibabel), NRRD and MetaImage (SimpleITK), DICOM series folders
written by SimpleITK (GDCM). Geometry is checked point by point against SimpleITK's own
index-to-world mapping (LPS+, so x and y negated for RAS+); a DICOM series gives the same
estimate as its NIfTI; broken series are refused with one line."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from builders import (TARGET_AFFINE, TARGET_SHAPE, com_model, phantom, smooth_field_model,
                      write_nifti)

from regrisk import Estimator, io
from regrisk.cli import main
from regrisk.errors import InputError

SERIES_UID = "1.2.826.0.1.3680043.8.498.1515"
# ITK geometry of the test volume: LPS+ direction (an oblique rotation), spacing, origin
SPACING = (1.5, 1.0, 2.0)
ORIGIN = (12.0, -20.0, -22.0)


def _direction() -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", [12, -20, 30], degrees=True).as_matrix()


def _volume() -> np.ndarray:
    """int16 (i, j, k) phantom, the stored values of the series."""
    return np.rint(phantom(TARGET_SHAPE, TARGET_AFFINE) * 10).astype(np.int16)


def _sitk_image(vol: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(vol.transpose(2, 1, 0)))
    img.SetSpacing(SPACING)
    img.SetDirection(tuple(_direction().ravel()))
    img.SetOrigin(ORIGIN)
    return img


def write_series(folder, vol, uid=SERIES_UID, shift=None):
    """One file per slice, as SimpleITK writes a DICOM series; ``shift`` {slice: (3,) mm}
    moves a slice's stored position (to build broken series)."""
    folder.mkdir(parents=True, exist_ok=True)
    img = _sitk_image(vol)
    d = _direction()
    orientation = "\\".join(f"{v:.10f}" for v in (*d[:, 0], *d[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        position = np.asarray(img.TransformIndexToPhysicalPoint((0, 0, k)))
        position = position + np.asarray((shift or {}).get(k, 0.0))
        tags = {"0008|0060": "MR", "0020|000d": uid + ".1", "0020|000e": uid,
                "0008|0018": f"{uid}.{k + 1}", "0020|0013": str(k + 1),
                "0020|0037": orientation, "0018|0050": str(SPACING[2]),
                "0020|0032": "\\".join(f"{v:.10f}" for v in position)}
        s = img[:, :, k]
        for tag, value in tags.items():
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(s)
    return folder


def _expected_affine() -> np.ndarray:
    """RAS+ affine from ITK's geometry: world_LPS = D diag(s) ijk + o, and RAS = LPS with x, y
    negated (DICOM's patient axes vs NIfTI's)."""
    A = np.eye(4)
    A[:3, :3] = _direction() @ np.diag(SPACING)
    A[:3, 3] = ORIGIN
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ A


def _check_geometry(data, affine, img: sitk.Image):
    rng = np.random.default_rng(0)
    for ijk in rng.integers(0, TARGET_SHAPE, size=(20, 3)):
        lps = np.asarray(img.TransformIndexToPhysicalPoint(tuple(int(v) for v in ijk)))
        np.testing.assert_allclose(affine[:3, :3] @ ijk + affine[:3, 3], lps * [-1, -1, 1],
                                   atol=1e-6)
        assert data[tuple(ijk)] == img.GetPixel(*(int(v) for v in ijk))


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_itk_files_geometry_and_values(tmp_path, suffix):
    img = _sitk_image(_volume())
    sitk.WriteImage(img, str(tmp_path / f"v{suffix}"))
    data, affine, _ = io.load_array(tmp_path / f"v{suffix}")
    assert data.shape == TARGET_SHAPE and data.dtype == np.int16
    _check_geometry(data, affine, img)
    np.testing.assert_allclose(affine, _expected_affine(), atol=1e-9)


def test_dicom_series_geometry_and_values(tmp_path):
    folder = write_series(tmp_path / "series", _volume())
    data, affine, _ = io.load_array(folder)
    np.testing.assert_array_equal(data, _volume())
    _check_geometry(data, affine, _sitk_image(_volume()))


def test_mgz_and_nii_read_like_nii_gz(tmp_path):
    vol = _volume().astype(np.float32)
    nib.save(nib.MGHImage(vol, TARGET_AFFINE), str(tmp_path / "v.mgz"))
    write_nifti(tmp_path / "v.nii", vol, TARGET_AFFINE)
    for name in ("v.mgz", "v.nii"):
        img = io.load_image(tmp_path / name)
        np.testing.assert_array_equal(img.data, vol)
        np.testing.assert_allclose(img.affine, TARGET_AFFINE, atol=1e-5)


def test_dicom_series_gives_the_map_of_its_nifti(tmp_path):
    vol = _volume()
    folder = write_series(tmp_path / "series", vol)
    nifti = write_nifti(tmp_path / "target.nii.gz", vol, _expected_affine())
    source = write_nifti(tmp_path / "source.nii.gz", phantom(TARGET_SHAPE, TARGET_AFFINE),
                         TARGET_AFFINE)
    with Estimator(smooth_field_model(), threads=1) as est:
        runs = [est.estimate(str(source), str(t), samples=3, perturbation="translation", seed=1)
                for t in (folder, nifti)]
    assert runs[0].uncertainty.max() > 0
    for name in ("uncertainty", "displacement", "warped_source", "jacobian"):
        np.testing.assert_allclose(getattr(runs[0], name), getattr(runs[1], name),
                                   rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(runs[0].affine, runs[1].affine, atol=1e-9)


def _non_image_dicom(path):
    """A Basic Text SR: a valid DICOM file with no pixel data."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "SR", generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID = "Phantom", "1"
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _broken_series(tmp_path):
    vol = _volume()
    normal = _direction()[:, 2]
    in_plane = _direction()[:, 0]
    cases = {
        "several": (write_series(tmp_path / "several", vol), "2 DICOM series"),
        "missing": (write_series(tmp_path / "missing", vol), r"slice\(s\) missing"),
        "uneven": (write_series(tmp_path / "uneven", vol, shift={7: 0.6 * normal}),
                   "inconsistent slice spacing"),
        "tilted": (write_series(tmp_path / "tilted", vol, shift={k: 0.3 * k * in_plane
                                                               for k in range(vol.shape[2])}),
                   "not stacked along their normal"),
        "report": (tmp_path / "report", "hold no image data"),
        "empty": (tmp_path / "empty", "no DICOM files"),
    }
    write_series(tmp_path / "several", vol[:, :, :6], uid=SERIES_UID + ".2")
    (tmp_path / "missing" / "slice010.dcm").unlink()
    (tmp_path / "report").mkdir()
    _non_image_dicom(tmp_path / "report" / "sr.dcm")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not DICOM")
    return cases


def test_broken_series_refused_with_one_line(tmp_path):
    for name, (folder, match) in _broken_series(tmp_path).items():
        with pytest.raises(InputError, match=match) as info:
            io.load_image(folder)
        assert "\n" not in str(info.value), name
    with pytest.raises(InputError, match="single DICOM file"):
        io.load_image(write_series(tmp_path / "one", _volume()) / "slice003.dcm")


def test_cli_refuses_a_broken_series(tmp_path, capsys):
    folder = write_series(tmp_path / "series", _volume())
    (folder / "slice005.dcm").unlink()
    source = write_nifti(tmp_path / "s.nii.gz", phantom(TARGET_SHAPE, TARGET_AFFINE),
                         TARGET_AFFINE)
    model = com_model(tmp_path / "com.onnx", (16, 16, 16))
    out = tmp_path / "out"
    assert main(["estimate", "--source", str(source), "--target", str(folder), "--out", str(out),
                 "--model", str(model), "--samples", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 slice(s) missing" in err[0], err
    assert not out.exists()
    shutil.rmtree(folder)
