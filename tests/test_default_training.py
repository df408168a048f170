"""The default model's training pipeline: synthetic pairs, the network's pieces, resumable runs.

Runs on random label maps only (``p_template=0``): the brain templates come from nilearn and
Debian's mricron-data, which the test environment does not need.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from scipy.ndimage import map_coordinates  # noqa: E402

# Training code is not installed with regrisk: it is imported from the repository root.
from exporters.default_model import network, synth, train  # noqa: E402

GRID = (32, 32, 32)


def _gen(seed: int = 3) -> synth.Synth:
    return synth.Synth(seed, synth.SynthConfig(grid=GRID, p_template=0.0))


def test_pairs_are_reproducible_and_labels_follow_the_ground_truth():
    torch.set_num_threads(1)
    g1, g2 = _gen(), _gen()
    a, b = g1.pair(), g2.pair()
    for f in ("source", "target", "source_labels", "target_labels", "displacement"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    # target labels are the source labels pulled back through u_gt (checked with scipy,
    # nearest neighbour, border clamping as the generator uses)
    u = a.displacement[0].numpy().astype(np.float64)
    pos = np.indices(GRID, dtype=np.float64) + u
    pos = np.stack([np.clip(p, 0, n - 1) for p, n in zip(pos, GRID)])
    ref = map_coordinates(a.source_labels[0].numpy(), pos.reshape(3, -1), order=0).reshape(GRID)
    agree = (ref == a.target_labels[0].numpy()).mean()
    assert agree > 0.98  # ties at exact half-voxel positions may round either way
    assert float(a.displacement.abs().max()) > 0.5  # a real deformation, not the identity
    for img in (a.source, a.target):
        assert float(img.min()) == 0.0 and float(img.max()) == pytest.approx(1.0)


def test_local_normalize_removes_a_smooth_gain_and_offset():
    torch.manual_seed(0)
    x = synth.gaussian_blur(torch.rand(1, 1, *GRID), 1.0)
    norm = network.LocalNormalize(sigma=3.0, eps=1e-6)
    # a gain and offset constant over the volume leave the local contrast unchanged
    np.testing.assert_allclose(norm(3.0 * x + 0.5).numpy(), norm(x).numpy(), atol=2e-3)


def test_identity_grid_matches_linspace():
    like = torch.zeros(2, 1, 5, 7, 4)
    axes = [torch.linspace(-1.0, 1.0, n) for n in like.shape[2:]]
    ref = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)[None]
    got = network._base_grid(like)
    assert got.shape == (1, 5, 7, 4, 3)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_demons_stage_recovers_a_translation():
    """Fixed arithmetic before any training: a blob moved by 1.5 voxels is found again."""
    torch.manual_seed(0)
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in GRID],
                                     indexing="ij"))
    c = torch.tensor([15.5, 16.0, 15.0]).view(3, 1, 1, 1)
    blob = lambda centre: torch.exp(-((idx - centre) ** 2).sum(0) / 40.0)[None, None]  # noqa: E731
    shift = torch.tensor([1.5, -1.0, 0.5]).view(3, 1, 1, 1)
    source, target = blob(c), blob(c - shift)  # S(x + shift) = T(x)
    refine = network.DemonsRefine(levels=(4, 2), steps=30, sigma=2.0)
    with torch.no_grad():
        u = refine(source, target)
    u = torch.nn.functional.interpolate(u, scale_factor=2.0, mode="trilinear",
                                        align_corners=False)[0]
    core = ((idx - c) ** 2).sum(0) < 16.0
    got = torch.stack([u[i][core].mean() for i in range(3)])
    np.testing.assert_allclose(got.numpy(), shift.flatten().numpy(), atol=0.35)


def _state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # as train.py resumes


def test_a_stopped_run_resumes_to_the_same_weights(tmp_path):
    args = ["--iters", "3", "--batch", "1", "--crop", *map(str, GRID), "--p-template", "0",
            "--every", "1", "--val-every", "1000", "--threads", "1", "--refine-steps", "2",
            "--seed", "5"]
    assert train.main(["--out", str(tmp_path / "straight"), *args]) == 0
    # stopped by its time limit after the first iteration, then resumed
    assert train.main(["--out", str(tmp_path / "split"), *args, "--time-limit", "1e-9"]) == 0
    assert _state(tmp_path / "split" / "checkpoint.pt")["iter"] == 1
    assert train.main(["--out", str(tmp_path / "split"), *args, "--resume"]) == 0
    a, b = _state(tmp_path / "straight" / "checkpoint.pt"), _state(tmp_path / "split" / "checkpoint.pt")
    assert a["iter"] == b["iter"] == 3
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], rtol=0, atol=1e-6), k
    assert [r["dice_loss"] for r in a["log"]] == pytest.approx([r["dice_loss"] for r in b["log"]])
    assert (tmp_path / "split" / "training.json").is_file()
    assert (tmp_path / "split" / "loss_curve.png").is_file()
