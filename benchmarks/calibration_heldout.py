"""Fresh held-out cases for benchmarks/calibration_floors.py --test-records: deformations the
calibration never saw (another seed), including a family outside its mix (``translation_mid``,
shifts of up to 18% of the grid: partial failures between the network's range and the far
shifts).

    PYTHONPATH=python python benchmarks/calibration_heldout.py heldout-cases --samples 16 \
        [--part 0 --parts 2]    # two processes share the list
Tiny check:  ... --families nonlinear --samples 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from regrisk.calibration import cases, store
from regrisk.engine import Estimator

FAMILIES = ("translation_mid", "nonlinear", "nonlinear", "translation_far", "translation_mid",
            "nonlinear", "nonlinear", "affine")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder for case_NNN.npz records")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1, help="not the calibration's (0)")
    ap.add_argument("--part", type=int, default=0)
    ap.add_argument("--parts", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    data = store.default_path().parent.parent / "data"
    images = cases.load_images([data / "colin27_t1.nii.gz", data / "mni152_t1.nii.gz"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with Estimator("default", threads=args.threads) as est:
        for i, family in enumerate(args.families.split(",")):
            path = out / f"case_{i:03d}.npz"
            if i % args.parts != args.part or path.exists():
                continue
            seed = int(np.random.SeedSequence([args.seed, i]).generate_state(1)[0])
            spec = cases.CaseSpec(i, i % len(images), family, seed)
            rec = cases.record(est, cases.build(spec, images[spec.image]), args.samples)
            rec.save(out / f"case_{i:03d}.tmp.npz")
            (out / f"case_{i:03d}.tmp.npz").replace(path)
            print(f"{path}: {family} on image {spec.image + 1}, true mean error "
                  f"{rec.true_mean_error:.2f} mm", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
