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

import os
import time
from typing import Any

import numpy as np

from . import (io, jacobian, kernels, limits, memory, model_loading, perturbations, provenance,
               strata, variance)
from .arrays import to_numpy
from .backends import Backend
from .card import ModelCard
from .errors import BudgetError, InputError, ModelError
from .memory import DEFAULT_ACTIVATION_FLOATS, keep_freed_memory  # noqa: F401 (public names)
from .pair import PreparedPair, prepare_pair
from .provenance import versions  # noqa: F401 (public name)
from .results import EstimateResult, Prediction
from .runner import ModelRunner, require_finite
from .sampler import Outcome, Sampler
from .statistics import GridMaps, SampleStatistics
from .timing import StageClock

__all__ = ["Estimator", "EstimateResult", "Prediction", "keep_freed_memory", "versions"]


_UNPERTURBED = "the unperturbed pair"


def _require_finite_maps(maps: GridMaps, xp: Any) -> None:
    """Every finalised map finite: the statistics keep NaN (never 0), so a non-finite sample
    that got this far stops the run here rather than reaching a file."""
    named = {"the uncertainty map": maps.sigma, "the per-axis map": maps.axes,
             "the mean composed field": maps.mean, "the intrinsic map": maps.intrinsic,
             "the bias-jitter map": maps.bias_jitter,
             **{f"the {f} map": m for f, m in maps.families.items()}}
    for what, a in named.items():
        if a is not None:
            require_finite(a, "the statistics gave", what, xp)


def _input_paths(*specs: Any) -> tuple[str, ...]:
    """The files a result was computed from (paths, and the model's file): a save with
    overwrite never replaces a folder that holds one of them."""
    paths = [s for s in specs[:-1] if isinstance(s, (str, os.PathLike))]
    model_path = getattr(specs[-1].source, "path", None)
    return tuple(str(p) for p in paths + ([model_path] if model_path else []))


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
        threads = limits.threads(threads, ModelError)
        if batch is not None:
            batch = limits.integer(batch, "batch", 1, limits.MAX_BATCH, ModelError)
        memory_budget = limits.memory_budget(memory_budget, BudgetError)
        self.device, self.threads, self.batch = device, threads, batch
        self.memory_budget = memory_budget
        self.activation_floats = int(activation_floats)
        self.ops = kernels.Bound(threads)
        self.resolved = model_loading.resolve(model, card, budget=memory_budget)
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

    def estimate(self, source: Any, target: Any, samples: int | str = 50,
                 perturbation: Any = "paper", seed: int | None = 0, sobol: bool = False,
                 progress: bool = False, passes: int = 1, per_family: bool = False,
                 variance_reduction: Any = None, precision: float | None = None,
                 max_samples: int | None = None) -> EstimateResult:
        """Per-voxel uncertainty of the network's prediction for ``source`` -> ``target``.

        samples: K perturbations (>= 2), or ``"auto"``: rounds of draws until the map's
        split-half precision reaches ``precision`` (default 0.9) or ``max_samples`` (default
        200) have run. perturbation: preset name, spec string or
        :class:`perturbations.Perturbation`. seed: NumPy Generator seed. sobol: quasi-random
        draws. passes: M stochastic passes per perturbation (nested design for stochastic
        models: also returns the intrinsic and bias-jitter maps). per_family: also one sigma map
        per perturbation family of a mixture (the paper reports one map per family), from the
        same samples. variance_reduction: ``none`` (the paper's estimator, bit for bit),
        ``neyman``, ``stratified``, ``pooled`` / ``pooled(4mm)`` or a ``+`` combination (see
        :mod:`regrisk.variance`); None: ``variance.DEFAULT`` (``none`` when K leaves fewer than
        2 draws per family, or with ``passes`` > 1 or ``sobol``). The summary says which ran.
        """
        plan = variance.sample_plan(samples, precision, max_samples)
        passes = limits.integer(passes, "passes", 1, limits.MAX_PASSES)
        seed = limits.seed(seed)
        pert = perturbations.parse(perturbation)
        reduction = (variance.default_for(plan.most, len(pert.families), passes, sobol)
                     if variance_reduction is None else variance.parse(variance_reduction, sobol))
        if reduction.per_family and plan.most < 2 * len(pert.families):
            raise InputError(f"{reduction.name} needs 2 samples per family: at least "
                             f"{2 * len(pert.families)} for {len(pert.families)} families")
        t_start = time.perf_counter()
        pair, clock = self._prepare(source, target)
        batch = self.plan_batch(pair, plan.most * passes, nested=passes > 1,
                                accumulators=_accumulators(pert, reduction, per_family)).batch
        u0 = self.runner.infer(pair.S[None, None], pair.T[None, None], clock,  # also warm-up
                               _UNPERTURBED)[0]
        counts = pert.family_counts(plan.rounds(len(pert.families))[0]) if per_family else None
        stats = SampleStatistics(pair.grid, pair.S, pair.xp, passes=passes, family_counts=counts,
                                 ops=self.ops, pool_mm=reduction.pool_mm,
                                 strata=pert.families if reduction.per_family else None,
                                 control=reduction.control, control_mm=reduction.control_mm,
                                 grid_to_mm=pair.grid_to_mm)
        outcome = Sampler(self.runner, self.ops, pair, stats, batch, passes, clock).run(
            pert, plan, reduction.design, np.random.default_rng(seed), progress,
            neyman=reduction.neyman)
        with clock.stage("finalise"):
            maps = stats.finalise(pair.grid_to_mm)
            _require_finite_maps(maps, pair.xp)
        with clock.stage("to_native"):
            native = self._native_maps(pair, maps, u0)
        outcome.settle()  # the precision, measured beside finalise on the CPU
        clock.times["total"] = time.perf_counter() - t_start
        params = provenance.RunParameters(
            outcome.samples, passes, pert.describe(), seed, sobol, batch, self.device,
            self.runner.describe().get("threads", self.threads), self.memory_budget,
            sorted(maps.families))
        result = self._result(pair, maps, native, u0, params, dict(clock.times))
        result.summary["sampling"] = _sampling_summary(plan, reduction, outcome)
        result.inputs = _input_paths(source, target, self.resolved)
        return result

    # -- the parts -----------------------------------------------------------------------------
    def _prepare(self, source: Any, target: Any) -> tuple[PreparedPair, StageClock]:
        t0 = time.perf_counter()
        src_img = io.load_image(source, "source", budget=self.memory_budget)
        tgt_img = io.load_image(target, "target", budget=self.memory_budget)
        t_load = time.perf_counter() - t0
        backend, card = self.runner.bind(tgt_img.shape)
        clock = StageClock(backend.xp)
        clock.times["load"] = t_load
        return prepare_pair(src_img, tgt_img, card, backend.xp, self.ops, clock), clock

    def plan_batch(self, pair: PreparedPair, work: int, nested: bool,
                   accumulators: int = 3) -> memory.BatchPlan:
        """Samples per network call for ``work`` passes within the memory budget."""
        return memory.plan_batch(
            pair.grid, int(np.prod(pair.tmap.native_shape)), work, device=self.device,
            nested=nested, activation_floats=self.activation_floats, budget=self.memory_budget,
            batch=self.batch, fixed_batch=self.runner.backend.fixed_batch,  # type: ignore[union-attr]
            accumulators=accumulators)

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
        out["jacobian"] = jacobian.determinant(out["displacement"], pair.target.affine)
        out["family_uncertainty"] = {f: to_numpy(pair.to_native(v)) for f, v in maps.families.items()}
        return out

    def _result(self, pair: PreparedPair, maps: GridMaps, native: dict[str, Any], u0: Any,
                params: provenance.RunParameters, timings: dict[str, float]) -> EstimateResult:
        sigma_grid = to_numpy(maps.sigma)
        summary = provenance.summary(
            model={"label": self.resolved.label, "kind": self.resolved.kind},
            card=self.runner.card.to_dict(), params=params,  # type: ignore[union-attr]
            backend=self.runner.describe(), pair=pair, timings=timings, sigma_grid=sigma_grid)
        summary["jacobian"] = jacobian.folding(native["jacobian"], pair.tmap.covered())
        return EstimateResult(
            **native, affine=pair.target.affine.copy(), timings=timings, summary=summary,
            grid_uncertainty=sigma_grid, grid_displacement=to_numpy(u0),
            grid_mean=to_numpy(maps.mean), grid_to_mm=pair.grid_to_mm.copy())



def _accumulators(pert: perturbations.Perturbation, reduction: variance.VarianceReduction,
                  per_family: bool) -> int:
    """Welford accumulators a run holds (statistics.SampleStatistics)."""
    if reduction.per_family:
        return strata.accumulators(pert.families, reduction.control)
    families = len(pert.families)  # the plain map, its two halves, the per-family maps
    return 3 + (families if per_family and families > 1 else 0)


def _sampling_summary(plan: variance.SamplePlan, reduction: variance.VarianceReduction,
                      outcome: Outcome) -> dict[str, Any]:
    """How many samples ran, why the run stopped, and how precise the map is."""
    out: dict[str, Any] = {"requested": "auto" if plan.adaptive else plan.samples,
                           "samples": outcome.samples, "stopped": outcome.stopped,
                           "variance_reduction": reduction.to_dict(),
                           "precision": outcome.precision}
    if outcome.family_samples is not None:
        out["family_samples"] = outcome.family_samples
    if plan.adaptive:
        out.update(target_precision=plan.precision, max_samples=plan.max_samples)
    return out
