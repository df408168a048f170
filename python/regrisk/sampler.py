"""The sample loop of one run: draws in rounds, micro-batches through the network, each
prediction composed back through its perturbation and folded into the statistics.

A fixed K is one round. ``samples="auto"`` draws rounds until the map's split-half precision
(:mod:`regrisk.variance`) reaches the asked value or the sample limit is hit.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .equivariance import compose_back, micro_batches, perturb_source
from .kernels import Bound
from .pair import PreparedPair
from .perturbations import Block, DrawSet, Perturbation
from .runner import ModelRunner
from .statistics import SampleStatistics
from .timing import StageClock
from .variance import SamplePlan, precision_region


@dataclass
class Outcome:
    samples: int                          # perturbations drawn and run
    precision: dict[str, float] | None    # split-half precision of the final map
    stopped: str                          # "fixed K", "precision reached", "max samples reached"
    family_samples: dict[str, int] | None = None  # with Neyman allocation: draws per family
    pending: Future | None = None         # the precision, while a thread still computes it

    def settle(self) -> "Outcome":
        """The outcome with its precision computed (waits for the thread, if any)."""
        if self.pending is not None:
            self.precision, self.pending = self.pending.result(), None
        return self


def in_thread(fn: Any, *args: Any) -> Future:
    """``fn(*args)`` in a thread of its own, which ends with it."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="regrisk-aside")
    future = pool.submit(fn, *args)
    pool.shutdown(wait=False)
    return future


def describe_samples(block: Block) -> str:
    ks = sorted(set(int(k) for k in block.index))
    return f"perturbed sample{'s' if len(ks) > 1 else ''} {', '.join(map(str, ks))} ({block.family})"


class Sampler:
    def __init__(self, runner: ModelRunner, ops: Bound, pair: PreparedPair,
                 stats: SampleStatistics, batch: int, passes: int, clock: StageClock) -> None:
        self.runner, self.ops, self.pair, self.stats = runner, ops, pair, stats
        self.batch, self.passes, self.clock = batch, passes, clock
        self._targets: dict[int, Any] = {}

    def run(self, pert: Perturbation, plan: SamplePlan, design: str,
            rng: np.random.Generator, progress: bool, neyman: bool = False) -> Outcome:
        """``neyman``: each round's draws are split across the families by
        :func:`regrisk.allocation.allocate` (a pilot of 2 per family comes first)."""
        pair, done, precision = self.pair, 0, None
        region = precision_region(pair.T)
        bar = _progress_bar(plan.most * self.passes) if progress else None
        rounds = _rounds(plan, len(pert.families), neyman)
        ahead: Future | None = None  # the next round's allocation, computed beside a precision
        try:
            for i, (n, checkpoint) in enumerate(rounds):
                counts = None
                if neyman:
                    counts = ahead.result() if ahead is not None else self._allocation(n, pert, region)
                    ahead = None
                with self.clock.stage("draw"):
                    draws = pert.draw(n, pair.grid, pair.grid_to_mm, rng, design=design,
                                      counts=counts)
                self.run_draws(draws, first_index=done, bar=bar)
                done += n
                if not checkpoint:
                    continue
                if not plan.adaptive and pair.xp is np:
                    # a fixed K only reports the precision: it is computed beside the maps
                    # (both mostly NumPy and native calls, which release the GIL)
                    return Outcome(done, None, "fixed K",
                                   self._family_samples() if neyman else None,
                                   self._precision_aside(region))
                if neyman and pair.xp is np and i + 1 < len(rounds):
                    # the same statistics, read by both: the cores idle between rounds
                    ahead = in_thread(self._allocation, rounds[i + 1][0], pert, region)
                with self.clock.stage("precision"):
                    precision = self.stats.precision(pair.grid_to_mm, region)
                if bar is not None and precision is not None:
                    bar.set_postfix(precision=f"{precision['precision']:.3f}")
                if plan.adaptive and precision and precision["precision"] >= plan.precision:
                    return Outcome(done, precision, "precision reached",
                                   self._family_samples() if neyman else None)
        finally:
            if ahead is not None:  # done with before the maps read the statistics again
                ahead.result()
            if bar is not None:
                bar.close()
        return Outcome(done, precision, "max samples reached" if plan.adaptive else "fixed K",
                       self._family_samples() if neyman else None)

    def _precision_aside(self, region: np.ndarray) -> Future:
        """The precision in a thread of its own; its time goes to the "precision" stage."""
        def measure() -> dict[str, float] | None:
            with self.clock.stage("precision"):
                return self.stats.precision(self.pair.grid_to_mm, region)
        return in_thread(measure)

    def _family_samples(self) -> dict[str, int] | None:
        strata = self.stats.strata
        return None if strata is None else dict(zip(strata.names, strata.counts()))

    def _allocation(self, n: int, pert: Perturbation, region: np.ndarray) -> list[int] | None:
        from .allocation import allocate

        strata = self.stats.strata
        if strata is None:  # no per-family accumulators: the round-robin
            return None
        scores = self.stats.family_variances(self.pair.grid_to_mm, region)
        return allocate(n, strata.weights, scores, strata.counts())

    def run_draws(self, draws: DrawSet, first_index: int = 0, bar: Any = None) -> None:
        """Perturb, infer, compose back, accumulate; one network call (micro-batch) a step."""
        xp, clock = self.pair.xp, self.clock
        for blocks in micro_batches(draws, self.batch, self.passes):
            for block in blocks:
                block.index = block.index + first_index
            with clock.stage("perturb"):
                perturbed = [perturb_source(self.pair.S, block, xp, self.ops) for block in blocks]
                src_b = (perturbed[0][0] if len(blocks) == 1
                         else xp.concatenate([src for src, _ in perturbed]))
            b = int(src_b.shape[0])
            u = self.runner.infer(src_b, self._target(b), clock,
                                  "; ".join(map(describe_samples, blocks)))
            start = 0
            for block, (_, fields) in zip(blocks, perturbed):
                u_block = u[start:start + len(block)]
                start += len(block)
                with clock.stage("compose"):
                    # finite u and finite draws (checked at parse time) give a finite g
                    g = compose_back(u_block, block, fields, xp, self.ops)
                with clock.stage("accumulate"):
                    self.stats.update(g, block.family, fields)
            if bar is not None:
                bar.update(b)

    def _target(self, b: int) -> Any:
        """The target repeated b times (kept: every micro-batch of that size reuses it)."""
        if b not in self._targets:
            T = self.pair.T
            self._targets[b] = self.pair.xp.ascontiguousarray(
                self.pair.xp.broadcast_to(T[None, None], (b, 1, *T.shape)))
        return self._targets[b]


def _rounds(plan: SamplePlan, families: int, neyman: bool) -> list[tuple[int, bool]]:
    """(draws, whether the run may stop after them): the plan's rounds; with Neyman
    allocation and more than one family, a pilot of 2 draws per family is split off the first
    round (no stop there: the allocation has not yet acted)."""
    rounds = [(n, True) for n in plan.rounds(families)]
    pilot = 2 * families
    if neyman and families > 1 and rounds[0][0] > pilot:
        rounds[:1] = [(pilot, False), (rounds[0][0] - pilot, True)]
    return rounds


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="sample", desc="regrisk", leave=False)
