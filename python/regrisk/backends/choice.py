"""Which CPU backend a graph gets when none is named: the fastest measured for its kind.

OpenVINO runs convolution networks fastest on the CPU (benchmarks/RESULTS.md: the benchmark
U-Net, VoxelMorph). A graph that warps inside (5-D GridSample: the default model's 62 unrolled
demons warps, uniGradICON's cascade) has no such op in OpenVINO and runs there only in stages,
each cut a round trip through NumPy and each stage a separate compilation; ONNX Runtime runs
it whole, natively, and comes first for it. Either way the other backend is the fallback.
"""

from __future__ import annotations

from typing import Any


def holds_gridsample(model: Any) -> bool:
    """Whether the ONNX graph behind ``model`` (a ModelSource) has a GridSample node. Reads the
    graph structure only (no external weights); False when it is not an ONNX file."""
    import onnx

    try:
        src = model.onnx_bytes_or_path()
        graph = (onnx.load_from_string(src) if isinstance(src, bytes)
                 else onnx.load(src, load_external_data=False))
    except Exception:  # not ONNX (a callable, a TorchScript file): nothing to prefer
        return False
    return any(n.op_type == "GridSample" for n in graph.graph.node)


def order(model: Any, device: str, candidates: tuple[str, ...]) -> tuple[str, ...]:
    """``candidates`` (the device's defaults) in the order to try for this graph."""
    if device != "cpu" or "openvino" not in candidates or not holds_gridsample(model):
        return candidates
    rest = tuple(c for c in candidates if c != "openvino")
    return rest + ("openvino",)


def cpu_report(default_model: Any = None) -> dict[str, Any]:
    """For ``regrisk info``: the installed CPU backends in the order each kind of graph tries
    them, and the one the packaged default model (a ModelSource, if installed) runs on."""
    from . import _DEFAULTS, unavailable

    usable = tuple(n for n in _DEFAULTS["cpu"] if unavailable(n, "cpu") is None)
    report: dict[str, Any] = {
        "installed": {n: unavailable(n, "cpu") or "yes" for n in _DEFAULTS["cpu"]},
        "convolution graphs": list(usable),
        "graphs with 5-D GridSample": [n for n in usable if n != "openvino"]
                                      + (["openvino (staged)"] if "openvino" in usable else []),
    }
    if default_model is not None:
        chosen = order(default_model, "cpu", usable)
        report["default model"] = chosen[0] if chosen else None
    return report
