"""Which CPU backend a graph gets when none is named: the fastest measured for its kind.

OpenVINO runs convolution networks fastest on the CPU (benchmarks/RESULTS.md: the benchmark
U-Net, VoxelMorph). A graph that warps inside (5-D GridSample: the default model's 62 unrolled
demons warps, uniGradICON's cascade) has no such op in OpenVINO and runs there in stages, the
warps by regrisk's kernel; measured end to end on the default model (K = 50, cold compile
cache included) that is still faster than ONNX Runtime running the graph whole, so OpenVINO
comes first for every graph (``backends._DEFAULTS``). ONNX Runtime is the fallback when
OpenVINO cannot take one.
"""

from __future__ import annotations

from typing import Any


def cpu_report(default_model: Any = None) -> dict[str, Any]:
    """For ``regrisk info``: the installed CPU backends in the order each kind of graph tries
    them, and the one the packaged default model (a ModelSource, if installed) runs on."""
    from . import _DEFAULTS, unavailable

    usable = tuple(n for n in _DEFAULTS["cpu"] if unavailable(n, "cpu") is None)
    report: dict[str, Any] = {
        "installed": {n: unavailable(n, "cpu") or "yes" for n in _DEFAULTS["cpu"]},
        "convolution graphs": list(usable),
        "graphs with 5-D GridSample": [f"{n} (staged)" if n == "openvino" else n for n in usable],
    }
    if default_model is not None:  # the same order for every graph: the first usable one
        report["default model"] = usable[0] if usable else None
    if "openvino" in usable:
        report["openvino precision"] = _openvino_precision()
        report["openvino lanes"] = _openvino_lanes()
        report["openvino graph rewrites"] = (
            "nearest 2x upsampling folded into the 3x3x3 convolution that reads it "
            "(backends.upsample_fold); a last 3x3x3 convolution to the field run by regrisk's "
            "kernel (backends.native_head)")
    return report


def _openvino_lanes() -> str:
    """How many images of a batch OpenVINO runs at once with the default thread count."""
    from .onnxruntime import cpu_cores
    from .openvino import auto_lanes

    threads = cpu_cores()
    staged = auto_lanes(threads, staged=True)
    return (f"graphs staged at 5-D GridSample {staged} (the images of a batch {staged} at a "
            f"time, each on {threads // staged} of {threads} threads), other graphs 1")


def _openvino_precision() -> str:
    """What OpenVINO's "auto" precision does on this CPU."""
    import openvino as ov

    from .openvino import BF16_MEASURED

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return "f32 (this CPU has no native bf16)"
    return (f"bf16 for the convolution stages of {len(BF16_MEASURED)} measured graph(s) "
            "(the packaged default), f32 for everything else")
