"""One row per pair of the cohort, as ``cohort.csv`` and as the report's table rows.

``risk`` orders pairs for review: the calibrated predicted mean error (mm) when the estimate was
calibrated, else the mean sigma (mm); a failed pair ranks above every number (it needs a look),
a pair not yet run below."""

from __future__ import annotations

import csv
import io as _stdio
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import io
from .outcome import DONE, FAILED
from .pairs import Pair

PENDING = "pending"
COLUMNS = ("id", "status", "error", "sigma_mean_mm", "sigma_max_mm", "predicted_error_mm",
           "verdict", "seconds")


@dataclass
class Row:
    id: str
    status: str                           # done | failed | pending
    error: str | None = None
    sigma_mean_mm: float | None = None
    sigma_max_mm: float | None = None
    predicted_error_mm: float | None = None
    verdict: str | None = None            # only when calibrated
    seconds: float | None = None

    @property
    def risk(self) -> float:
        if self.status == FAILED:
            return math.inf
        value = self.predicted_error_mm if self.predicted_error_mm is not None else self.sigma_mean_mm
        return -math.inf if value is None else value


def rows(pairs: list[Pair], records: dict[str, dict[str, Any]]) -> list[Row]:
    """A row per pair in the table's order, from its current manifest record (none: pending)."""
    out = []
    for pair in pairs:
        rec = records.get(pair.id)
        if rec is None:
            out.append(Row(pair.id, PENDING))
            continue
        stats, qc = rec.get("stats") or {}, rec.get("qc") or {}
        out.append(Row(pair.id, DONE if rec.get("status") == DONE else FAILED, rec.get("error"),
                       stats.get("sigma_mean_mm"), stats.get("sigma_max_mm"),
                       qc.get("predicted_error_mm"), qc.get("verdict"), rec.get("seconds")))
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_csv(path: Path, table: list[Row]) -> None:
    """``cohort.csv``: one line per pair, the columns of :data:`COLUMNS`; empty cells where a
    number does not exist (failed, pending, or not calibrated)."""
    buf = _stdio.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in table:
        writer.writerow([_cell(getattr(row, c)) for c in COLUMNS])
    io.write_text_atomic(path, buf.getvalue())
