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
    batch, memory_budget, backend): they change how fast, not which maps."""

    estimate: dict[str, Any] = field(default_factory=dict)
    estimator: dict[str, Any] = field(default_factory=dict)

    def result_defining(self) -> dict[str, Any]:
        """The settings a finished result depends on, JSON-ready (for its key and report)."""
        return json.loads(json.dumps(self.estimate, sort_keys=True, default=str))

    def with_threads(self, threads: int) -> "EstimateSettings":
        return replace(self, estimator={**self.estimator, "threads": threads})
