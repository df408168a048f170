"""``regrisk apply``: images in the source's space through a result's transform, compared with
regrisk's own warped_source and with ANTs (antspyx) on an oblique pair whose source grid is
left-handed; label maps against ANTs' genericLabel and nearestNeighbor; every bad input
refused with one line and nothing written."""

from __future__ import annotations

import ants
import nibabel as nib
import numpy as np
import pytest
from builders import (PHANTOM_LABELS, TARGET_SHAPE, centred_affine, oblique_estimate, phantom,
                      phantom_labels, smooth_field_model, write_nifti)

from regrisk.cli import main

# labels drawn on a third grid in the source's world space: 1 mm, rotated otherwise
LABEL_SHAPE = (30, 28, 26)
LABEL_AFFINE = centred_affine(LABEL_SHAPE, (1.0, 1.0, 1.0), (5, 10, -10))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    files = oblique_estimate(tmp_path_factory.mktemp("apply"), (1, -1, 1), smooth_field_model())
    files["labels"] = write_nifti(files["target"].parent / "labels.nii.gz",
                                  phantom_labels(LABEL_SHAPE, LABEL_AFFINE), LABEL_AFFINE)
    return files


def _apply(files, out, *extra):
    return main(["apply", "--result", str(files["result"]), "--out", str(out), *extra])


def _ants(files, image, interpolator, reference=None):
    fixed = ants.image_read(str(reference or files["target"]))
    return ants.apply_transforms(fixed, ants.image_read(str(image)),
                                 [str(files["result"] / "displacement.nii.gz")],
                                 interpolator=interpolator).numpy()


def _dice(a, b, value):
    x, y = a == value, b == value
    return 2 * np.count_nonzero(x & y) / (np.count_nonzero(x) + np.count_nonzero(y))


def test_applied_to_its_source_gives_warped_source(pair, tmp_path, capsys):
    out = tmp_path / "w.nii.gz"
    assert _apply(pair, out, "--image", str(pair["source"])) == 0
    assert str(out) in capsys.readouterr().out
    ours = nib.load(str(out))
    own = nib.load(str(pair["result"] / "warped_source.nii.gz"))
    assert ours.shape == TARGET_SHAPE and ours.get_data_dtype() == np.float32
    np.testing.assert_allclose(ours.affine, own.affine, atol=1e-6)
    np.testing.assert_allclose(ours.get_fdata(), own.get_fdata(), atol=1e-3)  # values ~100


@pytest.mark.parametrize("method, theirs", [("majority", "genericLabel"),
                                            ("nearest", "nearestNeighbor")])
def test_labels_match_ants(pair, tmp_path, method, theirs):
    out = tmp_path / "labels.nii.gz"
    assert _apply(pair, out, "--image", str(pair["labels"]), "--labels", method) == 0
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.int16          # the label map's own type
    ours = np.asanyarray(img.dataobj)
    assert set(np.unique(ours)) == {0, *PHANTOM_LABELS}   # values copied, never blended
    ants_labels = np.rint(_ants(pair, pair["labels"], theirs)).astype(int)
    for value in PHANTOM_LABELS:
        assert np.count_nonzero(ours == value) > 100, value
        assert _dice(ours, ants_labels, value) > 0.95, (value, _dice(ours, ants_labels, value))


def test_labels_flag_alone_means_majority(pair, tmp_path):
    assert _apply(pair, tmp_path / "a.nii.gz", "--image", str(pair["labels"]), "--labels") == 0
    assert _apply(pair, tmp_path / "b.nii.gz", "--image", str(pair["labels"]),
                  "--labels", "majority") == 0
    a, b = (np.asanyarray(nib.load(str(tmp_path / n)).dataobj) for n in ("a.nii.gz", "b.nii.gz"))
    np.testing.assert_array_equal(a, b)


def test_channels_are_resampled_independently(pair, tmp_path):
    src = nib.load(str(pair["source"]))
    s = src.get_fdata().astype(np.float32)
    stack = write_nifti(tmp_path / "rgb.nii.gz", np.stack([s, 200 - s, s ** 2 / 100], -1),
                        src.affine)
    assert _apply(pair, tmp_path / "o.nii.gz", "--image", str(stack)) == 0
    out = nib.load(str(tmp_path / "o.nii.gz")).get_fdata()
    assert out.shape == (*TARGET_SHAPE, 3)
    for c, vol in enumerate((s, 200 - s, s ** 2 / 100)):
        single = write_nifti(tmp_path / f"c{c}.nii.gz", vol, src.affine)
        assert _apply(pair, tmp_path / f"o{c}.nii.gz", "--image", str(single)) == 0
        np.testing.assert_allclose(out[..., c], nib.load(str(tmp_path / f"o{c}.nii.gz")).get_fdata(),
                                   atol=1e-4)


def test_reference_grid_matches_ants(pair, tmp_path):
    shape = (30, 30, 26)
    ref_affine = centred_affine(shape, (1.1, 1.1, 1.3), (-5, 20, 15))
    ref = write_nifti(tmp_path / "ref.nii.gz", np.zeros(shape, np.float32), ref_affine)
    out = tmp_path / "r.nii.gz"
    assert _apply(pair, out, "--image", str(pair["source"]), "--reference", str(ref)) == 0
    ours = nib.load(str(out))
    assert ours.shape == shape
    np.testing.assert_allclose(ours.affine, ref_affine, atol=1e-5)
    theirs = _ants(pair, pair["source"], "linear", reference=ref)
    assert theirs.std() > 5
    assert np.corrcoef(ours.get_fdata().ravel(), theirs.ravel())[0, 1] > 0.995


def _refused(files, tmp_path, capsys, match, *args):
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["apply", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before   # nothing written


def test_bad_input_one_line_and_nothing_written(pair, tmp_path, capsys):
    out = str(tmp_path / "o.nii.gz")
    image = str(pair["source"])
    result = str(pair["result"])
    _refused(pair, tmp_path, capsys, "not a folder",
             "--result", str(tmp_path / "none"), "--image", image, "--out", out)
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(pair, tmp_path, capsys, "no displacement.nii.gz",
             "--result", str(empty), "--image", image, "--out", out)
    _refused(pair, tmp_path, capsys, ".nii or .nii.gz",
             "--result", result, "--image", image, "--out", str(tmp_path / "o.png"))
    _refused(pair, tmp_path, capsys, "no such file",
             "--result", result, "--image", str(tmp_path / "missing.nii.gz"), "--out", out)
    nan = phantom((8, 8, 8), np.eye(4))
    nan[1, 1, 1] = np.nan
    bad = write_nifti(tmp_path / "nan.nii.gz", nan, np.eye(4))
    _refused(pair, tmp_path, capsys, "NaN or Inf",
             "--result", result, "--image", str(bad), "--out", out)
    two = write_nifti(tmp_path / "two.nii.gz", np.zeros((8, 8, 8, 2), np.int16), np.eye(4))
    _refused(pair, tmp_path, capsys, "one channel",
             "--result", result, "--image", str(two), "--out", out, "--labels")
    (tmp_path / "taken.nii.gz").write_bytes(b"keep")
    _refused(pair, tmp_path, capsys, "already exists",
             "--result", result, "--image", image, "--out", str(tmp_path / "taken.nii.gz"))
    assert (tmp_path / "taken.nii.gz").read_bytes() == b"keep"
