"""The packaged default network: its files, cards, determinism, and that it registers."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
nib = pytest.importorskip("nibabel")
from scipy.ndimage import map_coordinates  # noqa: E402

from regrisk.card import read_card  # noqa: E402

GRID = (80, 96, 80)


def _pkg(*parts: str) -> Path:
    return Path(str(resources.files("regrisk").joinpath(*parts)))


DET = _pkg("models", "default.onnx")
STO = _pkg("models", "default_stochastic.onnx")


def _session(path: Path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def det():
    return _session(DET)


@pytest.fixture(scope="module")
def sto():
    return _session(STO)


def _rand(seed: int, b: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"source": rng.random((b, 1, *GRID), dtype=np.float32),
            "target": rng.random((b, 1, *GRID), dtype=np.float32)}


def test_files_are_small_and_carry_cards():
    for path, stochastic in ((DET, False), (STO, True)):
        assert path.is_file(), path
        assert path.stat().st_size <= 5 * 2**20
        card = read_card(path)
        assert card.stochastic is stochastic
        assert tuple(card.grid) == GRID
        assert card.inputs.layout == "pair"
        assert (card.inputs.source, card.inputs.target) == ("source", "target")
        assert card.output.kind == "displacement" and card.output.units == "voxel"
        assert card.output.channel_order == "ijk" and card.output.channel_axis == "first"
        assert card.batch == "dynamic"
        assert card.preprocess.method == "minmax"
        assert card.resample.method == "reslice" and tuple(card.resample.spacing) == (2.0, 2.0, 2.0)
        assert card.provenance["training"]["iterations"] > 0


def test_packaged_model_resolves_and_matches_its_card():
    from regrisk.model_loading import resolve

    for name in ("default", "default-stochastic"):
        resolved = resolve(name)  # check_card raises on any card/graph contradiction
        assert resolved.card is not None and tuple(resolved.card.grid) == GRID


def test_sample_pair_is_small_and_on_the_model_grid():
    names = ["colin27_t1.nii.gz", "colin27_labels.nii.gz", "mni152_t1.nii.gz",
             "mni152_labels.nii.gz"]
    paths = [_pkg("data", n) for n in names]
    assert sum(p.stat().st_size for p in paths) <= 2 * 2**20
    imgs = [nib.load(str(p)) for p in paths]
    for img in imgs:
        assert img.shape == GRID
        np.testing.assert_allclose(np.abs(np.diag(img.affine)[:3]), 2.0)
        np.testing.assert_allclose(img.affine, imgs[0].affine)
    for lab in (imgs[1], imgs[3]):
        values = np.unique(np.asarray(lab.dataobj))
        assert set(values.tolist()) == {0, 1, 2, 3}  # background, CSF, GM, WM


def test_runs_with_a_dynamic_batch(det):
    for b in (1, 3):
        out = det.run(None, _rand(b, b))[0]
        assert out.shape == (b, 3, *GRID) and out.dtype == np.float32
        assert np.isfinite(out).all()
    # batch items are independent: item 1 of a batch equals that pair alone
    feeds = _rand(7, 2)
    both = det.run(None, feeds)[0]
    alone = det.run(None, {k: v[1:] for k, v in feeds.items()})[0]
    np.testing.assert_allclose(both[1], alone[0], rtol=1e-4, atol=1e-4)


def test_deterministic_graph_repeats_exactly(det):
    feeds = _rand(3)
    a, b = det.run(None, feeds)[0], det.run(None, feeds)[0]
    assert np.array_equal(a, b)


def test_stochastic_graph_samples_dropout(det, sto):
    feeds = _rand(4)
    runs = [sto.run(None, feeds)[0] for _ in range(3)]
    assert not np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[1], runs[2])
    # same network: the stochastic passes scatter around the deterministic prediction
    d = det.run(None, feeds)[0]
    spread = np.mean([np.abs(r - d).mean() for r in runs])
    scale = np.abs(d).mean() + 1.0
    assert 0 < spread < scale


def _minmax(x: np.ndarray) -> np.ndarray:
    return ((x - x.min()) / (x.max() - x.min())).astype(np.float32)


def _dice(a: np.ndarray, b: np.ndarray, labels=(1, 2, 3)) -> float:
    return float(np.mean([2 * np.sum((a == l) & (b == l)) / (np.sum(a == l) + np.sum(b == l))
                          for l in labels]))


def test_registers_a_known_deformation(det):
    """A real brain (Colin27) warped by a known smooth field: the network must recover it.

    Independent reason: the target is built from the source with scipy and an analytic
    displacement u_gt, so (a) the source labels pulled back through the prediction must
    overlap the target labels by at least the project's bar for the default model (Dice +0.15)
    better than before and (b) the prediction must be at least twice as close to u_gt as the
    identity is.
    """
    img = np.asarray(nib.load(str(_pkg("data", "colin27_t1.nii.gz"))).dataobj, dtype=np.float32)
    lab = np.asarray(nib.load(str(_pkg("data", "colin27_labels.nii.gz"))).dataobj)
    idx = np.indices(GRID, dtype=np.float32)
    # smooth field, up to ~3 voxels (6 mm), different along each axis
    u_gt = np.stack([
        3.0 * np.sin(np.pi * idx[1] / GRID[1]) * np.sin(np.pi * idx[2] / GRID[2]),
        -2.5 * np.sin(np.pi * idx[0] / GRID[0]) * np.cos(np.pi * idx[2] / GRID[2]),
        2.0 * np.sin(2 * np.pi * idx[0] / GRID[0]) * np.sin(np.pi * idx[1] / GRID[1]),
    ]).astype(np.float32)
    pos = (idx + u_gt).reshape(3, -1)
    tgt = map_coordinates(img, pos, order=1, mode="constant").reshape(GRID)
    tgt_lab = map_coordinates(lab, pos, order=0, mode="constant").reshape(GRID)
    u = det.run(None, {"source": _minmax(img)[None, None], "target": _minmax(tgt)[None, None]})[0][0]
    moved = map_coordinates(lab, (idx + u).reshape(3, -1), order=0, mode="constant").reshape(GRID)
    before, after = _dice(lab, tgt_lab), _dice(moved, tgt_lab)
    assert after > before + 0.15, (before, after)
    brain = tgt_lab > 0
    err_before = np.linalg.norm(u_gt, axis=0)[brain].mean()
    err_after = np.linalg.norm(u - u_gt, axis=0)[brain].mean()
    assert err_after < 0.5 * err_before, (err_before, err_after)
