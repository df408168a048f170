"""Engine tests on real ONNX graphs and analytic expectations (see builders.py)."""

from __future__ import annotations

import numpy as np
import pytest

from regrisk import Estimator
from regrisk.errors import BudgetError, CardError, InputError, ModelError
from builders import blob, com, com_model, coords, oblique_affine

GRID = (20, 22, 24)
AFF = oblique_affine()
M = AFF[:3, :3]


@pytest.fixture(scope="module")
def pair():
    S = blob(GRID, (9.0, 11.5, 12.5))
    T = blob(GRID, (10.0, 10.5, 11.0))
    return S, T


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return com_model(tmp_path_factory.mktemp("m") / "com.onnx", GRID)


def test_translation_equivariant_model_gives_zero_map(model_path, pair):
    S, T = pair
    est = Estimator(str(model_path))
    res = est.estimate((S, AFF), (T, AFF), samples=12, perturbation="translation(max=1.5)", seed=1)
    assert res.uncertainty.shape == GRID
    assert np.all(np.isfinite(res.uncertainty))
    assert res.uncertainty.max() < 2e-3  # mm; float32 rounding only
    # the mean of the composed samples is the unperturbed prediction
    np.testing.assert_allclose(res.mean_displacement, res.displacement, atol=2e-3)


def test_scale_gives_analytic_sigma(model_path, pair):
    S, T = pair
    K, seed = 24, 3
    res = Estimator(str(model_path)).estimate((S, AFF), (T, AFF), samples=K,
                                              perturbation="scale", seed=seed)
    # the draws, reproduced from the documented rule: s = 0.9 + 0.2 U, U = Generator(seed).random
    s = 0.9 + 0.2 * np.random.default_rng(seed).random((K, 1))[:, 0]
    x = coords(GRID).astype(np.float64) - com(T)[:, None, None, None]
    expected = s.std(ddof=1) * np.linalg.norm(np.einsum("ij,jabc->iabc", M, x), axis=0)
    # inside the blob's support the model's com is well determined
    assert np.abs(res.uncertainty - expected).max() < 0.02 * expected.max()
    axes = np.sqrt((np.einsum("ij,jabc->iabc", M, x) ** 2)) * s.std(ddof=1)
    np.testing.assert_allclose(res.uncertainty_axes, axes, atol=0.02 * expected.max())


def test_predict_in_mm_and_model_grid(model_path, pair):
    S, T = pair
    pred = Estimator(str(model_path)).predict((S, AFF), (T, AFF))
    u = com(S) - com(T)
    np.testing.assert_allclose(pred.grid_displacement[:, 3, 4, 5], u, atol=1e-4)
    np.testing.assert_allclose(pred.displacement[:, 7, 1, 2], M @ u, atol=1e-3)
    np.testing.assert_allclose(pred.grid_to_mm, M, atol=1e-9)
    np.testing.assert_allclose(pred.affine, AFF)
    # the warped source matches the target (pure translation of a blob)
    assert np.abs(pred.warped_source - T).max() < 0.05


def test_callable_model_equals_onnx_model(model_path, pair):
    S, T = pair

    def com_callable(src, tgt):
        out = np.empty((src.shape[0], 3, *src.shape[2:]), np.float32)
        for b in range(src.shape[0]):
            out[b] = (com(src[b, 0]) - com(tgt[b, 0]))[:, None, None, None]
        return out

    kw = dict(samples=6, perturbation="rotation(max=4)", seed=5)
    a = Estimator(com_callable).estimate((S, AFF), (T, AFF), **kw)
    b = Estimator(str(model_path)).estimate((S, AFF), (T, AFF), **kw)
    np.testing.assert_allclose(a.uncertainty, b.uncertainty, atol=2e-3)
    assert a.uncertainty.max() > 0.05  # rotations are not an equivariance of this model


def test_micro_batch_size_and_fixed_batch_do_not_change_results(tmp_path, model_path, pair):
    S, T = pair
    kw = dict(samples=9, perturbation="paper", seed=2)  # mixes affine and dense samples
    one = Estimator(str(model_path), batch=1).estimate((S, AFF), (T, AFF), **kw)
    many = Estimator(str(model_path), batch=4).estimate((S, AFF), (T, AFF), **kw)
    fixed = com_model(tmp_path / "fixed.onnx", GRID, batch=2)
    fx = Estimator(str(fixed)).estimate((S, AFF), (T, AFF), **kw)
    assert one.uncertainty.max() > 0.01
    np.testing.assert_allclose(one.uncertainty, many.uncertainty, atol=1e-4)
    np.testing.assert_allclose(one.uncertainty, fx.uncertainty, atol=1e-4)
    assert fx.summary["backend"]["fixed_batch"] == 2


def test_seed_reproducible_and_sobol_differs(model_path, pair):
    S, T = pair
    est = Estimator(str(model_path))
    a = est.estimate((S, AFF), (T, AFF), samples=5, perturbation="affine", seed=7)
    b = est.estimate((S, AFF), (T, AFF), samples=5, perturbation="affine", seed=7)
    c = est.estimate((S, AFF), (T, AFF), samples=5, perturbation="affine", seed=7, sobol=True)
    np.testing.assert_array_equal(a.uncertainty, b.uncertainty)
    assert np.abs(a.uncertainty - c.uncertainty).max() > 1e-3


def test_none_preset_on_deterministic_model_is_zero(model_path, pair):
    S, T = pair
    res = Estimator(str(model_path)).estimate((S, AFF), (T, AFF), samples=3, perturbation="none")
    assert res.uncertainty.max() == 0.0


def test_stochastic_graph_nested_design(tmp_path, pair):
    """Noise eps ~ N(0, s^2 I) per pass (voxels): intrinsic sigma = s sqrt(tr(M M^T)), and
    under translations (an exact equivariance) the bias jitter is ~0."""
    S, T = pair
    noise = 0.5
    path = com_model(tmp_path / "sto.onnx", GRID, noise=noise)
    res = Estimator(str(path)).estimate((S, AFF), (T, AFF), samples=30, passes=6,
                                        perturbation="translation(max=1.5)", seed=0)
    expected = noise * np.sqrt(np.trace(M @ M.T))
    assert res.intrinsic is not None and res.bias_jitter is not None
    assert abs(float(np.median(res.intrinsic)) - expected) < 0.15 * expected
    # bias jitter = spread of the per-perturbation means: noise / sqrt(passes) only
    assert float(np.median(res.bias_jitter)) < 0.6 * expected
    # the total over all passes matches intrinsic + jitter (law of total variance)
    total2 = np.median(res.uncertainty) ** 2
    parts2 = np.median(res.intrinsic) ** 2 + np.median(res.bias_jitter) ** 2
    assert abs(total2 - parts2) < 0.25 * total2


def test_budget_refused_before_starting(model_path, pair):
    S, T = pair
    est = Estimator(str(model_path), memory_budget=1 << 20)
    with pytest.raises(BudgetError, match="exceeds the budget"):
        est.estimate((S, AFF), (T, AFF), samples=4)


def test_too_few_samples(model_path, pair):
    S, T = pair
    with pytest.raises(InputError, match="samples"):
        Estimator(str(model_path)).estimate((S, AFF), (T, AFF), samples=1)


def test_model_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 this is not a protobuf at all" * 10)
    with pytest.raises(ModelError, match="not an ONNX model"):
        Estimator(str(bad))
    with pytest.raises(ModelError, match="no such file"):
        Estimator(str(tmp_path / "missing.onnx"))
    nocard = com_model(tmp_path / "nocard.onnx", GRID, card=False)
    with pytest.raises(CardError, match="no model card"):
        Estimator(str(nocard))
    wrong_name = com_model(tmp_path / "n.onnx", GRID, card={"inputs": {"layout": "pair", "source": "moving", "target": "target"}})
    with pytest.raises(CardError, match="'moving' not in graph inputs"):
        Estimator(str(wrong_name))
    wrong_grid = com_model(tmp_path / "g.onnx", GRID, card={"grid": [20, 22, 25]})
    with pytest.raises(CardError, match="spatial shape"):
        Estimator(str(wrong_grid))
    wrong_layout = com_model(tmp_path / "c.onnx", GRID, layout="concat",
                             card={"inputs": {"layout": "pair", "source": "pair", "target": "x"}})
    with pytest.raises(CardError, match="not in graph inputs"):
        Estimator(str(wrong_layout))
    wrong_channels = com_model(tmp_path / "ch.onnx", GRID, channel_axis="last",
                               card={"output": {"name": "flow"}})
    with pytest.raises(CardError, match="channels"):
        Estimator(str(wrong_channels))
    fixed_vs_dynamic = com_model(tmp_path / "f.onnx", GRID, batch=1, card={"batch": "dynamic"})
    with pytest.raises(CardError, match="batch axis is fixed"):
        Estimator(str(fixed_vs_dynamic))


def test_callable_bad_output_is_a_model_error(pair):
    S, T = pair
    with pytest.raises(ModelError, match="returned shape"):
        Estimator(lambda s, t: np.zeros((1, 2, 3), np.float32)).estimate((S, AFF), (T, AFF), samples=2)


def test_different_native_grids_world_displacement():
    """Source and target sample one physical blob on different grids (stretch to the model
    grid): the world displacement is the physical shift between the images."""
    shape_t, shape_s = (20, 22, 24), (30, 18, 24)
    aff_t = oblique_affine(spacing=(1.5, 1.0, 2.0))
    # the source grid covers the same extent with other spacings: corners coincide
    sp_s = np.array([1.5 * 19 / 29, 1.0 * 21 / 17, 2.0])
    aff_s = aff_t.copy()
    aff_s[:3, :3] = aff_t[:3, :3] @ np.diag(sp_s / np.array([1.5, 1.0, 2.0]))
    shift_mm = np.array([2.0, -1.0, 3.0])

    def sample(shape, aff, centre_mm):
        vox = coords(shape).reshape(3, -1).astype(np.float64)
        world = aff[:3, :3] @ vox + aff[:3, 3:4]
        r2 = ((world - centre_mm[:, None]) ** 2).sum(0)
        return np.exp(-r2 / (2 * 5.0 ** 2)).reshape(shape).astype(np.float32)

    centre = aff_t[:3, :3] @ (np.array(shape_t) - 1) / 2 + aff_t[:3, 3]
    T = sample(shape_t, aff_t, centre)
    S = sample(shape_s, aff_s, centre + shift_mm)

    def com_callable(src, tgt):
        out = np.empty((src.shape[0], 3, *src.shape[2:]), np.float32)
        for b in range(src.shape[0]):
            out[b] = (com(src[b, 0]) - com(tgt[b, 0]))[:, None, None, None]
        return out

    pred = Estimator(com_callable).predict((S, aff_s), (T, aff_t))
    inner = pred.displacement[:, 5:15, 5:17, 5:19].reshape(3, -1)
    np.testing.assert_allclose(inner.mean(1), shift_mm, atol=0.25)


def test_reslice_grid_and_world_displacement():
    """A reslice card: 1 mm model grid about the image centre on 2 mm native images."""
    from regrisk import spaces
    from regrisk.card import ModelCard, Preprocess, Resample

    card = ModelCard(name="r", grid=(26, 26, 26), resample=Resample("reslice", (1.0, 1.0, 1.0)),
                     preprocess=Preprocess("none"))
    shape = (14, 14, 14)
    aff = oblique_affine(spacing=(2.0, 2.0, 2.0), angle_deg=30.0)
    gm = spaces.grid_map(shape, aff, card)
    np.testing.assert_allclose(np.linalg.norm(gm.grid_affine[:3, :3], axis=0), 1.0)
    centre_native = aff[:3, :3] @ (np.array(shape) - 1) / 2 + aff[:3, 3]
    centre_grid = gm.grid_affine[:3, :3] @ (np.array(card.grid) - 1) / 2 + gm.grid_affine[:3, 3]
    np.testing.assert_allclose(centre_grid, centre_native, atol=1e-9)

    def sample(centre_mm):
        vox = coords(shape).reshape(3, -1).astype(np.float64)
        world = aff[:3, :3] @ vox + aff[:3, 3:4]
        r2 = ((world - centre_mm[:, None]) ** 2).sum(0)
        v = np.exp(-r2 / (2 * 3.0 ** 2))
        v[v < 1e-3] = 0
        return v.reshape(shape).astype(np.float32)

    shift = np.array([1.0, -2.0, 1.5])
    S, T = sample(centre_native + shift), sample(centre_native)

    def com_callable(src, tgt):
        out = np.empty((src.shape[0], 3, *src.shape[2:]), np.float32)
        for b in range(src.shape[0]):
            out[b] = (com(src[b, 0]) - com(tgt[b, 0]))[:, None, None, None]
        return out

    pred = Estimator(com_callable, card=card).predict((S, aff), (T, aff))
    assert pred.grid_displacement.shape == (3, 26, 26, 26)
    np.testing.assert_allclose(pred.displacement[:, 7, 7, 7], shift, atol=0.2)


def test_per_family_maps_separate_the_families(model_path, pair, tmp_path):
    """Under the paper mixture the centre-of-mass model is exact for translations (map ~0) and
    not for scale, shear or B-spline perturbations; each family's map uses its own samples."""
    S, T = pair
    res = Estimator(str(model_path)).estimate((S, AFF), (T, AFF), samples=12, seed=0,
                                              perturbation="paper", per_family=True)
    fam = res.family_uncertainty
    assert sorted(fam) == ["bspline", "scale", "shear", "translation"]
    assert fam["translation"].max() < 2e-3
    for name in ("scale", "shear", "bspline"):
        assert fam[name].max() > 0.05
    # the pooled map mixes families, so it exceeds the exact family's everywhere
    assert np.all(res.uncertainty >= fam["translation"])
    res.save(tmp_path / "o")
    assert (tmp_path / "o" / "uncertainty_scale.nii.gz").is_file()
    with pytest.raises(InputError, match="per-family"):
        Estimator(str(model_path)).estimate((S, AFF), (T, AFF), samples=6, per_family=True)
