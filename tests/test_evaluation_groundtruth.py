"""Ground-truth generators produce the transforms they claim: apply, then invert.

Independent of the code under test: warps here use scipy.ndimage.map_coordinates, the expected
maps come from the analytic definitions (S' = I o G, so the map the network should predict is
G^{-1})."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from regrisk.evaluation import groundtruth as gtm

SHAPE = (28, 32, 30)


def _grid(shape):
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))


def _smooth_image(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = _grid(shape)
    img = np.zeros(shape)
    for _ in range(6):
        c = rng.uniform(0.3, 0.7, 3) * (np.array(shape) - 1)
        s = rng.uniform(3.0, 6.0)
        img += np.exp(-((x - c[:, None, None, None]) ** 2).sum(0) / (2 * s * s))
    return img.astype(np.float32)


def _scipy_warp(img, disp, order=3):
    pts = _grid(img.shape) + disp
    return map_coordinates(img.astype(np.float64), pts, order=order, mode="constant", cval=0.0)


def test_translation_moves_content_the_claimed_way() -> None:
    # A blob at p in I appears at p - t in S' = I o G (S'(y) = I(y + t)), and the network should
    # send target point p to source point p - t: u_gt = -t.
    rng = np.random.default_rng(3)
    gt = gtm.translation(SHAPE, rng)
    t = np.array(gt.params["translation_vox"])
    assert np.all(np.abs(t) <= 0.10 * (np.array(SHAPE) - 1) + 1e-9)
    x = _grid(SHAPE)
    p = (np.array(SHAPE) - 1) / 2
    img = np.exp(-((x - p[:, None, None, None]) ** 2).sum(0) / (2 * 2.0**2)).astype(np.float32)
    moved = gt.apply(img)
    centroid = (x * moved).reshape(3, -1).sum(1) / moved.sum()
    np.testing.assert_allclose(centroid, p - t, atol=0.05)
    np.testing.assert_allclose(gt.displacement[:, 5, 6, 7], -t, atol=1e-4)
    np.testing.assert_allclose(centroid, p + gt.displacement[:, 0, 0, 0], atol=0.05)


@pytest.mark.parametrize("kind", ["translation", "affine", "nonlinear"])
def test_apply_then_invert_recovers_the_image(kind: str) -> None:
    rng = np.random.default_rng({"translation": 1, "affine": 2, "nonlinear": 4}[kind])
    gt = gtm.make(kind, SHAPE, rng)
    img = _smooth_image(SHAPE)
    moved = gt.apply(img)
    # S' o phi_gt should be I wherever phi_gt lands inside the image and G of that stays inside.
    back = _scipy_warp(moved, gt.displacement.astype(np.float64), order=3)
    pts = _grid(SHAPE) + gt.displacement
    inside = np.all((pts >= 2) & (pts <= (np.array(SHAPE) - 3)[:, None, None, None]), axis=0)
    assert inside.mean() > 0.3
    err = np.abs(back - img)[inside]
    assert err.max() < 0.03 * img.max(), (kind, err.max())
    # The wrong direction (warp by -u_gt) must not recover the image: the test can fail.
    wrong = _scipy_warp(moved, -gt.displacement.astype(np.float64), order=3)
    assert np.abs(wrong - img)[inside].max() > 5 * err.max()


def test_apply_matches_the_definition_pointwise() -> None:
    rng = np.random.default_rng(5)
    for kind in ("affine", "nonlinear"):
        gt = gtm.make(kind, SHAPE, rng)
        img = _smooth_image(SHAPE, seed=1)
        moved = gt.apply(img)
        g = gt.pullback_points(_grid(SHAPE).reshape(3, -1).T).T  # G(y), independent of warp
        expect = map_coordinates(img.astype(np.float64), g, order=1, mode="grid-constant")
        np.testing.assert_allclose(moved.ravel(), expect, atol=2e-4)


@pytest.mark.parametrize("kind", ["affine", "nonlinear"])
def test_composition_with_the_truth_is_identity(kind: str) -> None:
    # G(phi_gt(x)) = x, with G evaluated independently (exact affine / scipy trilinear).
    gt = gtm.make(kind, SHAPE, np.random.default_rng(7))
    x = _grid(SHAPE).reshape(3, -1).T
    phi = x + gt.displacement.reshape(3, -1).T
    back = gt.pullback_points(phi)
    assert np.abs(back - x).max() < (1e-4 if kind == "affine" else 5e-3)


def test_affine_parameters_are_in_range_and_centred() -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        gt = gtm.affine(SHAPE, rng)
        s, h = np.array(gt.params["scale"]), np.array(gt.params["shear"])
        assert np.all((s >= 0.8) & (s <= 1.2)) and np.all(np.abs(h) <= 0.1)
        c = (np.array(SHAPE) - 1) / 2
        np.testing.assert_allclose(gt.pullback_points(c[None])[0], c, atol=1e-9)
        lin = gt.affine[:, :3]
        np.testing.assert_allclose(np.diag(lin), s, atol=1e-4)
        assert lin[1, 0] == lin[2, 0] == lin[2, 1] == 0.0


def test_nonlinear_is_smooth_non_folding_and_non_trivial() -> None:
    gt = gtm.nonlinear(SHAPE, np.random.default_rng(13))
    assert gt.params["inverse_residual_vox"] < 1e-2
    assert gt.params["max_displacement_vox"] > 0.5
    assert gtm._min_jacobian(gt.dense) > 0.0
    assert gtm._min_jacobian(gt.displacement) > 0.0  # the inverse is a diffeomorphism too


def test_voxel_to_mm_uses_the_linear_part() -> None:
    aff = np.array([[0, 0, 2.0, 5], [1.5, 0, 0, -3], [0, 1.0, 0, 7], [0, 0, 0, 1]])
    u = np.zeros((3, 2, 2, 2), np.float32)
    u[0] = 1.0  # one voxel along array axis 0
    mm = gtm.voxel_to_mm(u, aff)
    np.testing.assert_allclose(mm[:, 0, 0, 0], [0.0, 1.5, 0.0])


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="ground truth must be one of"):
        gtm.make("rotation", SHAPE, np.random.default_rng(0))
