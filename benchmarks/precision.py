"""Does a reduced inference precision keep the uncertainty map? OpenVINO f32 against bf16 (or
f16) on the packaged brain pair (Colin27 -> MNI152), same perturbations and seed.

Prints, over the brain (MNI152 tissue labels > 0) on the target grid: Spearman's rho between
the two sigma maps, the largest and the 99th-percentile |sigma difference| in mm, the same for
the displacement (mm), and the time of each run. regrisk keeps f32 as the default unless rho is
at least 0.99 (issue 12); the verdict line says which.

Run on the idle machine:
    python benchmarks/precision.py --samples 50                 # the packaged default model
    python benchmarks/precision.py --model some.onnx --samples 50 --precision f16
Check that it runs:
    python benchmarks/precision.py --samples 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np

THRESHOLD = 0.99


def estimate(model: str, precision: str, samples: int, threads: int | None) -> tuple:
    from regrisk import Estimator
    from regrisk.demo import SOURCE, TARGET, data_path

    t0 = time.perf_counter()
    with Estimator(model, backend="openvino", backend_options={"precision": precision},
                   threads=threads) as est:
        res = est.estimate(str(data_path(SOURCE)), str(data_path(TARGET)), samples=samples,
                           perturbation="paper", seed=0)
        runs_at = est.runner.describe().get("runs_at", precision)
    return res, time.perf_counter() - t0, runs_at


def compare(ref, low, brain: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    a, b = ref.uncertainty[brain], low.uncertainty[brain]
    d = np.abs(a - b)
    u = np.linalg.norm(ref.displacement - low.displacement, axis=0)[brain]
    return {"spearman": float(spearmanr(a, b)[0]), "sigma_max_mm": float(d.max()),
            "sigma_p99_mm": float(np.percentile(d, 99)), "sigma_mean_mm": float(a.mean()),
            "displacement_max_mm": float(u.max()), "displacement_p99_mm": float(np.percentile(u, 99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "f16", "auto"),
                    help="auto: what the backend picks by default (bf16 only in the "
                    "dense-convolution stages of measured graphs)")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import nibabel as nib

    from regrisk.demo import TARGET_LABELS, data_path

    brain = np.asarray(nib.load(str(data_path(TARGET_LABELS))).dataobj) > 0
    ref, t_ref, _ = estimate(args.model, "f32", args.samples, args.threads)
    low, t_low, runs_at = estimate(args.model, args.precision, args.samples, args.threads)
    m = compare(ref, low, brain)
    print(f"# {args.model}: OpenVINO f32 vs {args.precision} (runs at {runs_at}), K = "
          f"{args.samples}, packaged pair, {int(brain.sum())} brain voxels")
    print("| measure | value |")
    print("|---|---:|")
    for k, v in m.items():
        print(f"| {k} | {v:.4g} |")
    print(f"| time f32 (s) | {t_ref:.2f} |")
    print(f"| time {args.precision} (s) | {t_low:.2f} |")
    keep = m["spearman"] >= THRESHOLD
    print(f"verdict: {args.precision} {'keeps' if keep else 'does not keep'} the map "
          f"(Spearman {m['spearman']:.4f} {'>=' if keep else '<'} {THRESHOLD}): "
          + ("it may become the default" if keep else "f32 stays the default"))


if __name__ == "__main__":
    main()
