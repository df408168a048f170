"""Typed errors. Every one carries a single-line message that names the problem; the CLI prints
it and exits with status 2."""

from __future__ import annotations


class RegriskError(Exception):
    """Base class for every error regrisk raises on bad input."""


class InputError(RegriskError, ValueError):
    """An input image is missing, unreadable, corrupt or unsuitable."""


class ModelError(RegriskError, ValueError):
    """A model file, its card, or a callable model is unusable."""


class CardError(ModelError):
    """A model card is missing, malformed, or contradicts its graph."""


class OutputError(RegriskError):
    """The output location cannot be written as asked (exists without overwrite, ...)."""


class BudgetError(RegriskError):
    """The run would need more memory than the budget allows; refused before starting."""
