"""Evaluation of uncertainty maps against known registration error (the paper's protocol):
metrics, synthetic ground truth, baselines, the protocol itself, plots and the report."""

from __future__ import annotations

from typing import Any

_LAZY = {
    "evaluate": ("regrisk.evaluation.protocol", "evaluate"),
    "EvaluationConfig": ("regrisk.evaluation.protocol", "EvaluationConfig"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'regrisk.evaluation' has no attribute {name!r}")


__all__ = list(_LAZY)
