"""The cohort's progress bar (tqdm): pairs finished of all, with done / failed counts and ETA."""

from __future__ import annotations

from typing import Any

from .outcome import DONE, Outcome


class CohortProgress:
    def __init__(self, total: int, done: int, failed: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.done, self.failed = done, failed
        self.bar: Any = tqdm(total=total, initial=done + failed, unit="pair",
                             desc="regrisk cohort", disable=not enabled, dynamic_ncols=True)
        self._show()

    def _show(self) -> None:
        self.bar.set_postfix(done=self.done, failed=self.failed, refresh=False)

    def update(self, outcome: Outcome) -> None:
        if outcome.status == DONE:
            self.done += 1
        else:
            self.failed += 1
        self._show()
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
