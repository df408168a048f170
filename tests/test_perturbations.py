"""Perturbation families: geometry in the mm frame, bounds, presets, seeding, Sobol."""

from __future__ import annotations

import numpy as np
import pytest

from regrisk import perturbations as P

SHAPE = (21, 31, 41)
M = np.diag([1.5, 1.0, 2.0])  # anisotropic voxels
C = (np.array(SHAPE) - 1) / 2


def draw(spec, n=64, seed=0, sobol=False, M=M):
    return P.parse(spec).draw(n, SHAPE, M, np.random.default_rng(seed), sobol).sample_order()


def _mm_linear(A):
    """The linear part of a voxel pull-back seen in the mm frame: M A M^-1."""
    return M @ A[:3, :3] @ np.linalg.inv(M)


def test_translation_bounds_in_each_unit():
    d = draw("translation")  # 1% of the grid extent per axis
    t = d.affine[:, :, 3]
    np.testing.assert_allclose(d.affine[:, :, :3], np.broadcast_to(np.eye(3), (64, 3, 3)))
    assert np.all(np.abs(t) <= 0.01 * (np.array(SHAPE) - 1) + 1e-6)
    assert np.abs(t).max(0).min() > 0.005 * (np.array(SHAPE) - 1).min()  # not degenerate
    t_mm = (M @ draw("translation(max=3mm)").affine[:, :, 3].T).T
    assert np.all(np.abs(t_mm) <= 3 + 1e-5) and np.abs(t_mm).max() > 2.5
    assert np.all(np.abs(draw("translation(max=2)").affine[:, :, 3]) <= 2 + 1e-6)


def test_rotation_is_a_true_rotation_in_mm_about_the_centre():
    d = draw("rotation(max=10)")
    for A in d.affine.astype(np.float64):
        R = _mm_linear(A)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)
        assert np.linalg.det(R) == pytest.approx(1, abs=1e-5)
        angle = np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))
        assert angle <= 10 * np.sqrt(3) + 1e-3
        np.testing.assert_allclose(A[:, :3] @ C + A[:, 3], C, atol=1e-3)  # centre fixed


def test_scale_isotropic_and_per_axis():
    d = draw("scale")
    s = d.affine[:, 0, 0]
    for A, si in zip(d.affine, s):
        np.testing.assert_allclose(A[:, :3], si * np.eye(3), atol=1e-6)
        np.testing.assert_allclose(A[:, :3] @ C + A[:, 3], C, atol=1e-3)
    assert s.min() >= 0.9 - 1e-6 and s.max() <= 1.1 + 1e-6 and s.max() - s.min() > 0.1
    d = draw("scale(min=0.95,max=1.05,per_axis=1)")
    diag = np.diagonal(d.affine[:, :, :3], axis1=1, axis2=2)
    assert np.all((diag >= 0.95 - 1e-6) & (diag <= 1.05 + 1e-6))
    assert np.abs(diag[:, 0] - diag[:, 1]).max() > 0.01


def test_shear_offdiagonals_in_mm_frame():
    d = draw("shear(max=0.05)")
    for A in d.affine.astype(np.float64):
        L = _mm_linear(A)
        np.testing.assert_allclose(np.diag(L), 1, atol=1e-6)
        off = L[~np.eye(3, dtype=bool)]
        assert np.all(np.abs(off) <= 0.05 + 1e-6)


def test_affine_combines_all():
    d = draw("affine(rotation=3,translation=2mm,scale_min=0.95,scale_max=1.05,shear=0.01)")
    dets = np.linalg.det(d.affine[:, :, :3].astype(np.float64))
    assert dets.min() > 0.95 ** 3 * 0.98 and dets.max() < 1.05 ** 3 * 1.02
    assert np.std(dets) > 1e-3


def test_bspline_control_grid_by_count_and_spacing():
    d = draw("bspline", n=4)
    assert all(c.shape == (3, 10, 10, 10) for c in d.control)
    bound = 12.5 / 175 * (np.array(SHAPE) - 1)
    ctrl = np.stack(d.control)
    assert np.all(np.abs(ctrl) <= bound[None, :, None, None, None] + 1e-5)
    d = draw("bspline(spacing=10,max=3)", n=2)
    # spacing s = (n-1)/(c-3) >= ... c = ceil((n-1)/10) + 3
    assert d.control[0].shape == (3, 5, 6, 7)
    assert np.abs(np.stack(d.control)).max() <= 3 + 1e-6
    assert d.dense.all()
    d = draw("bspline(count=6,max=2mm)", n=3)
    mm = np.einsum("ij,njabc->niabc", M, np.stack(d.control))
    assert np.abs(mm).max() <= 2 + 1e-5


def test_paper_preset_is_round_robin_over_four_families():
    d = draw("paper", n=10)
    assert d.families == ["translation", "scale", "shear", "bspline"] * 2 + ["translation", "scale"]
    assert list(d.dense) == [f == "bspline" for f in d.families]


def test_none_is_identity():
    d = draw("none", n=3)
    np.testing.assert_array_equal(d.affine, np.broadcast_to(np.eye(3, 4), (3, 3, 4)))


def test_seeded_reproducible_and_sobol_is_more_uniform():
    a, b, c = draw("translation", seed=4), draw("translation", seed=4), draw("translation", seed=5)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert not np.array_equal(a.affine, c.affine)
    s1, s2 = draw("scale", seed=1, sobol=True), draw("scale", seed=1, sobol=True)
    np.testing.assert_array_equal(s1.affine, s2.affine)
    # Sobol points fill [0.9, 1.1] more evenly than i.i.d. draws: compare the largest gap
    def max_gap(s):
        v = np.sort(np.concatenate([[0.9], s, [1.1]]))
        return np.diff(v).max()
    gaps_sobol = [max_gap(draw("scale", seed=k, sobol=True).affine[:, 0, 0]) for k in range(5)]
    gaps_iid = [max_gap(draw("scale", seed=k).affine[:, 0, 0]) for k in range(5)]
    assert np.mean(gaps_sobol) < np.mean(gaps_iid)


@pytest.mark.parametrize("spec, match", [
    ("wobble", "unknown family"),
    ("translation(size=3)", "no parameter size"),
    ("translation(max=-2)", ">= 0"),
    ("translation(max=abc)", "not a number"),
    ("scale(min=1.2,max=1.1)", "min <= max"),
    ("bspline(count=3)", "integer >= 4"),
    ("bspline(count=5,spacing=3)", "not both"),
    ("translation(max)", "key=value"),
    ("", "preset"),
])
def test_bad_specs(spec, match):
    with pytest.raises(P.PerturbationError, match=match):
        P.parse(spec)


def test_draw_returns_one_homogeneous_block_per_family_in_round_robin_positions():
    ds = P.parse("translation+bspline(count=5)+scale").draw(10, SHAPE, M, np.random.default_rng(0))
    assert [b.family for b in ds.blocks] == ["translation", "bspline", "scale"]
    for f, b in enumerate(ds.blocks):
        np.testing.assert_array_equal(b.index, np.arange(f, 10, 3))  # sample k -> family k mod 3
        assert (b.control is not None) == (b.family == "bspline") == b.dense
        assert (b.affine is None) == b.dense
    assert ds.blocks[1].control.shape == (3, 3, 5, 5, 5)
    assert ds.family_counts() == {"translation": 4, "bspline": 3, "scale": 3}
    # the per-sample view puts every block row back at its own sample position
    order = ds.sample_order()
    np.testing.assert_array_equal(order.affine[3], ds.blocks[0].affine[1])
    np.testing.assert_array_equal(order.control[4], ds.blocks[1].control[1])
    assert order.control[0] is None and order.families[5] == "scale"
    sub = ds.blocks[0].take(np.array([1, 3]))
    np.testing.assert_array_equal(sub.index, [3, 9])
    np.testing.assert_array_equal(sub.affine, ds.blocks[0].affine[[1, 3]])


def test_stratified_design_puts_one_draw_in_each_stratum_and_keeps_the_law():
    n = 8
    ds = P.parse("translation(max=2)+bspline(count=4,max=1)").draw(
        2 * n, SHAPE, M, np.random.default_rng(3), design="stratified")
    t = ds.blocks[0].affine[:, :, 3]                       # (n, 3) in [-2, 2]
    u = (t + 2) / 4                                         # back to [0, 1)
    h = n // 2                                              # even rows, odd rows: two designs
    for half in (u[0::2], u[1::2]):
        for axis in range(3):                               # one value per stratum per axis
            np.testing.assert_array_equal(np.sort(np.floor(half[:, axis] * h)), np.arange(h))
    c = (ds.blocks[1].control.reshape(n, -1) + 1) / 2
    for half in (c[0::2], c[1::2]):
        assert all(np.array_equal(np.sort(np.floor(half[:, j] * h)), np.arange(h))
                   for j in range(c.shape[1]))
    # many designs pooled: each coordinate is still uniform (mean 1/2, variance 1/12)
    pooled = np.concatenate([(P.parse("translation(max=1)").draw(
        n, SHAPE, M, np.random.default_rng(s), design="stratified").blocks[0].affine[:, :, 3] + 1) / 2
        for s in range(300)])
    assert abs(pooled.mean() - 0.5) < 0.01 and abs(pooled.var() - 1 / 12) < 0.004
    with pytest.raises(P.PerturbationError, match="design"):
        P.parse("scale").draw(4, SHAPE, M, np.random.default_rng(0), design="lattice")
