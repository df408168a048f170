"""The per-case verdict: pass / review / fail, calibrated on the synthetic cases.

The calibration keeps, for each of its cases, the predicted mean error p_i (mean of the error
map over the case's region) and the true mean error e_i; r_i = e_i / p_i says how far a true
mean error strayed from its prediction (r_hi, r_lo: the 95th and 5th percentiles). For a
threshold t (mm), the cases with e_i > t are the ones that should have been flagged. For a new
case with prediction p:

- ``review`` when p > R = min(t / r_hi, MARGIN * min{p_i : e_i > t}): the true mean error may
  exceed t (an r as high as r_hi would take p above it), or p is as high as a prediction that
  came with a real failure, less a margin for cases the calibration did not see;
- ``fail``   when p > F = max(R, t / r_lo, FAIL_MARGIN * max{p_i : e_i <= t}): the true mean
  error exceeds t even at an optimistic r, and p is above any good calibration case's;
- ``review`` also when the case's cues lie far outside what the calibration saw (an input
  unlike its images);
- ``pass``   otherwise.

Every calibration case with e_i > t is flagged by construction (p_i >= min > R); how many good
cases are flagged too, and how held-out failures fare, is what the held-out measurement reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .cues import CASE_CUES

DEFAULT_THRESHOLD_MM = 2.0  # one voxel of the default model's 2 mm grid
MARGIN = 0.8                # review below the smallest failed prediction, by this factor
FAIL_MARGIN = 1.25          # fail above the largest good prediction, by this factor
OUT_OF_RANGE = 1.5          # case cue above 1.5x the largest the calibration saw: review


@dataclass
class VerdictRule:
    predicted: np.ndarray       # predicted mean error of each calibration case (mm)
    true: np.ndarray            # its true mean error (mm)
    case_cue_max: np.ndarray    # (len(CASE_CUES),) largest case cues seen

    def to_dict(self) -> dict[str, Any]:
        return {"predicted_mean_error_mm": [round(float(v), 6) for v in self.predicted],
                "true_mean_error_mm": [round(float(v), 6) for v in self.true],
                "case_cue_max": dict(zip(CASE_CUES, map(float, self.case_cue_max))),
                "margin": MARGIN, "fail_margin": FAIL_MARGIN, "out_of_range_factor": OUT_OF_RANGE}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VerdictRule":
        p = np.asarray(d["predicted_mean_error_mm"], dtype=np.float64)
        e = np.asarray(d["true_mean_error_mm"], dtype=np.float64)
        if p.size == 0 or p.shape != e.shape or not (np.isfinite(p).all() and np.isfinite(e).all()):
            raise ValueError("verdict table must hold finite predicted and true mean errors")
        # a calibration made before a case cue existed has no range for it: never out of range
        seen = d["case_cue_max"]
        return cls(p, e, np.array([float(seen.get(n, np.inf)) for n in CASE_CUES]))

    @classmethod
    def fit(cls, predicted: np.ndarray, true: np.ndarray, case_cues: np.ndarray) -> "VerdictRule":
        return cls(np.asarray(predicted, np.float64), np.asarray(true, np.float64),
                   np.asarray(case_cues).max(axis=0))

    def cuts(self, threshold: float) -> tuple[float, float]:
        """(review cut R, fail cut F) in mm of predicted mean error, for ``threshold``."""
        bad = self.true > threshold
        ratio = self.true / np.maximum(self.predicted, 1e-6)
        r_lo, r_hi = (float(v) for v in np.percentile(ratio, [5, 95]))
        review = threshold / r_hi
        if bad.any():
            review = min(review, MARGIN * float(self.predicted[bad].min()))
        good_max = float(self.predicted[~bad].max()) if (~bad).any() else 0.0
        return review, max(review, threshold / r_lo, FAIL_MARGIN * good_max)

    def verdict(self, predicted_mean: float, threshold: float,
                case_cues: np.ndarray | None = None) -> str:
        review, fail = self.cuts(threshold)
        if predicted_mean > fail:
            return "fail"
        if predicted_mean > review:
            return "review"
        if case_cues is not None and np.any(np.asarray(case_cues)
                                            > OUT_OF_RANGE * self.case_cue_max):
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
