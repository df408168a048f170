"""Small cohorts for the cohort tests: the centre-of-mass ONNX model of builders.py on 16^3
blob pairs. Pair i has isotropic voxels of (1 + 0.5 i) mm, so under scale perturbations its
sigma (std(s) |M (x - com(T))|, see builders.py) grows with i: the CSV's order is the order of
increasing risk, and sorting by risk reverses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from builders import blob, com_model, write_nifti

GRID = (16, 16, 16)
SETTINGS = {"samples": 4, "perturbation": "scale", "seed": 3}


def spacing(i: int) -> float:
    return 1.0 + 0.5 * i


def make_cohort(folder: Path, good: int, corrupt: bool = False, missing: bool = False,
                mask: bool = False) -> tuple[Path, Path]:
    """(pairs.csv, model.onnx) in ``folder``: ``good`` readable pairs p0.., then optionally a
    pair whose source is a corrupt file ("corrupt") and one whose source is missing ("missing").
    Paths in the CSV are relative to its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model = com_model(folder / "com.onnx", GRID)
    rows = ["id,source,target" + (",mask" if mask else "")]
    for i in range(good):
        affine = np.diag([spacing(i)] * 3 + [1.0])
        write_nifti(folder / f"s{i}.nii.gz", blob(GRID, (7, 8, 8), 2.5), affine)
        write_nifti(folder / f"t{i}.nii.gz", blob(GRID, (8, 8, 7), 2.5), affine)
        row = f"p{i},s{i}.nii.gz,t{i}.nii.gz"
        if mask:
            region = np.zeros(GRID, np.uint8)
            region[4:12, 4:12, 4:12] = 1
            write_nifti(folder / f"m{i}.nii.gz", region, affine)
            row += f",m{i}.nii.gz"
        rows.append(row)
    if corrupt:
        (folder / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08 this is not a NIfTI image")
        rows.append("corrupt,corrupt.nii.gz,t0.nii.gz" + ("," if mask else ""))
    if missing:
        rows.append("missing,no_such_source.nii.gz,t0.nii.gz" + ("," if mask else ""))
    csv = folder / "pairs.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv, model


def pair_ids(good: int) -> list[str]:
    return [f"p{i}" for i in range(good)]
