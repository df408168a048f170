"""Would a normalised conformal score give every held-out case 0.80-0.97 coverage? (issue 14)

The shipped bound is exp(prediction + q) - e0 with one q for every voxel (split conformal on
log residuals). The variant tried here scales the score by a fitted spread: a second linear
model of log|residual| on the same features (fitted on the fit cases, any sign of weight), the
score residual / spread, the bound exp(prediction + q * spread) - e0. Both use the calibration's
own split (``build.split``) and the same error model; the script prints pooled and per-case
coverage of both on the held-out cases, and on fresh cases if given.

    PYTHONPATH=python python benchmarks/calibration_normalised.py cal-cases [--fresh heldout-cases]

(``cal-cases`` from ``regrisk calibrate --cache``, ``heldout-cases`` from
benchmarks/calibration_heldout.py.)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LinearRegression

from regrisk.calibration import build
from regrisk.calibration import model as error_model
from regrisk.calibration.cases import CaseRecord

from calibration_floors import load_records  # noqa: E402  (benchmarks/, the script's folder)

COVERAGE = 0.9


def _log_error(y: np.ndarray) -> np.ndarray:
    return np.log(y.astype(np.float64) + error_model.ERROR_OFFSET)


def _design(records: Sequence[CaseRecord]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([error_model.features(r.cues, r.case_cues) for r in records])
    return x, np.concatenate([r.error for r in records])


def fit_spread(m: error_model.ErrorModel, fit_cases: Sequence[CaseRecord]) -> LinearRegression:
    """log|residual| of the error model, linear in the features, on the fit cases."""
    x, y = _design(fit_cases)
    return LinearRegression().fit(x, np.log(np.abs(_log_error(y) - m.log_prediction(x)) + 1e-3))


def bounds(m: error_model.ErrorModel, spread: LinearRegression, q: float,
           r: CaseRecord) -> tuple[np.ndarray, np.ndarray]:
    """The shipped bound and the normalised one on a case's voxels (mm)."""
    x = error_model.features(r.cues, r.case_cues)
    scaled = np.exp(m.log_prediction(x) + q * np.exp(spread.predict(x))) - error_model.ERROR_OFFSET
    return m.bound(x), np.maximum(scaled, 0.0)


def table(label: str, cases: Sequence[CaseRecord], m: error_model.ErrorModel,
          spread: LinearRegression, q: float) -> None:
    covered = [[r.error <= b for b in bounds(m, spread, q, r)] for r in cases]
    print(f"\n### {label}: {len(cases)} cases\n")
    print("| bound | coverage pooled | coverage per case (min-max) |\n|---|---:|---|")
    for k, name in enumerate(("shipped (one q)", "normalised")):
        per = [float(c[k].mean()) for c in covered]
        pooled = float(np.concatenate([c[k] for c in covered]).mean())
        print(f"| {name} | {pooled:.3f} | {min(per):.3f}-{max(per):.3f} |")
    print("\n| family | true mean error (mm) | shipped | normalised |\n|---|---:|---:|---:|")
    for r, c in zip(cases, covered):
        print(f"| {r.family} | {r.true_mean_error:.2f} | {c[0].mean():.3f} | {c[1].mean():.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", help="folder of case_NNN.npz from regrisk calibrate --cache")
    ap.add_argument("--fresh", default=None, help="folder of fresh held-out case records")
    args = ap.parse_args()
    records = load_records(args.records)
    m, _, parts = build.fit(records, COVERAGE)
    spread = fit_spread(m, [records[i] for i in parts["fit"]])
    xc, yc = _design([records[i] for i in parts["conformal"]])
    scores = (_log_error(yc) - m.log_prediction(xc)) / np.exp(spread.predict(xc))
    q = error_model.conformal_quantile(scores, COVERAGE)
    held = [records[i] for i in parts["test"]]
    table("own split (held-out deformations)", held, m, spread, q)
    if args.fresh:
        table("fresh cases (another seed)", load_records(args.fresh), m, spread, q)


if __name__ == "__main__":
    main()
