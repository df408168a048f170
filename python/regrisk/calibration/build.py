"""From case records to a calibration: split by case, fit, calibrate, measure on held-out cases.

Split (by case, never by voxel, so the conformal and held-out sets are new registrations):
within each family, the cases in a seeded random order cycle through fit, conformal, test (a
random assignment keeps conformal and test cases exchangeable: a fixed order would, for
example, put one image's cases in one role). The model is fitted on the fit cases, its bound
calibrated on the conformal cases, the verdict's table taken from fit and
conformal cases, and every figure in ``held_out`` is measured on the test cases only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from ..errors import InputError
from . import model as error_model
from .cases import CaseRecord
from .cues import VOXEL_CUES
from .qc import DEFAULT_THRESHOLD_MM, VerdictRule

_CYCLE = ("fit", "conformal", "test")


def split(records: Sequence[CaseRecord], seed: int = 0) -> dict[str, list[int]]:
    """Indices of the fit, conformal and test cases (stratified by family, seeded)."""
    out: dict[str, list[int]] = {"fit": [], "conformal": [], "test": []}
    rng = np.random.default_rng(seed)
    for family in dict.fromkeys(r.family for r in records):
        members = [i for i, r in enumerate(records) if r.family == family]
        for k, i in enumerate(rng.permutation(members)):
            out[_CYCLE[k % len(_CYCLE)]].append(int(i))
    out = {role: sorted(idx) for role, idx in out.items()}
    if not out["fit"] or not out["conformal"]:
        raise InputError(f"{len(records)} cases are too few to fit and calibrate (need >= 2)")
    return out


def _design(records: Sequence[CaseRecord], idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    xs = [error_model.features(records[i].cues, records[i].case_cues) for i in idx]
    return np.concatenate(xs), np.concatenate([records[i].error for i in idx])


def case_predictions(m: error_model.ErrorModel, r: CaseRecord) -> tuple[np.ndarray, np.ndarray]:
    x = error_model.features(r.cues, r.case_cues, m.names)
    return m.expected_and_bound(x)


def fit(records: Sequence[CaseRecord], coverage: float
        ) -> tuple[error_model.ErrorModel, VerdictRule, dict[str, list[int]]]:
    parts = split(records)
    xf, yf = _design(records, parts["fit"])
    xc, yc = _design(records, parts["conformal"])
    m = error_model.fit(xf, yf, xc, yc, coverage)
    known = parts["fit"] + parts["conformal"]
    pred = [float(case_predictions(m, records[i])[0].mean()) for i in known]
    rule = VerdictRule.fit(np.array(pred), np.array([records[i].true_mean_error for i in known]),
                           np.stack([records[i].case_cues for i in known]))
    return m, rule, parts


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    return float(stats.spearmanr(a, b).statistic)


def measure(m: error_model.ErrorModel, rule: VerdictRule, records: Sequence[CaseRecord],
            threshold: float = DEFAULT_THRESHOLD_MM) -> dict[str, Any]:
    """Coverage, correlations and verdicts on ``records`` (cases the fit did not see)."""
    if not records:
        return {}
    per_case, cov, errs, bounds = [], [], [], []
    sigma = VOXEL_CUES.index("sigma")
    for r in records:
        exp, bnd = case_predictions(m, r)
        c = float((r.error <= bnd).mean())
        cov.append(c)
        errs.append(r.error)
        bounds.append(bnd)
        pred = float(exp.mean())
        per_case.append({"family": r.family, "image": r.image, "coverage": round(c, 4),
                         "spearman_error_mm": round(_rho(exp, r.error), 4),
                         "spearman_sigma": round(_rho(r.cues[:, sigma], r.error), 4),
                         "pearson_error_mm": round(float(np.corrcoef(exp, r.error)[0, 1]), 4),
                         "true_mean_error_mm": round(r.true_mean_error, 4),
                         "predicted_mean_error_mm": round(pred, 4),
                         "verdict": rule.verdict(pred, threshold, r.case_cues)})
    e, b = np.concatenate(errs), np.concatenate(bounds)
    nonlin = [p for p in per_case if p["family"].startswith("nonlinear")]
    bad = [p for p in per_case if p["true_mean_error_mm"] > threshold]
    good = [p for p in per_case if p["true_mean_error_mm"] <= threshold]
    return {"cases": len(records), "coverage_pooled": round(float((e <= b).mean()), 4),
            "coverage_per_case_min": round(min(cov), 4),
            "coverage_per_case_max": round(max(cov), 4),
            "spearman_error_mm_nonlinear": _mean([p["spearman_error_mm"] for p in nonlin]),
            "spearman_sigma_nonlinear": _mean([p["spearman_sigma"] for p in nonlin]),
            "threshold_mm": threshold,
            "flagged_above_threshold": f"{sum(p['verdict'] != 'pass' for p in bad)}/{len(bad)}",
            "flagged_below_threshold": f"{sum(p['verdict'] != 'pass' for p in good)}/{len(good)}",
            "per_case": per_case}


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def make(records: Sequence[CaseRecord], coverage: float, identity: dict[str, Any],
         images: Sequence[Any], samples: int, seed: int, command: str) -> Any:
    """The complete calibration (:class:`store.Calibration`) from case records."""
    from . import cues, store

    m, rule, parts = fit(records, coverage)
    held_out = measure(m, rule, [records[i] for i in parts["test"]])
    payload = {"model": identity, "command": command,
               "cues": {"samples": samples, "perturbation": "paper",
                        "voxel_cues": list(cues.VOXEL_CUES), "case_cues": list(cues.CASE_CUES),
                        **cues.SETTINGS},
               "images": [{"label": im.label, "sha256": store.image_sha256(im.data, im.affine),
                           "shape": list(im.shape)} for im in images],
               "cases": {"n": len(records), "families": [r.family for r in records],
                         "seed": seed, "split": parts},
               "qc": {"default_threshold_mm": DEFAULT_THRESHOLD_MM},
               "held_out": held_out}
    return store.build(payload, m, rule)
