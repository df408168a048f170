"""Native kernels (regrisk.kernels on NumPy -> regrisk._core) against the NumPy reference
(regrisk.reference), the reference against SciPy, and the identities the method relies on."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import map_coordinates

from regrisk import kernels as K
from regrisk import reference as R

# Odd, non-cubic, degenerate (one voxel, one-voxel axes) grids.
SHAPES = [(1, 1, 1), (5, 6, 7), (2, 9, 4), (8, 3, 1), (1, 7, 5)]
MODES = ["fill", "border"]


def _vol(rng, shape, channels=None, batch=None):
    lead = (() if batch is None else (batch,)) + (() if channels is None else (channels,))
    return rng.uniform(-1, 2, lead + tuple(shape)).astype(np.float32)


def _field(rng, shape, scale, batch=None):
    lead = () if batch is None else (batch,)
    return (rng.standard_normal(lead + (3,) + tuple(shape)) * scale).astype(np.float32)


def _affine(rng, batch=None, jitter=0.2, shift=3.0):
    lead = () if batch is None else (batch,)
    a = np.broadcast_to(np.eye(3, 4), lead + (3, 4)).copy()
    a[..., :3] += rng.uniform(-jitter, jitter, lead + (3, 3))
    a[..., 3] += rng.uniform(-shift, shift, lead + (3,))
    return a.astype(np.float32)


def check_close(a, b, atol=2e-5, rtol=2e-5):
    assert a.shape == b.shape and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=atol, rtol=rtol)


# --- the reference itself against SciPy -----------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
def test_reference_trilinear_matches_scipy(rng, shape, mode):
    vol = _vol(rng, shape).astype(np.float64)
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
def test_warp_displacement_matches_reference(rng, shape, mode, scale):
    vol = _vol(rng, shape, channels=2)
    out_shape = (shape[0] + 1, shape[1], max(1, shape[2] - 1))  # output grid != input grid
    disp = _field(rng, out_shape, scale, batch=3)
    got = K.warp(vol, disp, mode=mode, fill=-0.5)
    want = R.warp(vol, disp, mode=mode, fill=-0.5)
    assert got.shape == (3, 2) + out_shape
    check_close(got, want)


@pytest.mark.parametrize("vol_lead,disp_batch,expect", [
    ((), None, lambda s: s),                  # (D,H,W) + (3,...) -> (D,H,W)
    ((2,), None, lambda s: (2,) + s),         # (C,...) + (3,...) -> (C,...)
    ((), 3, lambda s: (3, 1) + s),            # one source, 3 transforms
    ((1, 2), 3, lambda s: (3, 2) + s),        # batched source of 1, broadcast
    ((3, 2), 3, lambda s: (3, 2) + s),        # B sources, B transforms
    ((3, 1), None, lambda s: (3, 1) + s),     # B sources, one transform (folded into channels)
])
def test_warp_ranks_and_broadcasting(rng, vol_lead, disp_batch, expect):
    shape = (4, 5, 6)
    vol = rng.uniform(0, 1, vol_lead + shape).astype(np.float32)
    disp = _field(rng, shape, 2.0, batch=disp_batch)
    got = K.warp(vol, disp)
    assert got.shape == expect(shape)
    check_close(got, R.warp(vol, disp))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
def test_warp_affine_matches_reference(rng, shape, mode):
    vol = _vol(rng, shape, channels=1, batch=1)
    aff = _affine(rng, batch=2, shift=0.6 * max(shape))
    out_shape = (3, 4, 5)
    got = K.warp(vol, affine=aff, shape=out_shape, mode=mode, fill=1.5)
    want = R.warp(vol, affine=aff, shape=out_shape, mode=mode, fill=1.5)
    assert got.shape == (2, 1) + out_shape
    check_close(got, want)
    # Unbatched affine, default output grid = the input's.
    single = K.warp(vol[0, 0], affine=aff[0], mode=mode)
    assert single.shape == shape
    check_close(single, R.warp(vol[0, 0], affine=aff[0], mode=mode))


def test_warp_affine_equals_dense_warp_by_its_displacement(rng):
    shape = (9, 8, 7)
    vol = _vol(rng, shape)
    aff = _affine(rng)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).astype(np.float64)
    disp = (np.einsum("ij,j...->i...", aff[:, :3].astype(np.float64), grid)
            + aff[:, 3].astype(np.float64)[:, None, None, None] - grid).astype(np.float32)
    check_close(K.warp(vol, affine=aff), K.warp(vol, disp), atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(
    d=st.integers(1, 6), h=st.integers(1, 6), w=st.integers(1, 6),
    scale=st.floats(0.0, 12.0), fill=st.floats(-5, 5), mode=st.sampled_from(MODES),
    seed=st.integers(0, 2**31 - 1),
)
def test_warp_property_against_reference(d, h, w, scale, fill, mode, seed):
    rng = np.random.default_rng(seed)
    vol = _vol(rng, (d, h, w))
    disp = _field(rng, (w, d, h), scale)
    check_close(K.warp(vol, disp, fill=fill, mode=mode), R.warp(vol, disp, fill=fill, mode=mode))


def test_warp_zero_field_and_identity_affine_are_exact(rng):
    for shape in SHAPES + [(11, 13, 17)]:
        vol = _vol(rng, shape, channels=3)
        for mode in MODES:
            out = K.warp(vol, np.zeros((3,) + shape, np.float32), mode=mode, fill=9.0)
            assert np.array_equal(out, vol)
            out = K.warp(vol, affine=np.eye(3, 4), mode=mode, fill=9.0)
            assert np.array_equal(out, vol)


# --- compose --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_compose_affine_matches_reference(rng, shape):
    disp = _field(rng, shape, 4.0, batch=3)
    aff = _affine(rng, batch=3)
    check_close(K.compose(disp, affine=aff), R.compose(disp, affine=aff), atol=5e-5)
    # One affine for the whole batch, and one field with a batch of affines.
    check_close(K.compose(disp, affine=aff[1]), R.compose(disp, affine=aff[1]), atol=5e-5)
    got = K.compose(disp[0], affine=aff)
    assert got.shape == (3, 3) + shape
    check_close(got, R.compose(disp[0], affine=aff), atol=5e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_compose_field_matches_reference(rng, shape, mode, scale):
    disp = _field(rng, shape, scale, batch=2)
    fshape = (shape[2] + 2, shape[0], shape[1] + 1)  # the source grid differs from the target's
    field = _field(rng, fshape, 3.0, batch=2)
    got = K.compose(disp, field=field, mode=mode, fill=0.25)
    check_close(got, R.compose(disp, field=field, mode=mode, fill=0.25), atol=5e-5)
    one = K.compose(disp[0], field=field[1], mode=mode, fill=0.25)
    assert one.shape == (3,) + shape
    check_close(one, R.compose(disp[0], field=field[1], mode=mode, fill=0.25), atol=5e-5)


def test_compose_identity_affine_and_zero_field_return_the_displacement(rng):
    disp = _field(rng, (6, 7, 5), 3.0, batch=2)
    assert np.array_equal(K.compose(disp, affine=np.eye(3, 4)), disp)
    assert np.array_equal(K.compose(disp, field=np.zeros((3, 4, 4, 4), np.float32)), disp)


@pytest.mark.parametrize("seed", range(4))
def test_compose_undoes_an_affine_perturbation(seed):
    """The network sees S o tau and (ideally) predicts tau^-1 o phi; composing that prediction
    with tau must give back phi: u_tau(x) = A^-1 (x + u(x) - b) - x, then A(x + u_tau) + b - x = u."""
    rng = np.random.default_rng(seed)
    shape = (21, 18, 25)
    u = _field(rng, shape, 3.0)
    aff = _affine(rng, jitter=0.1, shift=4.0)
    a, b = aff[:, :3].astype(np.float64), aff[:, 3].astype(np.float64)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).astype(np.float64)
    u_tau = (np.einsum("ij,j...->i...", np.linalg.inv(a),
                       grid + u - b[:, None, None, None]) - grid).astype(np.float32)
    back = K.compose(u_tau, affine=aff)
    assert np.abs(back - u).max() < 1e-4


# --- B-spline -------------------------------------------------------------------------------


@pytest.mark.parametrize("ctrl_shape,shape", [
    ((4, 4, 4), (1, 1, 1)),
    ((4, 5, 6), (7, 9, 13)),
    ((6, 4, 9), (5, 17, 2)),      # more control points than voxels on some axes
    ((13, 4, 5), (40, 3, 11)),
])
def test_bspline_matches_reference(rng, ctrl_shape, shape):
    ctrl = _field(rng, ctrl_shape, 5.0, batch=2)
    got = K.bspline_field(ctrl, shape)
    assert got.shape == (2, 3) + shape
    check_close(got, R.bspline_field(ctrl, shape), atol=5e-6)
    check_close(K.bspline_field(ctrl[1], shape), R.bspline_field(ctrl[1], shape), atol=5e-6)


def test_bspline_reproduces_constant_and_linear_fields():
    """Cubic B-splines reproduce polynomials up to degree 1: constant control points give that
    constant, control points on a line (ctrl_m = m - 1 in knot units) give x / s exactly."""
    shape, c = (10, 7, 16), (5, 6, 8)
    const = np.full((3,) + c, 2.5, np.float32)
    np.testing.assert_allclose(K.bspline_field(const, shape), 2.5, atol=1e-6)
    m = np.arange(c[2], dtype=np.float32) - 1.0      # knot t = m  ->  value t - 1 = x / s
    lin = np.broadcast_to(m, (3,) + c).copy()
    s = (shape[2] - 1) / (c[2] - 3)
    want = np.broadcast_to(np.arange(shape[2]) / s, (3,) + shape)
    np.testing.assert_allclose(K.bspline_field(lin, shape), want, atol=1e-5)


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


@pytest.mark.parametrize("seed", range(5))
def test_welford_random_splits_and_merges_match_numpy(seed):
    rng = np.random.default_rng(seed)
    shape = (3, 4, 5)
    k = int(rng.integers(2, 30))
    # An offset far from zero and a small spread: the case that breaks naive sums in float32.
    samples = (rng.standard_normal((k, 3) + shape) * rng.uniform(0.01, 2)
               + rng.uniform(-50, 50)).astype(np.float32)
    cuts = np.sort(rng.choice(np.arange(1, k), size=min(k - 1, int(rng.integers(0, 5))), replace=False))
    parts = []
    for chunk in np.split(samples, cuts):
        acc = K.Welford(shape)
        # Each shard itself arrives in micro-batches of random size (1-sample (3,...) included).
        i = 0
        while i < len(chunk):
            j = i + int(rng.integers(1, 4))
            acc.update(chunk[i] if j - i == 1 else np.ascontiguousarray(chunk[i:j]))
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
    np.testing.assert_allclose(acc.mean, s64.mean(axis=0), rtol=1e-6, atol=1e-6 * np.abs(s64).max())
    cov = acc.covariance
    var = np.var(s64, axis=0, ddof=1)
    np.testing.assert_allclose(cov[[0, 3, 5]], var, rtol=1e-5)
    want = _cov6(samples)
    scale = np.sqrt(want[[0, 3, 5]].max(axis=0))  # off-diagonals relative to the spread
    np.testing.assert_allclose(cov, want, rtol=1e-5, atol=1e-5 * scale.max() ** 2)


def test_welford_sigma_and_axis_sigma(rng):
    shape = (4, 3, 5)
    samples = rng.standard_normal((12, 3) + shape).astype(np.float32)
    acc = K.Welford(shape).update(samples)
    M = np.diag([0.8, 1.2, 2.5]) @ np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float)
    mapped = np.einsum("rc,kc...->kr...", M, samples.astype(np.float64))  # samples in mm
    var = np.var(mapped, axis=0, ddof=1)
    np.testing.assert_allclose(acc.axis_sigma(M), np.sqrt(var), rtol=1e-5)
    np.testing.assert_allclose(acc.sigma(M), np.sqrt(var.sum(axis=0)), rtol=1e-5)
    np.testing.assert_allclose(acc.sigma(), np.sqrt(np.var(samples.astype(np.float64), axis=0,
                                                            ddof=1).sum(axis=0)), rtol=1e-5)
    ref = R.Welford(shape).update(samples)
    check_close(acc.sigma(M), ref.sigma(M), rtol=1e-5, atol=1e-6)
    check_close(acc.axis_sigma(M), ref.axis_sigma(M), rtol=1e-5, atol=1e-6)
    check_close(acc.covariance, ref.covariance, rtol=1e-5, atol=1e-6)


def test_welford_needs_two_samples_and_is_constant_memory(rng):
    shape = (2, 3, 4)
    acc = K.Welford(shape)
    with pytest.raises(ValueError, match="covariance"):
        acc.covariance
    acc.update(_field(rng, shape, 1.0))
    with pytest.raises(ValueError, match="sigma"):
        acc.sigma()
    before = acc.nbytes
    assert before == 9 * 4 * 24
    for _ in range(5):
        acc.update(_field(rng, shape, 1.0, batch=3))
    assert acc.nbytes == before and acc.count == 16
    np.testing.assert_allclose(acc.sigma(), acc.sigma(np.eye(3)))


def test_welford_merge_with_empty_and_itself(rng):
    shape = (2, 2, 3)
    x = _field(rng, shape, 1.0, batch=4)
    acc = K.Welford(shape).update(x)
    acc.merge(K.Welford(shape))
    assert acc.count == 4
    empty = K.Welford(shape).merge(acc)
    check_close(empty.covariance, acc.covariance, rtol=1e-6, atol=1e-7)
    acc.merge(acc)  # the same samples twice
    both = np.concatenate([x, x]).astype(np.float64)
    np.testing.assert_allclose(acc.covariance[0], np.var(both[:, 0], axis=0, ddof=1), rtol=1e-5)


# --- threads --------------------------------------------------------------------------------


def test_one_and_two_threads_are_bitwise_identical(rng):
    # Every call here is above the kernels' one-thread cut-off (2^15 elements), so the
    # two-thread runs really split the work.
    shape = (33, 36, 40)
    vol = _vol(rng, shape, channels=2)
    disp = _field(rng, shape, 6.0, batch=3)
    aff = _affine(rng, batch=3)
    field = _field(rng, (30, 37, 35), 3.0, batch=3)
    ctrl = _field(rng, (6, 7, 5), 4.0, batch=2)

    def run():
        acc = K.Welford(shape).update(disp)
        other = K.Welford(shape).update(field[:, :, :1, :1, :1] + disp)
        acc.merge(other)
        return [
            K.warp(vol, disp, mode="fill"), K.warp(vol, disp, mode="border"),
            K.warp(vol, affine=aff, shape=(41, 31, 29)),
            K.compose(disp, affine=aff), K.compose(disp, field=field, mode="fill"),
            K.compose(disp, field=field, mode="border"), K.bspline_field(ctrl, shape),
            acc.mean, acc.covariance, acc.sigma(np.diag([1, 2, 3])), acc.axis_sigma(),
        ]

    before = K.get_num_threads()
    try:
        K.set_num_threads(1)
        assert K.get_num_threads() == 1
        one = run()
        K.set_num_threads(2)
        two = run()
    finally:
        K.set_num_threads(before)
    for a, b in zip(one, two):
        assert np.array_equal(a, b)


def test_build_info_reports_openmp():
    info = K.build_info()
    assert set(info) >= {"openmp", "cuda_module", "compiler", "flags"}
    assert isinstance(info["openmp"], bool) and isinstance(info["cuda_module"], bool)
