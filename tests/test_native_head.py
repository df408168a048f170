"""A network's last 3x3x3 convolution run natively: kernels.conv3x3x3 against its NumPy
reference (to float32 rounding: the vector builds fuse multiply-adds; the same bits at any
thread count) and against torch's conv3d (an independent implementation); which graph endings
backends.native_head takes; and OpenVINO with the head native against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from regrisk import kernels, model_loading, reference
from regrisk.backends import create_backend, native_head, unavailable
from regrisk.card import ModelCard, embed_card

CASES = [((1, 8, 12, 10, 70), 3), ((2, 3, 5, 6, 7), 4), ((1, 1, 1, 1, 1), 1), ((1, 5, 3, 2, 130), 6),
         ((3, 2, 4, 4, 64), 2)]


def _tolerance(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:
    """float32 rounding of a sum of C * 27 + 1 terms: a few ulps of the sum of magnitudes."""
    return 1e-6 * (np.abs(w).sum(axis=(1, 2, 3, 4)).max() * np.abs(x).max() + np.abs(b).max())


@pytest.mark.parametrize("shape, out", CASES)
def test_conv3x3x3_equals_reference(rng, shape, out) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((out, shape[1], 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(out).astype(np.float32)
    got = kernels.conv3x3x3(x, w, b)
    assert got.shape == (shape[0], out, *shape[2:]) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference.conv3x3x3(x, w, b), rtol=0, atol=_tolerance(x, w, b))
    assert np.array_equal(got, kernels.conv3x3x3(x, w, b, threads=1))
    assert np.array_equal(got, kernels.conv3x3x3(x, w, b, threads=3))


def test_conv3x3x3_by_hand() -> None:
    """One voxel's output is the bias plus the kernel dotted with its zero-padded
    neighbourhood: at a corner only the 8 taps inside the volume count."""
    x = np.ones((1, 1, 4, 4, 4), np.float32)
    w = np.arange(27, dtype=np.float32).reshape(1, 1, 3, 3, 3)
    got = kernels.conv3x3x3(x, w, np.array([0.5], np.float32))
    assert got[0, 0, 1, 1, 1] == 0.5 + w.sum()
    assert got[0, 0, 0, 0, 0] == 0.5 + w[0, 0, 1:, 1:, 1:].sum()
    assert got[0, 0, 3, 3, 3] == 0.5 + w[0, 0, :2, :2, :2].sum()


def test_conv3x3x3_equals_torch(rng) -> None:
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 8, 9, 11, 40)).astype(np.float32)
    w = rng.standard_normal((3, 8, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    want = torch.nn.functional.conv3d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                      padding=1).numpy()
    np.testing.assert_allclose(kernels.conv3x3x3(x, w, b), want, rtol=0, atol=_tolerance(x, w, b))


def test_conv3x3x3_keeps_nan(rng) -> None:
    x = rng.standard_normal((1, 2, 5, 5, 5)).astype(np.float32)
    x[0, 1, 2, 2, 2] = np.nan
    got = kernels.conv3x3x3(x, np.ones((3, 2, 3, 3, 3), np.float32), np.zeros(3, np.float32))
    bad = np.zeros((5, 5, 5), bool)
    bad[1:4, 1:4, 1:4] = True  # every output whose neighbourhood holds the NaN
    assert np.array_equal(np.isnan(got[0]), np.broadcast_to(bad, (3, 5, 5, 5)))


def test_conv3x3x3_rejects_bad_arguments(rng) -> None:
    x = rng.random((1, 2, 4, 4, 4), dtype=np.float32)
    w, b = np.zeros((3, 2, 3, 3, 3), np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="weight: axis 1 is 3, expected 2"):
        kernels.conv3x3x3(x, np.zeros((3, 3, 3, 3, 3), np.float32), b)
    with pytest.raises(ValueError, match="weight: axis 2 is 5, expected 3"):
        kernels.conv3x3x3(x, np.zeros((3, 2, 5, 5, 5), np.float32), b)
    with pytest.raises(ValueError, match="bias: axis 0 is 2, expected 3"):
        kernels.conv3x3x3(x, w, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="volume: expected float32"):
        kernels.conv3x3x3(x.astype(np.float64), w, b)


# -- the graph's last layer ------------------------------------------------------------------

def _model(rng: np.random.Generator, grid, *, out: int = 3, tail: str | None = "Mul",
           scale: float = 0.5, conv: dict | None = None, bias: bool = True) -> onnx.ModelProto:
    """source, target -> Concat -> Conv(2 -> 6) -> LeakyRelu -> Conv(6 -> out) [-> tail scale]."""
    attrs = {"kernel_shape": [3, 3, 3], "pads": [1] * 6, **(conv or {})}
    inits = [numpy_helper.from_array(rng.normal(size=(6, 2, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.normal(size=(out, 6, 3, 3, 3)) * 0.2).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array(scale, np.float32), "s")]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(size=out).astype(np.float32), "b2"))
    last = "flow" if tail is None else "conv"
    nodes = [helper.make_node("Concat", ["source", "target"], ["x"], axis=1),
             helper.make_node("Conv", ["x", "w1"], ["h"], kernel_shape=[3, 3, 3], pads=[1] * 6),
             helper.make_node("LeakyRelu", ["h"], ["f"], alpha=0.2),
             helper.make_node("Conv", ["f", "w2"] + (["b2"] if bias else []), [last], **attrs)]
    if tail is not None:  # "Mul first": the scale as a Constant node, written first
        if tail == "Mul first":
            nodes.append(helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(
                np.array(scale, np.float32))))
        nodes.append(helper.make_node("Mul", ["c", "conv"], ["flow"]) if tail == "Mul first"
                     else helper.make_node(tail, ["conv", "s"], ["flow"]))
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", 1, *grid]) for n in ("source", "target")]
    graph = helper.make_graph(nodes, "head", io, [helper.make_tensor_value_info(
        "flow", TensorProto.FLOAT, ["B", out, *grid])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    card = ModelCard(name="head", grid=tuple(grid))
    card.output.name = "flow"
    embed_card(model, card)
    return model


@pytest.mark.parametrize("tail, scale, bias", [(None, 1.0, True), ("Mul", 0.5, True),
                                               ("Div", 3.0, True), ("Mul", -0.7, False),
                                               ("Mul first", 0.25, True)])
def test_fuse_takes_the_last_convolution(rng, tail, scale, bias) -> None:
    model = _model(rng, (6, 5, 7), tail=tail, scale=scale, bias=bias)
    fused, spec = native_head.fuse(model)
    assert [n.op_type for n in fused.graph.node][-1] == native_head.OP
    assert "Conv" in [n.op_type for n in fused.graph.node]  # the first layer stays
    w = numpy_helper.to_array(model.graph.initializer[1])
    factor = scale if tail != "Div" else 1 / scale
    np.testing.assert_allclose(np.reshape(spec.weight, spec.shape), w * factor, rtol=1e-6)
    assert spec.shape == (3, 6, 3, 3, 3) and len(spec.bias) == 3


@pytest.mark.parametrize("kwargs", [
    {"out": 5},                                  # wider than the kernel's register block
    {"conv": {"strides": [2, 2, 2]}},
    {"conv": {"dilations": [2, 2, 2], "pads": [2] * 6}},
    {"tail": "Add"},                              # not a scaling
    {"scale": float("inf")},
])
def test_fuse_leaves_other_endings_alone(rng, kwargs) -> None:
    assert native_head.fuse(_model(rng, (6, 5, 7), **kwargs)) is None


@pytest.mark.skipif(unavailable("openvino") is not None, reason=f"openvino: {unavailable('openvino')}")
@pytest.mark.parametrize("tail", [None, "Mul", "Mul first"])
def test_openvino_with_native_head_equals_onnxruntime(tmp_path, rng, tail) -> None:
    grid = (8, 10, 70)
    model = _model(rng, grid, tail=tail)
    path = tmp_path / "head.onnx"
    onnx.save(model, str(path))
    resolved = model_loading.resolve(str(path))
    feeds = {n: rng.random((2, 1, *grid), dtype=np.float32) for n in ("source", "target")}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    for native in (True, False):
        with create_backend(resolved.source, resolved.card, name="openvino", threads=2,
                            options={"native": native, "cache_dir": ""}) as backend:
            got = backend.run(feeds)
            info = backend.describe()
        assert info.get("native_parts", []) == (["FieldHead"] if native else [])
        assert info["lanes"] == 1  # a whole network and its head: not a GridSample-staged graph
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


@pytest.mark.skipif(unavailable("openvino") is not None, reason=f"openvino: {unavailable('openvino')}")
def test_a_kept_plan_with_a_native_head(tmp_path, rng) -> None:
    """The staged plan of a whole graph and its head: saved, then read back by the next
    backend with the same outputs bit for bit and the same description (no GridSample, one
    lane)."""
    grid = (6, 8, 40)
    path = tmp_path / "head.onnx"
    onnx.save(_model(rng, grid), str(path))
    resolved = model_loading.resolve(str(path))
    feeds = {n: rng.random((1, 1, *grid), dtype=np.float32) for n in ("source", "target")}
    runs = []
    for _ in range(2):
        with create_backend(resolved.source, resolved.card, name="openvino", threads=2,
                            options={"cache_dir": str(tmp_path / "cache")}) as backend:
            runs.append((backend.run(feeds), backend.describe()))
    (first, saved), (second, cached) = runs
    assert (saved.pop("plan"), cached.pop("plan")) == ("saved", "cached")
    assert saved == cached and "gridsample" not in cached and cached["lanes"] == 1
    assert np.array_equal(first, second)
