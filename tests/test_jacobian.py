"""jacobian.determinant against fields whose Jacobian is known in closed form; the folding
summary; the region a reslice model grid covers."""

from __future__ import annotations

import numpy as np
import pytest
from builders import oblique_affine, world_points

from regrisk import jacobian
from regrisk.card import ModelCard
from regrisk.spaces import grid_map

SHAPE = (14, 12, 10)
AFFINE = oblique_affine((1.5, 1.0, 2.0), 25.0)


def test_linear_world_field_has_the_determinant_of_its_matrix(rng):
    # u(x) = (L - I) x + c in world mm: phi(x) = L x + c, det = det(L) at every voxel (central
    # and one-sided differences are exact on a linear field), whatever the grid's orientation
    L = np.eye(3) + 0.2 * rng.standard_normal((3, 3))
    x = world_points(SHAPE, AFFINE)
    u = np.einsum("ij,j...->i...", L - np.eye(3), x) + np.reshape([3.0, -1.0, 2.0], (3, 1, 1, 1))
    det = jacobian.determinant(u.astype(np.float32), AFFINE)
    np.testing.assert_allclose(det, np.linalg.det(L), rtol=2e-4)


def test_slabs_do_not_change_the_result(monkeypatch, rng):
    x = world_points(SHAPE, AFFINE)
    u = (np.sin(x / 7.0) * 2).astype(np.float32)
    whole = jacobian.determinant(u, AFFINE)
    monkeypatch.setattr(jacobian, "_SLAB_VOXELS", 50)   # a few slices per slab
    np.testing.assert_array_equal(jacobian.determinant(u, AFFINE), whole)


def test_sine_field_matches_its_analytic_jacobian():
    # u_0 = a sin(k x_1) along world axes: J = I + [[0, a k cos(k x_1), 0], 0, 0], det = 1
    # exactly; u_0 = a sin(k x_0): det = 1 + a k cos(k x_0)
    x = world_points(SHAPE, AFFINE)
    a, k = 1.5, 0.25
    u = np.zeros((3, *SHAPE), np.float32)
    u[0] = a * np.sin(k * x[0])
    det = jacobian.determinant(u, AFFINE)
    inner = (slice(1, -1),) * 3
    np.testing.assert_allclose(det[inner], (1 + a * k * np.cos(k * x[0]))[inner], atol=0.02)


def test_folding_summary_counts_non_positive_determinants():
    det = np.ones(SHAPE, np.float32)
    det[0, 0, :4] = [0.0, -1.0, -0.5, 2.0]
    region = np.ones(SHAPE, bool)
    region[0, 0, 0] = False
    out = jacobian.folding(det, region)
    assert out["folding_voxels"] == 2 and out["region_voxels"] == region.sum()
    assert out["folding_fraction"] == pytest.approx(2 / region.sum())
    assert out["min"] == -1.0 and out["max"] == 2.0


def test_reslice_grid_covers_its_field_of_view_only():
    card = ModelCard.from_dict({"name": "m", "grid": [8, 8, 8], "output": {"name": "flow"},
                                "resample": {"method": "reslice", "spacing": [1.5, 1.0, 2.0]}})
    m = grid_map((14, 12, 10), AFFINE, card)
    covered = m.covered()
    # the 8^3 grid at native spacing is centred: native voxels 3..10, 2..9, 1..8, less the
    # outer layer where a derivative would reach outside
    expect = np.zeros((14, 12, 10), bool)
    expect[4:10, 3:9, 2:8] = True
    np.testing.assert_array_equal(covered, expect)
    stretch = grid_map((14, 12, 10), AFFINE, ModelCard.from_dict(
        {"name": "m", "grid": [8, 8, 8], "output": {"name": "flow"}}))
    assert stretch.covered().all()
