"""TensorRT engines. TensorRT's libraries cannot be installed from the registries reachable
here and need an NVIDIA GPU, so the build test skips with that reason; the checks made before
TensorRT is loaded (refusing 5-D GridSample graphs, batch profiles) run everywhere."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("onnx")

from regrisk.card import Inputs, ModelCard, Output, write_card  # noqa: E402
from regrisk.exporters.common import ExportError  # noqa: E402
from regrisk.exporters.tensorrt import BatchProfile, build_engine, check_graph  # noqa: E402

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _graph(path, op: str) -> None:
    """A one-node graph with a card: GridSample (5-D) or Identity-like Mul."""
    import onnx
    from onnx import TensorProto, helper

    shape = ["batch", 3, 8, 8, 8]
    src = helper.make_tensor_value_info("source", TensorProto.FLOAT, ["batch", 1, 8, 8, 8])
    tgt = helper.make_tensor_value_info("target", TensorProto.FLOAT, ["batch", 1, 8, 8, 8])
    out = helper.make_tensor_value_info("displacement", TensorProto.FLOAT, shape)
    if op == "GridSample":
        nodes = [helper.make_node("Concat", ["source", "target", "target"], ["cat"], axis=1),
                 helper.make_node("Transpose", ["cat"], ["grid"], perm=[0, 2, 3, 4, 1]),
                 helper.make_node("GridSample", ["cat", "grid"], ["displacement"],
                                  align_corners=1)]
    else:
        nodes = [helper.make_node("Concat", ["source", "target", "target"], ["displacement"],
                                  axis=1)]
    graph = helper.make_graph(nodes, "g", [src, tgt], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.save(model, str(path))
    write_card(path, ModelCard(name="t", grid=(8, 8, 8), inputs=Inputs(),
                               output=Output(name="displacement")))


def test_grid_sample_graph_refused_before_tensorrt(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    _graph(path, "GridSample")
    with pytest.raises(ExportError, match="GridSample"):
        check_graph(path)
    with pytest.raises(ExportError, match="staged form"):
        build_engine(path, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_batch_profile_parsing() -> None:
    assert BatchProfile.parse("1:8:16") == BatchProfile(1, 8, 16)
    assert BatchProfile.parse("4") == BatchProfile(4, 4, 4)
    for bad in ("0:1:2", "8:4:16", "a:b:c", "1:2"):
        with pytest.raises(ExportError, match="MIN:OPT:MAX"):
            BatchProfile.parse(bad)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed: the refusal path does not apply")
def test_missing_tensorrt_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "ok.onnx"
    _graph(path, "Concat")
    with pytest.raises(ExportError, match="TensorRT is not installed"):
        build_engine(path, tmp_path / "ok.engine", batch="1:2:4")
    assert not (tmp_path / "ok.engine").exists()


@pytest.mark.skipif(not HAS_TRT, reason="TensorRT (NVIDIA libraries + GPU) is not installable "
                    "from the registries reachable here")
def test_engine_builds_with_batch_profile(tmp_path) -> None:
    import tensorrt as trt

    path = tmp_path / "ok.onnx"
    _graph(path, "Concat")
    engine_path = build_engine(path, tmp_path / "ok.engine", batch="1:2:4", verbose=False)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    assert engine is not None and engine.num_optimization_profiles == 1
    lo, opt, hi = engine.get_tensor_profile_shape("source", 0)
    assert (lo[0], opt[0], hi[0]) == (1, 2, 4)
    assert (tmp_path / "ok.card.json").is_file()
    assert np.all(np.array(lo[1:]) == [1, 8, 8, 8])
