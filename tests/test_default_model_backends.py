"""The packaged default graphs on every CPU backend: ONNX Runtime against the eager network
rebuilt from the graph's own weights (the trained network, independent of the graph's
arithmetic), OpenVINO (staged: the demons warps are 5-D GridSamples) against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from regrisk import model_loading
from regrisk.backends import create_backend, unavailable

GRID = (80, 96, 80)


@pytest.fixture(scope="module")
def pair() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(12)
    return {n: rng.random((1, 1, *GRID), dtype=np.float32) for n in ("source", "target")}


def _run(name: str, backend: str, feeds: dict, **options) -> np.ndarray:
    resolved = model_loading.resolve(name)
    with create_backend(resolved.source, resolved.card, name=backend, threads=2,
                        options=options) as b:
        return b.run(feeds)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_default_graph_is_the_trained_network(pair) -> None:
    torch = pytest.importorskip("torch")
    from regrisk.exporters.default_model.from_onnx import module_from_onnx

    path = model_loading.packaged_model_path("default")
    assert path.stat().st_size <= 5 * 2 ** 20
    net = module_from_onnx(path)
    with torch.no_grad():
        want = net(*(torch.from_numpy(pair[n]) for n in ("source", "target"))).numpy()
    got = _run("default", "onnxruntime", pair)
    assert np.abs(want).max() > 0.5  # a real deformation, in voxels
    assert _rel(got, want) <= 1e-5


@pytest.mark.skipif(unavailable("openvino") is not None,
                    reason=f"openvino: {unavailable('openvino')}")
def test_default_graphs_run_on_openvino(pair) -> None:
    want = _run("default", "onnxruntime", pair)
    got = _run("default", "openvino", pair, precision="f32")  # "auto" may be bf16: see below
    assert _rel(got, want) <= 1e-5
    resolved = model_loading.resolve("default-stochastic")
    with create_backend(resolved.source, resolved.card, name="openvino", threads=2) as b:
        first, second = b.run(pair), b.run(pair)
    assert np.all(np.isfinite(first)) and not np.array_equal(first, second)  # dropout samples
    assert _rel(first, want) < 0.5  # the same network with some channels dropped


@pytest.mark.skipif(unavailable("openvino") is not None,
                    reason=f"openvino: {unavailable('openvino')}")
def test_auto_precision_runs_the_measured_default_at_bf16_where_the_cpu_has_it(pair) -> None:
    """"auto" picks bf16 only for graphs whose map agreement was measured (the packaged default,
    by its sha256: a retrained model must be measured again) and only for the stages with dense
    convolutions (the U-Net); f32 elsewhere and on CPUs without native bf16."""
    import hashlib

    import openvino as ov

    from regrisk.backends.openvino import BF16_MEASURED

    path = model_loading.packaged_model_path("default")
    assert hashlib.sha256(path.read_bytes()).hexdigest() in BF16_MEASURED
    resolved = model_loading.resolve("default")
    with create_backend(resolved.source, resolved.card, name="openvino", threads=2) as b:
        got, info = b.run(pair), b.describe()
    want = _run("default", "openvino", pair, precision="f32")
    assert info["precision_requested"] == "auto"
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert (info["precision"], info["runs_at"]) == ("bf16", "bf16+f32")
        assert 0.0 < _rel(got, want) <= 1e-2  # bf16 rounding, not another network
    else:
        assert (info["precision"], info["runs_at"]) == ("f32", "f32")
        assert _rel(got, want) <= 1e-6
