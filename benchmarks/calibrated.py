"""What a calibration adds to an estimate: the reversed pass, the cues and the error model
(``calibration.apply.error_maps``), on the packaged pair with the default model and its
shipped calibration.

Contenders, run alternately in one process on the same estimate:
- baseline "cues one by one, row table": the cues computed in one thread, gathered into an
  (N, cues) float32 table, the design matrix stacked row-major, expected error and bound each
  from its own prediction (how error_maps worked before 2026-12-03);
- "regrisk": ``error_maps`` as shipped (cues on ``--threads`` threads, the design matrix built
  column by column, one prediction for both maps).
Both give the same maps bit for bit (checked here). Each figure is the best of ``--repeat``.

    PYTHONPATH=python python benchmarks/calibrated.py [--repeat 5] [--threads 2]

Measure on an idle machine only: the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from regrisk import io
from regrisk.calibration import apply, cues, model as error_model, store
from regrisk.engine import Estimator

DATA = store.default_path().parent.parent / "data"


def baseline(est: Estimator, result, source, target, cal) -> tuple[np.ndarray, np.ndarray]:
    src, tgt = io.load_image(source, "source"), io.load_image(target, "target")
    backward = est.predict((tgt.data, tgt.affine), (src.data, src.affine))
    c = cues.compute(result, tgt.data, np.asarray(backward.displacement), src.affine, threads=1)
    table = np.stack([c.maps[n].ravel() for n in cues.VOXEL_CUES], axis=1).astype(np.float32)
    case = np.array([c.case[n] for n in cues.CASE_CUES])
    x = np.ascontiguousarray(error_model.features(table, case, cal.model.names))
    return (cal.model.expected(x).reshape(tgt.shape).astype(np.float32),
            cal.model.bound(x).reshape(tgt.shape).astype(np.float32))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=16)
    args = ap.parse_args()
    print(f"# load average at start: {os.getloadavg()[0]:.2f}; {platform.processor() or ''} "
          f"{os.cpu_count()} CPUs; threads {args.threads}")
    source, target = str(DATA / "colin27_t1.nii.gz"), str(DATA / "mni152_t1.nii.gz")
    cal = store.for_model("default", None)
    times: dict[str, list[float]] = {"baseline": [], "regrisk": []}
    with Estimator("default", threads=args.threads) as est:
        result = est.estimate(source, target, samples=args.samples, seed=1)
        runs = {"baseline": lambda: baseline(est, result, source, target, cal),
                "regrisk": lambda: apply.error_maps(est, result, source, target, cal)[:2]}
        out = {}
        for _ in range(args.repeat):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                out[name] = fn()
                times[name].append(time.perf_counter() - t0)
    same = all(np.array_equal(a, b) for a, b in zip(out["baseline"], out["regrisk"]))
    base, new = min(times["baseline"]), min(times["regrisk"])
    print("| contender | best s | median s | baseline / contender |\n|---|---:|---:|---:|")
    for name, ts in times.items():
        print(f"| {name} | {min(ts):.3f} | {float(np.median(ts)):.3f} | "
              f"{base / min(ts):.2f}x |")
    print(f"\nsame maps bit for bit: {same}; speed-up {base / new:.2f}x")
    print(f"# load average at the end: {os.getloadavg()[0]:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
