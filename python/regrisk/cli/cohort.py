"""``regrisk cohort``: every pair of a CSV, with one warm model, resumable, locally or on Ray."""

from __future__ import annotations

import argparse
import sys

from .estimate import (add_calibration_options, add_estimate_options, estimate_options,
                       estimator_options)
from .options import add_run_options, show_progress, tune_allocator


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cohort", help="uncertainty maps for every pair of a CSV, resumable, locally or on Ray",
        description="Estimate every pair of a CSV (id,source,target[,mask]; relative paths "
        "from the CSV's folder) with one warm model per worker. Each pair's outputs go to "
        "OUT/pairs/ID; OUT/manifest.jsonl records every pair, so a rerun skips what is "
        "complete and unchanged and redoes the rest; OUT/cohort.csv and OUT/report.html "
        "summarise. Exit status 0 when every pair is done, 2 when any failed, 130 on Ctrl-C.")
    p.add_argument("--pairs", required=True, help="CSV with columns id,source,target[,mask]")
    p.add_argument("--out", required=True,
                   help="cohort folder (created; an existing cohort folder is resumed)")
    p.add_argument("--model", default="default",
                   help="'default' (packaged network) or an ONNX file with a model card")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: in this process (default); ray: Ray actors")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (e.g. 10.0.0.1:6379 or auto); default: start a "
                   "local Ray runtime")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray workers (default: as many as the cluster's CPUs/GPUs hold)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="GPU share of each Ray worker (> 0 runs the estimates on CUDA)")
    add_estimate_options(p)
    add_calibration_options(p, mask=False)
    add_run_options(p, overwrite=False)
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace):  # -> EstimateSettings
    from ..cohort import EstimateSettings

    estimator = estimator_options(args)
    if args.gpus_per_worker > 0:  # a GPU share means the estimates run on it
        estimator["device"] = "cuda"
    calibration = {"path": args.calibration, "enabled": not args.no_calibration,
                   "qc_threshold": args.qc_threshold}
    return EstimateSettings(estimate=estimate_options(args), estimator=estimator,
                            calibration=calibration)


def _check(args: argparse.Namespace) -> None:
    from ..errors import InputError

    if args.batch is not None and args.batch < 1:
        raise InputError(f"--batch must be >= 1, got {args.batch}")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.qc_threshold is not None and not 0 < args.qc_threshold < float("inf"):
        raise InputError(f"--qc-threshold must be a positive number of mm, got {args.qc_threshold}")
    if not 0 <= args.gpus_per_worker <= 64:
        raise InputError(f"--gpus-per-worker must be in [0, 64], got {args.gpus_per_worker:g}")
    if args.engine == "local" and (args.address or args.workers or args.gpus_per_worker):
        raise InputError("--address, --workers and --gpus-per-worker need --engine ray")


def run(args: argparse.Namespace) -> int:
    from ..cohort import PairsError, RayOptions, read_pairs, run_cohort

    _check(args)
    try:
        pairs = read_pairs(args.pairs)
    except PairsError as exc:  # every problem of the table, one line each, nothing run
        for line in exc.problems:
            print(f"regrisk cohort: error: {line}", file=sys.stderr)
        return 2
    tune_allocator()
    options = RayOptions(address=args.address, workers=args.workers,
                         cpus_per_worker=args.threads or 1, gpus_per_worker=args.gpus_per_worker)
    summary = run_cohort(
        pairs, args.out, model=args.model, settings=_settings(args), engine=args.engine,
        ray_options=options, progress=show_progress(args),
        on_refused=lambda line: print(f"regrisk cohort: error: {line}", file=sys.stderr))
    return _report(summary)


def _report(summary) -> int:  # summary: CohortSummary
    if summary.interrupted:
        print(f"regrisk cohort: interrupted; {summary.done} of {summary.total} pairs done, "
              f"{summary.failed} failed; rerun the same command to resume", file=sys.stderr)
        return 130
    for line in summary.failures:
        print(f"regrisk cohort: failed: {line}", file=sys.stderr)
    print(f"regrisk cohort: {summary.done} of {summary.total} pairs done ({summary.skipped} "
          f"already complete, {summary.ran} run), {summary.failed} failed -> "
          f"{summary.out / 'report.html'}")
    return 2 if summary.failed else 0
