"""Resampling by whole factors: the native upsample2 and average_pool against their NumPy
references (bit for bit) and against torch's and ONNX Runtime's own operators (independent
implementations), and the field resizes of a staged graph run natively (which Resize nodes
qualify, and the whole default graph against ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import pytest

from regrisk import kernels, model_loading, reference
from regrisk.backends import create_backend, native_resize, unavailable

SHAPES = [(1, 3, 40, 48, 40), (2, 1, 5, 1, 7), (1, 1, 1, 1, 1), (1, 2, 3, 4, 5), (3, 3, 9, 2, 16)]


@pytest.mark.parametrize("shape", SHAPES)
def test_upsample2_equals_reference_bit_for_bit(rng, shape) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    got = kernels.upsample2(x)
    assert got.shape == (*shape[:2], *(2 * n for n in shape[2:])) and got.dtype == np.float32
    assert np.array_equal(got, reference.upsample2(x))
    assert np.array_equal(got, kernels.upsample2(x, threads=1))


@pytest.mark.parametrize("shape", SHAPES)
def test_average_pool_equals_reference_bit_for_bit(rng, shape) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    for f in range(1, min(shape[2:]) + 1):
        got = kernels.average_pool(x, f)
        assert got.shape == (*shape[:2], *(n // f for n in shape[2:]))
        assert np.array_equal(got, reference.average_pool(x, f))
        assert np.array_equal(got, kernels.average_pool(x, f, threads=1))


def test_upsample2_by_hand() -> None:
    """Along one axis of 3 values: quarter-pixel blends of each value with its neighbour, the
    first and last output the end values themselves (clamped)."""
    x = np.array([0.0, 4.0, 8.0], np.float32).reshape(1, 1, 3, 1, 1)
    got = kernels.upsample2(x)[0, 0, :, 0, 0]
    assert got.tolist() == [0.0, 1.0, 3.0, 5.0, 7.0, 8.0]
    assert np.all(kernels.upsample2(x)[0, 0, :, 1, 1] == got)  # copies along the other axes


def test_resampling_equals_torch(rng) -> None:
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    x = rng.standard_normal((2, 3, 10, 12, 7)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(x), scale_factor=2, mode="trilinear",
                         align_corners=False).numpy()
    np.testing.assert_allclose(kernels.upsample2(x), want, rtol=0, atol=2e-6)
    for f in (2, 3, 4):
        want = F.avg_pool3d(torch.from_numpy(x), f).numpy()
        np.testing.assert_allclose(kernels.average_pool(x, f), want, rtol=0, atol=2e-6)


def test_resampling_rejects_bad_arguments(rng) -> None:
    x = rng.random((1, 1, 4, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="volume: expected float32"):
        kernels.upsample2(x.astype(np.float64))
    with pytest.raises(ValueError, match="volume: expected 5 dimensions"):
        kernels.upsample2(x[0])
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.average_pool(x[:, :, ::2], 2)
    with pytest.raises(ValueError, match="factor"):
        kernels.average_pool(x, 0)
    with pytest.raises(ValueError, match="at least 5 voxels"):
        kernels.average_pool(x, 5)


# --- Resize nodes of a graph ------------------------------------------------------------------


def _resize_graph(consumer: str, mode: str = "linear", transform: str = "half_pixel",
                  scales: tuple[float, ...] = (1, 1, 2, 2, 2)):
    """x (1, 3, 4, 5, 6) -> Resize -> then ``consumer``: "output" (the graph's output),
    "grid" (transposed into a GridSample's grid) or "conv" (a convolution's input)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(
                 np.asarray(scales, np.float32))),
             helper.make_node("Resize", ["x", "", "s"], ["r"], mode=mode,
                              coordinate_transformation_mode=transform)]
    inits, out_shape = [], [1, 3, 8, 10, 12]
    if consumer == "grid":
        nodes += [helper.make_node("Transpose", ["r"], ["g"], perm=[0, 2, 3, 4, 1]),
                  helper.make_node("GridSample", ["v", "g"], ["y"], align_corners=0)]
        out_shape = [1, 1, 8, 10, 12]
    elif consumer == "conv":
        inits = [numpy_helper.from_array(np.ones((1, 3, 1, 1, 1), np.float32), "w")]
        nodes.append(helper.make_node("Conv", ["r", "w"], ["y"]))
        out_shape = [1, 1, 8, 10, 12]
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["y"]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 5, 6])]
    if consumer == "grid":
        inputs.append(helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 1, 6, 6, 6]))
    graph = helper.make_graph(nodes, "resize", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize("consumer", ["output", "grid"])
def test_fuse_takes_field_resizes(consumer) -> None:
    fused, count = native_resize.fuse(_resize_graph(consumer))
    assert count == 1
    ops = [n.op_type for n in fused.graph.node]
    assert native_resize.OP in ops and "Resize" not in ops


@pytest.mark.parametrize("kwargs", [
    {"consumer": "conv"},                                   # inside a convolutional decoder
    {"consumer": "output", "mode": "nearest"},
    {"consumer": "output", "transform": "align_corners"},
    {"consumer": "output", "scales": (1, 1, 2, 2, 3)},
    {"consumer": "output", "scales": (1, 2, 2, 2, 2)},
])
def test_fuse_leaves_other_resizes_alone(kwargs) -> None:
    assert native_resize.fuse(_resize_graph(**kwargs)) is None


def test_native_field_resize_equals_onnxruntime(rng) -> None:
    """The fused graph's Upsample2 run natively against ONNX Runtime's Resize of the original
    (an independent implementation of the operator)."""
    ort = pytest.importorskip("onnxruntime")
    model = _resize_graph("output")
    x = rng.standard_normal((1, 3, 4, 5, 6)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    _, count = native_resize.fuse(model)
    got = native_resize.runner(count, threads=2)([x])[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_fuse_finds_the_default_networks_two_field_resizes() -> None:
    graph = model_loading.load_graph(model_loading.packaged_model_path("default"))
    fused, count = native_resize.fuse(graph)
    assert count == 2  # the demons field to full resolution, and the output field
    assert sum(n.op_type == "Resize" for n in graph.graph.node) == count + sum(
        n.op_type == "Resize" for n in fused.graph.node)


@pytest.mark.skipif(unavailable("openvino") is not None,
                    reason=f"openvino: {unavailable('openvino')}")
def test_openvino_with_native_resizes_equals_onnxruntime(rng) -> None:
    from scipy.ndimage import gaussian_filter

    resolved = model_loading.resolve("default")
    feeds = {}
    for n in ("source", "target"):
        x = gaussian_filter(rng.random((1, 1, 80, 96, 80)), (0, 0, 2, 2, 2))
        feeds[n] = ((x - x.min()) / (x.max() - x.min())).astype(np.float32)
    with create_backend(resolved.source, resolved.card, name="openvino", threads=2,
                        options={"precision": "f32"}) as b:
        got, info = b.run(feeds), b.describe()
    assert native_resize.OP in info["native_parts"]
    with create_backend(resolved.source, resolved.card, name="onnxruntime", threads=2) as b:
        want = b.run(feeds)
    assert np.abs(want).max() > 0.5  # the network moves these images
    assert float(np.abs(got - want).max() / np.abs(want).max()) <= 1e-5
