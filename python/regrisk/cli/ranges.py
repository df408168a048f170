"""Every numeric option's documented range, checked right after parsing, before a command runs
(the ranges themselves live in :mod:`regrisk.limits` and :mod:`regrisk.perturbations`).

One check for every subcommand, keyed by the option's name, so a command that shares
``--samples`` or ``--threads`` gets the same range without repeating it. Perturbation specs
are parsed here too (their magnitudes have ranges in the units the user typed), with the
draw-size and Sobol-dimension bounds that do not depend on the images.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .. import limits

# option dest -> (flag, lowest, highest as a number or a function of nothing)
_INTEGERS: dict[str, tuple[str, int, int | Callable[[], int]]] = {
    "samples": ("--samples", 2, limits.MAX_SAMPLES),
    "max_samples": ("--max-samples", 2, limits.MAX_SAMPLES),
    "passes": ("--passes", 1, limits.MAX_PASSES),
    "batch": ("--batch", 1, limits.MAX_BATCH),
    "seed": ("--seed", 0, limits.MAX_SEED),
    "threads": ("--threads", 1, limits.max_threads),
    "memory_budget": ("--memory-budget", limits.MIN_MEMORY_BUDGET, limits.MAX_MEMORY_BUDGET),
    "repeats": ("--repeats", 1, 1000),
}


def check(args: argparse.Namespace) -> str | None:
    """The message for the first option out of its range, or None when all are in range."""
    for dest, (flag, low, high) in _INTEGERS.items():
        value = getattr(args, dest, None)
        if value is None or isinstance(value, str):  # absent, 'auto', or a non-numeric --batch
            continue
        top = high() if callable(high) else high
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= top:
            return f"argument {flag}: must be {_range(dest, low, top)}, got {value}"
    return _check_perturbation(args)


def _range(dest: str, low: int, top: int) -> str:
    if dest == "memory_budget":  # in the units the option is typed in
        return "from 1M to 1024T (bytes)"
    if dest == "threads":
        return f"an integer from {low} to {top} (4 x the cores this process may use, at most 1024)"
    return f"an integer from {low} to {top}"


def _check_perturbation(args: argparse.Namespace) -> str | None:
    specs = getattr(args, "perturbation", None)
    if not isinstance(specs, str):
        return None
    from ..perturbations import PerturbationError, parse

    samples = getattr(args, "samples", None)
    n = samples if isinstance(samples, int) else (getattr(args, "max_samples", None) or 2)
    design = "sobol" if getattr(args, "sobol", False) else _design(args)
    for spec in (s for s in specs.split(";") if s.strip()):  # evaluate takes several
        try:
            parse(spec).check_draws(n, design)
        except PerturbationError as exc:
            return f"argument --perturbation: {str(exc).removeprefix('perturbation: ')}"
    return None


def _design(args: Any) -> str:
    reduction = getattr(args, "variance_reduction", None)
    return "stratified" if isinstance(reduction, str) and "stratified" in reduction else "iid"
