"""The calibration's cues: the residual flow (the misalignment left between warped source and
target, in mm), windows in mm, and the cue maps on any thread count.

Independent reasons for the expected values: for an image that is quadratic in space,
I(x + s) - I(x) equals the mean of the two images' gradients dotted with s, exactly, so an
undamped Lucas-Kanade step recovers s at every interior voxel whatever the window; the 3x3
system solved per voxel by NumPy's general solver must give the same shift as the adjugate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from regrisk.calibration import alignment, cues, qc
from regrisk.errors import EvaluationError

SHAPE = (20, 22, 18)


def quadratic(affine: np.ndarray, shift_mm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """I(x + s) on the grid for a random quadratic I of world position x (mm)."""
    a = rng.normal(size=(3, 3))
    a = a @ a.T + 3.0 * np.eye(3)  # positive definite: gradients span all three axes
    b = rng.normal(size=3)
    idx = np.indices(SHAPE, dtype=np.float64).reshape(3, -1)
    x = affine[:3, :3] @ idx + affine[:3, 3:4] + np.asarray(shift_mm)[:, None]
    x -= x.mean(axis=1, keepdims=True) - np.asarray(shift_mm)[:, None]
    return (np.einsum("in,ij,jn->n", x, a, x) / 100.0 + b @ x).reshape(SHAPE)


def interior(width: int = 6) -> tuple[slice, ...]:
    return tuple(slice(width, n - width) for n in SHAPE)


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.0, 2.5, 1.5)])
def test_an_undamped_step_recovers_a_shift_of_a_quadratic_image_in_mm(spacing):
    affine = np.diag([*spacing, 1.0])
    s = np.array([0.7, -1.1, 0.4])
    target = quadratic(affine, np.zeros(3), np.random.default_rng(1))
    warped = quadratic(affine, s, np.random.default_rng(1))
    flow = alignment.residual_flow(warped, target, affine, 2.0, 1e-9)
    assert flow.dtype == np.float32 and flow.shape == SHAPE
    # float32 gradients and window sums: a few parts in a thousand
    np.testing.assert_allclose(flow[interior()], np.linalg.norm(s), rtol=5e-3)


def test_damping_only_shrinks_the_estimate():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    s = np.array([0.5, 0.5, -0.5])
    target = quadratic(affine, np.zeros(3), np.random.default_rng(2))
    warped = quadratic(affine, s, np.random.default_rng(2))
    free = alignment.residual_flow(warped, target, affine, 2.0, 1e-9)[interior()]
    damped = alignment.residual_flow(warped, target, affine, 2.0, 0.1)[interior()]
    assert (damped < free).all() and (damped > 0).all()


def test_the_adjugate_solve_equals_a_general_solver_per_voxel():
    rng = np.random.default_rng(3)
    affine = np.diag([2.0, 1.0, 3.0, 1.0])
    target = ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.5).astype(np.float32)
    warped = ndimage.shift(target, (0.6, -0.3, 0.2), order=3, mode="nearest").astype(np.float32)
    got = alignment.residual_flow(warped, target, affine, 2.0, 0.01)
    # the same system written out plainly: gradients, window sums, damping, np.linalg.solve
    spacing = np.array([2.0, 1.0, 3.0])
    g = np.stack([(a + b) / (2 * h) for a, b, h in zip(np.gradient(warped.astype(np.float64)),
                                                         np.gradient(target.astype(np.float64)),
                                                         spacing)], axis=-1)
    win = lambda v: ndimage.gaussian_filter(v, 2.0, mode="nearest")  # noqa: E731
    tensor = np.stack([np.stack([win(g[..., i] * g[..., j]) for j in range(3)], -1)
                       for i in range(3)], -2)
    rhs = np.stack([win(g[..., i] * (warped - target)) for i in range(3)], -1)
    tensor += 0.01 * np.trace(tensor, axis1=-2, axis2=-1).mean() * np.eye(3)
    want = np.linalg.norm(np.linalg.solve(tensor, rhs[..., None])[..., 0], axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * want.max())


def test_contrast_does_not_change_the_flow_and_a_flat_image_reads_zero():
    rng = np.random.default_rng(4)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    target = ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.5)
    warped = ndimage.shift(target, (0.5, 0.0, 0.3), order=3, mode="nearest")
    base = alignment.residual_flow(warped, target, affine, 2.0, 0.01)
    # an image of ten times the contrast (and an offset) is as misaligned, in mm, as before
    np.testing.assert_allclose(alignment.residual_flow(10 * warped + 3, 10 * target + 3, affine,
                                                  2.0, 0.01), base, rtol=1e-3, atol=1e-5)
    flat = np.full(SHAPE, 5.0, np.float32)
    assert np.array_equal(alignment.residual_flow(flat, flat, affine, 2.0, 0.01),
                          np.zeros(SHAPE, np.float32))


def test_a_nan_in_the_images_is_not_read_as_aligned():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    target = ndimage.gaussian_filter(np.random.default_rng(5).normal(size=SHAPE), 1.5)
    warped = target.copy()
    warped[10, 10, 9] = np.nan
    assert not np.isfinite(alignment.residual_flow(warped, target, affine, 2.0, 0.01)).all()


def test_a_calibration_from_before_the_flow_cue_loads_and_never_flags_by_it():
    names = [n for n in cues.CASE_CUES if n != "case_flow_residual"]
    rule = qc.VerdictRule.from_dict({"predicted_mean_error_mm": [0.5, 0.8, 30.0],
                                     "true_mean_error_mm": [0.6, 0.7, 35.0],
                                     "case_cue_max": {n: 1.0 for n in names}})
    flow = cues.CASE_CUES.index("case_flow_residual")
    assert rule.case_cue_max[flow] == np.inf
    case = np.full(len(cues.CASE_CUES), 0.5)
    case[flow] = 1e6
    assert rule.verdict(0.5, 2.0, case) == "pass"
    case[0] = 100.0  # a cue the old calibration knows, far out of its range
    assert rule.verdict(0.5, 2.0, case) == "review"


def fake_result(rng: np.random.Generator):
    from types import SimpleNamespace

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    smooth = lambda v: ndimage.gaussian_filter(v, 2.0)  # noqa: E731
    disp = np.stack([smooth(rng.normal(size=SHAPE)) * 3 for _ in range(3)]).astype(np.float32)
    return SimpleNamespace(uncertainty=np.abs(rng.normal(size=SHAPE)).astype(np.float32),
                           uncertainty_axes=np.abs(rng.normal(size=(3, *SHAPE))).astype(np.float32),
                           displacement=disp, affine=affine, jacobian=None,
                           warped_source=smooth(rng.normal(size=SHAPE)).astype(np.float32)), disp


def test_cues_are_the_same_bits_on_any_number_of_threads():
    rng = np.random.default_rng(6)
    result, disp = fake_result(rng)
    target = ndimage.gaussian_filter(rng.normal(size=SHAPE), 2.0).astype(np.float32)
    one = cues.compute(result, target, -disp, result.affine, threads=1)
    for threads in (2, 3):
        many = cues.compute(result, target, -disp, result.affine, threads=threads)
        assert one.case == many.case
        assert all(np.array_equal(one.maps[n], many.maps[n]) for n in cues.VOXEL_CUES)
    assert tuple(one.maps) == cues.VOXEL_CUES


def test_design_matrix_from_a_table_or_from_maps_is_the_same():
    from regrisk.calibration import model

    rng = np.random.default_rng(7)
    table = np.abs(rng.normal(size=(500, len(cues.VOXEL_CUES)))).astype(np.float32)
    case = np.abs(rng.normal(size=len(cues.CASE_CUES)))
    by_name = {n: table[:, i].copy() for i, n in enumerate(cues.VOXEL_CUES)}
    x = model.features(table, case)
    assert np.array_equal(x, model.features(by_name, case))
    # written out plainly for one log feature and one identity feature
    i = cues.VOXEL_CUES.index("sigma")
    np.testing.assert_array_equal(x[:, list(model.FEATURES).index("log_sigma")],
                                  np.log(table[:, i].astype(np.float64) + 0.05))
    j = cues.VOXEL_CUES.index("ncc_residual")
    np.testing.assert_array_equal(x[:, list(model.FEATURES).index("ncc_residual")],
                                  table[:, j].astype(np.float64))
    table[3, i] = np.nan
    with pytest.raises(EvaluationError, match="not finite"):
        model.features(table, case)


def test_windows_are_mm_per_axis_and_legacy_voxels_stay_voxels():
    affine = np.diag([2.0, 1.0, 0.5, 1.0])
    win = cues.windows(cues.SETTINGS, affine)
    assert win["smooth"] == (2.0, 4.0, 8.0) and win["ncc_wide_window"] == (4.0, 8.0, 16.0)
    old = {"smooth_vox": 2.0, "ncc_window_vox": 2.0, "ncc_wide_window_vox": 4.0}
    settings = cues.settings_of({**old, "samples": 16, "voxel_cues": ["sigma"]})
    # a calibration from before the flow cue: its windows stay in the target's voxels, the
    # flow cue (which its model does not weigh) gets the default
    assert cues.windows(settings, affine)["smooth"] == 2.0
    assert cues.windows(settings, affine)["flow_window"] == (2.0, 4.0, 8.0)
    assert settings["flow_damping"] == cues.SETTINGS["flow_damping"] and "samples" not in settings
    with pytest.raises(KeyError):
        cues.windows({"smooth_mm": 4.0}, affine)


def analytic(spacing: tuple[float, float, float], shift_mm: tuple[float, float, float]
             ) -> tuple[np.ndarray, np.ndarray]:
    """A smooth analytic image of world position (mm) sampled on a 64 mm cube."""
    h = np.asarray(spacing, np.float64)
    n = tuple(int(64 / v) for v in h)
    x = (np.indices(n, dtype=np.float64) * h[:, None, None, None]
         + np.asarray(shift_mm)[:, None, None, None])
    f = (np.sin(x[0] / 5.0) * np.cos(x[1] / 7.0) + 0.5 * np.sin((x[0] + x[2]) / 4.0)
         + 0.3 * np.cos(x[2] / 3.0))
    return f.astype(np.float32), np.diag([*h, 1.0])


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.0, 2.5)])
def test_the_same_misalignment_reads_the_same_on_another_grid(spacing):
    # windows in mm: the NCC residual and the flow of one physical misalignment do not depend on
    # the target's voxel size, isotropic or not (windows in voxels read 20% more NCC residual
    # at 1 mm than at 2 mm)
    shift = (0.8, -0.5, 0.3)
    read = {}
    for grid in ((2.0, 2.0, 2.0), spacing):
        target, affine = analytic(grid, (0.0, 0.0, 0.0))
        warped, _ = analytic(grid, shift)
        win = cues.windows(cues.SETTINGS, affine)
        c = tuple(slice(n // 4, 3 * n // 4) for n in target.shape)
        read[grid] = (float((1 - alignment.local_ncc(warped, target, win["ncc_window"]))[c].mean()),
                      float(alignment.residual_flow(warped, target, affine, win["flow_window"],
                                               0.01)[c].mean()))
    base, other = read[(2.0, 2.0, 2.0)], read[spacing]
    assert other[0] == pytest.approx(base[0], rel=0.03)
    assert other[1] == pytest.approx(base[1], rel=0.03)
    assert other[1] == pytest.approx(np.linalg.norm(shift), rel=0.05)
