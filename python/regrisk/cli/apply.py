"""``regrisk apply``: resample an image in the source's space through an estimate's transform."""

from __future__ import annotations

import argparse

from ..errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "apply", help="resample an image in the source's space onto the target grid",
        description="Resample an image in the source's world space (any grid: intensities, "
        "several channels, or a label map) through an estimate's displacement.nii.gz onto the "
        "target grid (or --reference's), as antsApplyTransforms would.")
    p.add_argument("--result", required=True, help="an estimate's output folder")
    p.add_argument("--image", required=True,
                   help="image in the source's space (NIfTI, MGZ, NRRD, MetaImage, DICOM folder)")
    p.add_argument("--out", required=True, help="output file (.nii or .nii.gz)")
    p.add_argument("--labels", nargs="?", const="majority", default=None,
                   choices=("majority", "nearest"),
                   help="the image is a label map: 'majority' of the 8 neighbours by trilinear "
                   "weight (default; ANTs' genericLabel) or 'nearest'; values kept exactly")
    p.add_argument("--reference", default=None,
                   help="image whose grid the output takes (default: the target's)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..apply import apply

    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    out = apply(args.result, args.image, args.out, labels=args.labels, reference=args.reference,
                overwrite=args.overwrite, threads=args.threads)
    kind = f"labels ({args.labels})" if args.labels else "intensities (trilinear)"
    print(f"regrisk apply: {args.image} through {args.result}, {kind} -> {out}")
    return 0
