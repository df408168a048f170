"""The error model: cues -> expected true error (mm), and its split-conformal upper bound.

Model: log(error + e0) = b + sum_j w_j f_j + noise, with every feature f_j an increasing
transform of a cue (logs of sigma, inverse consistency, ...; the NCC residuals as they are) and
every weight w_j >= 0 (scikit-learn's ``LinearRegression(positive=True)``), so the predicted
error never decreases when sigma (or any cue) grows. A log-linear model is used because its
fitted quantities are a handful of numbers the calibration JSON can hold (no pickle).

Expected error: exp(prediction) times the mean of exp(residual) on the fitting cases (Duan's
smearing: the mean of a log-normal-ish error, not its median), minus e0.

Upper bound (split conformal, on cases the fit did not see): the score of a voxel is its
log-space residual; q is the ceil((n + 1)(1 - alpha))-th smallest of the n calibration scores;
the bound exp(prediction + q) - e0 then covers a new exchangeable voxel with probability at
least 1 - alpha (and at most 1 - alpha + 1 / (n + 1) for continuous scores).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import EvaluationError
from .cues import CASE_CUES, VOXEL_CUES

ERROR_OFFSET = 0.05  # mm: e0, keeps log(error) finite where the error is 0
_LOG_CEILING = math.log(1e4)  # predictions capped at 10 m: cues far outside the fit stay finite
_LOG_FLOOR = 0.05     # mm / unitless: added to cues before their log

# feature name -> (cue, transform); every transform is increasing in its cue
FEATURES: dict[str, tuple[str, str]] = {
    "log_sigma": ("sigma", "log"), "log_sigma_smooth": ("sigma_smooth", "log"),
    "log_sigma_x": ("sigma_x", "log"), "log_sigma_y": ("sigma_y", "log"),
    "log_sigma_z": ("sigma_z", "log"),
    "log_ic": ("ic", "log"), "log_ic_smooth": ("ic_smooth", "log"),
    "ncc_residual": ("ncc_residual", "identity"),
    "ncc_residual_wide": ("ncc_residual_wide", "identity"),
    "log_intensity_residual": ("intensity_residual", "log"),
    "log_jacobian": ("log_jacobian", "identity"),
    "log_displacement": ("displacement", "log"),
    "log_flow_residual": ("flow_residual", "log"),
    "log_case_sigma": ("case_sigma", "log"), "log_case_ic": ("case_ic", "log"),
    "case_ncc_residual": ("case_ncc_residual", "identity"),
    "log_case_flow_residual": ("case_flow_residual", "log"),
}


def features(voxel_cues: np.ndarray | Mapping[str, np.ndarray], case_cues: np.ndarray,
             names: tuple[str, ...] = tuple(FEATURES)) -> np.ndarray:
    """(N, len(names)) design matrix from a cue table (N, len(VOXEL_CUES)), or a mapping of cue
    name to its (N,) values, and the case cues. Built column by column (a transposed view):
    the rows of a whole volume are many, and interleaving them costs more than the logs."""
    table = not isinstance(voxel_cues, Mapping)
    n = voxel_cues.shape[0] if table else len(next(iter(voxel_cues.values())))
    x = np.empty((len(names), n), np.float64)
    for row, name in zip(x, names):
        cue, transform = FEATURES[name]
        if cue in VOXEL_CUES:
            row[:] = voxel_cues[:, VOXEL_CUES.index(cue)] if table else voxel_cues[cue]
        else:
            row[:] = float(case_cues[CASE_CUES.index(cue)])
        if transform == "log":
            np.log(np.maximum(row, 0.0, out=row) + _LOG_FLOOR, out=row)
    if not np.isfinite(x).all():
        raise EvaluationError("a cue is not finite: the calibration cannot score this case")
    return x.T


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ceil((n + 1) coverage)-th smallest score (split conformal); +inf when n is too small
    for the level (then no finite bound has the guarantee)."""
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    k = math.ceil((s.size + 1) * coverage)
    return float("inf") if k > s.size else float(s[k - 1])


@dataclass
class ErrorModel:
    """The fitted quantities: all the calibration JSON holds of the model."""

    names: tuple[str, ...]
    intercept: float
    weights: np.ndarray      # (len(names),) >= 0
    smearing: float          # mean exp(residual) on the fitting voxels
    quantile: float          # conformal q (log space) at ``coverage``
    coverage: float

    def log_prediction(self, x: np.ndarray) -> np.ndarray:
        return np.minimum(self.intercept + x @ self.weights, _LOG_CEILING)

    def expected(self, x: np.ndarray) -> np.ndarray:
        """Expected true error (mm) for a design matrix."""
        return self._expected(self.log_prediction(x))

    def bound(self, x: np.ndarray) -> np.ndarray:
        """Upper bound (mm) at ``coverage``."""
        return self._bound(self.log_prediction(x))

    def expected_and_bound(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both maps from one prediction."""
        lp = self.log_prediction(x)
        return self._expected(lp), self._bound(lp)

    def _expected(self, lp: np.ndarray) -> np.ndarray:
        return np.maximum(np.exp(lp) * self.smearing - ERROR_OFFSET, 0.0)

    def _bound(self, lp: np.ndarray) -> np.ndarray:
        return np.maximum(np.exp(lp + self.quantile) - ERROR_OFFSET, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"form": "log(error + e0) = intercept + weights . features; weights >= 0",
                "error_offset_mm": ERROR_OFFSET, "features": list(self.names),
                "feature_transforms": {n: list(FEATURES[n]) for n in self.names},
                "intercept": self.intercept, "weights": [float(w) for w in self.weights],
                "smearing": self.smearing, "conformal_quantile": self.quantile,
                "coverage": self.coverage}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ErrorModel":
        names = tuple(d["features"])
        unknown = [n for n in names if n not in FEATURES]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}")
        w = np.asarray(d["weights"], dtype=np.float64)
        if w.shape != (len(names),) or not np.isfinite(w).all():
            raise ValueError("weights do not match the features")
        return cls(names, float(d["intercept"]), w, float(d["smearing"]),
                   float(d["conformal_quantile"]), float(d["coverage"]))


def fit(x_fit: np.ndarray, y_fit: np.ndarray, x_cal: np.ndarray, y_cal: np.ndarray,
        coverage: float, names: tuple[str, ...] = tuple(FEATURES)) -> ErrorModel:
    """Fit on one set of cases, calibrate the bound on another (errors ``y`` in mm)."""
    from sklearn.linear_model import LinearRegression

    t_fit = np.log(y_fit.astype(np.float64) + ERROR_OFFSET)
    reg = LinearRegression(positive=True).fit(x_fit, t_fit)
    resid = t_fit - reg.predict(x_fit)
    model = ErrorModel(tuple(names), float(reg.intercept_), np.asarray(reg.coef_, np.float64),
                       float(np.mean(np.exp(resid))), float("nan"), coverage)
    scores = np.log(y_cal.astype(np.float64) + ERROR_OFFSET) - model.log_prediction(x_cal)
    model.quantile = conformal_quantile(scores, coverage)
    if not math.isfinite(model.quantile):
        raise EvaluationError(f"{scores.size} calibration voxels are too few for coverage "
                              f"{coverage}")
    return model
