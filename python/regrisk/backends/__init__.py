"""Backends: run one registration network on batches of arrays, nothing more.

A backend knows its graph (input/output names, batch axis) and its device; it knows nothing
about perturbations, cards' coordinate conventions or statistics (the engine does that).

Contract every backend keeps (CPU and CUDA alike):

- ``xp`` is the array module of the device (``numpy`` for the CPU, ``cupy`` for CUDA). The
  engine allocates on ``xp`` and hands the backend arrays of that type; ``run`` returns an
  array of that type too, so nothing crosses the PCIe bus inside the sample loop.
- ``run(feeds)``: ``feeds`` maps graph input names to float32 C-contiguous arrays of shape
  (B, C, D, H, W) (C = 1 per image, 2 for a channel-concatenated input); the result is the
  graph output named ``output_name`` as float32, in the graph's own layout and convention
  (the engine converts it to canonical form with ``regrisk.conventions``).
- ``fixed_batch`` is None when the graph's batch axis is dynamic, else the only batch size the
  graph accepts (the engine then feeds exactly that many, one call per group).
- ``describe()`` returns JSON-serialisable facts for ``summary.json`` (provider, threads, ...).
- ``close()`` releases sessions and device memory; backends are also context managers.

Backends are created with ``create_backend(model, card, device=..., name=...)``. ``model`` is
a :class:`ModelSource`: an ONNX path (or serialized bytes), or a Python callable. Built-in
names live in ``_REGISTRY`` as ``"module:Class"`` strings so that optional backends (CUDA,
TensorRT, torch) import only when asked for; each class is constructed as
``Class(model: ModelSource, card: ModelCard, *, threads: int | None, options: dict)``.
``register_backend`` adds a backend at run time (plug-ins, tests).
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..card import ModelCard
from ..errors import ModelError, first_line

Array = Any  # numpy.ndarray or cupy.ndarray; float32, C-contiguous


@dataclass
class ModelSource:
    """What a backend loads: exactly one of an ONNX file, serialized ONNX bytes, or a callable."""

    path: Path | None = None
    data: bytes | None = None
    function: Callable[[Array, Array], Array] | None = None
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def onnx_bytes_or_path(self) -> str | bytes:
        if self.path is not None:
            return str(self.path)
        if self.data is not None:
            return self.data
        raise ModelError(f"{self.label or 'model'}: not an ONNX model")


class Backend(abc.ABC):
    """One network on one device. Subclasses set the attributes below in ``__init__``."""

    name: str = "backend"
    device: str = "cpu"
    input_names: tuple[str, ...] = ()
    output_name: str = ""
    fixed_batch: int | None = None
    # default backends skipped before this one was chosen: name -> why (create_backend sets it)
    skipped: Mapping[str, str] = {}

    @property
    def xp(self) -> Any:
        """Array module of this backend's device."""
        import numpy

        return numpy

    @abc.abstractmethod
    def run(self, feeds: Mapping[str, Array]) -> Array:
        """Run the graph once on a batch; see the module docstring for shapes and types."""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device}

    def close(self) -> None:
        """Release resources; the default has none."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# name -> "module:Class" (relative to this package) or a factory callable.
_REGISTRY: dict[str, str | Callable[..., Backend]] = {
    "onnxruntime": ".onnxruntime:OnnxRuntimeBackend",
    "openvino": ".openvino:OpenVinoBackend",
    "callable": ".callable:CallableBackend",
    # CUDA backends (written by the GPU side); imported only when asked for.
    "onnxruntime-cuda": ".onnxruntime_cuda:OnnxRuntimeCudaBackend",
    "tensorrt": ".tensorrt:TensorRTBackend",
    "torch": ".torch_backend:TorchBackend",
}

# What a device uses when no backend name is given: the first that `unavailable` clears and
# that loads the graph, in this order for every graph (`backends/choice.py` says why: OpenVINO
# first, staged for graphs that warp inside; ONNX Runtime when OpenVINO cannot take the graph).
_DEFAULTS: dict[str, tuple[str, ...]] = {
    "cpu": ("openvino", "onnxruntime"),
    "cuda": ("onnxruntime-cuda", "tensorrt", "torch"),
}


def register_backend(name: str, factory: str | Callable[..., Backend]) -> None:
    """Make ``name`` available to ``create_backend`` ("module:Class" or a factory callable)."""
    _REGISTRY[name] = factory


def available_backends() -> list[str]:
    """Every registered backend name (whether or not it can run here: see ``unavailable``)."""
    return sorted(_REGISTRY)


def _missing_module(module: str) -> str | None:
    return None if importlib.util.find_spec(module) else f"the {module!r} package is not installed"


def unavailable(name: str, device: str = "cpu") -> str | None:
    """None when backend ``name`` can run on this machine, else why not (one line). A query:
    nothing is loaded or probed until it is asked, and asking twice is cheap."""
    if name not in _REGISTRY:
        return f"unknown backend {name!r}; known: {', '.join(available_backends())}"
    if name in ("onnxruntime", "openvino"):
        return _missing_module(name)
    if name == "torch" and device == "cpu":
        return _missing_module("torch")
    if name in ("onnxruntime-cuda", "tensorrt", "torch"):
        from .. import device as devices

        return devices.backend_unavailable(name)
    return None  # callables and plug-ins registered at run time


def usable_backends(device: str) -> list[str]:
    """The device's default backends that can run here, in the order they are tried."""
    return [n for n in _DEFAULTS.get(device, ()) if unavailable(n, device) is None]


def _resolve(name: str) -> Callable[..., Backend]:
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ModelError(f"unknown backend {name!r}; known: {', '.join(available_backends())}")
    if not isinstance(entry, str):  # a factory (note: `callable` is shadowed by .callable)
        return entry
    module_name, _, attr = entry.partition(":")
    module = importlib.import_module(module_name, __name__)
    return getattr(module, attr)


def create_backend(
    model: ModelSource,
    card: ModelCard,
    *,
    device: str = "cpu",
    name: str | None = None,
    threads: int | None = None,
    options: dict[str, Any] | None = None,
) -> Backend:
    """The backend for ``model`` on ``device``. Callables get the callable backend unless a
    ``name`` is given (e.g. ``"torch"`` for an ``nn.Module``); ``options["device"]`` is set to
    ``device`` unless given."""
    options = dict(options or {})
    options.setdefault("device", device)
    if model.function is not None and name is None:
        return _resolve("callable")(model, card, threads=threads, options=options)
    if name is not None:
        why = unavailable(name, device)
        if why is not None:
            raise ModelError(f"backend {name!r} cannot run here: {why}")
        try:
            backend = _resolve(name)(model, card, threads=threads, options=options)
        except ImportError as exc:  # asked for by name, so say why it cannot run
            raise ModelError(f"backend {name!r} cannot run here: {exc}") from None
        if backend.device != device:
            raise ModelError(f"backend {name!r} runs on {backend.device}, not {device}")
        return backend
    if device not in _DEFAULTS:
        raise ModelError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
    return _first_that_loads(model, card, device, threads, options)


def _first_that_loads(model: ModelSource, card: ModelCard, device: str, threads: int | None,
                      options: dict[str, Any]) -> Backend:
    """The device's first default backend that is installed and loads the graph. One that
    cannot take the graph (OpenVINO without an op) is skipped, its reason kept in the chosen
    backend's ``skipped``; the last candidate's own error is raised as it is."""
    failures, skipped = [], {}
    candidates = _DEFAULTS[device]
    for i, candidate in enumerate(candidates):
        why = unavailable(candidate, device)
        if why is not None:
            failures.append(f"{candidate}: {why}")
            continue
        try:
            backend = _resolve(candidate)(model, card, threads=threads, options=options)
        except ModelError as exc:
            if i == len(candidates) - 1:
                raise
            skipped[candidate] = first_line(exc)
            failures.append(f"{candidate}: {skipped[candidate]}")
            continue
        backend.skipped = skipped
        return backend
    raise ModelError(f"no backend available for device {device!r} ({'; '.join(failures)})")
