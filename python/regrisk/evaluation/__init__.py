"""Evaluation of uncertainty maps against known registration error (the paper's protocol):
metrics, synthetic ground truth, baselines, the protocol itself, plots and the report.

Importing the package loads the protocol (NumPy only); the engine, ONNX Runtime and matplotlib
are imported when an evaluation runs or plots.
"""

from __future__ import annotations

from .protocol import EvaluationConfig, evaluate

__all__ = ["evaluate", "EvaluationConfig"]
