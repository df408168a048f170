"""Quality of the shipped default model, measured on the exported ONNX graph.

    PYTHONPATH=python python exporters/default_model/evaluate.py [--pairs 20] [--samples 50]
        [--json exporters/default_model/evaluation.json]

1. Held-out synthetic pairs on the full 80x96x80 model grid (a generator seed never used in
   training or validation): mean label Dice before / after registration (hard labels, mean over
   the non-background labels present in both maps; the source labels are warped by nearest
   neighbour through the prediction) and the mean endpoint error against the known
   displacement, in voxels and mm (2 mm voxels), over the whole grid.
2. The real sample pair (Colin27 -> MNI152, python/regrisk/data): tissue Dice (CSF, GM, WM)
   before / after.
3. Uncertainty against true error on the synthetic pairs: ``regrisk.Estimator`` with the paper
   preset and K samples gives sigma (mm) per voxel; the true error is |u_gt - u_pred| (mm) of
   the unperturbed prediction; Spearman rho (and Pearson r) per pair over the voxels whose
   target label is not background, then the mean over pairs. With ``--mc-dropout`` the same for
   the stochastic graph with perturbation "none" (MC dropout alone).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from default_model import templates  # type: ignore[no-redef]
    from default_model import network  # type: ignore[no-redef]
    from default_model.synth import Synth, hard_dice  # type: ignore[no-redef]
else:
    from . import network, templates
    from .synth import Synth, hard_dice

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODELS = ROOT / "python" / "regrisk" / "models"
DATA = ROOT / "python" / "regrisk" / "data"
EVAL_SEED = 777_000  # disjoint from training (seed 0 -> 0..1e6) and validation (999_000+)


def warp_labels(labels: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """Nearest-neighbour pull-back of an integer map by a voxel displacement (3, D, H, W)."""
    from scipy.ndimage import map_coordinates

    pos = np.indices(labels.shape, dtype=np.float32) + disp
    return map_coordinates(labels, pos.reshape(3, -1), order=0, mode="nearest").reshape(labels.shape)


def minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return ((x - lo) / max(hi - lo, 1e-8)).astype(np.float32)


def session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def synthetic_pairs(n: int, seed: int = EVAL_SEED):
    import torch

    torch.set_num_threads(2)
    gen = Synth(seed)
    for i in range(n):
        gen.g.manual_seed(seed + i)
        p = gen.pair()
        yield (p.source[0, 0].numpy(), p.target[0, 0].numpy(), p.source_labels[0].numpy(),
               p.target_labels[0].numpy(), p.displacement[0].numpy())


def evaluate_synthetic(pairs, sess, estimator=None, samples: int = 50, mc=None,
                       uncertainty_pairs: int = 1 << 30) -> dict:
    from scipy.stats import pearsonr, spearmanr

    rows = []
    aff = templates.grid_affine()
    for i, (s, t, ls, lt, u_gt) in enumerate(pairs):
        u = sess.run(None, {"source": s[None, None], "target": t[None, None]})[0][0]
        moved = warp_labels(ls, u)
        row = {"pair": i, "dice_before": hard_dice(ls, lt), "dice_after": hard_dice(moved, lt),
               "epe_vox": float(np.linalg.norm(u - u_gt, axis=0).mean()),
               "gt_mean_vox": float(np.linalg.norm(u_gt, axis=0).mean())}
        roi = lt != 0
        for tag, est, pert in (("paper", estimator, "paper"), ("mc_dropout", mc, "none")):
            if est is None or i >= uncertainty_pairs:
                continue
            t0 = time.perf_counter()
            res = est.estimate((s, aff), (t, aff), samples=samples, perturbation=pert, seed=i)
            sec = time.perf_counter() - t0
            err = np.linalg.norm(res.grid_displacement - u_gt, axis=0) * templates.SPACING
            sig = res.grid_uncertainty
            row[f"{tag}_spearman"] = float(spearmanr(sig[roi], err[roi])[0])
            row[f"{tag}_pearson"] = float(pearsonr(sig[roi], err[roi])[0])
            row[f"{tag}_sigma_mean_mm"] = float(sig[roi].mean())
            row[f"{tag}_seconds"] = sec
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
              flush=True)
    keys = [k for k in rows[0] if k != "pair"]
    summary = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    summary |= {f"{k}_sd": float(np.std([r[k] for r in rows if k in r])) for k in keys}
    summary["uncertainty_pairs"] = min(len(rows), uncertainty_pairs) if estimator else 0
    summary["epe_mm"] = summary["epe_vox"] * templates.SPACING
    summary["pairs"] = len(rows)
    return {"summary": summary, "per_pair": rows}


# Ablation variants: (trained weights?, U-Net output zeroed?, demons removed?, normalisation
# removed?). "fixed_demons" is the architecture's arithmetic alone, with nothing learned (steps at
# their initial value 1, U-Net zeroed): what training adds is measured against it.
ABLATIONS = {
    "unet_only": (True, False, True, False),
    "demons_only": (True, True, False, False),
    "demons_only_no_normalisation": (True, True, False, True),
    "fixed_demons": (False, True, False, False),
}


def ablation(checkpoint: Path, n: int, seed: int = EVAL_SEED) -> dict:
    """Dice / EPE on the same held-out pairs for parts of the model (PyTorch, eval mode): see
    ``ABLATIONS``."""
    import torch

    ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    out = {}
    for tag, (trained, zero_unet, no_demons, no_norm) in ABLATIONS.items():
        torch.manual_seed(0)
        net = network.build(ck["config"])
        if trained:
            net.load_state_dict(ck["model"])
        net.eval()
        if zero_unet:
            torch.nn.init.zeros_(net.flow.weight)
            torch.nn.init.zeros_(net.flow.bias)
        if no_demons:
            net.refine = None
        if no_norm:
            net.normalize = torch.nn.Identity()
        before, after, epe = [], [], []
        for s, t, ls, lt, u_gt in synthetic_pairs(n, seed):
            with torch.no_grad():
                u = net(torch.from_numpy(s)[None, None], torch.from_numpy(t)[None, None])[0].numpy()
            before.append(hard_dice(ls, lt))
            after.append(hard_dice(warp_labels(ls, u), lt))
            epe.append(float(np.linalg.norm(u - u_gt, axis=0).mean()))
        out[tag] = {"dice_before": float(np.mean(before)), "dice_after": float(np.mean(after)),
                    "epe_vox": float(np.mean(epe))}
        print(tag, json.dumps(out[tag]), flush=True)
    return out


def evaluate_real(sess) -> dict:
    import nibabel as nib

    load = lambda name: np.asarray(nib.load(str(DATA / name)).dataobj)  # noqa: E731
    s, t = minmax(load("colin27_t1.nii.gz").astype(np.float32)), minmax(load("mni152_t1.nii.gz").astype(np.float32))
    ls, lt = load("colin27_labels.nii.gz"), load("mni152_labels.nii.gz")
    u = sess.run(None, {"source": s[None, None], "target": t[None, None]})[0][0]
    moved = warp_labels(ls, u)
    out = {"dice_before": hard_dice(ls, lt, [1, 2, 3]), "dice_after": hard_dice(moved, lt, [1, 2, 3])}
    for lab, name in ((1, "csf"), (2, "gm"), (3, "wm")):
        out[f"{name}_before"] = hard_dice(ls, lt, [lab])
        out[f"{name}_after"] = hard_dice(moved, lt, [lab])
    out["displacement_mean_mm"] = float(np.linalg.norm(u, axis=0)[lt > 0].mean() * templates.SPACING)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=MODELS / "default.onnx")
    ap.add_argument("--stochastic-model", type=Path, default=MODELS / "default_stochastic.onnx")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=EVAL_SEED,
                    help="first generator seed of the held-out pairs (training uses 0..1e6 "
                    "step 1 per iteration from 0, validation 999000+)")
    ap.add_argument("--samples", type=int, default=50, help="K for the uncertainty (0: skip)")
    ap.add_argument("--mc-dropout", action="store_true")
    ap.add_argument("--uncertainty-pairs", type=int, default=10,
                    help="how many of the pairs also get the (slower) uncertainty estimate")
    ap.add_argument("--json", type=Path, default=HERE / "evaluation.json")
    ap.add_argument("--ablation", type=Path, default=None,
                    help="training checkpoint: also score the parts of the model (ABLATIONS)")
    args = ap.parse_args(argv)

    sess = session(args.model)
    t0 = time.time()
    real = evaluate_real(sess)
    print("real pair", json.dumps(real), flush=True)
    est = mc = None
    if args.samples > 0:
        from regrisk import Estimator

        est = Estimator(str(args.model), threads=2)
        if args.mc_dropout:
            mc = Estimator(str(args.stochastic_model), threads=2)
    synth = evaluate_synthetic(synthetic_pairs(args.pairs, args.seed), sess, est, args.samples, mc,
                               args.uncertainty_pairs)
    parts = ablation(args.ablation, args.pairs, args.seed) if args.ablation else None
    report = {"ablation": parts, "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
              "eval_seed": args.seed, "samples": args.samples, "real_pair": real,
              "synthetic": synth["summary"], "per_pair": synth["per_pair"],
              "seconds": round(time.time() - t0, 1)}
    args.json.write_text(json.dumps(report, indent=1))
    s = synth["summary"]
    print(f"synthetic ({s['pairs']} pairs, uncertainty on {s['uncertainty_pairs']}): Dice {s['dice_before']:.3f} -> {s['dice_after']:.3f}, "
          f"EPE {s['epe_vox']:.2f} vox ({s['epe_mm']:.2f} mm), ground truth mean "
          f"{s['gt_mean_vox']:.2f} vox")
    if "paper_spearman" in s:
        print(f"uncertainty vs error (paper preset, K={args.samples}): Spearman "
              f"{s['paper_spearman']:.3f} +- {s['paper_spearman_sd']:.3f}, Pearson {s['paper_pearson']:.3f}")
    if "mc_dropout_spearman" in s:
        print(f"MC dropout (K={args.samples}): Spearman {s['mc_dropout_spearman']:.3f}, "
              f"Pearson {s['mc_dropout_pearson']:.3f}")
    print(f"real pair tissue Dice {real['dice_before']:.3f} -> {real['dice_after']:.3f}")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
