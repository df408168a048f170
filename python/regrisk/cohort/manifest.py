"""The cohort's memory: ``manifest.jsonl`` in the output folder, one JSON record per finished
attempt at a pair (status, timings, error line, QC numbers, worker, and the key: hashes of the
inputs, the model and the result-defining settings). Append-only and flushed to disk per
record, so a crash loses at most the record being written; the latest record of an id wins.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .outcome import DONE, Outcome

NAME = "manifest.jsonl"
VERSION = 1


class Manifest:
    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / NAME
        self.latest: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        text = self.path.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash: that attempt is redone
                continue
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                self.latest[record["id"]] = record
        if text and not text.endswith("\n"):  # the next record must start on its own line
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("\n")

    def get(self, pair_id: str) -> dict[str, Any] | None:
        return self.latest.get(pair_id)

    def is_current(self, pair_id: str, key: dict[str, Any]) -> bool:
        """Whether the latest record of ``pair_id`` is a success made from exactly ``key``."""
        record = self.latest.get(pair_id)
        return bool(record) and record.get("status") == DONE and record.get("key") == key

    def record(self, outcome: Outcome, key: dict[str, Any] | None) -> dict[str, Any]:
        """Append ``outcome`` (with the key it was made from) and make it the latest."""
        entry = {"version": VERSION, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 **outcome.to_dict(), "key": key}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True, allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.latest[outcome.id] = entry
        return entry
