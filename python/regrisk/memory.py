"""Memory: how many samples one network call may take, and the optional allocator tuning.

The batch plan counts float32 arrays by name, in units of grid voxels (N) or native target
voxels, so that each term can be checked against the engine's code that allocates it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BudgetError

F32 = 4
# ORT's working memory per sample is not knowable from outside the graph; this many float32
# values per grid voxel is assumed for activations when sizing micro-batches (a small 3-D
# U-Net at full resolution holds ~16-32 channels). Override with Estimator(activation_floats=).
DEFAULT_ACTIVATION_FLOATS = 32
# Largest automatic micro-batch per device: on the CPU a bigger batch buys ORT nothing (it runs
# the images one after the other) and costs cache and memory; GPUs want wide batches.
MAX_AUTO_BATCH = {"cpu": 4, "cuda": 16}

# Grid-sized arrays held for the whole run, in values per grid voxel (plus WELFORD per
# accumulator: the plain map and its two halves hold 3, Neyman allocation 2 per family).
RUN_TERMS = {"source_and_target": 2, "unperturbed_field": 3, "mean_field": 3}
WELFORD = 9
# The nested design's extra accumulators (outer Welford, inner Welford, intrinsic sum).
NESTED_TERMS = {"outer_welford": 9, "inner_welford": 9, "intrinsic_sum": 6}
# Native-grid outputs (sigma, 3 axes, 2 x 3 displacement fields, warped source, spare).
NATIVE_VALUES = 12
# Per sample in a micro-batch: warped source, broadcast target, raw output, canonical field,
# composed field, dense perturbation field; plus the network's activations.
SAMPLE_TERMS = {"warped_source": 1, "target": 1, "raw_output": 3, "canonical": 3,
                "composed": 3, "dense_field": 3}


@dataclass(frozen=True)
class BatchPlan:
    batch: int
    fixed_bytes: int
    per_sample_bytes: int
    budget_bytes: int

    @property
    def need_bytes(self) -> int:
        return self.fixed_bytes + self.batch * self.per_sample_bytes


def available_memory() -> int:
    """MemAvailable from /proc/meminfo (8 GiB where it cannot be read)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def default_budget() -> int:
    return min(available_memory() // 2, 16 << 30)


def plan_batch(grid: tuple[int, ...], native_voxels: int, work: int, *, device: str,
               nested: bool, activation_floats: int, budget: int | None = None,
               batch: int | None = None, fixed_batch: int | None = None,
               accumulators: int = 3) -> BatchPlan:
    """Samples per network call for ``work`` passes within ``budget`` bytes; BudgetError if
    even the chosen batch is over. ``batch`` forces a size, ``fixed_batch`` is the graph's;
    ``accumulators``: the run's Welford accumulators."""
    N = int(np.prod(grid))
    held = (sum(RUN_TERMS.values()) + WELFORD * accumulators
            + (sum(NESTED_TERMS.values()) if nested else 0))
    fixed = F32 * (held * N + NATIVE_VALUES * native_voxels)
    per_sample = F32 * N * (sum(SAMPLE_TERMS.values()) + activation_floats)
    budget = budget or default_budget()
    if fixed_batch:
        size = fixed_batch
    elif batch:
        size = min(batch, work)
    else:
        cap = MAX_AUTO_BATCH.get(device, 4)
        size = int(max(1, min(cap, work, (budget - fixed) // per_sample)))
    plan = BatchPlan(size, fixed, per_sample, budget)
    if plan.need_bytes > budget:
        raise BudgetError(f"estimated memory {gib(plan.need_bytes)} (batch {size}, grid "
                          f"{'x'.join(map(str, grid))}) exceeds the budget {gib(budget)}; "
                          "lower --batch or raise the budget")
    return plan


_ALLOCATOR_TUNED = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed large blocks instead of returning them to the OS (opt-in).

    Every micro-batch allocates a few arrays of tens to hundreds of MB (kernel outputs, the
    network's output). glibc serves blocks that large with fresh mmap pages, so each batch pays
    the page faults and zeroing again (about 40 ms per 200 MB here). Serving them from the heap
    (M_MMAP_MAX = 0) and not trimming it lets the next batch reuse warm pages. Process-wide, so
    only an application (the CLI) calls it, never the library on its own; idempotent; a no-op
    (False) off glibc.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        ok = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = ok
    return ok
