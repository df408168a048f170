"""``regrisk demo``: the default network on the packaged brain pair, end to end."""

from __future__ import annotations

import argparse

from .options import (add_run_options, add_sample_options, show_progress,
                      tune_allocator)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="run the default network on the packaged brain pair (Colin27 -> MNI152)",
        description="Estimate the uncertainty of the packaged default network on the packaged "
        "real brain pair with the paper preset; write the outputs and overview.png.")
    p.add_argument("--out", default="regrisk-demo",
                   help="output folder (default ./regrisk-demo; must not exist unless --overwrite)")
    add_sample_options(p, samples=50)
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    tune_allocator()
    res = run_demo(args.out, samples=args.samples, seed=args.seed, threads=args.threads,
                   overwrite=args.overwrite, progress=show_progress(args))
    print(f"regrisk demo: Colin27 -> MNI152, default network, paper preset, K = {args.samples}, "
          f"{res.seconds:.1f} s")
    print(f"  sigma in the brain: mean {res.sigma_brain_mean_mm:.2f} mm, "
          f"95th percentile {res.sigma_brain_p95_mm:.2f} mm")
    b, a = res.dice_before, res.dice_after
    print(f"  tissue Dice, Colin27 labels moved onto MNI152's: {b['mean']:.3f} -> {a['mean']:.3f} "
          f"(CSF {b['csf']:.2f} -> {a['csf']:.2f}, GM {b['grey_matter']:.2f} -> "
          f"{a['grey_matter']:.2f}, WM {b['white_matter']:.2f} -> {a['white_matter']:.2f})")
    print(f"  wrote {len(res.files)} files to {res.out.resolve()}:")
    for name in res.files:
        print(f"    {res.out / name}")
    print(f"  overview: {(res.out / 'overview.png').resolve()}")
    return 0
