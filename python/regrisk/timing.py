"""Per-stage wall-clock times of a run, as ``summary.json`` reports them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class StageClock:
    """Adds up wall time per named stage. On a CUDA device the clock synchronises before it is
    read, so that a stage is charged for its own kernels, not for the next stage's wait."""

    def __init__(self, xp: Any) -> None:
        self.times: dict[str, float] = {}
        self._sync: Callable[[], None] = lambda: None
        if xp.__name__ == "cupy":
            self._sync = lambda: xp.cuda.Device().synchronize()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.times[name] = self.times.get(name, 0.0) + seconds
