"""The native parts of the default network: the fused demons step and the Gaussian smoothing
(native kernels against their NumPy references), the demons and normalisation regions found in
the graph and run natively (against the eager torch modules rebuilt from the graph's weights),
and the whole staged graph (against OpenVINO running every node)."""

from __future__ import annotations

import numpy as np
import pytest

from regrisk import kernels, model_loading, reference
from regrisk.backends import (create_backend, native_demons, native_normalize, native_resize,
                              unavailable)
from regrisk.variance import gaussian_taps

GAUSS = gaussian_taps(2.0, truncate=2.0)  # the network's demons smoothing: sigma 2, 9 taps


def _inputs(rng, batch: int, grid: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    sw, t = (rng.random((batch, 1, *grid), dtype=np.float32) for _ in range(2))
    gt, u = (rng.standard_normal((batch, 3, *grid)).astype(np.float32) for _ in range(2))
    return sw, t, gt, u


@pytest.mark.parametrize("batch, grid, taps", [
    (1, (7, 9, 11), 9), (2, (10, 12, 10), 9), (1, (1, 3, 2), 5), (1, (40, 48, 40), 9),
    (1, (6, 5, 4), 1), (3, (3, 20, 17), 7)])
def test_demons_step_matches_reference(rng, batch, grid, taps) -> None:
    sw, t, gt, u = _inputs(rng, batch, grid)
    kernel = rng.random(taps)
    got = kernels.demons_step(sw, t, gt, u, kernel, tau=0.7, alpha=1.6, eps=1e-4)
    want = reference.demons_step(sw, t, gt, u, kernel.astype(np.float32), 0.7, 1.6, 1e-4)
    assert got.shape == u.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("batch, grid, steps", [(1, (10, 12, 10), 4), (2, (7, 9, 11), 2),
                                                 (1, (40, 48, 40), 3), (1, (3, 4, 5), 0)])
def test_demons_steps_match_reference_and_the_steps_one_by_one(rng, batch, grid, steps) -> None:
    """A level in one call: close to the NumPy reference, and bit for bit the warp and step
    kernels called in turn (what native_demons ran before the steps were fused)."""
    s, t, gt, u = _inputs(rng, batch, grid)
    u *= 0.8  # displacements of about a voxel: points inside and outside the volume
    got = kernels.demons_steps(s, t, gt, u, GAUSS, steps=steps, tau=1.1, alpha=0.8, eps=1e-4)
    want = reference.demons_steps(s, t, gt, u, GAUSS, steps, 1.1, 0.8, 1e-4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(np.abs(want).max(), 1.0))
    one_by_one = u
    for _ in range(steps):
        sw = kernels.warp(s, one_by_one, mode="border")
        one_by_one = kernels.demons_step(sw, t, gt, one_by_one, GAUSS, tau=1.1, alpha=0.8,
                                         eps=1e-4)
    assert np.array_equal(got, one_by_one)
    assert got is not u and (steps > 0 or np.array_equal(got, u))


def test_demons_steps_rejects_bad_arguments(rng) -> None:
    s, t, gt, u = _inputs(rng, 1, (6, 7, 8))
    with pytest.raises(ValueError, match="steps: must be >= 0"):
        kernels.demons_steps(s, t, gt, u, GAUSS, steps=-1, tau=1.0, alpha=1.0, eps=1e-4)
    with pytest.raises(ValueError, match="u: axis 2"):
        kernels.demons_steps(s, t, gt, u[:, :, :-1].copy(), GAUSS, steps=1, tau=1.0, alpha=1.0,
                             eps=1e-4)


def test_demons_step_reference_by_hand() -> None:
    """One voxel's update from the formula, no smoothing (kernel [1]): d = 1, g = (gt + 0) / 2
    on a constant warped source, so v = u - tau d g / (|g|^2 + alpha d^2 + eps)."""
    grid = (3, 3, 3)
    sw, t = np.full((1, 1, *grid), 2.0, np.float32), np.ones((1, 1, *grid), np.float32)
    gt = np.zeros((1, 3, *grid), np.float32)
    gt[:, 0] = 2.0  # g = (1, 0, 0)
    u = np.zeros((1, 3, *grid), np.float32)
    got = kernels.demons_step(sw, t, gt, u, [1.0], tau=0.5, alpha=3.0, eps=1e-4)
    np.testing.assert_allclose(got[0, 0], -0.5 / (1.0 + 3.0 + 1e-4), rtol=1e-6)
    assert np.all(got[0, 1:] == 0.0)


def test_demons_step_is_the_same_for_any_thread_count(rng) -> None:
    sw, t, gt, u = _inputs(rng, 1, (24, 30, 28))
    one = kernels.demons_step(sw, t, gt, u, GAUSS, tau=1.0, alpha=1.0, eps=1e-4, threads=1)
    two = kernels.demons_step(sw, t, gt, u, GAUSS, tau=1.0, alpha=1.0, eps=1e-4, threads=2)
    assert np.array_equal(one, two)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(t=a["t"][:, :1].repeat(2, axis=1)), "t: axis 1"),
    (lambda a: a.update(u=a["u"][:, :, :-1].copy()), "u: axis 2"),
    (lambda a: a.update(kernel=np.ones(4)), "odd"),
    (lambda a: a.update(kernel=np.array([1.0, np.nan, 1.0])), "finite"),
    (lambda a: a.update(tau=float("nan")), "finite"),
    (lambda a: a.update(gt=a["gt"].astype(np.float64)), "gt: expected float32"),
])
def test_demons_step_rejects_bad_arguments(rng, change, message) -> None:
    sw, t, gt, u = _inputs(rng, 1, (5, 6, 7))
    args = {"sw": sw, "t": t, "gt": gt, "u": u, "kernel": GAUSS, "tau": 1.0}
    change(args)
    with pytest.raises(ValueError, match=message):
        kernels.demons_step(args["sw"], args["t"], args["gt"], args["u"], args["kernel"],
                            tau=args["tau"], alpha=1.0, eps=1e-4)


@pytest.mark.parametrize("shape, taps", [((1, 1, 20, 17, 33), 13), ((2, 3, 5, 7, 9), 9),
                                         ((1, 1, 1, 1, 1), 3), ((1, 2, 40, 3, 70), 1),
                                         ((1, 1, 9, 30, 70), (5, 1, 63)), ((1, 3, 8, 8, 8), (3, 201, 7)),
                                         ((1, 2, 9, 40, 30), 51)])  # wider than D and W
def test_gaussian_smooth_matches_reference(rng, shape, taps) -> None:
    volume = rng.standard_normal(shape).astype(np.float32)
    kernel = rng.random(taps) if isinstance(taps, int) else tuple(rng.random(n) for n in taps)
    got = kernels.gaussian_smooth(volume, kernel)
    want = reference.gaussian_smooth(volume, kernel)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())


def test_gaussian_smooth_keeps_constants_and_rejects_bad_kernels(rng) -> None:
    """A normalised kernel leaves a constant volume as it is (replicated borders)."""
    volume = np.full((1, 1, 6, 7, 8), 3.5, np.float32)
    np.testing.assert_allclose(kernels.gaussian_smooth(volume, GAUSS), volume, rtol=1e-6)
    with pytest.raises(ValueError, match="kernel_i: length must be odd"):
        kernels.gaussian_smooth(volume, np.ones(4))
    with pytest.raises(ValueError, match="kernel_j: length must be odd and at most 513"):
        kernels.gaussian_smooth(volume, (np.ones(3), np.ones(515), np.ones(3)))
    with pytest.raises(ValueError, match="volume: expected 5 dimensions"):
        kernels.gaussian_smooth(volume[0], GAUSS)


# --- the default network's region ----------------------------------------------------------


@pytest.fixture(scope="module")
def default_graph():
    return model_loading.load_graph(model_loading.packaged_model_path("default"))


def test_fuse_finds_the_default_networks_demons(default_graph) -> None:
    fused, spec = native_demons.fuse(default_graph)
    assert spec.levels == (8, 4, 2) and spec.steps == 20  # network.py's DemonsRefine defaults
    assert abs(sum(spec.kernel) - 1.0) < 1e-5 and len(spec.kernel) == 9  # sigma 2 -> 9 taps
    assert all(v > 0 for v in spec.tau + spec.alpha)  # softplus of the learned values
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count(native_demons.OP) == 1
    assert ops.count("GridSample") == 2  # the U-Net's input warp and the final composition
    assert len(default_graph.graph.node) == 15050  # the input is left as it was


def test_fuse_leaves_other_graphs_alone(default_graph) -> None:
    from onnx import ModelProto

    tampered = ModelProto()
    tampered.CopyFrom(default_graph)
    for t in tampered.graph.initializer:
        if t.name == "refine.tau":
            t.name = "refine.tau_renamed"
    assert native_demons.fuse(tampered) is None
    unet = ModelProto()
    unet.CopyFrom(default_graph)
    for n in unet.graph.node:
        n.name = n.name.replace("/refine/", "/other/")
    assert native_demons.fuse(unet) is None


def test_native_region_equals_the_eager_module(default_graph) -> None:
    """Independent arithmetic: torch's DemonsRefine with the graph's own weights."""
    torch = pytest.importorskip("torch")
    from regrisk.exporters.default_model.from_onnx import module_from_onnx

    net = module_from_onnx(model_loading.packaged_model_path("default"))
    rng = np.random.default_rng(5)
    from scipy.ndimage import gaussian_filter

    images = [gaussian_filter(rng.random((80, 96, 80)), 2.0)[None, None].astype(np.float32)
              for _ in range(2)]
    with torch.no_grad():
        s, t = (net.normalize(torch.from_numpy(x)) for x in images)
        want = net.refine(s, t).numpy()
    _, spec = native_demons.fuse(default_graph)
    got = native_demons.run(spec, s.numpy(), t.numpy(), threads=2)
    assert np.abs(want).max() > 0.5  # the demons moved something, in voxels
    assert float(np.abs(got - want).max() / np.abs(want).max()) <= 1e-5


def test_fuse_finds_the_default_networks_normalisation(default_graph) -> None:
    fused, spec = native_normalize.fuse(default_graph)
    assert (len(spec.kernel), spec.scale) == (13, 0.25)  # sigma 3; network.py's 1/4
    assert abs(spec.eps - 1e-2) < 1e-8 and abs(sum(spec.kernel) - 1.0) < 1e-5
    ops = [n for n in fused.graph.node if n.op_type == native_normalize.OP]
    assert [n.input[0] for n in ops] == ["source", "target"]


def test_native_normalisation_equals_the_eager_module(default_graph) -> None:
    torch = pytest.importorskip("torch")
    from regrisk.exporters.default_model.from_onnx import module_from_onnx

    net = module_from_onnx(model_loading.packaged_model_path("default"))
    image = np.random.default_rng(6).random((1, 1, 80, 96, 80), dtype=np.float32)
    with torch.no_grad():
        want = net.normalize(torch.from_numpy(image)).numpy()
    _, spec = native_normalize.fuse(default_graph)
    got = native_normalize.run(spec, image, threads=2)
    assert float(np.abs(got - want).max() / np.abs(want).max()) <= 1e-5


@pytest.mark.skipif(unavailable("openvino") is not None,
                    reason=f"openvino: {unavailable('openvino')}")
def test_openvino_runs_the_region_natively_and_can_be_told_not_to() -> None:
    resolved = model_loading.resolve("default")
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(9)  # smooth images in [0, 1], as the engine's inputs
    feeds = {}
    for n in ("source", "target"):
        x = gaussian_filter(rng.random((2, 1, 80, 96, 80)), (0, 0, 2, 2, 2))
        feeds[n] = ((x - x.min()) / (x.max() - x.min())).astype(np.float32)
    outs, infos = {}, {}
    for native in (True, False):
        with create_backend(resolved.source, resolved.card, name="openvino", threads=2,
                            options={"native": native, "precision": "f32"}) as b:
            outs[native], infos[native] = b.run(feeds), b.describe()
    assert infos[True]["native_parts"] == [native_normalize.OP, native_demons.OP,
                                           native_resize.OP]
    # each image's normalisation, the demons, then the two field resizes
    assert infos[True]["native"] == 5
    assert infos[False]["native_parts"] == [] and infos[False]["stages"] == 63
    assert infos[True]["stages"] < 10
    with create_backend(resolved.source, resolved.card, name="onnxruntime", threads=2) as b:
        want = b.run(feeds)
    assert np.abs(want).max() > 0.5  # the network moves these images
    for native in (True, False):
        assert float(np.abs(outs[native] - want).max() / np.abs(want).max()) <= 1e-5


@pytest.mark.skipif(unavailable("openvino") is not None,
                    reason=f"openvino: {unavailable('openvino')}")
def test_staged_plan_is_kept_between_backends_and_rebuilt_when_damaged(tmp_path, rng) -> None:
    """The default model's staged plan (stages, native specs, shapes) is saved by the first
    backend and read by the next, which gives the same outputs bit for bit; a damaged plan is
    ignored and made again."""
    resolved = model_loading.resolve("default")
    feeds = {n: rng.random((1, 1, 80, 96, 80), dtype=np.float32) for n in ("source", "target")}

    def make():
        b = create_backend(resolved.source, resolved.card, name="openvino", threads=2,
                           options={"cache_dir": str(tmp_path), "precision": "f32"})
        with b:
            return b.run(feeds), b.describe()

    first, info1 = make()
    plans = list(tmp_path.glob("plan-*"))
    assert info1["plan"] == "saved" and len(plans) == 1
    second, info2 = make()
    assert info2["plan"] == "cached"
    np.testing.assert_array_equal(first, second)
    assert {k: v for k, v in info2.items() if k != "plan"} == \
        {k: v for k, v in info1.items() if k != "plan"}
    (plans[0] / "plan.json").write_text("{not json")
    third, info3 = make()
    assert info3["plan"] == "saved"  # cut again, and the damaged plan replaced
    np.testing.assert_array_equal(first, third)
    assert make()[1]["plan"] == "cached" and len(list(tmp_path.glob("plan-*"))) == 1
