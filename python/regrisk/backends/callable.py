"""A Python callable as a model: f(source, target) -> canonical displacement.

The callable receives float32 (B, 1, D, H, W) source and target on the model grid, as arrays of
the device's module, and returns (B, 3, D, H, W) voxel displacements, channel c along array
axis c (the engine's canonical convention), on the target grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..card import ModelCard
from ..errors import ModelError
from . import Array, Backend, ModelSource


class CallableBackend(Backend):
    name = "callable"

    def __init__(self, model: ModelSource, card: ModelCard, *, threads: int | None = None,
                 options: dict[str, Any] | None = None) -> None:
        if model.function is None:
            raise ModelError("callable backend needs a Python callable")
        self.function = model.function
        self.label = model.label or getattr(model.function, "__name__", "callable")
        self.device = (options or {}).get("device", "cpu")
        if self.device not in ("cpu", "cuda"):
            raise ModelError(f"unknown device {self.device!r}; use 'cpu' or 'cuda'")
        self.input_names = card.inputs.names()
        self.output_name = card.output.name
        self.fixed_batch = None
        self.grid = tuple(card.grid)

    @property
    def xp(self) -> Any:
        if self.device == "cuda":
            import cupy

            return cupy
        import numpy

        return numpy

    def run(self, feeds: Mapping[str, Array]) -> Array:
        source, target = (feeds[n] for n in self.input_names)
        try:
            out = self.function(source, target)
        except Exception as exc:  # the user's code failed: report it as a model problem
            raise ModelError(f"model {self.label}: raised {type(exc).__name__}: {exc}") from exc
        xp = self.xp
        if not isinstance(out, xp.ndarray):
            try:
                out = xp.asarray(out)
            except Exception:
                raise ModelError(f"model {self.label}: returned {type(out).__name__}, not an array") from None
        expected = (source.shape[0], 3, *self.grid)
        if tuple(out.shape) != expected:
            raise ModelError(f"model {self.label}: returned shape {tuple(out.shape)}, expected {expected}")
        # .view: a non-native-flagged '<f4' descriptor becomes the native float32 one
        return xp.ascontiguousarray(out, dtype=xp.float32).view(xp.float32)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "callable": self.label}
