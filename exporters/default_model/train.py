"""Train the default registration network on SynthMorph-style synthetic pairs.

    python exporters/default_model/train.py --out exporters/default_model/run \
        --iters 3000 [--device cuda] [--resume]

Reproducible: iteration n draws its pair from a generator seeded with (seed, n), the network is
initialised from ``seed``, and a checkpoint (model, optimiser, iteration, log, accumulated wall
time) is written atomically every ``--every`` iterations and at the end, so a stopped run resumes
where it stopped (``--resume``) and draws the same pairs and dropout masks it would have drawn
(the global random state travels in the checkpoint).

Loss (SynthMorph): 1 - soft Dice between the source label map warped by the predicted
displacement and the target label map, plus ``--lam`` times the mean squared spatial gradient of
the displacement (voxels). A CPU budget of a few thousand iterations leaves no room for the long
identity plateau of Dice-only training, so a supervised warm-up term (``--sup`` times the mean
endpoint error against the known synthetic displacement) starts the run and decays linearly to
zero at ``--sup-until`` of the iterations; from there on the loss is Dice + smoothness alone. Records iterations, wall time, hardware and the loss curve
(training.json, loss_curve.png) in the output folder; TRAINING.md summarises a finished run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make `default_model` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from default_model import network, synth  # type: ignore[no-redef]
else:
    from . import network, synth

VAL_SEED = 999_000  # validation pairs: a generator stream disjoint from training's


def pair_seed(seed: int, n: int) -> int:
    return seed * 1_000_003 + n


def hardware(device: torch.device) -> dict:
    info = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__),  # a plain str: checkpoints load with weights_only=True
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def loss_terms(net: torch.nn.Module, pair: synth.Pair, lam: float,
               sup: float = 0.0) -> tuple[torch.Tensor, float, float]:
    """Loss on the half-resolution field (8x cheaper than full resolution on a CPU).

    Half-resolution voxel i sits at full-resolution coordinate 2i + 0.5 (average pooling and
    the network's align_corners=False upsampling agree on this), so a full-resolution
    displacement u is u / 2 half-resolution voxels and its gradient per full voxel is the
    half-grid difference / 2.
    """
    half = net.forward_half(pair.source, pair.target)
    n = int(max(pair.source_labels.max(), pair.target_labels.max())) + 1
    src = F.avg_pool3d(F.one_hot(pair.source_labels, n).permute(0, 4, 1, 2, 3).float(), 2)
    tgt = F.avg_pool3d(F.one_hot(pair.target_labels, n).permute(0, 4, 1, 2, 3).float(), 2)
    moved = synth.warp(src, half / 2.0, padding="border")
    dice = synth.soft_dice_loss(moved, tgt)
    smooth = synth.grad_loss(half) / 4.0
    loss = dice + lam * smooth
    if sup > 0:
        # warm-up only: mean endpoint error against the known field (see --sup)
        gt = F.avg_pool3d(pair.displacement, 2)
        loss = loss + sup * (half - gt).pow(2).sum(1).add(1e-6).sqrt().mean()
    return loss, float(dice.detach()), float(smooth.detach())


def batch_pairs(pairs: list[synth.Pair]) -> synth.Pair:
    if len(pairs) == 1:
        return pairs[0]
    return synth.Pair(*(torch.cat([getattr(p, f) for p in pairs]) for f in
                        ("source", "target", "source_labels", "target_labels", "displacement")))


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def plot_curve(log: list[dict], val: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    it = np.array([r["iter"] for r in log])
    loss = np.array([r["dice_loss"] for r in log])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(it, loss, color="0.75", lw=0.6, label="train 1 - soft Dice (per iteration)")
    w = 50
    if len(loss) > w:
        ax.plot(it[w - 1:], np.convolve(loss, np.ones(w) / w, mode="valid"), color="C0",
                label=f"train, mean of {w}")
    if val:
        ax.plot([v["iter"] for v in val], [1 - v["dice_after"] for v in val], "o-", color="C3",
                label="held-out 1 - Dice (hard labels)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


@torch.no_grad()
def validate(net: torch.nn.Module, gen: synth.Synth, count: int) -> dict:
    was = net.training
    net.eval()
    before, after, epe = [], [], []
    for i in range(count):
        gen.g.manual_seed(VAL_SEED + i)
        p = gen.pair()
        disp = net(p.source, p.target)
        n = int(max(p.source_labels.max(), p.target_labels.max())) + 1
        src = F.one_hot(p.source_labels, n).permute(0, 4, 1, 2, 3).float()
        moved = synth.warp(src, disp, padding="border").argmax(1)
        before.append(synth.hard_dice(p.source_labels.cpu(), p.target_labels.cpu()))
        after.append(synth.hard_dice(moved.cpu(), p.target_labels.cpu()))
        epe.append(float((disp - p.displacement).norm(dim=1).mean()))
    net.train(was)
    k = float(count)
    return {"dice_before": sum(before) / k, "dice_after": sum(after) / k, "epe": sum(epe) / k}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "run")
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-drop", type=float, default=0.75,
                    help="fraction of --iters after which the learning rate drops x0.3")
    ap.add_argument("--lam", type=float, default=1.0, help="smoothness weight")
    ap.add_argument("--sup", type=float, default=0.1,
                    help="weight of a supervised endpoint-error warm-up term (the synthetic "
                    "pairs know their displacement); decays linearly to 0 at --sup-until")
    ap.add_argument("--sup-until", type=float, default=0.5,
                    help="fraction of --iters after which the loss is Dice + smoothness only")
    ap.add_argument("--flow-init", type=float, default=1e-2,
                    help="std of the last layer's initial weights (1e-5 in VoxelMorph; larger "
                    "leaves the identity plateau sooner)")
    ap.add_argument("--refine-steps", type=int, default=20,
                    help="unrolled demons iterations per pyramid level after the U-Net (0: none)")
    ap.add_argument("--batch", type=int, default=2, help="pairs per iteration")
    ap.add_argument("--clip", type=float, default=1.0, help="gradient norm clip")
    ap.add_argument("--every", type=int, default=100, help="checkpoint interval")
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--val-pairs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--crop", type=int, nargs=3, default=[64, 64, 64],
                    help="training grid (random crops of the templates; multiples of 16). "
                    "The network is fully convolutional, so it runs on the 80x96x80 model grid")
    ap.add_argument("--p-template", type=float, default=synth.SynthConfig.p_template,
                    help="share of pairs drawn from the brain templates (needs nilearn and "
                    "Debian's mricron-data); 0: random label maps only")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="stop (with a checkpoint) after this many seconds of this session")
    return ap


@dataclass
class Run:
    """A training run's state: what a checkpoint holds, and how it is written and restored."""

    args: argparse.Namespace
    device: torch.device
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    start: int = 0
    log: list = field(default_factory=list)
    val: list = field(default_factory=list)
    wall: float = 0.0

    @property
    def ckpt_path(self) -> Path:
        return self.args.out / "checkpoint.pt"

    def _common(self) -> dict:
        return {"model": self.net.state_dict(), "log": self.log, "val": self.val,
                "wall_s": self.wall, "config": self.net.config,
                "args": vars(self.args) | {"out": str(self.args.out)},
                "hardware": hardware(self.device)}

    def resume(self) -> None:
        ck = torch.load(self.ckpt_path, map_location=self.device, weights_only=True)
        self.net.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optim"])
        self.start, self.log, self.val, self.wall = ck["iter"], ck["log"], ck["val"], ck["wall_s"]
        if "rng" in ck:  # dropout masks continue the stream they would have drawn
            torch.set_rng_state(ck["rng"])
            if self.device.type == "cuda" and ck.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ck["cuda_rng"], self.device)
        print(f"resumed at iteration {self.start} ({self.wall:.0f} s trained so far)", flush=True)

    def checkpoint(self, it: int) -> None:
        """checkpoint.pt (with the random state), training.json and the loss curve."""
        args, cuda = self.args, self.device.type == "cuda"
        state = self._common() | {
            "optim": self.opt.state_dict(), "iter": it, "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None}
        atomic_save(state, self.ckpt_path)
        summary = {k: state[k] for k in ("iter", "wall_s", "config", "hardware")}
        summary |= {"seed": args.seed, "lr": args.lr, "lam": args.lam, "sup": args.sup,
                    "sup_until": args.sup_until, "crop": list(args.crop), "iters_planned": args.iters,
                    "val": self.val, "last_train": self.log[-50:]}
        tmp = args.out / ".training.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, args.out / "training.json")
        if self.log:
            plot_curve(self.log, self.val, args.out / "loss_curve.png")

    def keep_best(self, it: int) -> None:
        """best.pt: the best held-out checkpoint (validation pairs are never trained on)."""
        atomic_save(self._common() | {"iter": it, "optim": self.opt.state_dict()},
                    self.args.out / "best.pt")


def _generators(args: argparse.Namespace, device: torch.device) -> tuple[synth.Synth, synth.Synth]:
    """(training pairs on random crops, validation pairs on the full model grid)."""
    crop = tuple(args.crop)
    # affine centres jittered so that crops see the full model grid's displacement statistics
    jitter = tuple(max(0.0, (n - m) / 2.0) for n, m in zip(synth.SynthConfig().grid, crop))
    gen = synth.Synth(args.seed, synth.SynthConfig(grid=crop, centre_jitter=jitter,
                                                   p_template=args.p_template), device=device)
    valgen = synth.Synth(VAL_SEED, synth.SynthConfig(p_template=args.p_template), device=device)
    return gen, valgen


def train_step(run: Run, gen: synth.Synth, it: int) -> None:
    """One optimiser step on iteration ``it``'s pairs; appends to the log."""
    args, net, opt = run.args, run.net, run.opt
    lr = args.lr * (0.3 if it >= args.lr_drop * args.iters else 1.0)
    for group in opt.param_groups:
        group["lr"] = lr
    t0 = time.time()
    gen.g.manual_seed(pair_seed(args.seed, it))
    pair = batch_pairs([gen.pair() for _ in range(args.batch)])
    sup = args.sup * max(0.0, 1.0 - it / max(1.0, args.sup_until * args.iters))
    loss, dice, smooth = loss_terms(net, pair, args.lam, sup)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    # batch 1 on random pairs: clip the rare huge gradients (seen to diverge without)
    torch.nn.utils.clip_grad_norm_(net.parameters(), args.clip)
    opt.step()
    run.wall += time.time() - t0
    run.log.append({"iter": it + 1, "dice_loss": dice, "smooth": smooth, "sup": sup,
                    "wall_s": round(run.wall, 2)})
    if (it + 1) % 10 == 0:
        recent = run.log[-10:]
        print(f"it {it + 1} dice_loss {sum(r['dice_loss'] for r in recent) / 10:.4f} "
              f"smooth {smooth:.4f} wall {run.wall:.0f}s lr {lr:g}", flush=True)


def validation_step(run: Run, valgen: synth.Synth, it: int) -> None:
    t0 = time.time()
    v = validate(run.net, valgen, run.args.val_pairs) | {"iter": it}
    run.wall += time.time() - t0
    run.val.append(v)
    print(f"val {v}", flush=True)
    if v["dice_after"] >= max(x["dice_after"] for x in run.val):
        run.keep_best(it)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    net = network.build({"flow_init": args.flow_init, "refine_steps": args.refine_steps}).to(device)
    run = Run(args, device, net, torch.optim.Adam(net.parameters(), lr=args.lr))
    if args.resume and run.ckpt_path.exists():
        run.resume()
    gen, valgen = _generators(args, device)
    net.train()
    t_session = time.time()
    for it in range(run.start, args.iters):
        train_step(run, gen, it)
        if (it + 1) % args.val_every == 0:
            validation_step(run, valgen, it + 1)
        if (it + 1) % args.every == 0:
            run.checkpoint(it + 1)
        if args.time_limit and time.time() - t_session > args.time_limit:
            run.checkpoint(it + 1)
            print(f"time limit reached at iteration {it + 1}", flush=True)
            return 0
    run.checkpoint(args.iters)
    print(f"done: {args.iters} iterations, {run.wall:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
