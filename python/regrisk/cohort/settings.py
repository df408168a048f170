"""How every pair of a cohort is estimated: the keyword arguments of :class:`regrisk.Estimator`
(how and where it runs) and of its ``estimate`` (what the maps are), given once."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class EstimateSettings:
    """``estimate``: keyword arguments of ``Estimator.estimate`` (samples, perturbation, seed,
    ...); every pair uses the same seed, so a cohort's pair is what ``regrisk estimate`` gives
    for it. ``estimator``: keyword arguments of ``Estimator(model, ...)`` (device, threads,
    batch, memory_budget, backend): they change how fast, not which maps. ``calibration``:
    as ``regrisk estimate``'s calibration options (default: the shipped calibration for the
    packaged default model, none for others)."""

    estimate: dict[str, Any] = field(default_factory=dict)
    estimator: dict[str, Any] = field(default_factory=dict)
    # {"path": calibration JSON or None (the shipped one for the default model), "enabled":
    # False for none, "qc_threshold": mm or None}: as estimate's --calibration options
    calibration: dict[str, Any] = field(default_factory=dict)

    def result_defining(self) -> dict[str, Any]:
        """The settings a finished result depends on, JSON-ready (for its key and report)."""
        chosen = {**self.estimate, "qc_threshold": self.calibration.get("qc_threshold")}
        return json.loads(json.dumps(chosen, sort_keys=True, default=str))

    def with_threads(self, threads: int) -> "EstimateSettings":
        return replace(self, estimator={**self.estimator, "threads": threads})
