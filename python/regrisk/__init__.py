"""regrisk: per-voxel uncertainty for pretrained image-registration networks by
transformation equivariance (Tian, Hu & Iglesias, arXiv 2509.23355)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Public names resolve lazily so that `import regrisk` stays light (no onnxruntime, no torch).
_LAZY = {
    "Estimator": ("regrisk.engine", "Estimator"),
    "EstimateResult": ("regrisk.engine", "EstimateResult"),
    "ModelCard": ("regrisk.card", "ModelCard"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'regrisk' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
