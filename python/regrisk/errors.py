"""Typed errors. Every one carries a single-line message that names the problem; the CLI prints
it and exits with status 2."""

from __future__ import annotations


class RegriskError(Exception):
    """Base class for every error regrisk raises on bad input."""


class InputError(RegriskError, ValueError):
    """An input image is missing, unreadable, corrupt or unsuitable."""


class ModelError(RegriskError, ValueError):
    """A model file, its card, or a callable model is unusable."""


class NonFiniteError(ModelError):
    """A model output, a composed field or a statistic holds NaN or Inf: the run stops."""


class CardError(ModelError):
    """A model card is missing, malformed, or contradicts its graph."""


class OutputError(RegriskError):
    """The output location cannot be written as asked (exists without overwrite, ...)."""


class BudgetError(RegriskError):
    """The run would need more memory than the budget allows; refused before starting."""


class EvaluationError(RegriskError, RuntimeError):
    """The evaluation protocol could not build a case (e.g. no non-folding ground truth)."""


class CohortError(RegriskError):
    """A cohort cannot run as asked (output folder in use or not a cohort's, no Ray, ...)."""


def first_line(exc: BaseException, *, typed: bool = False, limit: int = 300) -> str:
    """The first line of ``exc``'s message (its type name when the message is empty), at most
    ``limit`` characters; ``typed`` prefixes the type name. Foreign libraries (nibabel, ONNX
    Runtime, torch) raise multi-line messages that must fit in one CLI line."""
    text = str(exc).strip()
    line = text.splitlines()[0][:limit] if text else ""
    name = type(exc).__name__
    if not line:
        return name
    return f"{name}: {line}" if typed else line
