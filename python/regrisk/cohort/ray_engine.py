"""The Ray engine: one actor per worker holds a warm estimator; pairs are actor tasks, at most
``depth`` in flight per actor. A worker process that dies is restarted by Ray (the model is
loaded again) and the pairs it held are retried there; a pair whose worker died on every try is
reported as failed. Runs on a local Ray runtime started here, or joins a cluster (``address``).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CohortError, first_line
from .outcome import FAILED, Outcome
from .pairs import Pair
from .settings import EstimateSettings
from .worker import PairWorker


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None        # None: start a local runtime (or use the one running)
    workers: int | None = None        # default: as many as the cluster's CPUs (GPUs) allow
    cpus_per_worker: int = 1          # also the estimator's thread count in each actor
    gpus_per_worker: float = 0.0
    depth: int = 2                    # pairs in flight per actor: one running, one queued
    retries: int = 2                  # retries of a pair whose worker died


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise CohortError("--engine ray needs Ray: pip install \"regrisk[cluster]\"") from None
    return ray


def _regrisk_path() -> str:
    """The folder that holds this regrisk, so a local runtime's workers import the same one."""
    here = Path(__file__).resolve().parents[2]
    return os.pathsep.join(p for p in (str(here), os.environ.get("PYTHONPATH", "")) if p)


class RayEngine:
    name = "ray"

    def __init__(self, model: Any, settings: EstimateSettings, options: RayOptions) -> None:
        _import_ray()  # refuse before any work when Ray is not installed
        self.model, self.options = model, options
        # each actor's estimator uses exactly the CPUs Ray reserved for it
        self.settings = settings.with_threads(options.cpus_per_worker)

    def run(self, pairs: Sequence[Pair], root: Path) -> Iterator[Outcome]:
        if not pairs:
            return
        ray = _import_ray()
        started = self._connect(ray)
        actors: list[Any] = []
        try:
            actors = self._start_actors(ray, len(pairs))
            yield from self._schedule(ray, actors, pairs, root)
        finally:
            for actor in actors:
                ray.kill(actor)
            if started:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Join the running runtime, the cluster at ``address``, or start a local one; True
        when this engine started it (and so shuts it down)."""
        if ray.is_initialized():
            return False
        address = self.options.address
        try:
            if address:
                ray.init(address=address, logging_level="warning")
            else:
                ray.init(include_dashboard=False, logging_level="warning",
                         runtime_env={"env_vars": {"PYTHONPATH": _regrisk_path()}})
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
            raise CohortError(f"cannot start or join {where}: {first_line(exc)}") from None
        return True

    def _start_actors(self, ray: Any, n_pairs: int) -> list[Any]:
        opts = self.options
        count = opts.workers or _workers_fit(ray.cluster_resources(), opts)
        remote = ray.remote(PairWorker).options(
            num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker,
            max_restarts=-1, max_task_retries=opts.retries)
        return [remote.remote(self.model, self.settings) for _ in range(min(count, n_pairs))]

    def _schedule(self, ray: Any, actors: list[Any], pairs: Sequence[Pair],
                  root: Path) -> Iterator[Outcome]:
        waiting = deque(pairs)
        running: dict[Any, tuple[Pair, int, float]] = {}   # ref -> (pair, actor, submitted)

        def submit(slot: int) -> None:
            pair = waiting.popleft()
            ref = actors[slot].run.remote(pair, str(root / pair.id))
            running[ref] = (pair, slot, time.perf_counter())

        for _ in range(self.options.depth):
            for slot in range(len(actors)):
                if waiting:
                    submit(slot)
        while running:
            (ref,), _ = ray.wait(list(running), num_returns=1)
            pair, slot, t0 = running.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the worker died on every try
                outcome = Outcome(pair.id, FAILED, time.perf_counter() - t0,
                                  error=f"worker lost: {first_line(exc, typed=True)}")
            if waiting:
                submit(slot)
            yield outcome


def _workers_fit(resources: dict[str, float], opts: RayOptions) -> int:
    """How many workers the cluster holds at once: its CPUs (and GPUs) over each one's share."""
    count = int(resources.get("CPU", 1) // max(opts.cpus_per_worker, 1))
    if opts.gpus_per_worker > 0:
        count = min(count, int(resources.get("GPU", 0) // opts.gpus_per_worker))
    if count < 1:
        raise CohortError(f"the Ray cluster has no room for one worker "
                          f"({opts.cpus_per_worker} CPU, {opts.gpus_per_worker} GPU each; it has "
                          f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU)")
    return count
