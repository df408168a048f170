"""The embedded engine: one warm estimator in this process, pairs one after another."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .outcome import Outcome
from .pairs import Pair
from .settings import EstimateSettings
from .worker import PairWorker


class LocalEngine:
    name = "local"

    def __init__(self, model: Any, settings: EstimateSettings) -> None:
        self.model, self.settings = model, settings

    def run(self, pairs: Sequence[Pair], root: Path) -> Iterator[Outcome]:
        """Each pair's outcome as it finishes; its result goes to ``root / pair.id``."""
        if not pairs:
            return
        worker = PairWorker(self.model, self.settings)  # the model is loaded once
        try:
            for pair in pairs:
                yield worker.run(pair, root / pair.id)
        finally:
            worker.close()
