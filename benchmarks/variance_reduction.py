"""Variance reduction: how close a K-sample map gets to a long reference, per estimator.

For each case (the packaged pair, and the evaluation protocol's known-transform cases built
from it) this script runs the default model once per (estimator, K, seed) through the public
``Estimator.estimate`` (``paper`` mixture, threads 2), and prints, per estimator and K: the
Spearman agreement (over the case's foreground) with a K = 200 plain i.i.d. reference map of
other draws (seed 10000), the split-half precision the run estimated for itself, and where the
truth is known the Spearman and nAURC of the map against the true error, each averaged over the
seeds. Agreement and correlation are not timings: the load of the machine does not change them.

    python benchmarks/variance_reduction.py [--cases pair affine nonlinear] [--seeds 3]
        [--samples 8 16 32 50] [--estimators none neyman ...] [--reference 200] [--json out.json]
        [--auto]   (samples="auto" instead of each K: where it stopped, what it reached)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.resources import files
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from regrisk import Estimator
from regrisk.evaluation import metrics, protocol


def cases(names: list[str]) -> list[dict[str, Any]]:
    """(name, source, target, region, true error or None) for each requested case."""
    data = files("regrisk") / "data"
    src, tgt = str(data / "colin27_t1.nii.gz"), str(data / "mni152_t1.nii.gz")
    out = []
    if "pair" in names:
        from regrisk import io
        img = io.load_image(tgt, "target")
        out.append({"name": "packaged pair", "source": src, "target": tgt,
                    "region": protocol.foreground(img.data), "case": None})
    kinds = [n for n in names if n != "pair"]
    if kinds:
        cfg = protocol.EvaluationConfig(source=src, target=tgt, ground_truth=tuple(kinds),
                                        base="target", seed=7)
        cfg.check()
        for case in protocol.iter_cases(cfg):
            out.append({"name": f"{case.kind} (known)", "source": (case.source, case.affine),
                        "target": (case.image, case.affine), "region": case.region, "case": case})
    return out


def run_map(est: Estimator, c: dict[str, Any], spec: str, K: int, seed: int) -> tuple[np.ndarray, dict]:
    """Native sigma map and the run's sampling summary for one estimator spec."""
    res = est.estimate(c["source"], c["target"], samples=K, seed=seed, perturbation="paper",
                       variance_reduction=spec)
    return np.asarray(res.uncertainty), res.summary["sampling"]


def agreement(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    return float(spearmanr(a[region], b[region]).statistic)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["pair", "affine", "nonlinear"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. + seeds - 1")
    ap.add_argument("--samples", type=int, nargs="+", default=[8, 16, 32, 50])
    ap.add_argument("--estimators", nargs="+",
                    default=["none", "neyman", "neyman+pooled(4mm)", "stratified"])
    ap.add_argument("--reference", type=int, default=200)
    ap.add_argument("--auto", action="store_true",
                    help="instead of fixed K: --samples auto (default precision 0.9) per "
                    "estimator and seed; prints where it stopped and the agreement reached")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    rows = []
    est = Estimator("default", threads=2)
    for c in cases(args.cases):
        t0 = time.perf_counter()
        ref = run_map(est, c, "none", args.reference, 10_000)[0]
        error = None
        if c["case"] is not None:
            pred = est.predict(c["source"], c["target"]).displacement
            error = protocol.true_error(c["case"], pred)
        for spec in args.estimators:
            for K in (["auto"] if args.auto else args.samples):
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    sigma, sampling = run_map(est, c, spec, K, seed)
                    row = {"case": c["name"], "estimator": spec, "K": K, "seed": seed,
                           "stopped_at": sampling["samples"], "stopped": sampling["stopped"],
                           "agreement": agreement(sigma, ref, c["region"]),
                           "precision": (sampling["precision"] or {}).get("precision", float("nan")),
                           "family_samples": sampling.get("family_samples")}
                    if error is not None:
                        s = metrics.score(error[c["region"]], sigma[c["region"]])
                        row.update(spearman_error=s.spearman, naurc=s.naurc)
                    rows.append(row)
            print(f"# {c['name']} {spec}: {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                  flush=True)
    (print_auto if args.auto else print_table)(rows, args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print("| case | estimator | " + " | ".join(f"K={k}" for k in args.samples) + " |")
    print("|---|---|" + "---:|" * len(args.samples))
    for case in dict.fromkeys(r["case"] for r in rows):
        for spec in args.estimators:
            cells = []
            for K in args.samples:
                sel = [r for r in rows if r["case"] == case and r["estimator"] == spec
                       and r["K"] == K]
                cell = (f"{np.mean([r['agreement'] for r in sel]):.3f} "
                        f"(p {np.mean([r['precision'] for r in sel]):.2f}")
                if "spearman_error" in sel[0]:
                    cell += (f"; rho {np.mean([r['spearman_error'] for r in sel]):.2f}, "
                             f"nAURC {np.mean([r['naurc'] for r in sel]):.2f}")
                cells.append(cell + ")")
            print(f"| {case} | {spec} | " + " | ".join(cells) + " |")


def print_auto(rows: list[dict], args: argparse.Namespace) -> None:
    print("| case | estimator | stopped at K (per seed) | precision reached | agreement reached |")
    print("|---|---|---|---:|---:|")
    for case in dict.fromkeys(r["case"] for r in rows):
        for spec in args.estimators:
            sel = [r for r in rows if r["case"] == case and r["estimator"] == spec]
            ks = ", ".join(str(r["stopped_at"]) for r in sel)
            print(f"| {case} | {spec} | {ks} | {np.mean([r['precision'] for r in sel]):.3f} | "
                  f"{np.mean([r['agreement'] for r in sel]):.3f} |")


if __name__ == "__main__":
    sys.exit(main())
