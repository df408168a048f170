"""regrisk's engine on a GPU against the plain PyTorch implementation of the method, same GPU.

    python benchmarks/gpu_engine.py [--grid 160 192 224] [--samples 50] [--batch 8]
                                    [--repeats 3] [--onnx-dir DIR] [--json out.json]

Network: a VoxelMorph-size 3-D U-Net (VoxelMorph vm2 widths: encoder 16-32-32-32, decoder
32-32-32-32-32-16-16, flow head 3, LeakyReLU 0.2; random weights, flow head init N(0, 1e-5) as
VoxelMorph) defined below in plain PyTorch so the script needs no network access or extra
package. Images: smooth synthetic volumes at 1 mm (the pipeline's cost does not depend on
content). Perturbations: the "paper" preset (translation, scale, shear, B-spline), K samples.

Methods, each timed end to end after a warm-up run (median of --repeats):
- plain PyTorch (the baseline): for each sample, build the pull-back grid (affine map, or the
  cubic B-spline field as a tensor product of basis matrices), warp the source with
  torch grid_sample, run the network at batch 1, compose back with grid_sample (dense) or the
  exact affine formula, keep the field; then torch.stack and torch.var (sigma = sqrt of the
  summed variances, M = I at 1 mm). Plus the unperturbed pass.
- plain PyTorch, batched: the same with --batch samples per network call (to separate the
  effect of batching from the rest).
- regrisk engine, torch backend: Estimator(module, device="cuda", backend="torch"): the module
  runs through DLPack on CuPy's stream, kernels from regrisk._cuda, streaming Welford;
  micro-batch --batch.
- regrisk engine, onnxruntime-cuda / tensorrt: the same network exported to ONNX (needs
  onnxruntime-gpu / tensorrt installed), when available.

The per-stage split of each method comes from a separate run with a device synchronisation
at every stage boundary (the engine's own clock does the same); the totals used for the ratio
are from the runs described above. The engine's maps are checked against the plain version's
(same draws, same network): the maximum difference is printed. Floors from the issue: engine at
least 3x faster than plain PyTorch; everything that is not network inference at most 5% of the
engine's total.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SPEEDUP_FLOOR = 3.0
OVERHEAD_CEILING = 0.05


# -- the network ---------------------------------------------------------------------------------

def vxm_unet() -> Any:
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2))

    class VxmSizeNet(nn.Module):
        """(source, target) -> displacement (B, 3, D, H, W) in voxels, channel c along axis c."""

        enc_nf = (16, 32, 32, 32)
        dec_nf = (32, 32, 32, 32, 32, 16, 16)

        def __init__(self) -> None:
            super().__init__()
            self.down = nn.ModuleList()
            prev, skips = 2, []
            for nf in self.enc_nf:
                self.down.append(block(prev, nf))
                skips.append(nf)
                prev = nf
            self.up = nn.ModuleList()
            for nf in self.dec_nf[:len(self.enc_nf)]:
                self.up.append(block(prev, nf))
                prev = nf + skips.pop()
            self.tail = nn.ModuleList()
            for nf in self.dec_nf[len(self.enc_nf):]:
                self.tail.append(block(prev, nf))
                prev = nf
            self.flow = nn.Conv3d(prev, 3, 3, padding=1)
            nn.init.normal_(self.flow.weight, 0.0, 1e-5)
            nn.init.zeros_(self.flow.bias)
            self.pool = nn.MaxPool3d(2)

        def forward(self, source: Any, target: Any) -> Any:
            x = torch.cat([source, target], dim=1)
            history = []
            for conv in self.down:
                x = conv(x)
                history.append(x)
                x = self.pool(x)
            for conv in self.up:
                x = conv(x)
                x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
                x = torch.cat([x, history.pop()], dim=1)
            for conv in self.tail:
                x = conv(x)
            return self.flow(x)

    torch.manual_seed(0)
    return VxmSizeNet()


def synthetic_pair(grid: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two smooth volumes (sums of anisotropic Gaussians), the second a shifted copy."""
    rng = np.random.default_rng(seed)
    axes = [np.arange(n, dtype=np.float32) for n in grid]

    def volume(shift: np.ndarray) -> np.ndarray:
        out = np.zeros(grid, np.float32)
        for _ in range(12):
            c = rng.uniform(0.2, 0.8, 3) * np.array(grid) + shift
            w = rng.uniform(6, 20, 3)
            g = [np.exp(-0.5 * ((a - ci) / wi) ** 2) for a, ci, wi in zip(axes, c, w)]
            out += rng.uniform(0.3, 1.0) * g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
        return out

    state = rng.bit_generator.state
    S = volume(np.zeros(3))
    rng.bit_generator.state = state
    T = volume(np.array([2.0, -1.5, 1.0]))
    return S, T


# -- the plain PyTorch method ----------------------------------------------------------------------

class PlainTorch:
    """The method written directly in PyTorch: grid_sample, a list of fields, stack, var."""

    def __init__(self, net: Any, grid: tuple[int, int, int], device: Any) -> None:
        import torch

        from regrisk import reference

        self.torch, self.net, self.grid, self.device = torch, net, grid, device
        axes = [torch.arange(n, dtype=torch.float32, device=device) for n in grid]
        self.x = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (3, D, H, W) voxels
        self.scale = torch.tensor([2.0 / max(n - 1, 1) for n in grid], device=device).view(3, 1, 1, 1)
        self._basis: dict[tuple[int, int], Any] = {}
        self._reference = reference

    def _norm_grid(self, p: Any) -> Any:
        """(b, 3, D, H, W) voxel positions -> grid_sample grid (b, D, H, W, 3), xyz, [-1, 1]."""
        g = p * self.scale - 1.0
        return g.flip(1).permute(0, 2, 3, 4, 1)

    def bspline(self, ctrl: np.ndarray) -> Any:
        torch = self.torch
        mats = []
        for n, c in zip(self.grid, ctrl.shape[1:]):
            if (n, c) not in self._basis:
                self._basis[(n, c)] = torch.as_tensor(self._reference.bspline_basis(n, c),
                                                      dtype=torch.float32, device=self.device)
            mats.append(self._basis[(n, c)])
        c = torch.as_tensor(ctrl, dtype=torch.float32, device=self.device)
        wz, wy, wx = mats
        # One axis at a time (a single 4-operand einsum may contract in an order that builds a
        # D*H*W*cD*cH*cW intermediate).
        c = torch.einsum("cijk,xk->cijx", c, wx)
        c = torch.einsum("cijx,yj->ciyx", c, wy)
        return torch.einsum("ciyx,zi->czyx", c, wz).contiguous()

    def run(self, S: Any, T: Any, draws: Any, batch: int, clock: dict[str, float] | None) -> dict[str, Any]:
        torch = self.torch
        F = torch.nn.functional

        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

        def stage(name: str, t0: float) -> float:
            if clock is not None:
                sync()
                t1 = time.perf_counter()
                clock[name] = clock.get(name, 0.0) + t1 - t0
                return t1
            return t0

        t = time.perf_counter()
        with torch.inference_mode():
            u0 = self.net(S, T)
            t = stage("inference", t)
            K = len(draws)
            fields: list[Any] = []
            for start in range(0, K, batch):
                ks = list(range(start, min(K, start + batch)))
                pos, dense = [], []
                for k in ks:
                    if draws.control[k] is not None:
                        d = self.bspline(draws.control[k])
                        dense.append(d)
                        pos.append(self.x + d)
                    else:
                        A = torch.as_tensor(draws.affine[k], device=self.device)
                        pos.append(torch.einsum("ij,jzyx->izyx", A[:, :3], self.x) + A[:, 3].view(3, 1, 1, 1))
                        dense.append(None)
                grid = self._norm_grid(torch.stack(pos))
                src = F.grid_sample(S.expand(len(ks), -1, -1, -1, -1), grid, mode="bilinear",
                                    padding_mode="zeros", align_corners=True)
                t = stage("perturb", t)
                u = self.net(src, T.expand(len(ks), -1, -1, -1, -1))
                t = stage("inference", t)
                for j, k in enumerate(ks):
                    uj = u[j]
                    if dense[j] is not None:
                        g = self._norm_grid((self.x + uj)[None])
                        back = F.grid_sample(dense[j][None], g, mode="bilinear",
                                             padding_mode="border", align_corners=True)[0]
                        fields.append(uj + back)
                    else:
                        A = torch.as_tensor(draws.affine[k], device=self.device)
                        p = self.x + uj
                        fields.append(torch.einsum("ij,jzyx->izyx", A[:, :3], p)
                                      + A[:, 3].view(3, 1, 1, 1) - self.x)
                t = stage("compose", t)
            stacked = torch.stack(fields)                       # (K, 3, D, H, W)
            var = torch.var(stacked, dim=0, unbiased=True)
            sigma = torch.sqrt(var.sum(0))
            mean = stacked.mean(0)
            t = stage("stack+var", t)
        sync()
        return {"sigma": sigma, "mean": mean, "u0": u0[0]}


# -- timing helpers ----------------------------------------------------------------------------------

def timed(fn: Any, repeats: int, sync: Any) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def export_onnx(net: Any, grid: tuple[int, int, int], out_dir: Path) -> Path | None:
    """The network as ONNX with a regrisk card (dynamic batch), for the ORT / TensorRT rows."""
    import torch

    from regrisk.card import ModelCard, write_card

    path = out_dir / "vxm_size.onnx"
    if path.exists():
        return path
    try:
        ex = (torch.zeros(2, 1, *grid), torch.zeros(2, 1, *grid))
        batch = torch.export.Dim("batch", min=1, max=64)
        prog = torch.onnx.export(net.cpu().eval(), ex, None, dynamo=True, input_names=["source", "target"],
                                 output_names=["displacement"],
                                 dynamic_shapes=({0: batch}, {0: batch}))
        prog.save(str(path))
        write_card(path, ModelCard(name="vxm-size", grid=grid, batch="dynamic"))
        return path
    except Exception as exc:  # the ONNX rows are optional; say why they are missing
        print(f"  (ONNX export failed, ORT/TensorRT rows skipped: {type(exc).__name__}: {exc})")
        return None


def cpu_check(grid: tuple[int, int, int] = (32, 32, 48), K: int = 8) -> float:
    """Plain PyTorch and the engine on the CPU, same draws and network: max |sigma difference|
    in mm. Shows that the baseline computes the same method (runs without a GPU)."""
    import torch

    from regrisk import Estimator, perturbations

    net = vxm_unet().eval()
    with torch.no_grad():  # a visible flow, so that sigma is not ~0 everywhere
        net.flow.weight.normal_(0.0, 0.05)
    S_np, T_np = synthetic_pair(grid)
    draws = perturbations.parse("paper").draw(K, grid, np.eye(3), np.random.default_rng(0)).sample_order()
    S, T = torch.as_tensor(S_np)[None, None], torch.as_tensor(T_np)[None, None]
    ref = PlainTorch(net, grid, torch.device("cpu")).run(S, T, draws, 4, None)
    res = Estimator(net, device="cpu", batch=4, backend="torch").estimate(
        (S_np, np.eye(4)), (T_np, np.eye(4)), samples=K, perturbation="paper", seed=0)
    sigma = ref["sigma"].numpy()
    diff = float(np.abs(res.grid_uncertainty - sigma).max())
    print(f"cpu check {'x'.join(map(str, grid))}, K={K}: sigma plain mean {sigma.mean():.4f} mm, "
          f"engine mean {res.grid_uncertainty.mean():.4f} mm, max |diff| {diff:.2e} mm")
    return diff


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, nargs=3, default=(160, 192, 224))
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--onnx-dir", default=None, help="where to export the ONNX graph (default: skip ORT/TRT)")
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--cpu-check", action="store_true",
                    help="only check on the CPU (small grid) that the plain baseline and the engine agree")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cpu: a dry run of this script's whole flow (use a small --grid)")
    args = ap.parse_args(argv)
    if args.cpu_check:
        return 0 if cpu_check() < 1e-3 else 1

    from regrisk import device

    import torch

    on_gpu = args.device == "cuda"
    if on_gpu:
        ok, why = device.cuda_ready()
        if not ok:
            print(f"gpu_engine: cannot run: {why}", file=sys.stderr)
            return 2
        if not torch.cuda.is_available():
            print("gpu_engine: cannot run: torch has no CUDA (the plain baseline needs it)", file=sys.stderr)
            return 2
    from regrisk import Estimator, perturbations

    grid = tuple(args.grid)
    K, B = args.samples, args.batch
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        name = torch.cuda.get_device_name(dev)
    else:
        import platform

        name = f"CPU ({platform.processor() or platform.machine()}, dry run)"
    net = vxm_unet().to(dev).eval()
    S_np, T_np = synthetic_pair(grid)
    aff = np.eye(4)
    S = torch.as_tensor(S_np, device=dev)[None, None]
    T = torch.as_tensor(T_np, device=dev)[None, None]
    seed = 0
    draws = perturbations.parse("paper").draw(K, grid, np.eye(3), np.random.default_rng(seed)).sample_order()
    print(f"device: {name}; grid {'x'.join(map(str, grid))}; K={K}; micro-batch {B}; "
          f"torch {torch.__version__}; network params "
          f"{sum(p.numel() for p in net.parameters())}")

    plain = PlainTorch(net, grid, dev)
    rows: list[dict[str, Any]] = []

    def add(label: str, total: float, split: dict[str, float], extra: dict[str, Any] | None = None) -> None:
        # Share of the split run's wall time outside network inference; the engine's "total"
        # also counts time between its stages, so untimed gaps count as overhead.
        split = dict(split)
        split_total = split.pop("total", None) or sum(split.values())
        rows.append({"method": label, "total_s": total, "split_s": split,
                     "non_inference_share": 1.0 - split.get("inference", 0.0) / split_total,
                     **(extra or {})})

    # Plain PyTorch, batch 1 and batched.
    ref = None
    for label, b in (("plain PyTorch (batch 1)", 1), (f"plain PyTorch (batch {B})", B)):
        plain.run(S, T, draws, b, None)  # warm-up (cuDNN autotuning)
        total, out = timed(lambda: plain.run(S, T, draws, b, None), args.repeats, sync)
        split: dict[str, float] = {}
        plain.run(S, T, draws, b, split)
        add(label, total, split)
        ref = ref or out
        del out
        if on_gpu:
            torch.cuda.empty_cache()

    # The engine, torch backend (the module through DLPack on CuPy's stream).
    est = Estimator(net, device=args.device, batch=B, backend="torch")
    kw = dict(samples=K, perturbation="paper", seed=seed)
    est.estimate((S_np, aff), (T_np, aff), **kw)  # warm-up
    total, res = timed(lambda: est.estimate((S_np, aff), (T_np, aff), **kw), args.repeats, sync)
    diff = float(np.abs(res.grid_uncertainty - ref["sigma"].cpu().numpy()).max())
    add("regrisk engine (torch backend)", total, res.timings,
        {"max_abs_sigma_diff_vs_plain_mm": diff})

    # The engine on ONNX Runtime CUDA / TensorRT, when installed.
    if args.onnx_dir:
        backends = device.cuda_backends() if on_gpu else {"onnxruntime": None}
        path = export_onnx(vxm_unet().eval(), grid, Path(args.onnx_dir))
        for backend in (("onnxruntime-cuda", "tensorrt") if on_gpu else ("onnxruntime",)):
            if path is None or backends.get(backend) is not None:
                print(f"  ({backend} row skipped: {backends.get(backend) or 'no ONNX graph'})")
                continue
            try:
                est_b = Estimator(str(path), device=args.device, batch=B, backend=backend,
                                  backend_options={"max_batch": B, "opt_batch": B} if backend == "tensorrt" else None)
                est_b.estimate((S_np, aff), (T_np, aff), **kw)
                total, res_b = timed(lambda: est_b.estimate((S_np, aff), (T_np, aff), **kw),
                                     args.repeats, sync)
                diff = float(np.abs(res_b.grid_uncertainty - ref["sigma"].cpu().numpy()).max())
                add(f"regrisk engine ({backend})", total, res_b.timings,
                    {"max_abs_sigma_diff_vs_plain_mm": diff})
                est_b.close()
            except Exception as exc:
                print(f"  ({backend} row failed: {type(exc).__name__}: {exc})")

    base = rows[0]["total_s"]
    print(f"\n{'method':<34} {'total s':>8} {'vs plain':>9} {'non-inference':>14}  per-stage split (s)")
    for r in rows:
        r["speedup_vs_plain"] = base / r["total_s"]
        split = ", ".join(f"{k} {v:.3f}" for k, v in r["split_s"].items() if v >= 0.0005)
        print(f"{r['method']:<34} {r['total_s']:8.3f} {r['speedup_vs_plain']:8.2f}x "
              f"{r['non_inference_share']:13.1%}  {split}")
    for r in rows:
        if "max_abs_sigma_diff_vs_plain_mm" in r:
            print(f"{r['method']}: max |sigma - sigma_plain| = {r['max_abs_sigma_diff_vs_plain_mm']:.2e} mm")
    engine_rows = [r for r in rows if r["method"].startswith("regrisk")]
    best = min(engine_rows, key=lambda r: r["total_s"])
    print(f"\nfloors: best engine ({best['method']}) {best['speedup_vs_plain']:.2f}x vs plain batch-1 "
          f"(need >= {SPEEDUP_FLOOR:.0f}x: {'met' if best['speedup_vs_plain'] >= SPEEDUP_FLOOR else 'NOT met'}); "
          f"non-inference {best['non_inference_share']:.1%} "
          f"(need <= {OVERHEAD_CEILING:.0%}: {'met' if best['non_inference_share'] <= OVERHEAD_CEILING else 'NOT met'})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": name, "grid": list(grid), "samples": K, "batch": B, "rows": rows},
                      fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
