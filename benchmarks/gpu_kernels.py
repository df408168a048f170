"""CUDA kernel throughput against the device-to-device copy bandwidth measured in the same run.

    python benchmarks/gpu_kernels.py [--grid 160 192 224] [--batch 8] [--repeats 20] [--json out.json]

For each kernel at the engine's working shape (one micro-batch of B samples on the model grid)
it prints the GPU time per call (CUDA events around `repeats` back-to-back launches through
regrisk._cuda_ops into preallocated outputs: the kernel alone), the wall time of the public
regrisk.kernels call (validation and allocation included, synchronised), the compulsory DRAM
traffic per call (each input read once, each output written once; the small, cache-resident
control grids and matrices not counted; the gathered volume counted once), and that traffic
divided by the kernel time as a fraction of the copy bandwidth. The copy baseline is
cudaMemcpyAsync device-to-device of a 1 GiB buffer, counted as read + write, timed the same way.
The issue's floor is 60% of the copy bandwidth. Needs CuPy, a GPU and regrisk._cuda; exits 2
with the reason otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

FLOOR = 0.60


def _need_gpu() -> None:
    from regrisk import device

    ok, why = device.cuda_ready()
    if not ok:
        print(f"gpu_kernels: cannot run: {why}", file=sys.stderr)
        sys.exit(2)


def gpu_time(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Seconds per call on the GPU timeline: events around `repeats` back-to-back calls."""
    import cupy as cp

    for _ in range(warmup):
        fn()
    stream = cp.cuda.get_current_stream()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    samples = []
    for _ in range(3):
        start.record(stream)
        for _ in range(repeats):
            fn()
        stop.record(stream)
        stop.synchronize()
        samples.append(cp.cuda.get_elapsed_time(start, stop) / 1e3 / repeats)
    return statistics.median(samples)


def wall_time(fn: Callable[[], Any], repeats: int) -> float:
    """Seconds per synchronised call of the public API (host overhead and allocation included)."""
    import cupy as cp

    fn()
    cp.cuda.get_current_stream().synchronize()
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        cp.cuda.get_current_stream().synchronize()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def copy_bandwidth(repeats: int, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted)."""
    import cupy as cp

    a = cp.empty(nbytes // 4, dtype=cp.float32)
    a.fill(1.0)
    b = cp.empty_like(a)
    stream = cp.cuda.get_current_stream()

    def copy() -> None:
        cp.cuda.runtime.memcpyAsync(b.data.ptr, a.data.ptr, nbytes,
                                    cp.cuda.runtime.memcpyDeviceToDevice, stream.ptr)

    return 2 * nbytes / gpu_time(copy, repeats)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, nargs=3, default=(160, 192, 224))
    ap.add_argument("--batch", type=int, default=8, help="samples per call (engine micro-batch)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", help="also write the table as JSON here")
    args = ap.parse_args(argv)
    _need_gpu()

    import cupy as cp

    from regrisk import _cuda_ops as ops
    from regrisk import kernels as K

    D, H, W = args.grid
    B, N = args.batch, D * H * W
    rng = np.random.default_rng(0)
    f4 = 4
    dev = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
    name = dev["name"].decode() if isinstance(dev["name"], bytes) else dev["name"]

    bw = copy_bandwidth(args.repeats)
    vol = cp.asarray(rng.random((1, 1, D, H, W), dtype=np.float32))
    disp = cp.asarray((rng.standard_normal((B, 3, D, H, W)) * 3).astype(np.float32))
    field = cp.asarray((rng.standard_normal((B, 3, D, H, W)) * 3).astype(np.float32))
    aff = np.broadcast_to(np.eye(3, 4), (B, 3, 4)).copy()
    aff[:, :, :3] += rng.uniform(-0.05, 0.05, (B, 3, 3))
    aff[:, :, 3] += rng.uniform(-2, 2, (B, 3))
    aff_d = cp.asarray(aff.astype(np.float32))
    ctrl = cp.asarray(rng.uniform(-12.5, 12.5, (B, 3, 10, 10, 10)).astype(np.float32))
    out1 = cp.empty((B, 1, D, H, W), cp.float32)
    out3 = cp.empty((B, 3, D, H, W), cp.float32)
    mean = cp.zeros((3, N), cp.float32)
    m2 = cp.zeros((6, N), cp.float32)
    mean_b = cp.asarray(rng.random((3, N), dtype=np.float32))
    m2_b = cp.asarray(rng.random((6, N), dtype=np.float32))
    batch = disp.reshape(B, 3, N)
    sig = cp.empty((N,), cp.float32)
    sig3 = cp.empty((3, N), cp.float32)
    M = np.diag([1.0, 1.2, 0.9]).astype(np.float32)
    acc = K.Welford((D, H, W), like=vol)
    acc.update(disp)

    # name, kernel-only call, public API call, compulsory bytes per call
    rows: list[tuple[str, Callable[[], Any], Callable[[], Any], int]] = [
        ("warp (displacement)", lambda: ops.warp_displacement(vol, disp, out1, 0.0, False),
         lambda: K.warp(vol, disp), f4 * (N + B * N * (3 + 1))),
        ("warp (affine)", lambda: ops.warp_affine(vol, aff_d, out1, 0.0, False),
         lambda: K.warp(vol, affine=aff_d), f4 * (N + B * N)),
        ("compose (affine)", lambda: ops.compose_affine(disp, aff_d, out3),
         lambda: K.compose(disp, affine=aff_d), f4 * B * N * 6),
        ("compose (field)", lambda: ops.compose_field(disp, field, out3, 0.0, True),
         lambda: K.compose(disp, field=field), f4 * B * N * 9),
        ("bspline_field 10^3", lambda: ops.bspline_field(ctrl, out3),
         lambda: K.bspline_field(ctrl, (D, H, W)), f4 * B * N * 3),
        ("welford update", lambda: ops.welford_update(0, mean, m2, batch),
         lambda: acc.update(disp), f4 * N * (3 * B + 18)),
        ("welford merge", lambda: ops.welford_merge(5, mean, m2, 5, mean_b, m2_b),
         None, f4 * N * 27),
        ("welford sigma", lambda: ops.welford_sigma(8, m2, M, sig),
         lambda: acc.sigma(M), f4 * N * 7),
        ("welford axis_sigma", lambda: ops.welford_axis_sigma(8, m2, M, sig3),
         lambda: acc.axis_sigma(M), f4 * N * 9),
    ]
    results = []
    print(f"device: {name}; grid {D}x{H}x{W} ({N} voxels), batch {B}; "
          f"CuPy {cp.__version__}; repeats {args.repeats}")
    print(f"baseline: device-to-device copy {bw / 1e9:.0f} GB/s (read + write, 1 GiB, same run)")
    print(f"{'kernel':<22} {'GPU ms':>8} {'API ms':>8} {'MB/call':>8} {'GB/s':>7} {'of copy':>8}  floor 60%")
    for label, kernel, api, nbytes in rows:
        t = gpu_time(kernel, args.repeats)
        wall = wall_time(api, max(3, args.repeats // 4)) if api else float("nan")
        frac = nbytes / t / bw
        results.append({"kernel": label, "gpu_ms": t * 1e3, "api_ms": wall * 1e3,
                        "mbytes": nbytes / 1e6, "gbps": nbytes / t / 1e9, "fraction_of_copy": frac,
                        "meets_floor": frac >= FLOOR})
        print(f"{label:<22} {t * 1e3:8.3f} {wall * 1e3:8.3f} {nbytes / 1e6:8.1f} "
              f"{nbytes / t / 1e9:7.0f} {frac:8.0%}  {'yes' if frac >= FLOOR else 'NO'}")
    met = sum(r["meets_floor"] for r in results)
    print(f"{met}/{len(results)} kernels at or above {FLOOR:.0%} of the copy bandwidth")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": name, "grid": [D, H, W], "batch": B, "copy_gbps": bw / 1e9,
                       "kernels": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
