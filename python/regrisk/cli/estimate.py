"""``regrisk estimate``: the uncertainty map of one registration, written to a folder."""

from __future__ import annotations

import argparse
import re

from ..errors import BudgetError
from .options import (add_backend_options, add_run_options, add_sample_options, backend_choice,
                      show_progress, tune_allocator)


def _bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4G, 512M)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * scale)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "estimate", help="per-voxel uncertainty map for one source/target pair",
        description="Perturb the source K times, run the network on each pair, compose each "
        "prediction back and write the per-voxel spread (mm) and the prediction as NIfTI.")
    p.add_argument("--source", required=True,
                   help="moving image (NIfTI, MGZ; NRRD, MetaImage or a DICOM series folder "
                   "with the itk extra)")
    p.add_argument("--target", required=True, help="fixed image (same formats); outputs use its grid")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--model", default="default",
                   help="'default' (packaged network) or an ONNX file with a model card")
    add_estimate_options(p)
    add_calibration_options(p)
    add_run_options(p)
    p.set_defaults(func=run)


def add_calibration_options(p: argparse.ArgumentParser, mask: bool = True) -> None:
    """Calibrated error maps and the QC verdict (:mod:`regrisk.calibration`); ``mask`` False
    leaves out --mask (the cohort command takes a mask per pair, from its table)."""
    from ..calibration.qc import DEFAULT_THRESHOLD_MM

    p.add_argument("--calibration", default=None,
                   help="calibration JSON (regrisk calibrate); default: the shipped one for the "
                   "packaged default model, <model>.calibration.json beside an ONNX model")
    p.add_argument("--no-calibration", action="store_true",
                   help="write no error map and no verdict (summary.json: qc uncalibrated)")
    if mask:
        p.add_argument("--mask", default=None,
                       help="region of the QC verdict (NIfTI on the target grid; default: the "
                       "target's foreground)")
    p.add_argument("--qc-threshold", type=float, default=None,
                   help="mean error (mm) above which a registration is not 'pass'; also the "
                   f"bound level counted in summary qc (default {DEFAULT_THRESHOLD_MM}, one "
                   "voxel of the default model's grid)")


def add_estimate_options(p: argparse.ArgumentParser) -> None:
    """How a pair is estimated (every option that reaches Estimator or its estimate(); the
    cohort command takes the same): read back by :func:`estimator_options` and
    :func:`estimate_options`."""
    add_sample_options(p, samples=50)
    p.add_argument("--perturbation", default="paper",
                   help="preset (paper, translation, rotation, scale, shear, affine, bspline, "
                   "none) or spec such as 'bspline(count=8,max=4mm)+rotation(max=3)'")
    p.add_argument("--sobol", action="store_true", help="quasi-random (scrambled Sobol) draws")
    p.add_argument("--variance-reduction", default=None,
                   help="none (the paper's estimator), neyman (passes allocated to the "
                   "families whose spread dominates), control or control(24mm) (the B-spline "
                   "displacement as a control variate, its slope smoothed over that FWHM), "
                   "stratified, pooled, pooled(4mm) or a + combination; "
                   "default neyman+control (none with fewer than 2 samples per family, --sobol "
                   "or --passes > 1)")
    p.add_argument("--precision", type=float, default=None,
                   help="with --samples auto: stop when the map's estimated Spearman agreement "
                   "with its own limit reaches this (default 0.9)")
    p.add_argument("--max-samples", type=int, default=None,
                   help="with --samples auto: never run more perturbations than this "
                   "(2..100000, default 200)")
    p.add_argument("--passes", type=int, default=1,
                   help="stochastic passes per perturbation (nested design, stochastic models; "
                   "1..1000)")
    p.add_argument("--per-family", action="store_true",
                   help="also write uncertainty_<family>.nii.gz for each family of a mixture")
    p.add_argument("--batch", type=int, default=None,
                   help="samples per network call (1..1024; default sized to the memory budget)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    add_backend_options(p)
    p.add_argument("--memory-budget", type=_bytes, default=None,
                   help="refuse runs estimated above this (e.g. 4G; 1M..1024T; default half the free "
                   "memory, at most 16G)")


def estimator_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of :class:`regrisk.Estimator` from the parsed options."""
    backend, backend_options = backend_choice(args)
    return {"device": args.device, "threads": args.threads, "batch": args.batch,
            "memory_budget": args.memory_budget, "backend": backend,
            "backend_options": backend_options}


def estimate_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of ``Estimator.estimate`` (all of them shape the result)."""
    return {"samples": args.samples, "perturbation": args.perturbation, "seed": args.seed,
            "sobol": args.sobol, "passes": args.passes, "per_family": args.per_family,
            "variance_reduction": args.variance_reduction, "precision": args.precision,
            "max_samples": args.max_samples}


def run(args: argparse.Namespace) -> int:
    from .. import io
    from ..calibration import store
    from ..calibration.apply import annotate
    from ..engine import Estimator

    if args.batch is not None and args.batch < 1:
        raise BudgetError(f"--batch must be >= 1, got {args.batch}")
    # refuse before any computation; --overwrite never replaces a folder holding an input
    io.check_output(args.out, args.overwrite, protect=(args.source, args.target, args.model))
    tune_allocator()
    cal = store.for_model(args.model, args.calibration, not args.no_calibration)
    with Estimator(args.model, **estimator_options(args)) as est:
        if cal is not None:  # refuse a calibration for another model before any computation
            cal.check_model(store.model_identity(est))
        result = est.estimate(args.source, args.target, progress=show_progress(args),
                              **estimate_options(args))
        if cal is not None:
            annotate(est, result, args.source, args.target, cal, args.mask, args.qc_threshold)
    result.save(args.out, overwrite=args.overwrite)
    t = result.timings
    total = t.get("total", 0.0)
    share = t.get("inference", 0.0) / total if total else 0.0
    sampling = result.summary["sampling"]
    print(f"regrisk estimate: {sampling['samples']} samples ({args.perturbation}; "
          f"{sampling['stopped']}) in {total:.2f} s "
          f"({100 * share:.0f}% inference); sigma mean {float(result.uncertainty.mean()):.3g} mm, "
          f"max {float(result.uncertainty.max()):.3g} mm -> {args.out}")
    qc = result.summary["qc"]
    if isinstance(qc, dict):
        print(f"regrisk estimate: qc {qc['verdict']} (predicted mean error "
              f"{qc['predicted_mean_error_mm']:.2f} mm in the {qc['region']}, threshold "
              f"{qc['threshold_mm']} mm; calibration {qc['calibration_id']})")
    return 0
