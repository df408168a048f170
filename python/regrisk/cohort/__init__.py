"""Many pairs at once: ``regrisk cohort``. A driver (:func:`run_cohort`) plans which pairs need
running from a manifest (nothing lost, nothing redone), runs them on an engine that holds warm
estimators (in this process, or Ray actors on one machine or a cluster), and writes
``cohort.csv`` and a static ``report.html``. It sits above the estimator and never reaches
inside it."""

from __future__ import annotations

from .pairs import Pair, PairsError, read_pairs
from .ray_engine import RayOptions
from .run import CohortSummary, run_cohort
from .settings import EstimateSettings

__all__ = ["CohortSummary", "EstimateSettings", "Pair", "PairsError", "RayOptions",
           "read_pairs", "run_cohort"]
