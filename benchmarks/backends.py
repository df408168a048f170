"""CPU backends on the networks regrisk ships or exports, beside the plain research script.

For each case (network and grid) and each installed contender (ONNX Runtime; OpenVINO f32,
bf16, and for graphs with 5-D GridSample also rewritten as gathers instead of staged; torch
eager) it prints: the time to create the estimator (graph load and compilation for batch 1),
the best time of one network pass at batch 1, and the best end-to-end ``estimate`` time for K
samples (``paper`` preset), with the research script's time (benchmarks/engine.py's
``baseline``: torch, one sample at a time) over each contender's as a ratio. Contenders
alternate within one process, ``--repeat`` rounds (their order reversed every other round),
best and median of each kept (on a noisy host, ask for 4+ rounds and read the medians); the load average is
printed at the start and the end (figures from a loaded machine are not figures).

Cases (random weights except the packaged default model; timings do not depend on weights):
- ``unet``: the benchmark U-Net of benchmarks/engine.py at 128^3;
- ``default``: the packaged default model at its 80x96x80 grid (torch eager rebuilt from the
  ONNX initializers, exporters/default_model/from_onnx.py);
- ``voxelmorph``: VoxelMorph VxmPairwise at 160x192x224, monolithic (5-D GridSample in the
  graph) and ``voxelmorph-staged`` (velocity graph, integration by regrisk's kernels);
- ``unigradicon``: uniGradICON at 175^3 (exported graph: monolithic in ONNX Runtime and torch,
  staged in OpenVINO).

``--equal-precision`` adds, for each contender, the same estimator with ``samples="auto"``
stopping at the split-half precision of the paper's estimator at K (the research script's map,
same draws): the time to a map as precise as the script's.

Run on the idle machine (one case at a time keeps memory low; each case exports its graph):
    python benchmarks/backends.py --case unet --samples 50 [--equal-precision]
    python benchmarks/backends.py --case default --samples 50 [--equal-precision]
    python benchmarks/backends.py --case voxelmorph --case voxelmorph-staged --samples 50
    python benchmarks/backends.py --case unigradicon --samples 50
Check that it runs (shrunk grids; the default model keeps its grid):
    python benchmarks/backends.py --tiny --samples 3 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine as bench_engine  # noqa: E402  (benchmarks/engine.py: U-Net, research script)

CASES = ("unet", "default", "voxelmorph", "voxelmorph-staged", "unigradicon")


@dataclass
class Case:
    name: str
    path: str
    grid: tuple[int, int, int]
    module: Any  # the eager torch module with the graph's output, or None
    script: Any  # the same network returning voxel displacements, for the research script
    spacing: tuple[float, float, float] = (1.0, 1.2, 1.5)


def _export_case(name: str, tmp: str, tiny: bool) -> Case:
    import torch

    path = os.path.join(tmp, f"{name}.onnx")
    if name == "unet":
        size = 32 if tiny else 128
        net = bench_engine.build_net(torch)
        bench_engine.export(torch, net, size, path)
        return Case(name, path, (size,) * 3, net, net)
    if name == "default":
        from regrisk.exporters.default_model.from_onnx import module_from_onnx
        from regrisk.model_loading import packaged_model_path

        path = str(packaged_model_path("default"))
        net = module_from_onnx(path)
        return Case(name, path, (80, 96, 80), net, net, (2.0, 2.0, 2.0))
    if name.startswith("voxelmorph"):
        from regrisk.exporters import voxelmorph as vxm

        grid = (32, 32, 32) if tiny else vxm.GRID
        form = "staged" if name.endswith("staged") else "monolithic"
        _in_child(vxm.export_voxelmorph, path, random_init=True, grid=grid, form=form,
                  verbose=False, batch_sizes=(1,))  # a batch-2 check doubles its ~10 GB
        torch.manual_seed(0)
        net = vxm.build_network()
        vxm.randomize(net, 0)
        whole = vxm._wrapper_class()(net, "monolithic").eval()
        return Case(name, path, tuple(grid), vxm._wrapper_class()(net, form).eval(), whole)
    from regrisk.exporters import unigradicon as ugi

    grid = (65, 65, 65) if tiny else ugi.GRID
    _in_child(ugi.export_unigradicon, path, random_init=True, grid=grid, verbose=False,
              batch_sizes=(1,))
    torch.manual_seed(0)
    net = ugi.build_network(grid)
    ugi.randomize(net, 0)
    module = ugi._wrapper_class()(net).eval()
    return Case(name, path, tuple(grid), module, _UnitMapToVoxels(module, grid))


def _in_child(export: Any, *args: Any, **kwargs: Any) -> None:
    """An export in a child process: its parity check holds the network's activations in two
    frameworks (10-18 GB at these grids), which the benchmark's process would keep."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=export, args=args, kwargs=kwargs)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"export failed in its child process (exit code {child.exitcode})")


class _UnitMapToVoxels:
    """uniGradICON's map in [0, 1] units as a voxel displacement (the research script's and the
    engine's canonical form): u = phi * (n - 1) - x."""

    def __init__(self, module: Any, grid: tuple[int, int, int]) -> None:
        import torch

        self.module = module
        n = torch.tensor(grid, dtype=torch.float32).view(1, 3, 1, 1, 1)
        self.scale = n - 1
        self.ident = torch.stack(torch.meshgrid(*[torch.arange(k, dtype=torch.float32)
                                                  for k in grid], indexing="ij"))[None]

    def __call__(self, source: Any, target: Any) -> Any:
        return self.module(source, target) * self.scale - self.ident


def make_pair(grid: tuple[int, int, int], spacing: tuple[float, float, float], seed: int = 0):
    """Two smooth random volumes (a shifted copy) with a diagonal affine."""
    from scipy.ndimage import gaussian_filter, shift

    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.random(grid).astype(np.float32), 4)
    base = (base - base.min()) / (base.max() - base.min())
    moved = shift(base, (1.5, -2.0, 1.0), order=1, mode="nearest").astype(np.float32)
    aff = np.diag([*spacing, 1.0])
    return (moved, aff), (base, aff)


def contenders(case: Case) -> list[tuple[str, str, dict]]:
    """(label, backend name, backend options) for every installed backend of this case."""
    import onnx

    from regrisk.backends import unavailable
    from regrisk.backends.gridsample import five_d_gridsamples

    out = [("onnxruntime", "onnxruntime", {})]
    if unavailable("openvino") is None:
        import openvino as ov

        warps = bool(five_d_gridsamples(onnx.load(case.path, load_external_data=False)))
        mode = " staged" if warps else ""
        bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        out.append(("openvino auto (the default)", "openvino", {}))
        out.append(("openvino auto, one lane (the default before lanes)", "openvino", {"lanes": 1}))
        out.append(("openvino auto, upsampling not folded (before upsample_fold)", "openvino",
                    {"fold_upsampling": False}))
        if not warps:  # a whole graph: native=False only keeps its last layer in OpenVINO
            out.append(("openvino auto, last layer in OpenVINO (before native_head)", "openvino",
                        {"native": False}))
        out.append((f"openvino f32{mode}", "openvino", {"precision": "f32"}))
        if warps:  # staged as before the native parts (backends.native_*)
            out.append(("openvino f32 staged, no native parts", "openvino",
                        {"precision": "f32", "native": False}))
        # a CPU without bf16 runs f32 whatever the hint says: no contender of its own there
        if bf16:
            # forced: bf16 for every graph (still only its dense-convolution stages)
            out.append((f"openvino bf16{mode} (forced)", "openvino", {"precision": "bf16"}))
        if warps:
            out.append(("openvino f32 rewrite", "openvino", {"gridsample": "rewrite", "precision": "f32"}))
    if case.module is not None:
        out.append(("torch eager", "torch", {}))
    return out


def _estimator(case: Case, backend: str, options: dict, threads: int,
               budget_gib: float | None = None) -> Any:
    from regrisk import Estimator
    from regrisk.card import read_card

    budget = None if budget_gib is None else int(budget_gib * 2**30)
    if backend == "torch":
        est = Estimator(case.module, card=read_card(case.path), backend="torch",
                        threads=threads, backend_options={"device": "cpu"}, memory_budget=budget)
        est.runner.bind(case.grid)  # a module's backend is made at its first target
        return est
    return Estimator(case.path, backend=backend, backend_options=options, threads=threads,
                     memory_budget=budget)


def _per_pass(est: Any, grid: tuple[int, int, int], passes: int) -> float:
    rng = np.random.default_rng(1)
    feeds = est.runner.feeds(rng.random((1, 1, *grid), dtype=np.float32),
                             rng.random((1, 1, *grid), dtype=np.float32), np)
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        est.runner.backend.run(feeds)
        best = min(best, time.perf_counter() - t0)
    return best


def run_case(case: Case, args: argparse.Namespace, threads: int) -> list[dict]:
    """Create every contender, time one pass each, then alternate the end-to-end runs."""
    import torch

    source, target = make_pair(case.grid, case.spacing)
    rows = []
    for label, backend, options in contenders(case):
        if args.only and not any(text in label for text in args.only):
            continue
        t0 = time.perf_counter()
        try:
            est = _estimator(case, backend, options, threads, args.memory_budget)
        except Exception as exc:  # a contender that cannot run here is reported, not fatal
            rows.append({"label": label, "error": str(exc).splitlines()[0][:120]})
            continue
        row = {"label": label, "est": est, "create": time.perf_counter() - t0,
               "chosen": est.runner.describe().get("backend"), "wall": float("inf")}
        row["pass"] = _per_pass(est, case.grid, args.passes)
        rows.append(row)
    if args.equal_precision:
        rows += _equal_precision_rows(rows, source, target, args)
    script = {"label": "research script (torch)", "wall": float("inf")}
    draws = _draws(args, case, source)
    S, T = source[0], target[0]
    for round_ in range(args.repeat):
        # order reversed every other round: a drifting host favours neither end of the list
        for row in (rows if round_ % 2 == 0 else rows[::-1]):
            if "est" in row:
                t0 = time.perf_counter()
                res = row["est"].estimate(source, target, **{
                    "samples": args.samples, "perturbation": args.perturbation, "seed": 0,
                    **row.get("kw", {})})
                row["k"] = res.summary["sampling"]["samples"]
                row.setdefault("walls", []).append(time.perf_counter() - t0)
                row["wall"] = min(row["wall"], row["walls"][-1])
        if case.script is not None and not args.skip_script:
            t0 = time.perf_counter()
            bench_engine.baseline(torch, case.script, S, T, draws, np.asarray(case.spacing))
            script.setdefault("walls", []).append(time.perf_counter() - t0)
            script["wall"] = min(script["wall"], script["walls"][-1])
    for row in rows:
        if "est" in row and not row.get("shared"):
            row.pop("est").close()
    return rows + ([script] if np.isfinite(script["wall"]) else [])


def _equal_precision_rows(rows: list[dict], source: Any, target: Any,
                          args: argparse.Namespace) -> list[dict]:
    """Each estimator again with ``samples="auto"`` stopping at the split-half precision of the
    paper's estimator at K (the research script's map: same draws, plain Welford), measured
    here with ``variance_reduction="none"``: the time to a map as precise as the script's."""
    out = []
    for row in [r for r in rows if "est" in r]:
        plain = row["est"].estimate(source, target, samples=args.samples,
                                    perturbation=args.perturbation, seed=0,
                                    variance_reduction="none")
        p = plain.summary["sampling"]["precision"]["precision"]
        out.append({**row, "label": f"{row['label']}, samples auto to the script's precision "
                                    f"{p:.3f}", "shared": True, "wall": float("inf"),
                    "kw": {"samples": "auto", "precision": p, "max_samples": 4 * args.samples}})
    return out


def _draws(args: argparse.Namespace, case: Case, source: Any) -> Any:
    from regrisk import perturbations

    return perturbations.parse(args.perturbation).draw(
        args.samples, case.grid, source[1][:3, :3], np.random.default_rng(0)).sample_order()


def print_table(case: Case, rows: list[dict], args: argparse.Namespace) -> None:
    script = next((r["wall"] for r in rows if r["label"].startswith("research")), None)
    print(f"\n## {case.name} at {'x'.join(map(str, case.grid))}, K = {args.samples}\n")
    print("| contender | create (s) | one pass (s) | samples | end to end, best (s) | median (s) "
          "| script / contender (best) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['label']} | cannot run: {r['error']} | | | | | |")
            continue
        ratio = f"{script / r['wall']:.2f}x" if script else "n/a"
        create = f"{r['create']:.2f}" if "create" in r else ""
        one = f"{r['pass']:.3f}" if "pass" in r else ""
        median = f"{float(np.median(r['walls'])):.2f}" if r.get("walls") else ""
        k = r.get("k", args.samples)
        print(f"| {r['label']} | {create} | {one} | {k} | {r['wall']:.2f} | {median} | {ratio} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=CASES,
                    help="run only this case (repeatable; default: all)")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--perturbation", default="paper")
    ap.add_argument("--repeat", type=int, default=2, help="alternating rounds; best kept")
    ap.add_argument("--passes", type=int, default=3, help="timed single passes; best kept")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tiny", action="store_true", help="shrunk grids: checks the script runs")
    ap.add_argument("--skip-script", action="store_true", help="no research-script baseline")
    ap.add_argument("--memory-budget", type=float, default=None, metavar="GIB",
                    help="each estimator's memory budget (default: the engine's, half of what is "
                         "available when it is made, which the large exports leave short)")
    ap.add_argument("--equal-precision", action="store_true",
                    help="also each contender with samples='auto', stopping at the precision "
                         "of the paper's estimator at K: the time to a map as precise as the "
                         "research script's")
    ap.add_argument("--only", action="append", default=[], metavar="TEXT",
                    help="only contenders whose label contains TEXT (repeatable): the large "
                         "cases take minutes per K = 50 contender")
    args = ap.parse_args()

    import torch

    from regrisk.backends.onnxruntime import cpu_cores
    from regrisk.memory import keep_freed_memory

    threads = args.threads or cpu_cores()
    torch.set_num_threads(threads)
    keep_freed_memory()  # the CLI's allocator opt-in, so the figures are the CLI's
    print(f"# backends benchmark: threads={threads}, perturbation={args.perturbation}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.platform()}")
    print(f"# load average at start: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    steal = bench_engine.CpuSteal()  # read again by .percent() at the end
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.case or CASES:
            case = _export_case(name, tmp, args.tiny)
            print_table(case, run_case(case, args, threads), args)
    print(f"\n# load average at the end: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"CPU steal during the run {steal.percent():.1f}%")


if __name__ == "__main__":
    main()
