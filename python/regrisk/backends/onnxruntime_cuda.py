"""ONNX Runtime on the CUDA execution provider, inputs and outputs bound to CuPy memory.

Nothing crosses the PCIe bus: ``run`` binds the CuPy input buffers and a freshly allocated CuPy
output buffer to the session by device pointer (IO binding), and ONNX Runtime computes on a
private stream ordered against the caller's current CuPy stream with events (see
``regrisk._cuda_ops.SideStream``). The result is a CuPy array ready for the next kernel.

Whether it can run here is a query, ``backends.unavailable(name, device)``, that
``create_backend`` asks before it imports this module (CuPy and the CUDA kernels are needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import cupy
import onnxruntime as ort

from .. import _cuda_ops
from .. import device as _device
from ..card import ModelCard
from ..errors import ModelError, first_line
from . import Array, Backend, ModelSource
from .feeds import device_feeds

_PROVIDER = "CUDAExecutionProvider"


class OnnxRuntimeCudaBackend(Backend):
    """options: ``device_id`` (default: CuPy's current device), ``cudnn_conv_algo_search``
    ("EXHAUSTIVE" default, "HEURISTIC", "DEFAULT"), ``gpu_mem_limit`` (bytes),
    ``tf32`` (bool, default False: keep float32 results comparable with the CPU)."""

    name = "onnxruntime-cuda"
    device = "cuda"

    def __init__(self, model: ModelSource, card: ModelCard, *, threads: int | None = None,
                 options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.device_id = int(options.get("device_id", cupy.cuda.runtime.getDevice()))
        self.side = _cuda_ops.SideStream(self.device_id)
        provider_options: dict[str, str] = {
            "device_id": str(self.device_id),
            "user_compute_stream": str(self.side.ptr),
            "cudnn_conv_algo_search": str(options.get("cudnn_conv_algo_search", "EXHAUSTIVE")),
            "cudnn_conv_use_max_workspace": "1",
            "use_tf32": "1" if options.get("tf32", False) else "0",
        }
        if "gpu_mem_limit" in options:
            provider_options["gpu_mem_limit"] = str(int(options["gpu_mem_limit"]))
        self.provider_options = provider_options
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
        try:
            self.session = self._session(model, so, provider_options)
        except Exception as exc:  # ORT raises its own exception types for a bad graph
            raise ModelError(f"{model.label or 'model'}: ONNX Runtime (CUDA) cannot load it "
                             f"({first_line(exc, limit=200)})") from None
        if _PROVIDER not in self.session.get_providers():
            raise ModelError(f"{model.label or 'model'}: ONNX Runtime did not enable the CUDA "
                             "execution provider for this session")
        inputs = self.session.get_inputs()
        self.input_names = tuple(i.name for i in inputs)
        self.output_name = card.output.name
        outputs = {o.name: o for o in self.session.get_outputs()}
        if self.output_name not in outputs:
            raise ModelError(f"{model.label or 'model'}: graph has no output {self.output_name!r} "
                             f"(outputs: {', '.join(outputs)})")
        self._out_dims = list(outputs[self.output_name].shape)
        self._card = card
        dim0 = inputs[0].shape[0] if inputs else None
        self.fixed_batch = dim0 if isinstance(dim0, int) and dim0 > 0 else None
        # Other graph outputs are bound too (ORT must write them somewhere); kept on the device.
        self._other_outputs = [n for n in outputs if n != self.output_name]

    def _session(self, model: ModelSource, so: Any, provider_options: dict[str, str]) -> Any:
        source = model.onnx_bytes_or_path()
        try:
            return ort.InferenceSession(source, sess_options=so, providers=[(_PROVIDER, provider_options)])
        except Exception as exc:
            # Older onnxruntime-gpu releases reject option names they do not know (use_tf32,
            # cudnn_conv_use_max_workspace): retry with the ones every release has.
            if "option" not in str(exc).lower():
                raise
            essential = {k: provider_options[k] for k in
                         ("device_id", "user_compute_stream", "cudnn_conv_algo_search")}
            self.provider_options = essential
            return ort.InferenceSession(source, sess_options=so, providers=[(_PROVIDER, essential)])

    @property
    def xp(self) -> Any:
        return cupy

    def _output_shape(self, batch: int) -> tuple[int, ...]:
        """Graph output shape for a batch: the graph's static dims, else the card's layout."""
        dims = self._out_dims
        if len(dims) == 5 and all(isinstance(d, int) and d > 0 for d in dims[1:]):
            return (batch, *dims[1:])
        grid = tuple(self._card.grid)
        if self._card.output.channel_axis == "last":
            return (batch, *grid, 3)
        return (batch, 3, *grid)

    def run(self, feeds: Mapping[str, Array]) -> Array:
        with cupy.cuda.Device(self.device_id):
            arrays = device_feeds(self.name, self.input_names, feeds)
            batch = int(next(iter(arrays.values())).shape[0])
            out = cupy.empty(self._output_shape(batch), dtype=cupy.float32)
            binding = self.session.io_binding()
            for name, a in arrays.items():
                binding.bind_input(name=name, device_type="cuda", device_id=self.device_id,
                                   element_type=np.float32, shape=tuple(a.shape),
                                   buffer_ptr=a.data.ptr)
            binding.bind_output(name=self.output_name, device_type="cuda",
                                device_id=self.device_id, element_type=np.float32,
                                shape=tuple(out.shape), buffer_ptr=out.data.ptr)
            for name in self._other_outputs:  # ORT allocates these on the device; dropped after
                binding.bind_output(name=name, device_type="cuda", device_id=self.device_id)
            caller = self.side.enter()
            try:
                self.session.run_with_iobinding(binding)
            except Exception as exc:
                raise ModelError(f"onnxruntime-cuda: run failed ({first_line(exc)})") from None
            finally:
                self.side.leave(caller)
            # `arrays` stays referenced until here: ORT has finished reading them or the
            # caller's stream is ordered after it, so freeing them is safe.
            return out

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "provider": _PROVIDER,
                "gpu": _device.gpu_name(self.device_id), "device_id": self.device_id,
                "onnxruntime": ort.__version__,
                "cudnn_conv_algo_search": self.provider_options["cudnn_conv_algo_search"],
                "fixed_batch": self.fixed_batch, "io_binding": True}

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
