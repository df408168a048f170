"""Nearest 2x upsampling folded into the convolution that reads it (backends.upsample_fold):
ONNX Runtime runs the original graph (Resize, Concat, Conv: its own kernels) and the folded one
(ConvTranspose, Conv, Add) on random weights and inputs; they must agree to float32 rounding.
What must not be folded is left alone, and OpenVINO runs the folded graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from regrisk.backends import unavailable
from regrisk.backends.upsample_fold import _FLOOR_HALF, fold_upsampling, transposed_weight


def _graph(rng: np.random.Generator, coarse: tuple[int, int, int], *, c_coarse: int = 3,
           c_skip: tuple[int, ...] = (2,), position: int = 0, bias: bool = True,
           modes: tuple[str, str] = ("asymmetric", "floor"), scales=(1, 1, 2, 2, 2),
           conv: dict | None = None, extra_use: bool = False, c_out: int = 4) -> onnx.ModelProto:
    """y (coarse) -> Resize -> Concat with skips at ``position`` -> Conv -> out."""
    fine = tuple(2 * c for c in coarse)
    inputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", c_coarse, *coarse])]
    inputs += [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, ["B", c, *fine])
               for i, c in enumerate(c_skip)]
    c_in = c_coarse + sum(c_skip)
    weights = [numpy_helper.from_array(rng.normal(size=(c_out, c_in, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(np.asarray(scales, np.float32), "scales")]
    if bias:
        weights.append(numpy_helper.from_array(rng.normal(size=c_out).astype(np.float32), "b"))
    nodes = [helper.make_node("Resize", ["y", "", "scales"], ["up"], mode="nearest",
                              coordinate_transformation_mode=modes[0], nearest_mode=modes[1])]
    parts = [f"x{i}" for i in range(len(c_skip))]
    parts.insert(position, "up")
    conv_in = "up"
    if c_skip:
        nodes.append(helper.make_node("Concat", parts, ["cat"], axis=1))
        conv_in = "cat"
    attrs = {"kernel_shape": [3, 3, 3], "pads": [1] * 6, **(conv or {})}
    nodes.append(helper.make_node("Conv", [conv_in, "w"] + (["b"] if bias else []), ["out"], **attrs))
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", c_out, *fine])]
    if extra_use:  # the concatenation read by a second node too
        nodes.append(helper.make_node("Relu", [conv_in], ["also"]))
        outputs.append(helper.make_tensor_value_info("also", TensorProto.FLOAT, ["B", c_in, *fine]))
    graph = helper.make_graph(nodes, "g", inputs, outputs, weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(rng: np.random.Generator, model: onnx.ModelProto, batch: int = 2) -> dict[str, np.ndarray]:
    out = {}
    for v in model.graph.input:
        dims = [d.dim_value for d in v.type.tensor_type.shape.dim[1:]]
        out[v.name] = rng.normal(size=(batch, *dims)).astype(np.float32)
    return out


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _folded(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    count = fold_upsampling(copy)
    onnx.checker.check_model(copy)
    return copy, count


@pytest.mark.parametrize("case", range(8))
def test_folded_graph_matches_the_original(rng, case) -> None:
    coarse = tuple(int(n) for n in rng.integers(3, 8, size=3))  # odd and even sizes
    c_skip = [(), (2,), (1, 3), (4,)][case % 4]
    position = int(rng.integers(0, len(c_skip) + 1))
    model = _graph(rng, coarse, c_coarse=int(rng.integers(1, 5)), c_skip=c_skip,
                   position=position, bias=case % 3 != 0)
    folded, count = _folded(model)
    assert count == 1
    ops = [n.op_type for n in folded.graph.node]
    assert "Resize" not in ops and ops.count("ConvTranspose") == 1
    assert len(ops) == (1 if not c_skip else 3 + (len(c_skip) > 1))
    feeds = _feeds(rng, model)
    want, got = _run(model, feeds)[0], _run(folded, feeds)[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_transposed_weight_on_one_axis() -> None:
    """A kernel varying along one axis only: the 4 taps are [w2, w1 + w2, w0 + w1, w0] times
    the other axes' sums (3 each)."""
    w = np.zeros((1, 1, 3, 3, 3), np.float32)
    w[0, 0, :, :, :] = np.array([1.0, 10.0, 100.0])[:, None, None]
    t = transposed_weight(w)
    assert t.shape == (1, 1, 4, 4, 4)
    np.testing.assert_array_equal(t[0, 0, :, 1, 1], np.array([100.0, 110.0, 11.0, 1.0]) * 4)
    np.testing.assert_array_equal(t[0, 0, :, 0, 0], np.array([100.0, 110.0, 11.0, 1.0]))


@pytest.mark.parametrize("modes", sorted(_FLOOR_HALF))
def test_every_accepted_resize_mode_reads_floor_of_half(rng, modes) -> None:
    """ONNX Runtime's own nearest doubling under each accepted mode pair is y[floor(o / 2)]."""
    y = rng.normal(size=(1, 2, 3, 4, 5)).astype(np.float32)
    node = helper.make_node("Resize", ["y", "", "s"], ["o"], mode="nearest",
                            coordinate_transformation_mode=modes[0], nearest_mode=modes[1])
    graph = helper.make_graph([node], "r", [helper.make_tensor_value_info("y", TensorProto.FLOAT, y.shape)],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1, 2, 6, 8, 10])],
                              [numpy_helper.from_array(np.array([1, 1, 2, 2, 2], np.float32), "s")])
    got = _run(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {"y": y})[0]
    want = y.repeat(2, axis=2).repeat(2, axis=3).repeat(2, axis=4)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("change", [
    {"modes": ("half_pixel", "floor")},          # shifted by half a voxel
    {"modes": ("asymmetric", "round_prefer_ceil")},
    {"scales": (1, 1, 2, 2, 1)},                  # not every axis doubled
    {"conv": {"strides": [2, 2, 2]}},
    {"conv": {"dilations": [2, 2, 2], "pads": [2] * 6}},
    {"extra_use": True},                          # the concatenation is read elsewhere too
])
def test_what_is_not_a_plain_doubling_is_left_alone(rng, change) -> None:
    model = _graph(rng, (4, 5, 3), **change)
    before = model.SerializeToString()
    assert fold_upsampling(model) == 0
    assert model.SerializeToString() == before


def test_grouped_convolution_is_left_alone(rng) -> None:
    model = _graph(rng, (4, 4, 4), c_coarse=2, c_skip=(2,), conv={"group": 2})
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(
        rng.normal(size=(4, 2, 3, 3, 3)).astype(np.float32), "w"))
    assert fold_upsampling(model) == 0


@pytest.mark.skipif(unavailable("openvino") is not None, reason=f"openvino: {unavailable('openvino')}")
def test_openvino_runs_the_folded_unet(tmp_path, rng) -> None:
    """A two-level decoder (each level a doubling, a skip and a Conv) as a registration model:
    OpenVINO folds both levels and matches ONNX Runtime on the original graph; without the
    option it folds none and matches too."""
    from regrisk import model_loading
    from regrisk.backends import create_backend
    from regrisk.card import ModelCard, embed_card

    grid = (8, 12, 8)
    model = _decoder(rng, grid)
    card = ModelCard(name="fold", grid=grid)
    card.output.name = "flow"
    embed_card(model, card)
    path = tmp_path / "decoder.onnx"
    onnx.save(model, str(path))
    feeds = {n: rng.random((1, 1, *grid), dtype=np.float32) for n in ("source", "target")}
    want = _run(model, feeds)[0]
    resolved = model_loading.resolve(str(path))
    for fold, count in ((True, 2), (False, 0)):
        with create_backend(resolved.source, resolved.card, name="openvino", threads=1,
                            options={"fold_upsampling": fold, "cache_dir": ""}) as backend:
            got = backend.run(feeds)
            assert backend.describe()["folded_upsamplings"] == count
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def _decoder(rng: np.random.Generator, grid: tuple[int, int, int]) -> onnx.ModelProto:
    def w(name, *shape):
        return numpy_helper.from_array((rng.normal(size=shape) * 0.3).astype(np.float32), name)

    conv = dict(kernel_shape=[3, 3, 3], pads=[1] * 6)
    down = dict(kernel_shape=[3, 3, 3], pads=[1] * 6, strides=[2, 2, 2])
    nodes = [
        helper.make_node("Concat", ["source", "target"], ["x0"], axis=1),
        helper.make_node("Conv", ["x0", "e1w", "e1b"], ["e1"], **down),
        helper.make_node("LeakyRelu", ["e1"], ["x1"], alpha=0.2),
        helper.make_node("Conv", ["x1", "e2w"], ["e2"], **down),
        helper.make_node("LeakyRelu", ["e2"], ["x2"], alpha=0.2),
        helper.make_node("Resize", ["x2", "", "s"], ["u2"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Concat", ["u2", "x1"], ["c2"], axis=1),
        helper.make_node("Conv", ["c2", "d2w", "d2b"], ["d2"], **conv),
        helper.make_node("LeakyRelu", ["d2"], ["y2"], alpha=0.2),
        helper.make_node("Resize", ["y2", "", "s"], ["u1"], mode="nearest"),
        helper.make_node("Concat", ["x0", "u1"], ["c1"], axis=1),
        helper.make_node("Conv", ["c1", "d1w", "d1b"], ["flow"], **conv),
    ]
    inits = [w("e1w", 4, 2, 3, 3, 3), w("e1b", 4), w("e2w", 6, 4, 3, 3, 3),
             w("d2w", 5, 10, 3, 3, 3), w("d2b", 5), w("d1w", 3, 7, 3, 3, 3), w("d1b", 3),
             numpy_helper.from_array(np.array([1, 1, 2, 2, 2], np.float32), "s")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", 1, *grid]) for n in ("source", "target")]
    graph = helper.make_graph(nodes, "decoder", io,
                              [helper.make_tensor_value_info("flow", TensorProto.FLOAT, ["B", 3, *grid])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
