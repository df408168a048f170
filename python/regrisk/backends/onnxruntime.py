"""ONNX Runtime on the CPU execution provider: all graph optimisations, one thread per core."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..card import ModelCard
from ..errors import ModelError, first_line
from ..limits import cores as cpu_cores
from . import Array, Backend, ModelSource


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    device = "cpu"

    def __init__(self, model: ModelSource, card: ModelCard, *, threads: int | None = None,
                 options: dict[str, Any] | None = None) -> None:
        import onnxruntime as ort

        options = dict(options or {})
        self.threads = int(threads) if threads else cpu_cores()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        # Spinning threads burn the cores the engine's kernels need between runs.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(model.onnx_bytes_or_path(), sess_options=so,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for a bad graph
            raise ModelError(f"{model.label or 'model'}: ONNX Runtime cannot load it "
                             f"({first_line(exc, limit=200)})") from None
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_name = card.output.name
        dim0 = self.session.get_inputs()[0].shape[0] if self.session.get_inputs() else None
        self.fixed_batch = dim0 if isinstance(dim0, int) and dim0 > 0 else None

    def run(self, feeds: Mapping[str, Array]) -> Array:
        out = self.session.run([self.output_name], {k: np.ascontiguousarray(v, dtype=np.float32)
                                                    for k, v in feeds.items()})[0]
        return np.ascontiguousarray(out, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"backend": self.name, "device": self.device, "provider": "CPUExecutionProvider",
                "threads": self.threads, "onnxruntime": ort.__version__,
                "fixed_batch": self.fixed_batch}

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
