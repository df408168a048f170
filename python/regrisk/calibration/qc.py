"""The per-case verdict: pass / review / fail, calibrated on the synthetic cases.

For every calibration case the ratio r = (true mean error) / (predicted mean error) over its
region is kept. For a new case with predicted mean error p and a threshold t (mm):

- ``fail``   when even the most optimistic ratio seen says the mean error exceeds t:
  p * min(r) > t;
- ``review`` when the most pessimistic ratio seen allows it: p * max(r) > t, or when the
  case's cues lie far outside what the calibration saw (an input unlike its images);
- ``pass``   otherwise.

So every calibration case whose true mean error exceeded t is flagged by construction; how many
good cases are flagged too is what the held-out measurement reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .cues import CASE_CUES

DEFAULT_THRESHOLD_MM = 2.0  # one voxel of the default model's 2 mm grid
OUT_OF_RANGE = 1.5          # case cue above 1.5x the largest the calibration saw: review


@dataclass
class VerdictRule:
    ratios: np.ndarray          # true / predicted mean error of the calibration cases
    case_cue_max: np.ndarray    # (len(CASE_CUES),) largest case cues seen

    def to_dict(self) -> dict[str, Any]:
        return {"ratios": [round(float(r), 6) for r in self.ratios],
                "case_cue_max": dict(zip(CASE_CUES, map(float, self.case_cue_max))),
                "out_of_range_factor": OUT_OF_RANGE}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VerdictRule":
        ratios = np.asarray(d["ratios"], dtype=np.float64)
        if ratios.size == 0 or not np.isfinite(ratios).all() or (ratios <= 0).any():
            raise ValueError("verdict ratios must be finite and positive")
        return cls(ratios, np.array([float(d["case_cue_max"][n]) for n in CASE_CUES]))

    @classmethod
    def fit(cls, predicted: np.ndarray, true: np.ndarray, case_cues: np.ndarray) -> "VerdictRule":
        p = np.maximum(np.asarray(predicted, np.float64), 1e-6)
        return cls(np.asarray(true, np.float64) / p, np.asarray(case_cues).max(axis=0))

    def verdict(self, predicted_mean: float, threshold: float,
                case_cues: np.ndarray | None = None) -> str:
        if predicted_mean * float(self.ratios.min()) > threshold:
            return "fail"
        if predicted_mean * float(self.ratios.max()) > threshold:
            return "review"
        if case_cues is not None and (np.asarray(case_cues) > OUT_OF_RANGE * self.case_cue_max).any():
            return "review"
        return "pass"


def block(rule: VerdictRule, expected: np.ndarray, bound: np.ndarray, region: np.ndarray,
          threshold: float, case_cues: np.ndarray, calibration_id: str,
          region_name: str) -> dict[str, Any]:
    """The ``qc`` block of summary.json for one estimate."""
    pred = float(expected[region].mean())
    return {"verdict": rule.verdict(pred, threshold, case_cues),
            "predicted_mean_error_mm": round(pred, 4),
            "threshold_mm": threshold,
            "fraction_bound_above_threshold": round(float((bound[region] > threshold).mean()), 6),
            "region": region_name, "region_voxels": int(region.sum()),
            "calibration_id": calibration_id}
