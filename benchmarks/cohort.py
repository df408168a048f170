"""Cohort throughput: pairs per hour for the local engine and for Ray (Ray's cost per pair), and
the peak memory of each worker. Every pair is the packaged brain pair (80x96x80, 2 mm) with the
default model and the paper preset; each mode runs in a fresh child process (clean memory
figures), with its own output folder, so every pair is computed (nothing resumed).

Modes: local (one estimator, all cores); ray-1 (one Ray actor with all cores: the same work as
local, so (wall - local wall) / pairs is Ray's cost per pair, start-up of the runtime excluded
and shown apart); ray-N (one actor per core, one thread each: Ray's throughput mode).

    python benchmarks/cohort.py [--pairs 16] [--samples 50] [--modes local ray-1 ray-N]
        [--json out.json]

Measure on an idle machine only; on a shared one the figures are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _peak_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process on this machine, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _write_pairs(folder: Path, n: int) -> Path:
    from regrisk.demo import SOURCE, TARGET, data_path

    rows = ["id,source,target"] + [f"pair{i:03d},{data_path(SOURCE)},{data_path(TARGET)}"
                                   for i in range(n)]
    path = folder / "pairs.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def run_mode(mode: str, pairs: int, samples: int) -> dict[str, Any]:
    """One mode in this process: wall time, pair seconds and peak memory per worker."""
    from regrisk.cohort import EstimateSettings, RayOptions, run_cohort

    cores = os.cpu_count() or 1
    workers, threads = {"local": (1, cores), "ray-1": (1, cores), "ray-N": (cores, 1)}[mode]
    settings = EstimateSettings(estimate={"samples": samples, "perturbation": "paper", "seed": 0},
                                estimator={"threads": threads})
    peaks: dict[int, float] = {}
    seconds: list[float] = []

    def watch(outcome: Any) -> None:  # a worker's high-water mark, read while it is alive
        pid = outcome.worker.get("pid")
        if pid is not None:
            peaks[pid] = max(peaks.get(pid, 0.0), _peak_mb(pid))
        seconds.append(outcome.seconds)

    startup = 0.0
    if mode.startswith("ray"):
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, logging_level="warning")
        startup = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="regrisk-cohort-bench-") as tmp:
        csv = _write_pairs(Path(tmp), pairs)
        t0 = time.perf_counter()
        summary = run_cohort(csv, Path(tmp) / "out", model="default", settings=settings,
                             engine="local" if mode == "local" else "ray",
                             ray_options=RayOptions(workers=workers, cpus_per_worker=threads),
                             on_outcome=watch)
        wall = time.perf_counter() - t0
    if mode == "local":
        peaks = {os.getpid(): resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return {"mode": mode, "workers": workers, "threads": threads, "pairs": pairs,
            "done": summary.done, "failed": summary.failed, "wall_s": wall,
            "runtime_start_s": startup, "pairs_per_hour": 3600 * pairs / wall,
            "mean_pair_s": sum(seconds) / max(len(seconds), 1),
            "peak_mb_per_worker": max(peaks.values()) if peaks else float("nan")}


def _child(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--pairs", str(args.pairs),
           "--samples", str(args.samples)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    local = next((r for r in rows if r["mode"] == "local"), None)
    lines = ["| mode | workers x threads | pairs | wall s | pairs/hour | mean pair s | "
             "Ray cost/pair s | runtime start s | peak MB/worker |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cost = ((r["wall_s"] - local["wall_s"]) / r["pairs"]
                if local and r["mode"] == "ray-1" else None)
        lines.append(f"| {r['mode']} | {r['workers']} x {r['threads']} | {r['pairs']} "
                     f"({r['failed']} failed) | {r['wall_s']:.1f} | {r['pairs_per_hour']:.0f} | "
                     f"{r['mean_pair_s']:.2f} | {'' if cost is None else f'{cost:+.2f}'} | "
                     f"{r['runtime_start_s']:.1f} | {r['peak_mb_per_worker']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--modes", nargs="+", default=["local", "ray-1", "ray-N"],
                   choices=["local", "ray-1", "ray-N"])
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.child, args.pairs, args.samples)))
        return
    load = os.getloadavg()[0]
    rows = [_child(mode, args) for mode in args.modes]
    print(f"{os.cpu_count()} cores; load average {load:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end; K = {args.samples}, paper preset, default model, "
          "packaged pair (80x96x80)")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
