"""The README's figure: one held-out case's true error, the paper's sigma, the calibrated error
map and its 90% bound (middle axial slice), from a real run of the default model.

    PYTHONPATH=python python benchmarks/calibration_figure.py --out docs/calibrated_error.png

The case is a nonlinear deformation (seed 777, not in the calibration's plan) of the packaged
MNI152 brain, registered back to it with K = 16 perturbations.
"""

from __future__ import annotations

import argparse

from scipy import stats

from regrisk.calibration import apply, cases, store
from regrisk.engine import Estimator
from regrisk.evaluation import plots


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/calibrated_error.png")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    image = cases.load_images([store.default_path().parent.parent / "data" / "mni152_t1.nii.gz"])[0]
    case = cases.build(cases.CaseSpec(0, 0, "nonlinear", args.seed), image)
    cal = store.for_model("default", None)
    src, tgt = (case.source, case.affine), (case.image, case.affine)
    with Estimator("default", threads=args.threads) as est:
        res = est.estimate(src, tgt, samples=args.samples, seed=1)
        apply.annotate(est, res, src, tgt, cal)
    error = cases.true_error(case, res.displacement)
    r = case.region
    cover = float((error[r] <= res.error_bound_mm[r]).mean())
    rho = {n: float(stats.spearmanr(m[r], error[r]).statistic)
           for n, m in (("sigma", res.uncertainty), ("error_mm", res.error_mm))}
    qc = res.summary["qc"]
    plots.montage(case.image, error, {f"sigma, paper (rho {rho['sigma']:.2f})": res.uncertainty,
                                      f"error_mm (rho {rho['error_mm']:.2f})": res.error_mm,
                                      f"error_bound_mm, 90% (covers {cover:.2f})":
                                          res.error_bound_mm},
                  r, args.out, axis=2,
                  title=f"held-out nonlinear case, default model, K = {args.samples}: true mean "
                  f"error {error[r].mean():.2f} mm, predicted {qc['predicted_mean_error_mm']:.2f}"
                  f" mm, verdict {qc['verdict']}")
    print(f"{args.out}: Spearman sigma {rho['sigma']:.3f}, error_mm {rho['error_mm']:.3f}; "
          f"bound coverage {cover:.3f}; true mean {error[r].mean():.3f} mm; qc {qc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
