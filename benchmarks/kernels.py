"""Benchmark of the CPU kernels (regrisk.kernels on NumPy arrays -> regrisk._core).

Prints one table per grid size: the median time of each kernel; its bytes-moved floor (the
bytes the operation must read and write at least once, divided by the copy bandwidth measured
in this same run with np.copyto of a large array, bytes read + written); the same operation by
SciPy / NumPy, and by torch.nn.functional.grid_sample on the CPU when torch imports; and the
ratios. Baselines get their coordinates precomputed (only the sampling call is timed), which
favours them. Then a memory check: streaming K samples at 160^3 through Welford, peak traced
(tracemalloc) and resident (RSS high-water mark) memory against accumulator + one batch.

    nice -n 10 python benchmarks/kernels.py              # 160^3 and 175^3
    python benchmarks/kernels.py --sizes 64 --repeat 3   # quick
"""

from __future__ import annotations

import os

# One BLAS thread: idle OpenBLAS workers spin and steal the 2 cores from the timed kernels.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from regrisk import kernels as K  # noqa: E402


def timings(fn: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """(median wall, min wall, median process CPU time) in seconds over `repeat` runs."""
    fn()  # warm up (page faults of the first output, lazy imports)
    wall, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def copy_bandwidth(repeat: int) -> float:
    """Bytes per second of np.copyto on 256 MiB (read + written bytes counted)."""
    src = np.ones(64 * 2**20, np.float32)
    dst = np.empty_like(src)
    _, best, _ = timings(lambda: np.copyto(dst, src), max(repeat, 7))
    return 2 * src.nbytes / best  # the best run: the floor must be a lower bound


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def torch_grid(coords: np.ndarray):
    """(3,D,H,W) voxel coordinates (i,j,k) -> torch grid (1,D,H,W,3) in [-1,1], xyz order."""
    import torch

    shape = coords.shape[1:]
    norm = [2.0 * coords[a] / max(n - 1, 1) - 1.0 for a, n in enumerate(shape)]
    return torch.from_numpy(np.stack(norm[::-1], axis=-1)[None].astype(np.float32))


def bench_size(n: int, repeat: int, base_repeat: int, bandwidth: float, use_torch: bool) -> list[dict]:
    rng = np.random.default_rng(n)
    shape = (n, n, n)
    nvox = n**3
    vol = rng.random(shape, dtype=np.float32)
    # Smooth fields, as registration outputs and perturbations are: a prediction-like
    # displacement (+-5 voxels on an 8^3 control grid) and the paper's B-spline perturbation
    # (+-12.5 voxels on 19^3 control points). One row repeats the warp with i.i.d. noise
    # (std 3 voxels), the cache-hostile worst case.
    disp = K.bspline_field(rng.uniform(-5, 5, (1, 3, 8, 8, 8)).astype(np.float32), shape)
    ctrl = rng.uniform(-12.5, 12.5, (1, 3, 19, 19, 19)).astype(np.float32)
    field = K.bspline_field(ctrl, shape)
    noise = (rng.standard_normal((1, 3) + shape, dtype=np.float32) * 3.0)
    aff = np.eye(3, 4, dtype=np.float32)
    aff[:, :3] += rng.uniform(-0.05, 0.05, (3, 3)).astype(np.float32)
    aff[:, 3] = rng.uniform(-2, 2, 3).astype(np.float32)
    spacing = np.diag([0.8, 0.9, 1.2]).astype(np.float32)  # voxel -> mm for sigma(M)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32)] * 3, indexing="ij"))
    coords = grid + disp[0]
    noise_coords = grid + noise[0]
    acc = K.Welford(shape)
    acc.update(disp)
    batch8 = np.ascontiguousarray(np.repeat(disp, 8, axis=0))
    batch8 += rng.standard_normal(batch8.shape, dtype=np.float32)

    # NumPy baselines for what SciPy has no single call for.
    def np_compose_affine():
        p = grid + disp[0]
        return np.einsum("ij,j...->i...", aff[:, :3], p) + aff[:, 3, None, None, None] - grid

    def np_bspline():
        from regrisk.reference import bspline_basis

        wz, wy, wx = (bspline_basis(n, c).astype(np.float32) for c in ctrl.shape[2:])
        t = np.tensordot(ctrl[0], wx, axes=([3], [1]))           # (3,cD,cH,W)
        t = np.tensordot(t, wy, axes=([2], [1]))                # (3,cD,W,H)
        t = np.tensordot(t, wz, axes=([1], [1]))                # (3,W,H,D)
        return np.ascontiguousarray(t.transpose(0, 3, 2, 1))

    mean64 = np.zeros((3,) + shape)
    m2_64 = np.zeros((6,) + shape)

    def np_welford_one(x=disp[0].astype(np.float64), count=[1]):
        count[0] += 1
        d = x - mean64
        mean64[...] += d / count[0]
        e = x - mean64
        for t, (a, b) in enumerate([(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]):
            m2_64[t] += d[a] * e[b]

    def np_sigma():
        # tr(M S M^T) = sum_ij (M^T M)_ij S_ij over the 6 stored terms, float32 like the kernel.
        c = acc.covariance
        g = spacing.T @ spacing
        t = (g[0, 0] * c[0] + g[1, 1] * c[3] + g[2, 2] * c[5]
             + 2 * (g[0, 1] * c[1] + g[0, 2] * c[2] + g[1, 2] * c[4]))
        return np.sqrt(np.maximum(t, 0))

    rows = []

    def row(name, fn, bytes_moved, base_name=None, base=None, torch_fn=None, per=1):
        threads = K.get_num_threads()
        wall, _, _ = timings(fn, repeat)
        K.set_num_threads(1)
        try:
            _, _, cpu1 = timings(fn, repeat)
        finally:
            K.set_num_threads(threads)
        r = {"op": name, "n": n, "ms": 1e3 * wall / per, "cpu1_ms": 1e3 * cpu1 / per,
             "floor_ms": 1e3 * bytes_moved / bandwidth}
        if base is not None:
            bwall, _, bcpu = timings(base, base_repeat)
            r.update(base=base_name, base_ms=1e3 * bwall / per, base_cpu_ms=1e3 * bcpu / per)
        if torch_fn is not None:
            r["torch_ms"] = 1e3 * timings(torch_fn, base_repeat)[0]
        rows.append(r)
        print(fmt_row(r), flush=True)

    tvol = tgrid = tfield = tnoise = theta = None
    if use_torch:
        import torch
        import torch.nn.functional as F

        tvol = torch.from_numpy(vol)[None, None]
        tgrid = torch_grid(coords)
        tnoise = torch_grid(noise_coords)
        tfield = torch.from_numpy(field)
        with torch.no_grad():
            theta = torch_grid(np.einsum("ij,j...->i...", aff[:, :3], grid) + aff[:, 3, None, None, None])

    def tw(src, g, pad):
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            return F.grid_sample(src, g, mode="bilinear", padding_mode=pad, align_corners=True)

    row("warp displacement (fill)", lambda: K.warp(vol, disp), nvox * (12 + 4 + 4),
        "map_coordinates", lambda: ndimage.map_coordinates(vol, coords, order=1, mode="grid-constant"),
        (lambda: tw(tvol, tgrid, "zeros")) if use_torch else None)
    row("warp displacement (noise)", lambda: K.warp(vol, noise), nvox * (12 + 4 + 4),
        "map_coordinates", lambda: ndimage.map_coordinates(vol, noise_coords, order=1,
                                                            mode="grid-constant"),
        (lambda: tw(tvol, tnoise, "zeros")) if use_torch else None)
    row("warp displacement (border)", lambda: K.warp(vol, disp, mode="border"), nvox * (12 + 4 + 4),
        "map_coordinates", lambda: ndimage.map_coordinates(vol, coords, order=1, mode="nearest"),
        (lambda: tw(tvol, tgrid, "border")) if use_torch else None)
    row("warp affine (fill)", lambda: K.warp(vol, affine=aff), nvox * (4 + 4),
        "affine_transform", lambda: ndimage.affine_transform(vol, aff[:, :3], offset=aff[:, 3], order=1,
                                                              mode="grid-constant"),
        (lambda: tw(tvol, theta, "zeros")) if use_torch else None)
    row("compose affine", lambda: K.compose(disp, affine=aff), nvox * (12 + 12),
        "numpy einsum", np_compose_affine)
    row("compose field (border)", lambda: K.compose(disp, field=field), nvox * (12 + 12 + 12),
        "map_coordinates x3", lambda: [ndimage.map_coordinates(field[0, c], coords, order=1, mode="nearest")
                                       + disp[0, c] for c in range(3)],
        (lambda: tw(tfield, tgrid, "border")) if use_torch else None)
    row("bspline_field 19^3 ctrl", lambda: K.bspline_field(ctrl, shape), nvox * 12,
        "numpy tensordot", np_bspline)
    row("Welford.update B=1", lambda: acc.update(disp), nvox * (12 + 72),
        "numpy float64", np_welford_one)
    row("Welford.update B=8 (/sample)", lambda: acc.update(batch8), nvox * (8 * 12 + 72) / 8,
        per=8)
    row("Welford.sigma(M)", lambda: acc.sigma(spacing), nvox * (24 + 4), "numpy", np_sigma)
    return rows


def fmt_row(r: dict) -> str:
    if "base" in r:
        base = (f"{r['base']:>19} {r['base_ms']:8.1f} {r['base_ms'] / r['ms']:6.1f}x"
                f" {r['base_cpu_ms']:8.1f} {r['base_cpu_ms'] / r['cpu1_ms']:6.1f}x")
    else:
        base = f"{'':>19} {'':>8} {'':>7} {'':>8} {'':>7}"
    torch_s = (f" {r['torch_ms']:8.1f} {r['torch_ms'] / r['ms']:6.1f}x" if "torch_ms" in r
               else f" {'-':>8} {'':>7}")
    return (f"{r['op']:<29} {r['n']:>3} {r['ms']:8.1f} {r['cpu1_ms']:8.1f} {r['floor_ms']:7.1f}"
            f" {r['ms'] / r['floor_ms']:6.1f}x {base}{torch_s}")


HEADER = (f"{'kernel':<29} {'n':>3} {'wall ms':>8} {'cpu1 ms':>8} {'floor':>7} {'/floor':>7}"
          f" {'baseline':>19} {'wall ms':>8} {'ratio':>7} {'cpu ms':>8} {'ratio':>7}"
          f" {'torch ms':>8} {'ratio':>7}")
LEGEND = """\
wall ms: median wall time, regrisk on all its threads; cpu1 ms: median process CPU time with
1 thread (robust to other load on the machine); floor: bytes moved / copy bandwidth; /floor:
wall / floor. Baseline (single-threaded SciPy/NumPy): wall ms and ratio = its wall / regrisk
wall; cpu ms and ratio = its CPU time / regrisk 1-thread CPU time (per-core speedup). torch:
F.grid_sample (align_corners=True) on the same threads, wall, ratio = torch / regrisk."""


MEMORY_CHILD = r"""
import sys, tracemalloc
import numpy as np
from regrisk import kernels as K

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

n, k = int(sys.argv[1]), int(sys.argv[2])
shape = (n, n, n)
rng = np.random.default_rng(0)
try:  # reset the RSS high-water mark so that import-time peaks do not hide the loop's
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
rss0 = status("VmRSS")
tracemalloc.start()
batch = np.empty((1, 3) + shape, np.float32)
acc = K.Welford(shape)
for i in range(k):
    rng.standard_normal(out=batch, dtype=np.float32)  # stands in for one composed prediction
    acc.update(batch)
_, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(acc.nbytes, batch.nbytes, peak, status("VmHWM") - rss0, acc.count)
"""


def memory_check(n: int, k: int) -> dict:
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(n), str(k)], capture_output=True,
                         text=True, check=True).stdout.split()
    acc, batch, peak, rss, count = (int(v) for v in out)
    return {"n": n, "k": count, "acc": acc, "batch": batch, "peak": peak, "rss": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[160, 175])
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per regrisk kernel")
    ap.add_argument("--base-repeat", type=int, default=3, help="timed runs per baseline")
    ap.add_argument("--threads", type=int, default=None, help="OpenMP threads (default: all)")
    ap.add_argument("--memory-k", type=int, default=50, help="samples streamed in the memory check")
    ap.add_argument("--memory-n", type=int, default=160)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()

    if args.threads:
        K.set_num_threads(args.threads)
    use_torch = False
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(K.get_num_threads())
            use_torch = True
        except ImportError:
            pass
    info = K.build_info()
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; regrisk threads "
          f"{K.get_num_threads()}; openmp {info['openmp']}; compiler {info['compiler']} ({info['flags']})")
    print(f"numpy {np.__version__}, torch {'yes (' + __import__('torch').__version__ + ')' if use_torch else 'no'}")
    bw = copy_bandwidth(args.repeat)
    print(f"copy bandwidth (np.copyto 256 MiB, read+write): {bw / 1e9:.1f} GB/s")
    print(LEGEND)
    print()
    print(HEADER)
    for n in args.sizes:
        bench_size(n, args.repeat, args.base_repeat, bw, use_torch)
    print()
    m = memory_check(args.memory_n, args.memory_k)
    bound = m["acc"] + m["batch"]
    print(f"memory, streaming K={m['k']} samples at {m['n']}^3: accumulator {m['acc'] / 2**20:.0f} MiB + "
          f"one batch {m['batch'] / 2**20:.0f} MiB = {bound / 2**20:.0f} MiB; "
          f"tracemalloc peak {m['peak'] / 2**20:.0f} MiB ({m['peak'] / bound:.3f}x), "
          f"RSS growth {m['rss'] / 2**20:.0f} MiB ({m['rss'] / bound:.3f}x)")


if __name__ == "__main__":
    main()
