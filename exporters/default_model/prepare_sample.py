"""Regenerate the sample brain pair shipped in python/regrisk/data/ from registry packages.

    pip install nilearn && apt-get install -y mricron-data
    python exporters/default_model/prepare_sample.py [--out python/regrisk/data]

Writes, on the same 80 x 96 x 80 grid of 2 mm voxels (RAS, centred on the brains):
- ``colin27_t1.nii.gz``     source: Colin27 brain-extracted T1 (Debian mricron-data ch2bet)
- ``colin27_labels.nii.gz`` its tissue labels (k-means on intensity, see ``templates``)
- ``mni152_t1.nii.gz``      target: MNI ICBM152 2009a nonlinear symmetric T1 (nilearn wheel)
- ``mni152_labels.nii.gz``  its tissue labels (from the template's GM/WM probability maps)
Labels: 0 background, 1 CSF, 2 grey matter, 3 white matter. Intensities are stored as uint8
(both sources are 8-bit), labels as uint8, so the four files stay well under 2 MB.

Colin27 is one person scanned 27 times, MNI152 an average of 152 brains: different anatomy,
both already in MNI space, so the pair is what a registration network meets after affine
pre-alignment.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from default_model import templates  # type: ignore[no-redef]
else:
    from . import templates

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "python" / "regrisk" / "data"
FILES = {
    "source": "colin27_t1.nii.gz",
    "source_labels": "colin27_labels.nii.gz",
    "target": "mni152_t1.nii.gz",
    "target_labels": "mni152_labels.nii.gz",
}


def _save(data: np.ndarray, affine: np.ndarray, path: Path, description: str) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.uint8), affine)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = description.encode()[:79]
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=4)  # MNI space
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
    nib.save(img, str(tmp))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    aff = templates.grid_affine()
    nd = templates.nilearn_data_dir()
    mni_raw = templates._reslice(
        os.path.join(nd, "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"), aff, templates.GRID)
    colin_raw = templates._reslice(
        os.path.join(templates.COLIN_DIR, "ch2bet.nii.gz"), aff, templates.GRID)
    mni = templates.load_mni152()
    colin = templates.load_colin27()

    _save(np.clip(np.rint(colin_raw), 0, 255), aff, args.out / FILES["source"],
          "regrisk sample source: Colin27 ch2bet T1, 2 mm")
    _save(colin.labels, aff, args.out / FILES["source_labels"],
          "Colin27 tissue: 0 bg 1 csf 2 gm 3 wm (k-means)")
    _save(np.clip(np.rint(mni_raw), 0, 255), aff, args.out / FILES["target"],
          "regrisk sample target: MNI152 2009a sym T1, 2 mm")
    _save(mni.labels, aff, args.out / FILES["target_labels"],
          "MNI152 tissue: 0 bg 1 csf 2 gm 3 wm (template maps)")
    total = sum((args.out / f).stat().st_size for f in FILES.values())
    for key, name in FILES.items():
        print(f"{key:14s} {args.out / name}  {(args.out / name).stat().st_size / 1024:.0f} KiB")
    print(f"total {total / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
