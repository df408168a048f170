"""``regrisk evaluate``: does the uncertainty track the real error? (the paper's protocol)."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from .options import add_run_options, add_sample_options, tune_allocator


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score uncertainty maps against the true error of known synthetic transforms",
        description="Warp an image by a known transform (translation of up to 10% of the grid, "
        "affine with shear U(-0.1, 0.1) and scale U(0.8, 1.2), or two composed cubic B-spline "
        "fields), register it back to the original with the model, and score each uncertainty "
        "map (equivariance, inverse consistency, MC dropout, random) against the true error "
        "|u_gt - u_pred| in mm: Pearson r, Spearman rho, nAURC. Writes metrics.csv, "
        "summary.md and plots into --out (atomically).",
    )
    p.add_argument("--model", default="default",
                   help="'default' or an ONNX file with a model card (default: default)")
    p.add_argument("--source", required=True, help="source image (NIfTI)")
    p.add_argument("--target", required=True, help="target image (NIfTI)")
    p.add_argument("--mask", default=None,
                   help="region to score (NIfTI, nonzero inside; default: image foreground)")
    p.add_argument("--ground-truth", default="all",
                   help="translation, affine, nonlinear, all, or a comma list (default: all)")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    add_sample_options(p, samples=16)
    p.add_argument("--repeats", type=int, default=1,
                   help="random ground-truth draws per kind and base image (default 1)")
    p.add_argument("--perturbation", default="paper",
                   help="perturbation preset/spec for the equivariance map; several separated by "
                   "';' give one map each (default: paper)")
    p.add_argument("--convergence", action="store_true",
                   help="also measure sample efficiency: K in 4..200, independent vs Sobol draws")
    p.add_argument("--base", default="both", choices=("source", "target", "both"),
                   help="which image(s) the synthetic cases are built from: the base image "
                   "warped by the known transform is registered back to itself (default: both)")
    p.add_argument("--stochastic-model", default=None,
                   help="ONNX graph with dropout on for the MC-dropout baseline (default: the "
                   "model's <name>_stochastic.onnx sibling or packaged stochastic default)")
    p.add_argument("--baselines", default="inverse_consistency,mc_dropout,random",
                   help="comma list of baselines (default: all three)")
    p.add_argument("--plots", default="first", choices=("all", "first", "none"),
                   help="plots for every case, the first of each kind, or none (default first)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--calibration", default="auto",
                   help="calibration JSON whose error map is scored as method 'calibrated' "
                   "(default: the shipped one for the packaged default model)")
    p.add_argument("--no-calibration", action="store_true", help="score no calibrated map")
    p.add_argument("--qc-threshold", type=float, default=None,
                   help="mean error (mm) of the verdict (default: the calibration's)")
    add_run_options(p)
    p.set_defaults(func=run)


def _split(text: str, sep: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(sep) if s.strip())


def run(args: argparse.Namespace) -> int:
    from ..evaluation.protocol import EvaluationConfig, evaluate

    kinds = _split(args.ground_truth, ",")
    if not kinds:
        raise InputError("--ground-truth is empty")
    cfg = EvaluationConfig(
        model=args.model, source=args.source, target=args.target, mask=args.mask,
        ground_truth=kinds, samples=args.samples, repeats=args.repeats, seed=args.seed,
        perturbation=_split(args.perturbation, ";"), convergence=args.convergence,
        base=args.base, stochastic_model=args.stochastic_model,
        baselines=_split(args.baselines, ","), plots=args.plots, device=args.device,
        threads=args.threads, overwrite=args.overwrite,
        calibration=None if args.no_calibration else args.calibration,
        qc_threshold=args.qc_threshold)
    tune_allocator()
    say = None if args.quiet else (lambda msg: print(f"regrisk evaluate: {msg}", file=sys.stderr))
    result = evaluate(args.out, config=cfg, progress=say)
    print(result.table())
    print(f"wrote {result.out}/metrics.csv, summary.md" + (", convergence.csv" if result.convergence else ""))
    return 0
