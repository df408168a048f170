"""The documented ranges of regrisk's numeric parameters and the size limits of what it reads.

Every range here is checked where the value arrives (command-line parsing, the API's
arguments, a file's header), before anything is computed, allocated or decompressed; the
perturbation families own their own ranges (:mod:`regrisk.perturbations`).

==================  ====================================================================
samples             2 .. 100000 perturbations (or 'auto')
passes              1 .. 1000 stochastic passes per perturbation
batch               1 .. 1024 samples per network call
threads             1 .. min(1024, 4 x the cores this process may use)
seed                0 .. 2^63 - 1 (an integer; None draws fresh entropy in the API)
memory budget       1 MiB .. 1 PiB
image               at most 2^28 voxels (e.g. 512 x 512 x 1024), judged from its header,
                    and its float32 copy within the memory budget
ONNX graph file     at most 2 GiB (protobuf's own limit; larger weights live in external data)
external data       inside the model's folder, together within the memory budget
model card          at most 1 MiB of JSON
==================  ====================================================================
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import InputError

MAX_SAMPLES = 100_000
MAX_PASSES = 1_000
MAX_BATCH = 1_024
MAX_SEED = 2**63 - 1
MIN_MEMORY_BUDGET = 1 << 20
MAX_MEMORY_BUDGET = 1 << 50
MAX_IMAGE_VOXELS = 1 << 28
MAX_GRAPH_BYTES = 2 << 30
MAX_CARD_BYTES = 1 << 20
# Uniform numbers drawn for one run's perturbations (float64): 1 GiB.
MAX_DRAW_VALUES = 1 << 27


def cores() -> int:
    """Cores this process may run on (affinity-aware, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def max_threads() -> int:
    """The most threads a run may ask for: oversubscribing 4x is already slower; beyond that
    a typo would spawn thousands of threads."""
    return min(1024, 4 * cores())


def integer(value: Any, name: str, low: int, high: int, error: type[Exception] = InputError,
            why: str = "") -> int:
    """``value`` as an int when it is an integer (not a bool, not a float) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not low <= value <= high:
        raise error(f"{name} must be an integer from {low} to {high}{why}, got {value!r}")
    return int(value)


def seed(value: Any) -> int | None:
    """A seed for numpy.random.default_rng: None or an integer in [0, 2^63 - 1]."""
    if value is None:
        return None
    return integer(value, "seed", 0, MAX_SEED)


def threads(value: Any, error: type[Exception] = InputError) -> int | None:
    """None (all cores) or a thread count in [1, max_threads()]."""
    if value is None:
        return None
    return integer(value, "threads", 1, max_threads(), error,
                   f" (4 x the {cores()} cores this process may use, at most 1024)")


def memory_budget(value: Any, error: type[Exception] = InputError) -> int | None:
    """None (half the available memory) or a byte count in [1 MiB, 1 PiB]."""
    if value is None:
        return None
    return integer(value, "memory budget (bytes)", MIN_MEMORY_BUDGET, MAX_MEMORY_BUDGET, error)
