"""A PyTorch module as the network, for users who have the module rather than an export.

On ``cuda`` the engine's CuPy arrays go in and come out through DLPack (zero copy) and the
module runs on CuPy's current stream (``torch.cuda.ExternalStream``), so there is no copy and
no synchronisation between the kernels and the network. On ``cpu`` NumPy arrays are shared with
torch the same way (``torch.from_numpy``).

The module comes from ``ModelSource.extra["module"]`` (an ``nn.Module``), a ``ModelSource``
whose ``function`` is an ``nn.Module``, or ``ModelSource.path`` (a TorchScript file). Its inputs
follow the card: ``module(source, target)`` for the pair layout, ``module(concat)`` for concat;
its output is the card's output in the card's convention (the engine converts it). When the
module returns a tuple, list or dict, ``options["output"]`` picks the element (index or key).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..card import ModelCard
from ..errors import ModelError
from . import Array, Backend, ModelSource
from .feeds import check_feeds


class TorchBackend(Backend):
    """options: ``device`` ("cuda" default, or "cpu"), ``device_id``, ``output`` (element of a
    tuple/dict result), ``cudnn_benchmark`` (True), ``tf32`` (False: float32 convolutions)."""

    name = "torch"

    def __init__(self, model: ModelSource, card: ModelCard, *, threads: int | None = None,
                 options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.label = model.label or "module"
        self.device = str(options.get("device", "cuda"))
        if model.data is not None or (model.path is not None and Path(model.path).suffix == ".onnx"):
            # Reached as the last CUDA fallback for an ONNX model: say what would run it.
            from .. import device as _device

            reasons = {k: _device.backend_unavailable(k) for k in ("onnxruntime-cuda", "tensorrt")}
            why = "; ".join(f"{k}: {v}" for k, v in reasons.items() if v)
            raise ModelError(f"{self.label}: an ONNX model needs the onnxruntime-cuda or tensorrt "
                             f"backend on CUDA, the torch backend runs PyTorch modules"
                             f"{' (' + why + ')' if why else ''}")
        if self.device not in ("cpu", "cuda"):
            raise ModelError(f"torch backend: unknown device {self.device!r}; use 'cpu' or 'cuda'")
        if self.device == "cuda":
            if not torch.cuda.is_available():
                raise ModelError("torch backend: this torch has no CUDA (CPU build or no GPU)")
            import cupy

            self._cupy = cupy
            self.device_id = int(options.get("device_id", cupy.cuda.runtime.getDevice()))
            self.torch_device = torch.device("cuda", self.device_id)
            torch.backends.cudnn.benchmark = bool(options.get("cudnn_benchmark", True))
            allow_tf32 = bool(options.get("tf32", False))
            torch.backends.cudnn.allow_tf32 = allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        else:
            self.device_id = None
            self.torch_device = torch.device("cpu")
            if threads:
                torch.set_num_threads(int(threads))
        self.module = self._load(model).to(self.torch_device).eval()
        self.layout = card.inputs.layout
        self.input_names = card.inputs.names()
        self.output_name = card.output.name
        self.output_key = options.get("output")
        self.fixed_batch = card.batch_size if card.batch == "fixed" else None

    def _load(self, model: ModelSource) -> torch.nn.Module:
        module = model.extra.get("module")
        if module is None and isinstance(model.function, torch.nn.Module):
            module = model.function
        if module is None and model.path is not None:
            try:
                module = torch.jit.load(str(Path(model.path)), map_location=self.torch_device)
            except Exception as exc:
                raise ModelError(f"{self.label}: not a loadable TorchScript file "
                                 f"({type(exc).__name__})") from None
        if not isinstance(module, torch.nn.Module):
            raise ModelError(f"{self.label}: the torch backend needs an nn.Module or a TorchScript file")
        return module

    @property
    def xp(self) -> Any:
        return self._cupy if self.device == "cuda" else np

    def _stream(self) -> contextlib.AbstractContextManager[Any]:
        """Run torch on CuPy's current stream of this device (handle 0 = the legacy default)."""
        with self._cupy.cuda.Device(self.device_id):
            ptr = self._cupy.cuda.get_current_stream().ptr
        if ptr == 0:
            stream = torch.cuda.default_stream(self.torch_device)
        else:
            stream = torch.cuda.ExternalStream(ptr, device=self.torch_device)
        return torch.cuda.stream(stream)

    def _to_torch(self, a: Array) -> torch.Tensor:
        if self.device == "cuda":
            return torch.from_dlpack(self._cupy.ascontiguousarray(a, dtype=self._cupy.float32))
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not a.flags.writeable:  # the engine hands out read-only views; the module only reads
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(a)
        return torch.from_numpy(a)

    def _pick(self, result: Any) -> torch.Tensor:
        if isinstance(result, torch.Tensor):
            return result
        if isinstance(result, (tuple, list, dict)):
            if self.output_key is None:
                raise ModelError(f"{self.label}: the module returns a {type(result).__name__}; "
                                 "set options['output'] to the element holding the displacement")
            try:
                picked = result[self.output_key]
            except (IndexError, KeyError, TypeError):
                raise ModelError(f"{self.label}: output {self.output_key!r} not in the module's result") from None
            if isinstance(picked, torch.Tensor):
                return picked
        raise ModelError(f"{self.label}: the module returned {type(result).__name__}, not a tensor")

    def run(self, feeds: Mapping[str, Array]) -> Array:
        check_feeds(self.name, self.input_names, feeds)
        ctx = self._stream() if self.device == "cuda" else contextlib.nullcontext()
        with ctx, torch.inference_mode():
            args = [self._to_torch(feeds[n]) for n in self.input_names]
            try:
                result = self.module(*args)
            except Exception as exc:  # the user's module failed: a model problem
                raise ModelError(f"{self.label}: raised {type(exc).__name__}: {exc}") from exc
            out = self._pick(result).to(dtype=torch.float32).contiguous()
            if self.device == "cuda":
                return self._cupy.from_dlpack(out)
        return np.ascontiguousarray(out.numpy())

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"backend": self.name, "device": self.device,
                                "torch": torch.__version__, "module": type(self.module).__name__}
        if self.device == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.torch_device)
            info["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
        return info

    def close(self) -> None:
        self.module = None  # type: ignore[assignment]
