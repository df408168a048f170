"""The uncertainty engine: the only module that knows the whole pipeline.

    images (io) -> prepared pair on the model grid (pair: spaces + conventions)
    -> unperturbed prediction (runner) -> K perturbations drawn in family blocks (perturbations)
    -> per micro-batch: warp the source by tau, run the network, compose tau o phi
       (equivariance: kernels; runner: backend) -> streaming statistics (statistics)
    -> maps in mm on the target's native grid (pair) -> result and summary (results, provenance)

Everything inside the sample loop runs on the backend's array module (NumPy for the CPU,
CuPy for CUDA backends); the kernels dispatch on the array type, so this loop is the same for
both. Only small parameter arrays (affines, control grids) cross from the host per batch.
Output conventions are documented in :mod:`regrisk.results`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from . import io, kernels, memory, model_loading, perturbations, provenance
from .arrays import to_numpy
from .backends import Backend
from .card import ModelCard
from .equivariance import compose_back, micro_batches, perturb_source
from .errors import BudgetError, InputError, ModelError
from .memory import DEFAULT_ACTIVATION_FLOATS, keep_freed_memory  # noqa: F401 (public names)
from .pair import PreparedPair, prepare_pair
from .provenance import versions  # noqa: F401 (public name)
from .results import EstimateResult, Prediction
from .runner import ModelRunner, require_finite
from .statistics import GridMaps, SampleStatistics
from .timing import StageClock

__all__ = ["Estimator", "EstimateResult", "Prediction", "keep_freed_memory", "versions"]


_UNPERTURBED = "the unperturbed pair"


def _samples(block: perturbations.Block) -> str:
    ks = sorted(set(int(k) for k in block.index))
    return f"perturbed sample{'s' if len(ks) > 1 else ''} {', '.join(map(str, ks))} ({block.family})"


def _count(value: Any, name: str, minimum: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}{why}, got {value!r}")
    return int(value)


class Estimator:
    """Per-voxel uncertainty of a registration network by transformation equivariance.

    model: ``"default"`` (the packaged network), a path to an ONNX file with a card, or a
    callable ``f(source, target) -> (B, 3, D, H, W)`` (float32 (B, 1, D, H, W) inputs already on
    the grid; canonical voxel displacements out). A callable's grid is the target's native
    grid unless ``card`` gives one. device: ``"cpu"`` or ``"cuda"`` (CUDA backends).
    threads: CPU threads for the network and the kernels of this estimator's runs (default: all
    cores); nothing process-wide is changed. batch: samples per network call (default: sized to
    ``memory_budget`` bytes, default half the available memory). backend: a registered backend
    name to force one, or a ready :class:`~regrisk.backends.Backend` object (used as it is and
    not closed by the estimator).
    """

    def __init__(self, model: Any, device: str = "cpu", threads: int | None = None,
                 batch: int | None = None, memory_budget: int | None = None, *,
                 card: ModelCard | None = None, backend: str | Backend | None = None,
                 backend_options: dict[str, Any] | None = None,
                 activation_floats: int = DEFAULT_ACTIVATION_FLOATS) -> None:
        if device not in ("cpu", "cuda"):
            raise ModelError(f"device {device!r}: use 'cpu' or 'cuda'")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ModelError(f"threads must be an integer >= 1, got {threads!r}")
        if batch is not None and (not isinstance(batch, int) or batch < 1):
            raise ModelError(f"batch must be an integer >= 1, got {batch!r}")
        if memory_budget is not None and memory_budget <= 0:
            raise BudgetError(f"memory budget must be positive, got {memory_budget}")
        self.device, self.threads, self.batch = device, threads, batch
        self.memory_budget = memory_budget
        self.activation_floats = int(activation_floats)
        self.ops = kernels.Bound(threads)
        self.resolved = model_loading.resolve(model, card)
        self.runner = ModelRunner(self.resolved, device=device, backend=backend,
                                  threads=threads, options=dict(backend_options or {}))

    @property
    def card(self) -> ModelCard | None:
        return self.runner.card

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "Estimator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pipeline ------------------------------------------------------------------------
    def predict(self, source: Any, target: Any) -> Prediction:
        """One unperturbed pass: the raw prediction in mm and on the model grid."""
        pair, clock = self._prepare(source, target)
        u = self.runner.infer(pair.S[None, None], pair.T[None, None], clock, _UNPERTURBED)[0]
        with clock.stage("to_native"):
            world, warped = self._world_and_warped(pair, u)
        return Prediction(to_numpy(world), to_numpy(u), pair.grid_to_mm.copy(),
                          pair.tmap.grid_affine.copy(), pair.smap.grid_affine.copy(),
                          to_numpy(warped), pair.target.affine.copy(), dict(clock.times))

    def estimate(self, source: Any, target: Any, samples: int = 50,
                 perturbation: Any = "paper", seed: int | None = 0, sobol: bool = False,
                 progress: bool = False, passes: int = 1,
                 per_family: bool = False) -> EstimateResult:
        """Per-voxel uncertainty of the network's prediction for ``source`` -> ``target``.

        samples: K perturbations (>= 2). perturbation: preset name, spec string or
        :class:`perturbations.Perturbation`. seed: NumPy Generator seed. sobol: quasi-random
        draws. passes: M stochastic passes per perturbation (nested design for stochastic
        models: also returns the intrinsic and bias-jitter maps). per_family: also one sigma map
        per perturbation family of a mixture (the paper reports one map per family), from the
        same samples (each family's own K / n_families samples).
        """
        samples = _count(samples, "samples", 2, " (a spread needs two)")
        passes = _count(passes, "passes", 1)
        pert = perturbations.parse(perturbation)
        t_start = time.perf_counter()
        pair, clock = self._prepare(source, target)
        batch = self.plan_batch(pair, samples * passes, nested=passes > 1).batch
        with clock.stage("draw"):
            draws = pert.draw(samples, pair.grid, pair.grid_to_mm, np.random.default_rng(seed),
                              sobol)
        u0 = self.runner.infer(pair.S[None, None], pair.T[None, None], clock,  # also warm-up
                               _UNPERTURBED)[0]
        stats = SampleStatistics(pair.grid, pair.S, pair.xp, passes=passes,
                                 family_counts=draws.family_counts() if per_family else None,
                                 ops=self.ops)
        self._sample(pair, draws, stats, batch, passes, clock, progress)
        with clock.stage("finalise"):
            maps = stats.finalise(pair.grid_to_mm)
            require_finite(maps.sigma, "the statistics gave", "the uncertainty map", pair.xp)
        with clock.stage("to_native"):
            native = self._native_maps(pair, maps, u0)
        clock.times["total"] = time.perf_counter() - t_start
        params = provenance.RunParameters(
            samples, passes, pert.describe(), seed, sobol, batch, self.device,
            self.runner.describe().get("threads", self.threads), self.memory_budget,
            sorted(maps.families))
        return self._result(pair, maps, native, u0, params, dict(clock.times))

    # -- the parts -----------------------------------------------------------------------------
    def _prepare(self, source: Any, target: Any) -> tuple[PreparedPair, StageClock]:
        t0 = time.perf_counter()
        src_img, tgt_img = io.load_image(source, "source"), io.load_image(target, "target")
        t_load = time.perf_counter() - t0
        backend, card = self.runner.bind(tgt_img.shape)
        clock = StageClock(backend.xp)
        clock.times["load"] = t_load
        return prepare_pair(src_img, tgt_img, card, backend.xp, self.ops, clock), clock

    def plan_batch(self, pair: PreparedPair, work: int, nested: bool) -> memory.BatchPlan:
        """Samples per network call for ``work`` passes within the memory budget."""
        return memory.plan_batch(
            pair.grid, int(np.prod(pair.tmap.native_shape)), work, device=self.device,
            nested=nested, activation_floats=self.activation_floats, budget=self.memory_budget,
            batch=self.batch, fixed_batch=self.runner.backend.fixed_batch)  # type: ignore[union-attr]

    def _sample(self, pair: PreparedPair, draws: perturbations.DrawSet, stats: SampleStatistics,
                batch: int, passes: int, clock: StageClock, progress: bool) -> None:
        """The sample loop: perturb, infer, compose back, accumulate; one micro-batch a step."""
        xp, targets = pair.xp, {}
        bar = _progress_bar(draws.count * passes) if progress else None
        try:
            for block in micro_batches(draws, batch, passes):
                b = len(block)
                with clock.stage("perturb"):
                    src_b, fields = perturb_source(pair.S, block, xp, self.ops)
                    if b not in targets:
                        targets[b] = xp.ascontiguousarray(
                            xp.broadcast_to(pair.T[None, None], (b, 1, *pair.grid)))
                what = _samples(block)
                u = self.runner.infer(src_b, targets[b], clock, what)
                with clock.stage("compose"):
                    # finite u and finite draws (checked at parse time) give a finite g
                    g = compose_back(u, block, fields, xp, self.ops)
                with clock.stage("accumulate"):
                    stats.update(g, block.family)
                if bar is not None:
                    bar.update(b)
        finally:
            if bar is not None:
                bar.close()

    def _world_and_warped(self, pair: PreparedPair, u: Any) -> tuple[Any, Any]:
        world, disp_src = pair.native_fields(u)
        return world, self.ops.warp(pair.source_native, disp_src, mode="fill")

    def _native_maps(self, pair: PreparedPair, maps: GridMaps, u0: Any) -> dict[str, Any]:
        """Every output map on the target's native grid, as host arrays."""
        world, warped = self._world_and_warped(pair, u0)
        native = {"uncertainty": pair.to_native(maps.sigma),
                  "uncertainty_axes": pair.to_native(maps.axes),
                  "displacement": world, "mean_displacement": pair.native_fields(maps.mean)[0],
                  "warped_source": warped}
        if maps.intrinsic is not None:
            native["intrinsic"] = pair.to_native(maps.intrinsic)
            native["bias_jitter"] = pair.to_native(maps.bias_jitter)
        out = {k: to_numpy(v) for k, v in native.items()}
        out["family_uncertainty"] = {f: to_numpy(pair.to_native(v)) for f, v in maps.families.items()}
        return out

    def _result(self, pair: PreparedPair, maps: GridMaps, native: dict[str, Any], u0: Any,
                params: provenance.RunParameters, timings: dict[str, float]) -> EstimateResult:
        sigma_grid = to_numpy(maps.sigma)
        summary = provenance.summary(
            model={"label": self.resolved.label, "kind": self.resolved.kind},
            card=self.runner.card.to_dict(), params=params,  # type: ignore[union-attr]
            backend=self.runner.describe(), pair=pair, timings=timings, sigma_grid=sigma_grid)
        return EstimateResult(
            **native, affine=pair.target.affine.copy(), timings=timings, summary=summary,
            grid_uncertainty=sigma_grid, grid_displacement=to_numpy(u0),
            grid_mean=to_numpy(maps.mean), grid_to_mm=pair.grid_to_mm.copy())


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="sample", desc="regrisk", leave=False)
