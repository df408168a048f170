"""The kernel suite: every kernel in regrisk.kernels against its NumPy reference
(regrisk.reference) on random inputs, on every array module (`xp`: NumPy -> regrisk._core
always; CuPy -> regrisk._cuda where a GPU is present, else that parameter skips with the
reason). On CuPy each result must also match the CPU kernels (GPU_TOL), as the CUDA sources are
written to give the CPU's result. Also: the reference against SciPy, the identities the method
relies on, and thread-count independence (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.ndimage import map_coordinates

from kernel_builders import affine, array_module, array_module_params, field, to_host, volume
from regrisk import kernels as K
from regrisk import reference as R

# Odd, non-cubic, degenerate (one voxel, one-voxel axes) grids.
SHAPES = [(1, 1, 1), (5, 6, 7), (2, 9, 4), (8, 3, 1), (1, 7, 5), (17, 13, 11)]
MODES = ["fill", "border"]
GPU_TOL = dict(atol=1e-5, rtol=1e-5)  # CuPy against the CPU kernels (rtol: fields reach tens of voxels)


@pytest.fixture(params=array_module_params())
def xp(request):
    return array_module(request.param)


def on(xp, a):
    """A NumPy array argument moved to xp; anything else as it is."""
    return xp.asarray(a) if isinstance(a, np.ndarray) else a


def run(xp, kernel, *args, **kwargs):
    """kernel with its NumPy array arguments moved to xp: (result on the host, and on CuPy the
    same call on the NumPy arrays, i.e. the CPU kernels' result; else None)."""
    got = kernel(*[on(xp, a) for a in args], **{k: on(xp, v) for k, v in kwargs.items()})
    assert isinstance(got, xp.ndarray) and got.dtype == np.float32
    return to_host(got), (None if xp is np else kernel(*args, **kwargs))


def check_close(a, b, atol=2e-5, rtol=2e-5):
    assert a.shape == b.shape and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=atol, rtol=rtol)


def check_kernel(result, want, atol=2e-5, rtol=2e-5, gpu_tol=GPU_TOL):
    """A `run` result against the reference `want`; on CuPy also against the CPU kernels."""
    got, cpu = result
    check_close(got, want, atol=atol, rtol=rtol)
    if cpu is not None:
        np.testing.assert_allclose(got, cpu, **gpu_tol)


# --- the reference itself against SciPy -----------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
def test_reference_trilinear_matches_scipy(rng, shape, mode):
    vol = volume(rng, shape).astype(np.float64)
    # Points inside, in the one-voxel halo, and far outside.
    pts = [rng.uniform(-3, n + 2, 400) for n in shape]
    fill = 0.75
    scipy_mode = "grid-constant" if mode == "fill" else "nearest"
    want = map_coordinates(vol, np.stack(pts), order=1, mode=scipy_mode, cval=fill)
    got = R.trilinear(vol, *pts, mode=mode, fill=fill)
    np.testing.assert_allclose(got, want, atol=1e-12)


# --- warp -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [0.7, 25.0])  # small, and large enough to leave the volume
def test_warp_displacement_matches_reference(xp, rng, shape, mode, scale):
    vol = volume(rng, shape, channels=2)
    out_shape = (shape[0] + 1, shape[1], max(1, shape[2] - 1))  # output grid != input grid
    disp = field(rng, out_shape, scale, batch=3)
    result = run(xp, K.warp, vol, disp, mode=mode, fill=-0.5)
    assert result[0].shape == (3, 2) + out_shape
    check_kernel(result, R.warp(vol, disp, mode=mode, fill=-0.5))
    # One volume per batch item (Bv == B).
    vols = volume(rng, shape, channels=2, batch=3)
    check_kernel(run(xp, K.warp, vols, disp, mode=mode), R.warp(vols, disp, mode=mode))


@pytest.mark.parametrize("channels", [1, 3])
def test_warp_rows_of_odd_width_mixing_inside_and_outside_points(xp, rng, channels):
    """Rows of 37 and 53 points: the CPU samples interior points 16 at a time (AVX-512 gathers
    where the CPU has them), so every row ends in a partial group, and a field of about two
    voxels puts interior and border points in the same group."""
    for shape in [(6, 5, 37), (3, 4, 53)]:
        vol = volume(rng, shape, channels=channels)
        disp = field(rng, shape, 2.0)
        for mode in MODES:
            check_kernel(run(xp, K.warp, vol, disp, mode=mode, fill=0.25),
                         R.warp(vol, disp, mode=mode, fill=0.25))


@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_warp_grid_matches_reference_and_the_displacement_it_stands_for(rng, align, mode):
    """GridSample's grid sampled directly: close to the float64 reference, and bit for bit the
    warp of the float32 displacement the staged graphs used to make from the grid."""
    vol = volume(rng, (7, 9, 11), channels=2)[None]
    grid = rng.uniform(-1.2, 1.2, (2, 6, 8, 13, 3)).astype(np.float32)  # points outside too
    got = K.warp_grid(vol, grid, align_corners=align, mode=mode, fill=0.5)
    assert got.shape == (2, 2, 6, 8, 13) and got.dtype == np.float32
    check_close(got, R.gridsample(vol, grid, align, mode=mode, fill=0.5), atol=2e-5, rtol=2e-5)
    disp = R.gridsample_displacement(grid, vol.shape, align)
    assert np.array_equal(got, K.warp(vol, disp, mode=mode, fill=0.5))
    with pytest.raises(ValueError, match="grid: axis 4"):
        K.warp_grid(vol, grid[..., :2].copy(), align_corners=align)


@pytest.mark.parametrize("vol_lead,disp_batch,expect", [
    ((), None, lambda s: s),                  # (D,H,W) + (3,...) -> (D,H,W)
    ((2,), None, lambda s: (2,) + s),         # (C,...) + (3,...) -> (C,...)
    ((), 3, lambda s: (3, 1) + s),            # one source, 3 transforms
    ((1, 2), 3, lambda s: (3, 2) + s),        # batched source of 1, broadcast
    ((3, 2), 3, lambda s: (3, 2) + s),        # B sources, B transforms
    ((3, 1), None, lambda s: (3, 1) + s),     # B sources, one transform (folded into channels)
])
def test_warp_ranks_and_broadcasting(xp, rng, vol_lead, disp_batch, expect):
    shape = (4, 5, 6)
    vol = rng.uniform(0, 1, vol_lead + shape).astype(np.float32)
    disp = field(rng, shape, 2.0, batch=disp_batch)
    result = run(xp, K.warp, vol, disp)
    assert result[0].shape == expect(shape)
    check_kernel(result, R.warp(vol, disp))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
def test_warp_affine_matches_reference(xp, rng, shape, mode):
    vol = volume(rng, shape, channels=1, batch=1)
    aff = affine(rng, batch=2, shift=0.6 * max(shape))
    out_shape = (3, 4, 5)
    result = run(xp, K.warp, vol, affine=aff, shape=out_shape, mode=mode, fill=1.5)
    assert result[0].shape == (2, 1) + out_shape
    check_kernel(result, R.warp(vol, affine=aff, shape=out_shape, mode=mode, fill=1.5))
    # Unbatched affine, default output grid = the input's.
    single = run(xp, K.warp, vol[0, 0], affine=aff[0], mode=mode)
    assert single[0].shape == shape
    check_kernel(single, R.warp(vol[0, 0], affine=aff[0], mode=mode))
    # Shifts that push many points outside, an output grid of other proportions, and the affine
    # as a NumPy array with an xp volume (small parameter arrays may live on the host).
    aff = affine(rng, batch=4, shift=max(shape))
    out_shape = (shape[2] + 2, shape[0], shape[1])
    want = R.warp(vol, affine=aff, shape=out_shape, mode=mode, fill=0.25)
    check_kernel(run(xp, K.warp, vol, affine=aff, shape=out_shape, mode=mode, fill=0.25), want)
    mixed = K.warp(on(xp, vol), affine=aff, shape=out_shape, mode=mode, fill=0.25)
    check_close(to_host(mixed), want)


def test_warp_affine_equals_dense_warp_by_its_displacement(xp, rng):
    shape = (9, 8, 7)
    vol = volume(rng, shape)
    aff = affine(rng)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).astype(np.float64)
    disp = (np.einsum("ij,j...->i...", aff[:, :3].astype(np.float64), grid)
            + aff[:, 3].astype(np.float64)[:, None, None, None] - grid).astype(np.float32)
    check_close(run(xp, K.warp, vol, affine=aff)[0], run(xp, K.warp, vol, disp)[0], atol=1e-4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    d=st.integers(1, 6), h=st.integers(1, 6), w=st.integers(1, 6),
    scale=st.floats(0.0, 12.0), fill=st.floats(-5, 5), mode=st.sampled_from(MODES),
    seed=st.integers(0, 2**31 - 1),
)
def test_warp_property_against_reference(xp, d, h, w, scale, fill, mode, seed):
    rng = np.random.default_rng(seed)
    vol = volume(rng, (d, h, w))
    disp = field(rng, (w, d, h), scale)
    check_kernel(run(xp, K.warp, vol, disp, fill=fill, mode=mode),
                 R.warp(vol, disp, fill=fill, mode=mode))


def test_warp_zero_field_and_identity_affine_are_exact(xp, rng):
    for shape in SHAPES + [(11, 13, 17)]:
        vol = volume(rng, shape, channels=3)
        for mode in MODES:
            out, _ = run(xp, K.warp, vol, np.zeros((3,) + shape, np.float32), mode=mode, fill=9.0)
            assert np.array_equal(out, vol)
            out, _ = run(xp, K.warp, vol, affine=np.eye(3, 4), mode=mode, fill=9.0)
            assert np.array_equal(out, vol)


# --- compose --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_compose_affine_matches_reference(xp, rng, shape):
    disp = field(rng, shape, 4.0, batch=3)
    aff = affine(rng, batch=3)
    check_kernel(run(xp, K.compose, disp, affine=aff), R.compose(disp, affine=aff), atol=5e-5)
    # One affine for the whole batch (as (3,4) and as a batch of one), and one field with a
    # batch of affines.
    check_kernel(run(xp, K.compose, disp, affine=aff[1]), R.compose(disp, affine=aff[1]), atol=5e-5)
    check_kernel(run(xp, K.compose, disp, affine=aff[1:2]), R.compose(disp, affine=aff[1:2]),
                 atol=5e-5)
    result = run(xp, K.compose, disp[0], affine=aff)
    assert result[0].shape == (3, 3) + shape
    check_kernel(result, R.compose(disp[0], affine=aff), atol=5e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [1.0, 4.0, 30.0])
def test_compose_field_matches_reference(xp, rng, shape, mode, scale):
    disp = field(rng, shape, scale, batch=2)
    # The source grid differs from the target's (larger on some axes, smaller on others).
    for fshape in ((shape[2] + 2, shape[0], shape[1] + 1),
                   (shape[0] + 2, max(1, shape[1] - 1), shape[2] + 3)):
        perturbation = field(rng, fshape, 3.0, batch=2)
        result = run(xp, K.compose, disp, field=perturbation, mode=mode, fill=0.25)
        check_kernel(result, R.compose(disp, field=perturbation, mode=mode, fill=0.25), atol=5e-5)
        one = run(xp, K.compose, disp[0], field=perturbation[1], mode=mode, fill=0.25)
        assert one[0].shape == (3,) + shape
        check_kernel(one, R.compose(disp[0], field=perturbation[1], mode=mode, fill=0.25), atol=5e-5)
        shared = run(xp, K.compose, disp, field=perturbation[:1], mode=mode, fill=0.5)  # Bf == 1
        check_kernel(shared, R.compose(disp, field=perturbation[:1], mode=mode, fill=0.5), atol=5e-5)


def test_compose_identity_affine_and_zero_field_return_the_displacement(xp, rng):
    disp = field(rng, (6, 7, 5), 3.0, batch=2)
    assert np.array_equal(run(xp, K.compose, disp, affine=np.eye(3, 4))[0], disp)
    assert np.array_equal(run(xp, K.compose, disp, field=np.zeros((3, 4, 4, 4), np.float32))[0], disp)


@pytest.mark.parametrize("seed", range(4))
def test_compose_undoes_an_affine_perturbation(xp, seed):
    """The network sees S o tau and (ideally) predicts tau^-1 o phi; composing that prediction
    with tau must give back phi: u_tau(x) = A^-1 (x + u(x) - b) - x, then A(x + u_tau) + b - x = u."""
    rng = np.random.default_rng(seed)
    shape = (21, 18, 25)
    u = field(rng, shape, 3.0)
    aff = affine(rng, jitter=0.1, shift=4.0)
    a, b = aff[:, :3].astype(np.float64), aff[:, 3].astype(np.float64)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).astype(np.float64)
    u_tau = (np.einsum("ij,j...->i...", np.linalg.inv(a),
                       grid + u - b[:, None, None, None]) - grid).astype(np.float32)
    back, _ = run(xp, K.compose, u_tau, affine=aff)
    assert np.abs(back - u).max() < 1e-4


# --- B-spline -------------------------------------------------------------------------------


@pytest.mark.parametrize("ctrl_shape,shape", [
    ((4, 4, 4), (1, 1, 1)),
    ((4, 5, 6), (7, 9, 13)),
    ((6, 4, 9), (5, 17, 2)),      # more control points than voxels on some axes
    ((13, 4, 5), (40, 3, 11)),
    ((7, 4, 9), (33, 17, 8)),
    ((10, 10, 10), (20, 24, 28)),
    ((4, 4, 260), (3, 4, 300)),   # wider than the CUDA row kernel's buffer: its per-voxel kernel
])
def test_bspline_matches_reference(xp, rng, ctrl_shape, shape):
    ctrl = field(rng, ctrl_shape, 5.0, batch=2)
    result = run(xp, K.bspline_field, ctrl, shape)
    assert result[0].shape == (2, 3) + shape
    check_kernel(result, R.bspline_field(ctrl, shape), atol=5e-6)
    check_kernel(run(xp, K.bspline_field, ctrl[1], shape), R.bspline_field(ctrl[1], shape), atol=5e-6)
    # The paper's control displacements, U(-12.5, 12.5) voxels.
    ctrl = rng.uniform(-12.5, 12.5, (3, 3) + ctrl_shape).astype(np.float32)
    check_kernel(run(xp, K.bspline_field, ctrl, shape), R.bspline_field(ctrl, shape), atol=2e-5)


def test_bspline_reproduces_constant_and_linear_fields(xp):
    """Cubic B-splines reproduce polynomials up to degree 1: constant control points give that
    constant, control points on a line (ctrl_m = m - 1 in knot units) give x / s exactly."""
    shape, c = (10, 7, 16), (5, 6, 8)
    const = np.full((3,) + c, 2.5, np.float32)
    np.testing.assert_allclose(run(xp, K.bspline_field, const, shape)[0], 2.5, atol=1e-6)
    m = np.arange(c[2], dtype=np.float32) - 1.0      # knot t = m  ->  value t - 1 = x / s
    lin = np.broadcast_to(m, (3,) + c).copy()
    s = (shape[2] - 1) / (c[2] - 3)
    want = np.broadcast_to(np.arange(shape[2]) / s, (3,) + shape)
    np.testing.assert_allclose(run(xp, K.bspline_field, lin, shape)[0], want, atol=1e-5)


# --- sigma from a covariance ----------------------------------------------------------------


def _covariances(rng, shape, k=7):
    """(6,D,H,W) unbiased covariances of k random 3-vectors per voxel, as float32."""
    x = rng.standard_normal((k, 3) + shape) * rng.uniform(0.1, 3.0, (1, 3) + shape)
    d = x - x.mean(axis=0)
    cov = np.einsum("ka...,kb...->ab...", d, d) / (k - 1)
    return np.stack([cov[0, 0], cov[0, 1], cov[0, 2], cov[1, 1], cov[1, 2], cov[2, 2]]).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_covariance_sigma_matches_reference(xp, rng, shape):
    M = np.diag([0.8, 1.2, 2.5]) @ np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float) + 0.1
    cov6 = _covariances(rng, shape)
    check_kernel(run(xp, K.covariance_sigma, cov6, M), R.covariance_sigma(cov6, M), atol=1e-6, rtol=1e-5)
    # Arbitrary terms, not a covariance: a negative trace is clamped to sigma 0.
    terms = rng.uniform(-1, 1, (6,) + shape).astype(np.float32)
    got, cpu = run(xp, K.covariance_sigma, terms, np.eye(3))
    check_kernel((got, cpu), R.covariance_sigma(terms, np.eye(3)), atol=1e-6, rtol=1e-5)
    trace = terms[0].astype(np.float64) + terms[3] + terms[5]
    assert np.all(got[trace < 0] == 0)


@pytest.mark.parametrize("shape", SHAPES)
def test_covariance_axis_sigma_matches_reference(xp, rng, shape):
    M = np.array([[0.9, 0.1, 0.0], [0.0, 1.2, -0.2], [0.05, 0.0, 2.0]])
    cov6 = _covariances(rng, shape)
    check_kernel(run(xp, K.covariance_axis_sigma, cov6, M), R.covariance_axis_sigma(cov6, M),
                 atol=1e-6, rtol=1e-5)
    # with M = I the axis sigmas are the roots of the diagonal terms xx, yy, zz
    got, _ = run(xp, K.covariance_axis_sigma, cov6, np.eye(3))
    check_close(got, np.sqrt(cov6[[0, 3, 5]].astype(np.float64)), atol=1e-6, rtol=1e-5)


def test_covariance_sigma_equals_the_accumulators_sigma(xp, rng):
    shape = (4, 5, 3)
    samples = rng.standard_normal((9, 3) + shape).astype(np.float32)
    acc = K.Welford(shape, like=on(xp, np.zeros(1, np.float32))).update(on(xp, samples))
    M = np.array([[0.9, 0.1, 0.0], [0.0, 1.2, -0.2], [0.05, 0.0, 2.0]])
    via_cov = K.covariance_sigma(acc.covariance, M)
    check_close(to_host(via_cov), to_host(acc.sigma(M)), atol=1e-6, rtol=1e-6)
    via_cov = K.covariance_axis_sigma(acc.covariance, M)
    check_close(to_host(via_cov), to_host(acc.axis_sigma(M)), atol=1e-6, rtol=1e-6)


# --- Welford --------------------------------------------------------------------------------


def _cov6(samples):
    """Unbiased covariance terms xx, xy, xz, yy, yz, zz of (K,3,...) samples via np.cov."""
    k = samples.shape[0]
    flat = samples.reshape(k, 3, -1).astype(np.float64)
    out = np.empty((6, flat.shape[2]))
    for v in range(flat.shape[2]):
        c = np.cov(flat[:, :, v], rowvar=False)
        out[:, v] = c[np.triu_indices(3)]
    return out.reshape((6,) + samples.shape[2:])


def _welford(xp, shape):
    return K.Welford(shape, like=on(xp, np.zeros(1, np.float32)))


@pytest.mark.parametrize("seed", range(5))
def test_welford_random_splits_and_merges_match_numpy(xp, seed):
    rng = np.random.default_rng(seed)
    shape = (3, 4, 5)
    k = int(rng.integers(2, 30))
    # An offset far from zero and a small spread: the case that breaks naive sums in float32.
    samples = (rng.standard_normal((k, 3) + shape) * rng.uniform(0.01, 2)
               + rng.uniform(-50, 50)).astype(np.float32)
    cuts = np.sort(rng.choice(np.arange(1, k), size=min(k - 1, int(rng.integers(0, 5))), replace=False))
    parts = []
    for chunk in np.split(samples, cuts):
        acc = _welford(xp, shape)
        # Each shard itself arrives in micro-batches of random size (1-sample (3,...) included).
        i = 0
        while i < len(chunk):
            j = i + int(rng.integers(1, 4))
            acc.update(on(xp, chunk[i] if j - i == 1 else np.ascontiguousarray(chunk[i:j])))
            i = j
        parts.append(acc)
    rng.shuffle(parts)
    while len(parts) > 1:  # merge in a random tree order
        a = parts.pop(int(rng.integers(len(parts))))
        b = parts.pop(int(rng.integers(len(parts))))
        parts.append(a.merge(b))
    acc = parts[0]
    assert acc.count == k
    s64 = samples.astype(np.float64)
    np.testing.assert_allclose(to_host(acc.mean), s64.mean(axis=0), rtol=1e-6, atol=1e-6 * np.abs(s64).max())
    cov = to_host(acc.covariance)
    var = np.var(s64, axis=0, ddof=1)
    np.testing.assert_allclose(cov[[0, 3, 5]], var, rtol=1e-5)
    want = _cov6(samples)
    scale = np.sqrt(want[[0, 3, 5]].max(axis=0))  # off-diagonals relative to the spread
    np.testing.assert_allclose(cov, want, rtol=1e-5, atol=1e-5 * scale.max() ** 2)


def test_welford_sigma_and_axis_sigma(xp, rng):
    shape = (4, 3, 5)
    samples = rng.standard_normal((12, 3) + shape).astype(np.float32)
    acc = _welford(xp, shape).update(on(xp, samples))
    M = np.diag([0.8, 1.2, 2.5]) @ np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float)
    mapped = np.einsum("rc,kc...->kr...", M, samples.astype(np.float64))  # samples in mm
    var = np.var(mapped, axis=0, ddof=1)
    np.testing.assert_allclose(to_host(acc.axis_sigma(M)), np.sqrt(var), rtol=1e-5)
    np.testing.assert_allclose(to_host(acc.sigma(M)), np.sqrt(var.sum(axis=0)), rtol=1e-5)
    np.testing.assert_allclose(to_host(acc.sigma()), np.sqrt(np.var(samples.astype(np.float64), axis=0,
                                                                     ddof=1).sum(axis=0)), rtol=1e-5)
    ref = R.Welford(shape).update(samples)
    check_close(to_host(acc.sigma(M)), ref.sigma(M), rtol=1e-5, atol=1e-6)
    check_close(to_host(acc.sigma(on(xp, M))), ref.sigma(M), rtol=1e-5, atol=1e-6)  # M on xp
    check_close(to_host(acc.axis_sigma(M)), ref.axis_sigma(M), rtol=1e-5, atol=1e-6)
    check_close(to_host(acc.covariance), ref.covariance, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 6, 7), (17, 13, 11)])
def test_welford_offset_samples_streamed_and_merged(xp, rng, shape):
    """Samples near 100 with a 0.01 spread in batches of 3, 1, 4, merged with a second
    accumulator of 5: the case float32 accumulation would get wrong. Against the float64
    reference, loosely: the mean is stored in float32 between batches (rounded by up to 3.8e-6,
    4e-4 of the spread), which moves the covariance by up to ~4e-4 of its largest term and a
    per-axis sigma by up to ~1e-3 where that voxel's spread is small. On CuPy, tightly against
    the CPU kernels, whose float32 storage points are the same."""
    M = np.array([[0.9, 0.1, 0.0], [0.0, 1.2, -0.2], [0.05, 0.0, 2.0]], np.float32)
    accs = [(_welford(xp, shape), K.Welford(shape), R.Welford(shape)) for _ in range(2)]
    for (acc, cpu, ref), sizes in zip(accs, ((3, 1, 4), (5,))):
        for b in sizes:
            batch = (100.0 + rng.standard_normal((b, 3) + shape) * 0.01).astype(np.float32)
            for a in (acc, cpu, ref):
                a.update(on(xp, batch) if a is acc else batch)
    (acc, cpu, ref), (acc_b, cpu_b, ref_b) = accs
    for a, b in ((acc, acc_b), (cpu, cpu_b), (ref, ref_b)):
        a.merge(b)
    assert acc.count == 13
    np.testing.assert_allclose(to_host(acc.mean), ref.mean, rtol=1e-6)
    cov, ref_cov = to_host(acc.covariance), ref.covariance
    np.testing.assert_allclose(cov, ref_cov, rtol=2e-3, atol=2e-3 * np.abs(ref_cov).max())
    np.testing.assert_allclose(to_host(acc.sigma(M)), ref.sigma(M), rtol=3e-3)
    np.testing.assert_allclose(to_host(acc.axis_sigma(M)), ref.axis_sigma(M), rtol=3e-3)
    if xp is not np:  # the GPU's double-precision steps are the CPU's
        np.testing.assert_allclose(to_host(acc.mean), cpu.mean, **GPU_TOL)
        np.testing.assert_allclose(cov, cpu.covariance, atol=1e-9, rtol=1e-4)
        np.testing.assert_allclose(to_host(acc.sigma(M)), cpu.sigma(M), atol=1e-7, rtol=1e-5)
        np.testing.assert_allclose(to_host(acc.axis_sigma(M)), cpu.axis_sigma(M), atol=1e-7, rtol=1e-5)


def test_welford_needs_two_samples_and_is_constant_memory(xp, rng):
    shape = (2, 3, 4)
    acc = _welford(xp, shape)
    with pytest.raises(ValueError, match="covariance"):
        acc.covariance
    acc.update(on(xp, field(rng, shape, 1.0)))
    with pytest.raises(ValueError, match="sigma"):
        acc.sigma()
    before = acc.nbytes
    assert before == 9 * 4 * 24
    for _ in range(5):
        acc.update(on(xp, field(rng, shape, 1.0, batch=3)))
    assert acc.nbytes == before and acc.count == 16
    np.testing.assert_allclose(to_host(acc.sigma()), to_host(acc.sigma(np.eye(3))))


def test_welford_merge_with_empty_and_itself(xp, rng):
    shape = (2, 2, 3)
    x = field(rng, shape, 1.0, batch=4)
    acc = _welford(xp, shape).update(on(xp, x))
    acc.merge(_welford(xp, shape))
    assert acc.count == 4
    empty = _welford(xp, shape).merge(acc)
    check_close(to_host(empty.covariance), to_host(acc.covariance), rtol=1e-6, atol=1e-7)
    # into an empty accumulator the merge is the other's state, exactly, and a copy of it
    assert empty.count == 4 and np.array_equal(to_host(empty.mean), to_host(acc.mean))
    assert np.array_equal(to_host(empty.covariance), to_host(acc.covariance))
    empty.update(on(xp, x[:1]))
    assert acc.count == 4 and empty.count == 5
    acc.merge(acc)  # the same samples twice
    both = np.concatenate([x, x]).astype(np.float64)
    np.testing.assert_allclose(to_host(acc.covariance)[0], np.var(both[:, 0], axis=0, ddof=1), rtol=1e-5)


def _state(acc):
    return [to_host(a) for a in (acc.mean, acc.covariance)]


def test_welford_at_some_voxels_is_the_whole_grid_read_there(xp, rng):
    """``at`` (the split-half precision and the allocation read only a region): every map of the
    copy equals the whole accumulator's at those voxels, bit for bit, and so does a merge of two
    such copies; a NaN sample stays NaN there, never a zero spread."""
    shape = (5, 6, 7)
    x, y = field(rng, shape, 3.0, batch=5), field(rng, shape, 2.0, batch=3)
    x[2, 1, 4, 2, 3] = np.nan
    a, b = _welford(xp, shape).update(on(xp, x)), _welford(xp, shape).update(on(xp, y))
    idx = np.sort(rng.choice(np.prod(shape), 40, replace=False))
    idx[0] = np.ravel_multi_index((4, 2, 3), shape)  # the NaN voxel
    idx.sort()
    M = np.array([[0.9, 0.2, 0.0], [0.1, 1.2, -0.3], [0.05, 0.0, 2.0]])
    flat = lambda m: to_host(m).reshape(m.shape[0] if m.ndim == 4 else 1, -1)  # noqa: E731
    sub = a.at(on(xp, idx))
    assert sub.count == a.count and sub.shape == (40, 1, 1)
    for whole, part in ((a.mean, sub.mean), (a.covariance, sub.covariance),
                        (a.axis_sigma(M), sub.axis_sigma(M)), (a.sigma(M)[None], sub.sigma(M)[None])):
        assert np.array_equal(flat(whole)[:, idx], flat(part), equal_nan=True)
    pos = int(np.searchsorted(idx, np.ravel_multi_index((4, 2, 3), shape)))
    assert np.isnan(flat(sub.axis_sigma(M))[:, pos]).all()
    merged = _welford(xp, shape).merge(a).merge(b)
    both = a.at(idx).merge(b.at(idx))
    for whole, part in zip(_state(merged), _state(both)):
        assert np.array_equal(whole.reshape(whole.shape[0], -1)[:, idx],
                              part.reshape(part.shape[0], -1), equal_nan=True)
    with pytest.raises(ValueError, match="flat indices"):
        a.at(on(xp, idx.reshape(4, 10)))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("threads", [1, 2])
def test_controlled_update_is_the_three_updates_bit_for_bit(rng, batch, threads):
    """The control variate's fused update (native, one pass) against the three accumulators
    updated in turn with g, d and the float32 g + d, after earlier samples and into a cleared
    accumulator; and against the float64 reference."""
    shape = (17, 13, 11)
    g0, d0 = field(rng, shape, 4.0, batch=2), field(rng, shape, 2.0, batch=2)
    g, d = field(rng, shape, 4.0, batch=batch), field(rng, shape, 2.0, batch=batch)
    fused = [K.Welford(shape, threads=threads) for _ in range(3)]
    apart = [K.Welford(shape, threads=threads) for _ in range(3)]
    refs = [R.Welford(shape) for _ in range(3)]
    for accs in (fused, apart):
        for acc, x in zip(accs, (g0, d0, g0 + d0)):
            acc.update(x)
    fused[2].clear().update(g0 + d0)  # a cleared accumulator is zeroed before the pass
    K.update_controlled(*fused, g, d)
    for acc, x in zip(apart, (g, d, g + d)):
        acc.update(x)
    for ref, x in zip(refs, (np.concatenate([g0, g]), np.concatenate([d0, d]),
                             np.concatenate([g0 + d0, g + d]))):
        ref.update(x)
    for f, a, r in zip(fused, apart, refs):
        assert f.count == a.count == 2 + batch
        for got, want in zip(_state(f), _state(a)):
            assert np.array_equal(got, want)
        check_close(f.covariance, r.covariance, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="differs from g"):
        K.update_controlled(*fused, g, d[:, :, :-1])
    assert fused[0].count == 2 + batch  # nothing was folded in


def test_controlled_update_out_of_step_takes_the_three_updates(rng):
    shape = (4, 5, 6)
    accs = [K.Welford(shape) for _ in range(3)]
    accs[0].update(field(rng, shape, 1.0))  # counts 1, 0, 0: not one family's halves
    g, d = field(rng, shape, 1.0, batch=2), field(rng, shape, 1.0, batch=2)
    K.update_controlled(*accs, g, d)
    assert [a.count for a in accs] == [3, 2, 2]
    want = K.Welford(shape).update(g + d)
    assert np.array_equal(accs[2].covariance, want.covariance)


def test_a_cleared_welford_is_a_fresh_one(xp, rng):
    shape = (3, 4, 5)
    x, y = field(rng, shape, 1.0, batch=4), field(rng, shape, 5.0, batch=3)
    used = _welford(xp, shape).update(on(xp, x))
    assert used.clear() is used and used.count == 0
    fresh = _welford(xp, shape)
    for acc in (used, fresh):
        acc.update(on(xp, y))
    assert used.count == fresh.count == 3
    for u, f in zip(_state(used), _state(fresh)):
        assert np.array_equal(u, f)  # the old samples left nothing behind
    other = _welford(xp, shape).update(on(xp, x))
    for u, o in zip(_state(used.clear().merge(other)), _state(other)):
        assert np.array_equal(u, o)


# --- threads (CPU) --------------------------------------------------------------------------


def _every_kernel(rng, threads):
    """Every CPU kernel once, each call above the one-thread cut-off (2^15 elements) so that a
    team of two really splits the work; `threads` per call (None: the process default)."""
    shape = (33, 36, 40)
    vol = volume(rng, shape, channels=2)
    disp = field(rng, shape, 6.0, batch=3)
    aff = affine(rng, batch=3)
    perturbation = field(rng, (30, 37, 35), 3.0, batch=3)
    ctrl = field(rng, (6, 7, 5), 4.0, batch=2)
    acc = K.Welford(shape, threads=threads).update(disp)
    other = K.Welford(shape, threads=threads).update(perturbation[:, :, :1, :1, :1] + disp)
    acc.merge(other)
    t = dict(threads=threads)
    return [
        K.warp(vol, disp, mode="fill", **t), K.warp(vol, disp, mode="border", **t),
        K.warp(vol, affine=aff, shape=(41, 31, 29), **t),
        K.compose(disp, affine=aff, **t), K.compose(disp, field=perturbation, mode="fill", **t),
        K.compose(disp, field=perturbation, mode="border", **t), K.bspline_field(ctrl, shape, **t),
        acc.mean, acc.covariance, acc.sigma(np.diag([1, 2, 3])), acc.axis_sigma(),
        K.covariance_sigma(acc.covariance, np.diag([1, 2, 3]), **t),
    ]


def test_one_and_two_threads_are_bitwise_identical():
    seed = np.random.SeedSequence(2024)
    one = _every_kernel(np.random.default_rng(seed), threads=1)
    two = _every_kernel(np.random.default_rng(seed), threads=2)
    for a, b in zip(one, two):
        assert np.array_equal(a, b)
    # The process default (set_num_threads) gives the same results too.
    before = K.get_num_threads()
    try:
        K.set_num_threads(2)
        assert K.get_num_threads() == 2
        default = _every_kernel(np.random.default_rng(seed), threads=None)
        K.set_num_threads(1)
        assert K.get_num_threads() == 1
        default_one = _every_kernel(np.random.default_rng(seed), threads=0)
    finally:
        K.set_num_threads(before)
    for a, b, c in zip(one, default, default_one):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_a_call_thread_count_changes_no_process_default(rng):
    before = K.get_num_threads()
    vol = volume(rng, (40, 40, 40))
    K.warp(vol, field(rng, (40, 40, 40), 2.0), threads=1)
    K.Welford((40, 40, 40), threads=1).update(field(rng, (40, 40, 40), 1.0, batch=2)).sigma()
    assert K.get_num_threads() == before


def test_bound_kernels_carry_their_thread_count(rng, monkeypatch):
    seen = []
    monkeypatch.setattr(K, "warp", lambda *a, **kw: seen.append(kw["threads"]))
    K.Bound(3).warp(None)
    assert seen == [3]
    monkeypatch.undo()
    shape = (40, 40, 40)
    ctrl, disp = field(rng, (5, 5, 5), 3.0), field(rng, shape, 2.0)
    ops = K.Bound(1)
    assert np.array_equal(ops.bspline_field(ctrl, shape), K.bspline_field(ctrl, shape, threads=2))
    assert np.array_equal(ops.compose(disp, affine=np.eye(3, 4)), disp)
    assert ops.Welford(shape).update(disp).count == 1
    with pytest.raises(ValueError, match="^threads"):
        K.Bound(4097)


def test_build_info_says_whether_warps_use_avx512_gathers():
    """Against the CPU's own flags (Linux): the gather path is taken exactly where AVX-512F is."""
    import platform
    from pathlib import Path

    info = K.build_info()
    assert isinstance(info["avx512_gathers"], bool)
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() != "x86_64" or not cpuinfo.exists():
        pytest.skip("the CPU's flags are read from /proc/cpuinfo on x86-64 Linux")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("flags")), [])
    assert info["avx512_gathers"] == ("avx512f" in flags)


def test_build_info_reports_openmp():
    info = K.build_info()
    assert set(info) >= {"openmp", "cuda_module", "compiler", "flags"}
    assert isinstance(info["openmp"], bool) and isinstance(info["cuda_module"], bool)


def test_cpu_axis_sigma_is_mapped_variances_formula_bit_for_bit(rng):
    """The CPU's blocked axis-sigma loop against welford.h's mapped_variances written out in
    float64 NumPy in its order of operations (IEEE, no fused multiply-add): the same bits,
    NaN kept NaN and rounding residue clamped at 0."""
    shape = (9, 11, 37)
    acc = K.Welford(shape, threads=2).update(field(rng, shape, 3.0, batch=5))
    acc._m2[:, 7] = np.nan
    acc._m2[0, 8] = -1e-6  # a negative variance term: clamped, not a NaN from sqrt
    M = rng.standard_normal((3, 3))
    q = acc._m2.astype(np.float64) * (1.0 / (acc.count - 1))
    m = M.astype(np.float32).astype(np.float64)
    want = []
    for r in range(3):
        a, b, c = m[r]
        v = (a * a * q[0] + b * b * q[3] + c * c * q[5]
             + 2.0 * (a * b * q[1] + a * c * q[2] + b * c * q[4]))
        v = np.where(v < 0, 0.0, v)
        want.append(np.sqrt(v).astype(np.float32))
    got = acc.axis_sigma(M).reshape(3, -1)
    assert np.array_equal(got, np.stack(want), equal_nan=True)
    assert np.isnan(got[:, 7]).all()
