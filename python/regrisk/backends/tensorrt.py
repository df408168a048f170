"""TensorRT engines with a dynamic batch axis, inputs and outputs bound to CuPy memory.

``model`` is either a serialized engine (``.engine``, ``.plan`` or ``.trt``, built for this GPU
and TensorRT version, e.g. by ``regrisk export``) or an ONNX graph, which is built into an
engine here with one optimisation profile over the batch axis. ``run`` binds CuPy buffers by
device pointer (``set_tensor_address``) and enqueues with ``execute_async_v3`` on a private
stream ordered against the caller's current CuPy stream with events; batches larger than the
profile's maximum are run in chunks into one output buffer. Written against the TensorRT 10
Python API.

Whether it can run here is a query, ``backends.unavailable(name, device)``, that
``create_backend`` asks before it imports this module (CuPy and the CUDA kernels are needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cupy
import tensorrt as trt

from .. import _cuda_ops
from .. import device as _device
from ..card import ModelCard
from ..errors import ModelError
from . import Array, Backend, ModelSource
from .feeds import device_feeds

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def build_engine(onnx: str | bytes, card: ModelCard, *, max_batch: int = 16, opt_batch: int = 8,
                 fp16: bool = False, tf32: bool = False, workspace: int = 4 << 30,
                 logger: Any = None) -> bytes:
    """Serialize a TensorRT engine for an ONNX graph, batch axis dynamic in [1, max_batch]."""
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    data = Path(onnx).read_bytes() if isinstance(onnx, str) else onnx
    if not parser.parse(data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse the ONNX graph ({errors[:300]})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if not tf32:  # TensorRT enables TF32 by default; keep float32 comparable with the CPU
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    opt_batch = max(1, min(opt_batch, max_batch))
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)
        if len(dims) != 5:
            raise ModelError(f"TensorRT: input {tensor.name!r} has rank {len(dims)}, expected 5")
        rest = [d if d > 0 else g for d, g in zip(dims[2:], card.grid)]
        channels = dims[1] if dims[1] > 0 else (2 if card.inputs.layout == "concat" else 1)
        if dims[0] > 0:  # fixed batch graph: a single-point profile
            shape = (dims[0], channels, *rest)
            profile.set_shape(tensor.name, shape, shape, shape)
        else:
            profile.set_shape(tensor.name, (1, channels, *rest), (opt_batch, channels, *rest),
                              (max_batch, channels, *rest))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError("TensorRT failed to build an engine for the graph (see its log above)")
    return bytes(serialized)


class TensorRTBackend(Backend):
    """options: ``device_id``; for ONNX input: ``max_batch`` (16), ``opt_batch`` (8), ``fp16``
    (False), ``tf32`` (False), ``workspace`` (bytes, 4 GiB)."""

    name = "tensorrt"
    device = "cuda"

    def __init__(self, model: ModelSource, card: ModelCard, *, threads: int | None = None,
                 options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        label = model.label or "model"
        self.device_id = int(options.get("device_id", cupy.cuda.runtime.getDevice()))
        self.logger = trt.Logger(trt.Logger.WARNING)
        with cupy.cuda.Device(self.device_id):
            if model.path is not None and Path(model.path).suffix.lower() in ENGINE_SUFFIXES:
                blob = Path(model.path).read_bytes()
                self.built_here = False
            else:
                blob = build_engine(model.onnx_bytes_or_path(), card,
                                    max_batch=int(options.get("max_batch", 16)),
                                    opt_batch=int(options.get("opt_batch", 8)),
                                    fp16=bool(options.get("fp16", False)),
                                    tf32=bool(options.get("tf32", False)),
                                    workspace=int(options.get("workspace", 4 << 30)),
                                    logger=self.logger)
                self.built_here = True
            self.runtime = trt.Runtime(self.logger)
            self.engine = self.runtime.deserialize_cuda_engine(blob)
            if self.engine is None:
                raise ModelError(f"{label}: TensorRT cannot deserialize the engine (built for "
                                 "another GPU or TensorRT version?)")
            self.context = self.engine.create_execution_context()
            self.side = _cuda_ops.SideStream(self.device_id)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        for n in names:
            if self.engine.get_tensor_dtype(n) != trt.DataType.FLOAT:
                raise ModelError(f"{label}: TensorRT tensor {n!r} is not float32")
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_name = card.output.name
        self._outputs = [n for n in names if not is_input[n]]
        if self.output_name not in self._outputs:
            raise ModelError(f"{label}: engine has no output {self.output_name!r} "
                             f"(outputs: {', '.join(self._outputs)})")
        first = self.input_names[0]
        static0 = self.engine.get_tensor_shape(first)[0]
        hi = tuple(self.engine.get_tensor_profile_shape(first, 0)[2])
        self.max_batch = int(hi[0])
        self.fixed_batch = int(static0) if static0 > 0 else None

    @property
    def xp(self) -> Any:
        return cupy

    def run(self, feeds: Mapping[str, Array]) -> Array:
        with cupy.cuda.Device(self.device_id):
            arrays = device_feeds(self.name, self.input_names, feeds)
            total = int(next(iter(arrays.values())).shape[0])
            out = None
            scratch = []  # other outputs: written by TensorRT, never read
            caller = self.side.enter()
            try:
                for start in range(0, total, self.max_batch):
                    stop = min(total, start + self.max_batch)
                    for name, a in arrays.items():
                        chunk = a[start:stop]
                        if not self.context.set_input_shape(name, tuple(chunk.shape)):
                            raise ModelError(f"tensorrt: input {name!r} shape {tuple(chunk.shape)} "
                                             "is outside the engine's optimisation profile")
                        self.context.set_tensor_address(name, chunk.data.ptr)
                    for name in self._outputs:
                        shape = tuple(self.context.get_tensor_shape(name))
                        if name == self.output_name:
                            if out is None:
                                out = cupy.empty((total, *shape[1:]), dtype=cupy.float32)
                            target = out[start:stop]
                        else:
                            target = cupy.empty(shape, dtype=cupy.float32)
                            scratch.append(target)
                        self.context.set_tensor_address(name, target.data.ptr)
                    if not self.context.execute_async_v3(self.side.ptr):
                        raise ModelError("tensorrt: execute_async_v3 failed (see the TensorRT log)")
            finally:
                self.side.leave(caller)
            return out

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device,
                "gpu": _device.gpu_name(self.device_id),
                "device_id": self.device_id, "tensorrt": trt.__version__,
                "max_batch": self.max_batch, "fixed_batch": self.fixed_batch,
                "engine_built_here": self.built_here}

    def close(self) -> None:
        self.context = None
        self.engine = None
