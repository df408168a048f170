"""What one pair's run reports back to the cohort: status, timings, the one-line error of a
failure, and the numbers the table and the report rank by. Small and plain (it crosses from a
Ray worker to the driver), with no arrays."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DONE, FAILED = "done", "failed"


@dataclass
class Outcome:
    id: str
    status: str                                   # DONE | FAILED
    seconds: float                                # wall time of the pair, estimate + save
    error: str | None = None                      # one line, for FAILED
    stats: dict[str, Any] = field(default_factory=dict)
    qc: dict[str, Any] | None = None              # only when the estimate was calibrated
    worker: dict[str, Any] = field(default_factory=dict)   # host and pid that ran it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def region_statistics(sigma: np.ndarray, mask: np.ndarray | None,
                      summary: dict[str, Any]) -> dict[str, Any]:
    """Mean and max sigma (mm) over the mask, else over the whole target grid, with the run's
    share of time outside network inference (from the estimate's summary)."""
    values = sigma[mask] if mask is not None else sigma.ravel()
    share = (summary.get("statistics") or {}).get("non_inference_share")
    return {"sigma_mean_mm": float(values.mean()), "sigma_max_mm": float(values.max()),
            "region": "mask" if mask is not None else "target grid",
            "non_inference_share": None if share is None else float(share),
            "estimate_seconds": float((summary.get("timings") or {}).get("total", 0.0))}


def qc_numbers(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The verdict and predicted mean error (mm) of a calibrated estimate's ``qc`` block, as
    they are written there; None when the estimate had no calibration (no number invented)."""
    qc = summary.get("qc")
    if not isinstance(qc, dict) or "verdict" not in qc:
        return None
    error = qc.get("predicted_mean_error_mm")
    return {"verdict": str(qc["verdict"]),
            "predicted_error_mm": None if error is None else float(error)}
