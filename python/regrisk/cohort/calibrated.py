"""Which calibration the cohort's estimates use (as ``regrisk estimate`` chooses it), checked
against the model once, before any pair runs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from .settings import EstimateSettings


def load(model: Any, settings: EstimateSettings) -> Any:
    """The :class:`regrisk.calibration.store.Calibration` of the settings, or None."""
    from ..calibration import store

    options = settings.calibration
    return store.for_model(model, options.get("path"), options.get("enabled", True))


def calibration_id(model: Any, resolved: Any, settings: EstimateSettings) -> str | None:
    """The id of the calibration every pair will use (None: uncalibrated); a calibration made
    for another model or grid is refused here, in one line, before anything runs."""
    from ..calibration import store

    cal = load(model, settings)
    if cal is None:
        return None
    # store.model_identity reads an estimator's resolved model and card: the resolved model
    # holds both, without loading a session
    cal.check_model(store.model_identity(SimpleNamespace(resolved=resolved, card=resolved.card)))
    return cal.id
