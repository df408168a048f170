"""spaces: native image grid <-> model grid. Expectations are written from the definitions in
the module docstring (stretch: corner voxel centres on corner voxel centres; reslice: a grid of
the card's spacing about the image centre) and checked with plain NumPy or SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from regrisk import kernels, spaces
from regrisk.card import ModelCard, Preprocess, Resample
from builders import coords, oblique_affine

GRID = (20, 22, 24)
AFF = oblique_affine()


def _card(grid, method="stretch", spacing=None) -> ModelCard:
    return ModelCard(name="s", grid=grid, preprocess=Preprocess("none"),
                     resample=Resample(method, spacing))


def _ramp(shape, centre_shift=0.0) -> np.ndarray:
    """A linear function of the voxel index: trilinear sampling reproduces it exactly."""
    g = coords(shape).astype(np.float64)
    return (2.0 * g[0] - 1.0 * g[1] + 0.5 * g[2] + 3.0 + centre_shift).astype(np.float32)


def _apply(affine34: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine34[:, :3].T + affine34[:, 3]


# -- the maps themselves ---------------------------------------------------------------------

def test_stretch_puts_corner_voxels_on_corner_voxels():
    native = (30, 18, 24)
    gm = spaces.grid_map(native, AFF, _card(GRID))
    n, g = np.array(native) - 1, np.array(GRID) - 1
    np.testing.assert_allclose(gm.A, np.diag(n / g))
    np.testing.assert_array_equal(gm.b, 0.0)
    corners = np.array([[0, 0, 0], g, [g[0], 0, g[2]]], dtype=np.float64)
    expected = np.array([[0, 0, 0], n, [n[0], 0, n[2]]], dtype=np.float64)
    np.testing.assert_allclose(_apply(gm.pullback.astype(np.float64), corners), expected, atol=1e-5)


def test_reslice_grid_has_the_card_spacing_about_the_image_centre():
    native = (14, 15, 16)
    aff = oblique_affine(spacing=(2.0, 2.5, 3.0), angle_deg=30.0)
    gm = spaces.grid_map(native, aff, _card((26, 26, 26), "reslice", (1.0, 1.25, 1.5)))
    np.testing.assert_allclose(np.linalg.norm(gm.grid_affine[:3, :3], axis=0), [1.0, 1.25, 1.5])
    np.testing.assert_allclose(gm.A, np.diag([0.5, 0.5, 0.5]))
    centre_native = (np.array(native) - 1) / 2
    centre_grid = (np.array([26, 26, 26]) - 1) / 2
    np.testing.assert_allclose(gm.A @ centre_grid + gm.b, centre_native)


@pytest.mark.parametrize("method, spacing", [("stretch", None), ("reslice", (0.8, 1.3, 1.9))])
def test_pullback_and_pushforward_are_inverses(method, spacing):
    gm = spaces.grid_map((17, 25, 21), AFF, _card(GRID, method, spacing))
    pts = np.random.default_rng(0).uniform(-3, 30, (50, 3))
    back = _apply(gm.pushforward.astype(np.float64), _apply(gm.pullback.astype(np.float64), pts))
    np.testing.assert_allclose(back, pts, atol=1e-4)


def test_grid_affine_is_the_native_affine_after_the_pullback():
    gm = spaces.grid_map((17, 25, 21), AFF, _card(GRID, "reslice", (0.8, 1.3, 1.9)))
    x = np.array([[3.0, 7.0, 11.0], [0.0, 0.0, 0.0], [19.0, 21.0, 23.0]])
    native_vox = x @ gm.A.T + gm.b                                  # model voxel -> native voxel
    world_expected = native_vox @ AFF[:3, :3].T + AFF[:3, 3]         # native voxel -> mm
    world = x @ gm.grid_affine[:3, :3].T + gm.grid_affine[:3, 3]
    np.testing.assert_allclose(world, world_expected, atol=1e-9)
    np.testing.assert_allclose(gm.to_mm, AFF[:3, :3] @ gm.A, atol=1e-12)
    np.testing.assert_array_equal(gm.grid_affine[3], [0, 0, 0, 1])


# -- volumes through the maps ------------------------------------------------------------------

def test_to_grid_samples_the_native_volume_at_the_pullback():
    native = (30, 18, 24)
    gm = spaces.grid_map(native, AFF, _card(GRID))
    v = np.random.default_rng(1).random(native).astype(np.float32)
    got = gm.to_grid(v, kernels)
    assert got.shape == GRID
    y = _apply(np.concatenate([gm.A, gm.b[:, None]], axis=1), coords(GRID).reshape(3, -1).T)
    want = map_coordinates(v.astype(np.float64), y.T, order=1, mode="nearest").reshape(GRID)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_linear_volume_goes_to_the_grid_and_back_exactly():
    native = (30, 18, 24)
    gm = spaces.grid_map(native, AFF, _card(GRID))
    v = _ramp(native)
    on_grid = gm.to_grid(v, kernels)
    # a linear function of y sampled at y = A x: the same function of A x
    g = coords(GRID).astype(np.float64)
    y = np.einsum("ij,j...->i...", gm.A, g)
    np.testing.assert_allclose(on_grid, 2.0 * y[0] - y[1] + 0.5 * y[2] + 3.0, atol=1e-4)
    np.testing.assert_allclose(gm.to_native(on_grid, kernels), v, atol=1e-4)


def test_reslice_fills_what_the_grid_does_not_cover_with_zero():
    native = (12, 12, 12)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    gm = spaces.grid_map(native, aff, _card((8, 8, 8), "reslice", (2.0, 2.0, 2.0)))
    v = _ramp(native, centre_shift=40.0)                 # positive everywhere
    on_grid = gm.to_grid(v, kernels)
    # same spacing: an 8^3 window of the 12^3 image, starting at voxel 2 on every axis
    np.testing.assert_allclose(on_grid, v[2:10, 2:10, 2:10], atol=1e-4)
    back = gm.to_native(on_grid, kernels)
    np.testing.assert_allclose(back[2:10, 2:10, 2:10], v[2:10, 2:10, 2:10], atol=1e-4)
    assert np.all(back[:2] == 0) and np.all(back[10:] == 0)  # outside the window: 0


# -- identity ----------------------------------------------------------------------------------

def test_identity_is_detected_only_when_nothing_moves():
    assert spaces.grid_map(GRID, AFF, _card(GRID)).is_identity
    spacing = tuple(np.linalg.norm(AFF[:3, :3], axis=0))
    assert spaces.grid_map(GRID, AFF, _card(GRID, "reslice", spacing)).is_identity
    assert not spaces.grid_map((20, 22, 25), AFF, _card(GRID)).is_identity
    assert not spaces.grid_map(GRID, AFF, _card(GRID, "reslice", (1.0, 1.0, 1.0))).is_identity


def test_identity_grid_map_shortcut_equals_resampling():
    v = np.random.default_rng(0).random(GRID).astype(np.float32)
    gm = spaces.grid_map(GRID, AFF, ModelCard(name="i", grid=GRID))
    assert gm.is_identity
    direct = kernels.warp(v, affine=gm.pullback, shape=GRID, mode="border")
    np.testing.assert_allclose(gm.to_grid(v, kernels), direct, atol=1e-6)
    np.testing.assert_allclose(gm.to_native(v, kernels), direct, atol=1e-6)
    assert gm.to_grid(v, kernels) is not v  # a copy: callers may edit the result
    assert not spaces.grid_map((20, 22, 25), AFF, ModelCard(name="i", grid=GRID)).is_identity


# -- fields on the native grid -------------------------------------------------------------------

def test_native_fields_of_a_constant_field():
    """Target on the model grid itself, source stretched from another grid: the matched source
    voxel of target voxel y is A_s (y + u) + b_s, and the world displacement is the difference
    of the two world positions."""
    src_shape, src_aff = (30, 18, 24), oblique_affine(spacing=(1.0, 1.2, 2.0), origin=(4.0, -2.0, 1.0))
    smap = spaces.grid_map(src_shape, src_aff, _card(GRID))
    tmap = spaces.grid_map(GRID, AFF, _card(GRID))
    shift = np.array([0.5, -1.25, 2.0], np.float32)
    u = np.ascontiguousarray(np.broadcast_to(shift[:, None, None, None], (3, *GRID)))
    world, to_source = spaces.native_fields(smap, tmap, u, kernels, np)
    y = coords(GRID).reshape(3, -1).astype(np.float64)
    P = smap.A @ (y + shift[:, None]) + smap.b[:, None]
    want_world = (src_aff[:3, :3] @ P + src_aff[:3, 3:4]) - (AFF[:3, :3] @ y + AFF[:3, 3:4])
    np.testing.assert_allclose(world.reshape(3, -1), want_world, atol=2e-4)
    np.testing.assert_allclose(to_source.reshape(3, -1), P - y, atol=2e-4)
