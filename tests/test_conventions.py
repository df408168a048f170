"""Every card convention converts to the same canonical field, in Python and through real
ONNX graphs that emit that convention; velocity integration; intensity preprocessing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from regrisk import Estimator, conventions
from regrisk.card import ModelCard, Output, Preprocess
from regrisk.errors import InputError
from builders import blob, canonical_to_convention, com, com_model, coords

GRID = (9, 10, 11)
CONVENTIONS = [
    dict(kind=k, units=u, align_corners=a, order=o, axis=x)
    for k, u, a, o, x in itertools.product(("displacement", "map"), ("voxel", "unit", "normalized"),
                                           (True, False), ("ijk", "xyz"), ("first", "last"))
    if not (u == "voxel" and not a)  # align_corners is meaningless for voxel units
]


def _smooth_field(rng, b=2):
    u = rng.normal(size=(b, 3, *GRID)).astype(np.float32)
    return u


@pytest.mark.parametrize("conv", CONVENTIONS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_to_canonical_inverts_the_declared_convention(conv):
    rng = np.random.default_rng(0)
    u = _smooth_field(rng)
    raw = canonical_to_convention(u, conv["kind"], conv["units"], conv["align_corners"],
                                  conv["order"], conv["axis"])
    out = Output(name="o", kind=conv["kind"], units=conv["units"],
                 align_corners=conv["align_corners"], channel_order=conv["order"],
                 channel_axis=conv["axis"])
    got = conventions.to_canonical(raw, out, GRID)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == u.shape
    np.testing.assert_allclose(got, u, atol=2e-4)
    back = conventions.from_canonical(got, out, GRID)
    np.testing.assert_allclose(back, raw, atol=2e-5)


def test_known_points_of_each_unit_system():
    """Spot values from the definitions: the last voxel centre is 1 in unit/ac, 1 - 1/(2n) in
    unit/no-ac, 1 in normalized/ac and 1 - 1/n in normalized/no-ac."""
    n = np.array(GRID)
    last = (n - 1).astype(np.float64)
    s, o = conventions.unit_scale_offset("unit", True, n)
    np.testing.assert_allclose(s * last + o, 1)
    s, o = conventions.unit_scale_offset("unit", False, n)
    np.testing.assert_allclose(s * last + o, 1 - 1 / (2 * n))
    s, o = conventions.unit_scale_offset("normalized", True, n)
    np.testing.assert_allclose(s * last + o, 1)
    np.testing.assert_allclose(s * 0 + o, -1)
    s, o = conventions.unit_scale_offset("normalized", False, n)
    np.testing.assert_allclose(s * last + o, 1 - 1 / n)


GRAPH_CONVENTIONS = [
    dict(kind="displacement", units="voxel", align_corners=True, channel_order="ijk", channel_axis="first"),
    dict(kind="map", units="unit", align_corners=True, channel_order="ijk", channel_axis="first"),
    dict(kind="map", units="normalized", align_corners=False, channel_order="xyz", channel_axis="last"),
    dict(kind="displacement", units="normalized", align_corners=True, channel_order="xyz", channel_axis="first"),
    dict(kind="map", units="normalized", align_corners=True, channel_order="xyz", channel_axis="last"),
]


@pytest.mark.parametrize("conv", GRAPH_CONVENTIONS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_onnx_graph_conventions_round_trip_to_one_field(tmp_path, conv):
    grid = (12, 13, 14)
    S, T = blob(grid, (5.5, 6.0, 7.5), 1.5), blob(grid, (6.0, 6.5, 6.5), 1.5)
    aff = np.diag([1.2, 0.9, 1.7, 1.0])
    path = com_model(tmp_path / "m.onnx", grid, **conv)
    pred = Estimator(str(path)).predict((S, aff), (T, aff))
    expected = com(S) - com(T)
    np.testing.assert_allclose(pred.grid_displacement.reshape(3, -1),
                               np.repeat(expected[:, None], np.prod(grid), 1), atol=5e-4)


def test_concat_layout_with_either_order(tmp_path):
    grid = (12, 13, 14)
    S, T = blob(grid, (5.5, 6.0, 7.5), 1.5), blob(grid, (6.0, 6.5, 6.5), 1.5)
    aff = np.eye(4)
    for order in (("source", "target"), ("target", "source")):
        path = com_model(tmp_path / f"c{order[0]}.onnx", grid, layout="concat", order=order)
        pred = Estimator(str(path)).predict((S, aff), (T, aff))
        np.testing.assert_allclose(pred.grid_displacement[:, 0, 0, 0], com(S) - com(T), atol=5e-4)


def _ss_reference(v: np.ndarray, steps: int, mode: str) -> np.ndarray:
    """Scaling and squaring with scipy: u <- u + u(x + u); ``mode`` is scipy's boundary."""
    u = v.astype(np.float64) / 2 ** steps
    g = coords(v.shape[1:]).astype(np.float64)
    for _ in range(steps):
        pts = g + u
        u = u + np.stack([map_coordinates(u[c], pts, order=1, mode=mode) for c in range(3)])
    return u


@pytest.mark.parametrize("padding, scipy_mode", [("zeros", "grid-constant"), ("border", "nearest")])
def test_velocity_integration_matches_scipy_scaling_and_squaring(padding, scipy_mode):
    rng = np.random.default_rng(1)
    lowres = rng.normal(size=(3, 3, 3, 3)) * 1.5
    from scipy.ndimage import zoom

    v = np.stack([zoom(lowres[c], np.array(GRID) / 3, order=3) for c in range(3)]).astype(np.float32)
    out = Output(name="v", kind="velocity", steps=5, padding=padding)
    got = conventions.to_canonical(v[None], out, GRID)[0]
    np.testing.assert_allclose(got, _ss_reference(v, 5, scipy_mode), atol=1e-3)


def test_constant_velocity_integrates_to_itself_with_border_padding():
    out = Output(name="v", kind="velocity", steps=5, padding="border")
    c = np.broadcast_to(np.array([0.7, -0.3, 1.1], np.float32)[:, None, None, None], (3, *GRID))
    np.testing.assert_allclose(conventions.to_canonical(np.ascontiguousarray(c)[None], out, GRID)[0], c, atol=1e-5)


def test_preprocess_minmax_and_percentile():
    rng = np.random.default_rng(2)
    v = rng.gamma(2.0, 3.0, size=GRID).astype(np.float32)
    card = ModelCard(name="x", grid=GRID, preprocess=Preprocess("minmax"))
    np.testing.assert_allclose(conventions.preprocess(v, card), (v - v.min()) / (v.max() - v.min()), atol=1e-6)
    card = ModelCard(name="x", grid=GRID, preprocess=Preprocess("percentile", 2.0, 98.0))
    lo, hi = np.percentile(v, [2, 98])
    np.testing.assert_allclose(conventions.preprocess(v, card), (np.clip(v, lo, hi) - lo) / (hi - lo), atol=1e-5)
    card = ModelCard(name="x", grid=GRID, preprocess=Preprocess("none"))
    np.testing.assert_array_equal(conventions.preprocess(v, card), v)
    flat = np.zeros(GRID, np.float32)
    flat[0, 0, 0] = 1  # percentile clip makes it constant
    card = ModelCard(name="x", grid=GRID, preprocess=Preprocess("percentile", 5.0, 95.0))
    with pytest.raises(InputError, match="constant"):
        conventions.preprocess(flat, card)
