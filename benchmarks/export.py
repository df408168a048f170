"""PyTorch eager vs ONNX Runtime (CPU) for the exported networks, same process, same inputs.

Per model and grid: the PyTorch module the exporter wraps (eager, no_grad) is the baseline; the
exported ONNX graph runs in an ONNX Runtime CPU session with the same thread count. VoxelMorph
also runs staged: the velocity graph in ONNX Runtime plus scaling and squaring by regrisk's
compose kernel (zeros outside the grid, as VoxelMorph). Random-init weights (timing does not
depend on the values). ``--profile`` adds ONNX Runtime's per-operator totals
(SessionOptions.enable_profiling).

    nice -n 10 python benchmarks/export.py --models unigradicon --ugi-grid 175 175 175
    python benchmarks/export.py --models voxelmorph --vxm-grid 160 192 224
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


ARENA = True  # --no-arena: ONNX Runtime's CPU memory arena off


def _session(path: Path, threads: int, profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_cpu_mem_arena = ARENA
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _op_profile(path: Path, feeds: dict[str, np.ndarray], threads: int, tmp: Path) -> list[str]:
    sess = _session(path, threads, str(tmp / "ortprof"))
    sess.run(None, feeds)  # the first run includes allocations; profile the second
    sess.run(None, feeds)
    events = json.loads(Path(sess.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    last_start = runs[-1]["ts"] if runs else 0
    total: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= last_start:
            op = e["args"].get("op_name", "?")
            total[op] += e["dur"]
            count[op] += 1
    whole = sum(total.values()) or 1
    return [f"    {op:<20s} {us / 1e6:8.3f} s  {100 * us / whole:5.1f} %  ({count[op]} nodes)"
            for op, us in total.most_common(8)]


def _row(model: str, grid: Any, form: str, torch_s: float | None, ort_s: float) -> str:
    g = "x".join(map(str, grid))
    ratio = f"{ort_s / torch_s:6.2f}" if torch_s else "     -"
    ts = f"{torch_s:9.3f}" if torch_s else "        -"
    return f"{model:<12s} {g:<12s} {form:<22s} {ts} {ort_s:9.3f} {ratio}"


def bench_unigradicon(grid: tuple[int, int, int], threads: int, repeats: int, profile: bool,
                      tmp: Path, onnx_path: str | None = None) -> list[str]:
    import torch

    from regrisk.card import read_card
    from regrisk.exporters import unigradicon as ugi

    if onnx_path:  # an earlier random-init export (seed 0) at this grid: same weights as below
        path = Path(onnx_path)
        card = read_card(path)
        if tuple(card.grid) != tuple(grid):
            raise SystemExit(f"{path}: grid {card.grid} != --ugi-grid {grid}")
        note = f"  reused export {path.name}"
    else:
        path = tmp / "ugi.onnx"
        t = time.perf_counter()
        res = ugi.export_unigradicon(path, random_init=True, grid=grid, batch_sizes=(1,),
                                     verbose=False)
        note = (f"  export {time.perf_counter() - t:.1f} s, parity rel {res.parity.rel:.2e}, "
                f"GridSample nodes {res.op_counts.get('GridSample', 0)}")
    torch.manual_seed(0)
    net = ugi.build_network(grid)
    ugi.randomize(net, 0)
    wrapper = ugi._wrapper_class()(net.eval()).eval()
    rng = np.random.default_rng(0)
    src = rng.random((1, 1, *grid), dtype=np.float32)
    tgt = rng.random((1, 1, *grid), dtype=np.float32)
    ts, tt = torch.from_numpy(src), torch.from_numpy(tgt)
    feeds = {"source": src, "target": tgt}

    def eager() -> Any:
        with torch.no_grad():
            return wrapper(ts, tt)

    # One contender at a time, so that PyTorch's and ONNX Runtime's activations (3 and 7 GB at
    # 175^3) are not held together: PyTorch first, then one ORT session, then the profiler's.
    want = eager().numpy()  # warm-up
    torch_s = _median_time(eager, repeats)
    sess = _session(path, threads)
    got = sess.run(None, feeds)[0]  # warm-up
    ort_s = _median_time(lambda: sess.run(None, feeds), repeats)
    del sess
    gc.collect()
    diff = float(np.abs(want - got).max())
    lines = [_row("unigradicon", grid, "monolithic (map)", torch_s, ort_s),
             note + f"; max |ORT - torch| on these inputs {diff:.2e} (map in [0, 1])"]
    if profile:
        lines.append("  ONNX Runtime operators (one run):")
        lines += _op_profile(path, feeds, threads, tmp)
    return lines


def bench_voxelmorph(grid: tuple[int, int, int], threads: int, repeats: int, profile: bool,
                     tmp: Path) -> list[str]:
    import torch

    from regrisk import kernels
    from regrisk.exporters import voxelmorph as vx

    paths = {}
    for form in vx.FORMS:
        paths[form] = tmp / f"vxm_{form}.onnx"
        vx.export_voxelmorph(paths[form], random_init=True, grid=grid, form=form,
                             batch_sizes=(1,), verbose=False)
    torch.manual_seed(0)
    net = vx.build_network()
    vx.randomize(net, 0)
    net.eval()
    rng = np.random.default_rng(0)
    src = rng.random((1, 1, *grid), dtype=np.float32)
    tgt = rng.random((1, 1, *grid), dtype=np.float32)
    ts, tt = torch.from_numpy(src), torch.from_numpy(tgt)
    feeds = {"source": src, "target": tgt}
    mono, staged = _session(paths["monolithic"], threads), _session(paths["staged"], threads)

    def eager() -> Any:
        with torch.no_grad():
            return net(ts, tt)

    def eager_velocity() -> Any:
        with torch.no_grad():
            return net(ts, tt, return_field_type="velocity")

    def staged_full() -> np.ndarray:
        v = staged.run(None, feeds)[0]
        u = v / np.float32(2 ** vx.STEPS)
        for _ in range(vx.STEPS):
            u = kernels.compose(u, field=u, mode="fill", fill=0.0)
        return u

    eager(), mono.run(None, feeds), staged_full()  # warm-up
    torch_s = _median_time(eager, repeats)
    torch_v = _median_time(eager_velocity, repeats)
    mono_s = _median_time(lambda: mono.run(None, feeds), repeats)
    head_s = _median_time(lambda: staged.run(None, feeds), repeats)
    staged_s = _median_time(staged_full, repeats)
    diff = float(np.abs(staged_full() - mono.run(None, feeds)[0]).max())
    lines = [_row("voxelmorph", grid, "monolithic", torch_s, mono_s),
             _row("voxelmorph", grid, "staged: velocity head", torch_v, head_s),
             _row("voxelmorph", grid, "staged: head + compose", torch_s, staged_s),
             f"  staged vs monolithic: max |difference| {diff:.2e} voxel"]
    if profile:
        lines.append("  ONNX Runtime operators, monolithic (one run):")
        lines += _op_profile(paths["monolithic"], feeds, threads, tmp)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["voxelmorph", "unigradicon"],
                    choices=("voxelmorph", "unigradicon"))
    ap.add_argument("--ugi-grid", type=int, nargs=3, default=[175, 175, 175])
    ap.add_argument("--vxm-grid", type=int, nargs=3, default=[160, 192, 224])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="ONNX Runtime per-operator totals")
    ap.add_argument("--ugi-onnx", help="time this earlier random-init (seed 0) uniGradICON export "
                    "instead of exporting again (the export's parity check holds both "
                    "PyTorch and ONNX Runtime activations at once: ~10 GB at 175^3)")
    ap.add_argument("--no-arena", action="store_true",
                    help="ONNX Runtime CPU arena off (with it, uniGradICON at 175^3 grows from "
                    "7 to 11 GB over three runs; without it stays at a 6.8 GB peak)")
    args = ap.parse_args()
    global ARENA
    ARENA = not args.no_arena

    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} threads; torch {torch.__version__}, onnxruntime {ort.__version__}; "
          f"median of {args.repeats} after a warm-up; random-init weights; ORT arena "
          f"{'on' if ARENA else 'off'}")
    print(f"{'model':<12s} {'grid':<12s} {'form':<22s} {'torch s':>9s} {'ORT s':>9s} "
          f"{'ORT/torch':>6s}")
    with tempfile.TemporaryDirectory(prefix="regrisk-bench-export-") as d:
        tmp = Path(d)
        for model in args.models:
            if model == "voxelmorph":
                lines = bench_voxelmorph(tuple(args.vxm_grid), args.threads, args.repeats,
                                         args.profile, tmp)
            else:
                lines = bench_unigradicon(tuple(args.ugi_grid), args.threads, args.repeats,
                                          args.profile, tmp, args.ugi_onnx)
            print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
