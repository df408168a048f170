"""``regrisk demo``: end to end on the packaged pair, and its overview picture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pytest.importorskip("onnxruntime")

from regrisk.cli import main  # noqa: E402
from regrisk.demo import data_path, overview_png, tissue_dice, warp_labels_world  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read_png(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == PNG_MAGIC
    return mpimg.imread(str(path))


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--samples", "4", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "overview.png" in printed
    # the network must move Colin27's tissue labels onto MNI152's better than no registration
    line = next(l for l in printed.splitlines() if "tissue Dice" in l)
    before, after = (float(x) for x in line.split(":", 1)[1].split("(")[0].split("->"))
    assert after > before + 0.02, line
    for name in ("overview.png", "uncertainty.nii.gz", "uncertainty_axes.nii.gz",
                 "displacement.nii.gz", "warped_source.nii.gz", "summary.json"):
        assert (out / name).is_file(), name
    target = nib.load(str(data_path("mni152_t1.nii.gz")))
    sigma = nib.load(str(out / "uncertainty.nii.gz"))
    assert sigma.shape == target.shape
    np.testing.assert_allclose(sigma.affine, target.affine, atol=1e-5)
    s = np.asarray(sigma.dataobj)
    brain = np.asarray(nib.load(str(data_path("mni152_labels.nii.gz"))).dataobj) > 0
    assert np.isfinite(s).all() and (s >= 0).all()
    assert s[brain].mean() > 0  # four different perturbations cannot agree everywhere
    warped = np.asarray(nib.load(str(out / "warped_source.nii.gz")).dataobj)
    assert warped.shape == target.shape and np.abs(warped).max() > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary  # the engine's run summary
    img = _read_png(out / "overview.png")
    assert img.ndim == 3 and img.shape[0] > 400 and img.shape[1] > 600
    assert img[..., :3].std() > 0.05  # a picture, not a blank canvas
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_demo_refuses_existing_output(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(out), "--samples", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "demo" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_demo_rejects_too_few_samples(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["demo", "--out", str(out), "--samples", "1"]) == 2
    assert "samples" in capsys.readouterr().err
    assert not out.exists()


def test_overview_png_layout(tmp_path):
    rng = np.random.default_rng(0)
    shape = (20, 24, 18)
    vol = rng.random(shape, dtype=np.float32)
    sigma = np.zeros(shape, np.float32)
    sigma[10:, :, :] = 3.0  # one hot half: the heat map must show two colours
    mask = np.ones(shape, bool)
    path = tmp_path / "o.png"
    overview_png(path, vol, vol, vol, sigma, mask, title="t")
    img = _read_png(path)
    assert img.shape[1] > img.shape[0]  # four columns, three rows
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_tissue_dice_counts_overlap_per_label():
    a = np.zeros((4, 4, 4), np.int16)
    b = np.zeros_like(a)
    a[:2] = 1           # 32 voxels of CSF in a
    b[:1] = 1           # 16 of them in b: Dice 2 * 16 / 48
    a[2:] = b[2:] = 2   # identical GM
    d = tissue_dice(a, b)
    assert d["csf"] == pytest.approx(2 / 3)
    assert d["grey_matter"] == 1.0
    assert np.isnan(d["white_matter"]) and np.isnan(d["mean"])  # an absent label is no score


def test_warp_labels_world_follows_a_millimetre_shift():
    """A constant world shift of one voxel (2 mm along x) on a 2 mm grid pulls each label from
    its neighbour: the same as slicing the array by one along axis 0."""
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 4, (6, 7, 5)).astype(np.int16)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = (-5.0, 3.0, 1.0)
    zero = np.zeros((3, *lab.shape))
    np.testing.assert_array_equal(warp_labels_world(lab, aff, aff, zero), lab)
    shift = zero.copy()
    shift[0] = 2.0
    moved = warp_labels_world(lab, aff, aff, shift)
    np.testing.assert_array_equal(moved[:-1], lab[1:])
    assert (moved[-1] == 0).all()  # outside the source: background
    # a source grid offset by one voxel in world space needs no displacement for the same result
    off = aff.copy()
    off[0, 3] -= 2.0
    np.testing.assert_array_equal(warp_labels_world(lab, off, aff, zero)[:-1], lab[1:])


def test_warp_labels_world_matches_scipy_nearest_inside_the_volume():
    """The rounded lookup against scipy.ndimage.map_coordinates (order 0) for a random affine
    and field, on target voxels whose source position is inside and not on a half voxel."""
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(4)
    lab = rng.integers(0, 4, (9, 8, 10)).astype(np.int16)
    src_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    tgt_aff = np.array([[1.9, 0.1, 0, 1.0], [0, 2.1, 0.2, -1.0], [0.1, 0, 2.0, 0.5], [0, 0, 0, 1]])
    disp = rng.normal(0.0, 1.5, (3, 9, 8, 10))
    moved = warp_labels_world(lab, src_aff, tgt_aff, disp)
    idx = np.indices(lab.shape, dtype=np.float64).reshape(3, -1)
    world = tgt_aff[:3, :3] @ idx + tgt_aff[:3, 3:4] + disp.reshape(3, -1)
    inv = np.linalg.inv(src_aff)
    pos = inv[:3, :3] @ world + inv[:3, 3:4]
    ok = np.all((pos > 0.01) & (pos < np.array(lab.shape)[:, None] - 1.01), axis=0)
    ok &= np.all(np.abs(pos - np.floor(pos) - 0.5) > 1e-6, axis=0)
    expected = map_coordinates(lab, pos, order=0, mode="constant", cval=0)
    assert ok.sum() > 200
    np.testing.assert_array_equal(moved.ravel()[ok], expected[ok])
    assert (moved.ravel()[np.any(pos < -0.5, axis=0)] == 0).all()
