"""What the interoperable outputs cost per estimate: the Jacobian determinant (jacobian.py),
the LPS field files (fieldfiles.py) and ``regrisk apply`` (trilinear, label majority vote), on
cubes of the given sizes with a smooth random field. Each figure is the best of ``--repeats``.

    python benchmarks/outputs.py [--sizes 128 175] [--repeats 3] [--threads 2]

Measure on an idle machine only; on a shared one the figures are noise.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from regrisk import apply, fieldfiles, jacobian, kernels


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _case(n: int, folder: Path) -> dict[str, object]:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    affine = np.diag([1.2, 1.0, 1.5, 1.0])
    field = np.stack([gaussian_filter(rng.standard_normal((n, n, n)), 4) * 20
                      for _ in range(3)]).astype(np.float32)
    image = rng.random((n, n, n)).astype(np.float32)
    labels = (image * 50).astype(np.int16)
    return {"affine": affine, "field": field, "image": image, "labels": labels,
            "path": folder / "displacement.nii.gz"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 175])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    print(f"{'size':>6} {'jacobian s':>11} {'field file s':>13} {'apply trilinear s':>18} "
          f"{'apply labels s':>15} {'ns/voxel (jac)':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            c = _case(n, Path(tmp))
            jac = _best(lambda: jacobian.determinant(c["field"], c["affine"]), args.repeats)
            save = _best(lambda: fieldfiles.save_displacement(c["path"], c["field"], c["affine"],
                                                              "benchmark"), args.repeats)
            disp = apply.image_displacement(c["field"], c["affine"], c["affine"])
            lin = _best(lambda: kernels.warp(c["image"], disp, mode="fill",
                                             threads=args.threads), args.repeats)
            lab = _best(lambda: apply.sample_labels(c["labels"], disp, "majority"), args.repeats)
            print(f"{n:>6} {jac:>11.3f} {save:>13.3f} {lin:>18.3f} {lab:>15.3f} "
                  f"{1e9 * jac / n ** 3:>15.1f}")


if __name__ == "__main__":
    main()
