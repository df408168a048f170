"""NIfTI loading/validation and atomic output folders."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from regrisk import io
from regrisk.errors import InputError, OutputError
from builders import oblique_affine, write_nifti

AFF = oblique_affine()


@pytest.fixture
def vol():
    return np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)


def test_load_path_image_and_pair_agree(tmp_path, vol):
    ints = (vol * 1000).astype(np.int16) + 3
    p = write_nifti(tmp_path / "a.nii.gz", ints, AFF)
    a = io.load_image(p)
    b = io.load_image(nib.load(str(p)))
    c = io.load_image((ints, AFF))
    for img in (a, b, c):
        assert img.data.dtype == np.float32 and img.data.shape == (6, 7, 8)
        np.testing.assert_array_equal(img.data, ints)
        np.testing.assert_allclose(img.affine, AFF, atol=1e-5)
    np.testing.assert_allclose(a.spacing, [1.5, 1.0, 2.0], atol=1e-5)


def test_single_volume_4d_is_accepted(tmp_path, vol):
    p = write_nifti(tmp_path / "a.nii.gz", vol[..., None], AFF)
    assert io.load_image(p).shape == (6, 7, 8)


@pytest.mark.parametrize("data, match", [
    (np.zeros((6, 7, 8, 2), np.float32) + np.arange(2), "3-D scalar"),
    (np.random.default_rng(0).random((6, 7)).astype(np.float32), "3-D scalar"),
    (np.full((6, 7, 8), 4.0, np.float32), "constant"),
])
def test_unsuitable_data(tmp_path, data, match):
    p = write_nifti(tmp_path / "x.nii.gz", data, AFF)
    with pytest.raises(InputError, match=match):
        io.load_image(p)


def test_nan_and_inf(tmp_path, vol):
    v = vol.copy()
    v[1, 2, 3], v[0, 0, 0] = np.nan, np.inf
    with pytest.raises(InputError, match="2 voxel\\(s\\) are NaN or Inf"):
        io.load_image(write_nifti(tmp_path / "n.nii.gz", v, AFF))


def test_missing_truncated_corrupt(tmp_path, vol):
    with pytest.raises(InputError, match="no such file"):
        io.load_image(tmp_path / "missing.nii.gz")
    good = write_nifti(tmp_path / "g.nii", vol, AFF)
    raw = good.read_bytes()
    trunc = tmp_path / "t.nii"
    trunc.write_bytes(raw[: 352 + 100])
    with pytest.raises(InputError, match="truncated or corrupt"):
        io.load_image(trunc)
    tgz = tmp_path / "t.nii.gz"
    tgz.write_bytes(gzip.compress(raw)[:400])
    with pytest.raises(InputError, match="truncated|corrupt|readable"):
        io.load_image(tgz)
    junk = tmp_path / "j.nii.gz"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(InputError, match="not a readable NIfTI"):
        io.load_image(junk)
    with pytest.raises(InputError, match="a folder with no DICOM files"):
        io.load_image(tmp_path)


def test_singular_affine(vol):
    with pytest.raises(InputError, match="affine"):
        io.load_image((vol, np.zeros((4, 4))))


def test_save_nifti_vector_intent_and_affine(tmp_path, vol):
    field = np.stack([vol, 2 * vol, 3 * vol])
    io.save_nifti(tmp_path / "d.nii.gz", field, AFF, vector=True)
    img = nib.load(str(tmp_path / "d.nii.gz"))
    assert img.shape == (6, 7, 8, 1, 3)
    assert img.header.get_intent()[0] == "vector"
    assert img.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(img.affine, AFF, atol=1e-5)
    np.testing.assert_allclose(img.get_fdata()[..., 0, 1], 2 * vol, rtol=1e-6)
    io.save_nifti(tmp_path / "s.nii.gz", field, AFF)
    assert nib.load(str(tmp_path / "s.nii.gz")).shape == (6, 7, 8, 3)


def test_output_folder_is_atomic(tmp_path):
    out = tmp_path / "out"
    with io.OutputFolder(out) as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "summary.json").write_text('{"regrisk": "test"}')  # the marker --overwrite needs
        assert not out.exists()
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(OutputError, match="already exists"):
        io.OutputFolder(out)
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc):
            with io.OutputFolder(out, overwrite=True) as tmp:
                (tmp / "b.txt").write_text("2")
                raise exc()
        assert sorted(p.name for p in out.iterdir()) == ["a.txt", "summary.json"]  # untouched
    with io.OutputFolder(out, overwrite=True) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp leftovers
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        io.check_output(tmp_path / "file", overwrite=True)
    with pytest.raises(OutputError, match="parent folder"):
        io.check_output(tmp_path / "no" / "such" / "dir", overwrite=False)


def test_output_folder_has_the_permissions_of_a_plain_mkdir(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        with io.OutputFolder(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("1")
        os.mkdir(tmp_path / "plain")
        mode = stat.S_IMODE((tmp_path / "out").stat().st_mode)
        assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o755
    finally:
        os.umask(umask)


def test_atomic_file_replaces_on_success_and_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "model.card.json"
    io.write_text_atomic(target, "first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with io.atomic_file(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp != target
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "first"
    with io.atomic_file(target) as tmp:
        tmp.write_text("second")
        assert target.read_text() == "first"  # readers see the old file until the rename
    assert target.read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.card.json"]  # no leftovers


def test_masks_may_be_constant_but_not_empty(tmp_path):
    full = write_nifti(tmp_path / "full.nii.gz", np.ones((5, 6, 7, 1), np.uint8), AFF)
    mask, affine = io.load_mask(full)
    assert mask.dtype == bool and mask.shape == (5, 6, 7) and mask.all()
    np.testing.assert_allclose(affine, AFF, atol=1e-5)
    part = np.zeros((5, 6, 7), np.float32)
    part[1:3, 2:4, 3:5] = 1.0
    part[0, 0, 0] = 0.4  # below one half: outside
    assert io.load_mask((part, AFF))[0].sum() == 8
    with pytest.raises(InputError, match="selects no voxels"):
        io.load_mask((np.zeros((5, 6, 7), np.uint8), AFF))
    with pytest.raises(InputError, match="no such file"):
        io.load_mask(tmp_path / "missing.nii.gz")
    with pytest.raises(InputError, match="NaN or Inf"):
        io.load_mask((np.full((5, 6, 7), np.nan, np.float32), AFF))


def test_compressed_maps_are_plain_gzip_and_deterministic(tmp_path, vol, monkeypatch):
    """A .nii.gz is a gzip stream any reader takes (Python's gzip here), holding exactly the
    bytes nibabel serialises; the same map gives the same file twice; without python-isal
    nibabel's own writer gives the same content."""
    img = nib.Nifti1Image(vol, oblique_affine())
    paths = [tmp_path / f"m{i}.nii.gz" for i in range(3)]
    io.write_nifti(img, paths[0])
    io.write_nifti(img, paths[1])
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert gzip.decompress(paths[0].read_bytes()) == img.to_bytes()
    monkeypatch.setitem(__import__("sys").modules, "isal", None)  # import isal fails
    io.write_nifti(img, paths[2])
    assert gzip.decompress(paths[2].read_bytes()) == img.to_bytes()
    np.testing.assert_array_equal(np.asarray(nib.load(paths[0]).dataobj), vol)
