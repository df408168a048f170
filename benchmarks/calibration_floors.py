"""Floors of the calibrated error map, measured on cases (and images) the fit did not see.

Reads the case records that ``regrisk calibrate --cache DIR`` keeps (one ``case_NNN.npz`` per
case: cue table, true error, case cues) and prints markdown tables:

1. the calibration's own split: fit / conformal / held-out test cases (new deformations of the
   same images);
2. across images: fitted and calibrated on every case of one image, measured on every case of
   the other (images the calibration did not see);
3. per family, over the own split's held-out cases and the fresh ones together: the calibrated
   map's Spearman and Pearson beside sigma's and inverse consistency's, and the bound's coverage;
4. per held-out case: coverage of the bound, Spearman of the calibrated map, of sigma (the
   paper's map) and of inverse consistency alone, and the verdict against the true mean error.

Usage (the figures in benchmarks/EVALUATION.md):
    PYTHONPATH=python python -m regrisk calibrate --model default --cases 32 --samples 16 \
        --cache cal-cases --out python/regrisk/models/default.calibration.json --threads 2
    PYTHONPATH=python python benchmarks/calibration_floors.py cal-cases
Tiny check:  PYTHONPATH=python python benchmarks/calibration_floors.py DIR --limit 6
"""

from __future__ import annotations

import argparse
import glob
import os
from collections.abc import Sequence

from scipy import stats

from regrisk.calibration import build
from regrisk.calibration.cases import CaseRecord
from regrisk.calibration.cues import VOXEL_CUES
from regrisk.calibration.qc import DEFAULT_THRESHOLD_MM


def _rho(r: CaseRecord, cue: str) -> float:
    return float(stats.spearmanr(r.cues[:, VOXEL_CUES.index(cue)], r.error).statistic)


def _summary_row(label: str, res: dict) -> str:
    return (f"| {label} | {res['cases']} | {res['coverage_pooled']:.3f} | "
            f"{res['coverage_per_case_min']:.3f}-{res['coverage_per_case_max']:.3f} | "
            f"{res['spearman_error_mm_nonlinear']} | {res['spearman_sigma_nonlinear']} | "
            f"{res['flagged_above_threshold']} | {res['flagged_below_threshold']} |")


def evaluate_split(fit_records: Sequence[CaseRecord], test_records: Sequence[CaseRecord] | None,
                   coverage: float, threshold: float) -> dict:
    """Fit (and calibrate) on ``fit_records``; measure on ``test_records``, or, when None, on
    the test part of ``fit_records``' own split (exactly what regrisk calibrate records)."""
    m, rule, parts = build.fit(fit_records, coverage)
    if test_records is None:
        test_records = [fit_records[i] for i in parts["test"]]
    res = build.measure(m, rule, test_records, threshold)
    for row, r in zip(res["per_case"], test_records):
        row["spearman_ic"] = round(_rho(r, "ic"), 4)
    return res


def _family_table(rows: Sequence[dict]) -> None:
    print(f"\nPer family, over the {len(rows)} held-out cases of the own split and the fresh "
          "cases:\n")
    print("| family | held-out cases | Spearman error_mm | Spearman sigma (paper) | Spearman "
          "inverse consistency | Pearson error_mm | bound coverage, mean (min-max) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for family in dict.fromkeys(r["family"] for r in rows):
        fam = [r for r in rows if r["family"] == family]
        mean = lambda key: sum(r[key] for r in fam) / len(fam)  # noqa: E731
        cov = [r["coverage"] for r in fam]
        spread = f" ({min(cov):.3f}-{max(cov):.3f})" if len(fam) > 1 else ""
        print(f"| {family} | {len(fam)} | {mean('spearman_error_mm'):.3f} | "
              f"{mean('spearman_sigma'):.3f} | {mean('spearman_ic'):.3f} | "
              f"{mean('pearson_error_mm'):.3f} | {mean('coverage'):.3f}{spread} |")


def load_records(folder: str) -> list[CaseRecord]:
    return [CaseRecord.load(p) for p in sorted(glob.glob(os.path.join(folder, "case_*.npz")))]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", help="folder of case_NNN.npz (regrisk calibrate --cache)")
    ap.add_argument("--coverage", type=float, default=0.9)
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_MM)
    ap.add_argument("--limit", type=int, default=None, help="use the first N cases only")
    ap.add_argument("--test-records", default=None,
                    help="folder of fresh held-out cases (benchmarks/calibration_heldout.py)")
    args = ap.parse_args(argv)
    records = load_records(args.records)[:args.limit]
    results = {"own split (held-out deformations)": evaluate_split(
        records, None, args.coverage, args.threshold)}
    if args.test_records:  # the shipped calibration's model, on fresh cases
        results["fresh cases (another seed, translation_mid outside the mix)"] = evaluate_split(
            records, load_records(args.test_records), args.coverage, args.threshold)
    for img in sorted({r.image for r in records}):
        train = [r for r in records if r.image != img]
        test = [r for r in records if r.image == img]
        if len(train) >= 4 and test:
            results[f"fit on other images, test on image {img + 1}"] = evaluate_split(
                train, test, args.coverage, args.threshold)
    print(f"{len(records)} cases; bound coverage {args.coverage}; "
          f"QC threshold {args.threshold} mm\n")
    print("| split | held-out cases | coverage pooled | coverage per case | Spearman error_mm "
          "(nonlinear) | Spearman sigma (nonlinear) | flagged, true error > threshold | "
          "flagged, true error <= threshold |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for label, res in results.items():
        print(_summary_row(label, res))
    _family_table([row for label, res in results.items() if not label.startswith("fit on")
                   for row in res["per_case"]])
    for label, res in results.items():
        print(f"\n{label}:\n")
        print("| family | image | coverage | rho error_mm | rho sigma | rho inverse consistency | "
              "true mean error (mm) | predicted (mm) | verdict |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for p in res["per_case"]:
            print(f"| {p['family']} | {p['image'] + 1} | {p['coverage']:.3f} | "
                  f"{p['spearman_error_mm']:.3f} | {p['spearman_sigma']:.3f} | "
                  f"{p['spearman_ic']:.3f} | {p['true_mean_error_mm']:.2f} | "
                  f"{p['predicted_mean_error_mm']:.2f} | {p['verdict']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
