"""regrisk's output files in the ITK family's own tools: antspyx (ANTs) and SimpleITK apply
displacement.nii.gz as it is and reproduce regrisk's warped_source; ANTs' Jacobian
determinant of the same file matches jacobian.nii.gz.

The pairs are oblique and anisotropic, source and target on differently rotated grids of other
shapes and spacings; in ``flipped`` the source grid is also left-handed.
"""

from __future__ import annotations

import json

import ants
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from builders import (TARGET_AFFINE, TARGET_SHAPE, oblique_estimate, phantom,
                      smooth_field_model)
from scipy.ndimage import binary_erosion


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    return oblique_estimate(tmp_path_factory.mktemp("flipped"), (1, -1, 1), smooth_field_model())


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    # two periods of a 2-voxel field: a Jacobian that varies by tens of percent
    return oblique_estimate(tmp_path_factory.mktemp("rotated"), (1, 1, 1),
                            smooth_field_model(2.0, periods=2))


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _own_warped(files):
    return nib.load(str(files["result"] / "warped_source.nii.gz")).get_fdata()


def _ants_warp(files, field):
    fixed = ants.image_read(str(files["target"]))
    moving = ants.image_read(str(files["source"]))
    return ants.apply_transforms(fixed, moving, [str(field)], interpolator="linear").numpy()


def _sitk_warp(files, field):
    transform = sitk.DisplacementFieldTransform(sitk.ReadImage(str(field), sitk.sitkVectorFloat64))
    out = sitk.Resample(sitk.ReadImage(str(files["source"]), sitk.sitkFloat32),
                        sitk.ReadImage(str(files["target"])), transform, sitk.sitkLinear, 0.0,
                        sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)   # ITK index order, as nibabel


def _ras_copy(files, tmp_path):
    """The displacement file with its vectors in RAS+ (the convention ITK does not read)."""
    img = nib.load(str(files["result"] / "displacement.nii.gz"))
    data = np.asanyarray(img.dataobj) * np.array([-1, -1, 1], dtype=np.float32)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(tmp_path / "ras.nii.gz"))
    return tmp_path / "ras.nii.gz"


@pytest.mark.parametrize("pair", ["flipped", "rotated"])
@pytest.mark.parametrize("tool", [_ants_warp, _sitk_warp], ids=["antspyx", "SimpleITK"])
def test_itk_tools_apply_the_displacement_as_regrisk_does(pair, tool, request, tmp_path):
    files = request.getfixturevalue(pair)
    own = _own_warped(files)
    assert own.std() > 5  # the phantom is in view, not an empty image
    assert _corr(tool(files, files["result"] / "displacement.nii.gz"), own) > 0.995
    # the same vectors along RAS+ axes are misread: the check can fail
    assert _corr(tool(files, _ras_copy(files, tmp_path)), own) < 0.9


def test_displacement_headers_say_their_convention(flipped):
    for name in ("displacement.nii.gz", "mean_displacement.nii.gz"):
        img = nib.load(str(flipped["result"] / name))
        assert img.shape == (*TARGET_SHAPE, 1, 3)
        assert img.header.get_intent()[0] == "vector"
        assert "LPS" in img.header["descrip"].tobytes().decode()
        np.testing.assert_allclose(img.affine, TARGET_AFFINE, atol=1e-5)
    conventions = json.loads((flipped["result"] / "summary.json").read_text())["conventions"]
    assert "LPS" in conventions["displacement"] and "jacobian" in conventions


def test_jacobian_matches_ants(rotated):
    field = rotated["result"] / "displacement.nii.gz"
    fixed = ants.image_read(str(rotated["target"]))
    theirs = ants.create_jacobian_determinant_image(fixed, str(field)).numpy()
    ours = nib.load(str(rotated["result"] / "jacobian.nii.gz")).get_fdata()
    inside = binary_erosion(phantom(TARGET_SHAPE, TARGET_AFFINE) > 50)
    assert inside.sum() > 500 and ours[inside].std() > 0.01   # a non-trivial map to compare
    rel = np.abs(ours[inside] - theirs[inside]) / np.abs(theirs[inside])
    assert rel.max() < 0.02, rel.max()
    summary = json.loads((rotated["result"] / "summary.json").read_text())["jacobian"]
    assert summary["folding_fraction"] == pytest.approx(float(np.mean(ours <= 0)))
    assert summary["region_voxels"] == ours.size   # stretch: the model grid covers every voxel


def test_left_handed_source_is_an_orientation_reversing_map(flipped):
    # target grid right-handed, source left-handed, matched voxel to voxel (stretch): the world
    # map reverses orientation everywhere, so every voxel counts as folded
    ours = nib.load(str(flipped["result"] / "jacobian.nii.gz")).get_fdata()
    assert (ours < 0).all()
    summary = json.loads((flipped["result"] / "summary.json").read_text())["jacobian"]
    assert summary["folding_fraction"] == 1.0
