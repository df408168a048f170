"""``regrisk calibrate``: fit the error model and QC verdict of a model on known-deformation
cases built from images, and write the calibration JSON."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..errors import InputError
from .options import add_run_options, show_progress


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="fit calibrated error maps (mm), a conformal bound and a QC verdict",
        description="Build known-deformation cases (translation, affine, nonlinear, including "
        "ranges beyond the network's) from the images, estimate each, and fit a model from the "
        "per-voxel cues (sigma, inverse consistency, local NCC residual, residual flow, "
        "Jacobian) to the true error, with a split-conformal upper bound and a per-case "
        "verdict.")
    p.add_argument("--model", default="default",
                   help="'default' (packaged network) or an ONNX file with a model card")
    p.add_argument("--images", nargs="+", default=None,
                   help="base images (NIfTI; default: the packaged Colin27 and MNI152 brains)")
    p.add_argument("--cases", type=int, default=32, help="number of cases (default 32)")
    p.add_argument("--samples", type=int, default=16, help="perturbations K per case (default 16)")
    p.add_argument("--coverage", type=float, default=0.9,
                   help="coverage of the upper bound, in (0, 1) (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="seed of the case plan")
    p.add_argument("--cache", default=None,
                   help="folder keeping each case's record as it completes (a rerun reuses them)")
    p.add_argument("--out", default=None,
                   help="calibration file (default: <model>.calibration.json beside an ONNX "
                   "model; required for the packaged default, whose file ships)")
    add_run_options(p)
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    if not 0.0 < args.coverage < 1.0:
        raise InputError(f"--coverage must be in (0, 1), got {args.coverage}")
    if args.cases < 4:
        raise InputError(f"--cases must be >= 4 (fit, conformal and test cases), got {args.cases}")
    if args.samples < 2:
        raise InputError(f"--samples must be >= 2, got {args.samples}")
    if args.out is None and args.model == "default":
        raise InputError("--out is required with the packaged default model")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..calibration import build, cases, store
    from ..engine import Estimator

    _check(args)
    out = Path(args.out) if args.out else Path(args.model).with_suffix(".calibration.json")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} exists (use --overwrite to replace it)")
    paths = args.images or [str(p) for p in _packaged_images()]
    images = cases.load_images(paths)
    say = (lambda msg: print(msg, file=sys.stderr)) if show_progress(args) else (lambda msg: None)
    if args.cache:
        Path(args.cache).mkdir(parents=True, exist_ok=True)
    with Estimator(args.model, threads=args.threads) as est:
        records = cases.collect(est, images, args.cases, args.samples, args.seed, say, args.cache)
        identity = store.model_identity(est)
    cal = build.make(records, args.coverage, identity, images, args.samples, args.seed,
                     _command(args))
    held_out = cal.payload["held_out"]
    store.save(cal, out)
    print(f"regrisk calibrate: {len(records)} cases; held-out coverage "
          f"{held_out.get('coverage_pooled')} (per case {held_out.get('coverage_per_case_min')}-"
          f"{held_out.get('coverage_per_case_max')}), Spearman on nonlinear "
          f"{held_out.get('spearman_error_mm_nonlinear')} (sigma "
          f"{held_out.get('spearman_sigma_nonlinear')}) -> {out} (id {cal.id})")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command that regenerates this calibration (recorded in it)."""
    words = ["regrisk", "calibrate", "--model", str(args.model)]
    if args.images:
        words += ["--images", *map(str, args.images)]
    words += ["--cases", str(args.cases), "--samples", str(args.samples), "--coverage",
              str(args.coverage), "--seed", str(args.seed), "--out", str(args.out)]
    return shlex.join(words)


def _packaged_images() -> list:
    from importlib import resources

    data = resources.files("regrisk") / "data"
    return [data / "colin27_t1.nii.gz", data / "mni152_t1.nii.gz"]
