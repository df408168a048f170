"""The uncertainty engine: the only module that knows the whole pipeline.

    images (io) -> model grid (spaces) -> intensity preprocessing (conventions)
    -> unperturbed prediction -> K perturbed predictions in micro-batches:
       draw tau (perturbations) -> warp source (kernels) -> network (backend)
       -> canonical field (conventions) -> compose tau o phi (kernels) -> Welford (kernels)
    -> sigma in mm -> back to the target's native grid (spaces) -> files (io)

Everything inside the sample loop runs on the backend's array module (NumPy for the CPU,
CuPy for CUDA backends); the kernels dispatch on the array type, so this loop is the same for
both. Only small parameter arrays (affines, control grids) cross from the host per batch.

Output conventions (on the target's native grid, with its affine):

- ``uncertainty`` sigma(x) = sqrt(tr(M Sigma(x) M^T)) in mm, Sigma the covariance of the composed
  samples' end points in the source model grid, M that grid's voxel->mm matrix.
- ``uncertainty_axes`` sqrt(diag(M Sigma M^T)): standard deviation along world x, y, z (mm).
- ``displacement`` / ``mean_displacement``: world displacement in mm along the world (NIfTI RAS+)
  axes, world(source point matched to x) - world(x); for images on one grid this is M u.
- ``warped_source``: the native source resampled through the unperturbed prediction.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import conventions, io, kernels, model_loading, perturbations, spaces
from .backends import Backend, create_backend
from .card import ModelCard
from .errors import BudgetError, InputError, ModelError

Array = Any

# ORT's working memory per sample is not knowable from outside the graph; this many float32
# values per grid voxel is assumed for activations when sizing micro-batches (a small 3-D
# U-Net at full resolution holds ~16-32 channels). Override with Estimator(activation_floats=).
DEFAULT_ACTIVATION_FLOATS = 32
# Largest automatic micro-batch per device: on the CPU a bigger batch buys ORT nothing (it runs
# the images one after the other) and costs cache and memory; GPUs want wide batches.
MAX_AUTO_BATCH = {"cpu": 4, "cuda": 16}


# -- results ------------------------------------------------------------------------------------

@dataclass
class Prediction:
    """One unperturbed pass. ``displacement`` is mm on the target's native grid (world axes);
    ``grid_displacement`` the canonical model-grid field (voxels, channel c along axis c)."""

    displacement: np.ndarray          # (3, D, H, W) mm, target native grid
    grid_displacement: np.ndarray     # (3, g0, g1, g2) voxels of the model grid
    grid_to_mm: np.ndarray            # (3, 3) source model grid voxel -> mm (for sigma)
    grid_affine: np.ndarray           # (4, 4) target model grid voxel -> world
    source_grid_affine: np.ndarray    # (4, 4) source model grid voxel -> world
    warped_source: np.ndarray         # (D, H, W) native source through the prediction
    affine: np.ndarray                # (4, 4) target native affine
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class EstimateResult:
    uncertainty: np.ndarray           # (D, H, W) mm
    uncertainty_axes: np.ndarray      # (3, D, H, W) mm
    displacement: np.ndarray          # (3, D, H, W) mm
    mean_displacement: np.ndarray     # (3, D, H, W) mm
    warped_source: np.ndarray         # (D, H, W)
    affine: np.ndarray                # (4, 4)
    timings: dict[str, float]
    summary: dict[str, Any]
    grid_uncertainty: np.ndarray      # (g0, g1, g2) mm on the model grid
    grid_displacement: np.ndarray     # (3, g0, g1, g2) voxels, unperturbed
    grid_mean: np.ndarray             # (3, g0, g1, g2) voxels, mean of composed samples
    grid_to_mm: np.ndarray            # (3, 3)
    intrinsic: np.ndarray | None = None      # nested design only: (D, H, W) mm
    bias_jitter: np.ndarray | None = None    # nested design only: (D, H, W) mm
    family_uncertainty: dict[str, np.ndarray] = field(default_factory=dict)  # per_family only

    def save(self, out_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the NIfTI outputs and summary.json into ``out_dir`` atomically."""
        t0 = time.perf_counter()
        aff = self.affine
        with io.OutputFolder(out_dir, overwrite) as tmp:
            io.save_nifti(tmp / "uncertainty.nii.gz", self.uncertainty, aff,
                          description="regrisk sigma (mm)")
            io.save_nifti(tmp / "uncertainty_axes.nii.gz", self.uncertainty_axes, aff,
                          description="regrisk per-axis std x,y,z (mm)")
            io.save_nifti(tmp / "displacement.nii.gz", self.displacement, aff, vector=True,
                          description="regrisk displacement (mm, world axes)")
            io.save_nifti(tmp / "mean_displacement.nii.gz", self.mean_displacement, aff,
                          vector=True, description="regrisk mean composed displacement (mm)")
            io.save_nifti(tmp / "warped_source.nii.gz", self.warped_source, aff,
                          description="regrisk warped source")
            files = ["uncertainty.nii.gz", "uncertainty_axes.nii.gz", "displacement.nii.gz",
                     "mean_displacement.nii.gz", "warped_source.nii.gz"]
            if self.intrinsic is not None and self.bias_jitter is not None:
                io.save_nifti(tmp / "intrinsic.nii.gz", self.intrinsic, aff,
                              description="regrisk intrinsic spread (mm)")
                io.save_nifti(tmp / "bias_jitter.nii.gz", self.bias_jitter, aff,
                              description="regrisk bias jitter (mm)")
                files += ["intrinsic.nii.gz", "bias_jitter.nii.gz"]
            for fam, sigma in self.family_uncertainty.items():
                io.save_nifti(tmp / f"uncertainty_{fam}.nii.gz", sigma, aff,
                              description=f"regrisk sigma, {fam} samples only (mm)")
                files.append(f"uncertainty_{fam}.nii.gz")
            self.timings["save"] = time.perf_counter() - t0
            summary = dict(self.summary, timings=dict(self.timings), files=files + ["summary.json"])
            io.write_json(tmp / "summary.json", summary)
        return Path(out_dir)


# -- helpers --------------------------------------------------------------------------------------

class _Clock:
    """Per-stage wall times; synchronises the device before reading the clock (CuPy)."""

    def __init__(self, xp: Any) -> None:
        self.times: dict[str, float] = {}
        self._sync: Callable[[], None] = lambda: None
        if xp.__name__ == "cupy":
            self._sync = lambda: xp.cuda.Device().synchronize()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


def _to_numpy(a: Array) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    return a.get()


def _trace_sigma(cov6: Array, M: np.ndarray, xp: Any) -> Array:
    """sqrt(tr(M C M^T)) from a (6, D, H, W) covariance (xx, xy, xz, yy, yz, zz)."""
    G = M.T @ M
    w = [G[0, 0], 2 * G[0, 1], 2 * G[0, 2], G[1, 1], 2 * G[1, 2], G[2, 2]]
    acc = xp.zeros(cov6.shape[1:], dtype=xp.float32)
    for k in range(6):
        acc += np.float32(w[k]) * cov6[k]
    return xp.sqrt(xp.maximum(acc, 0))


_ALLOCATOR_TUNED = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed large blocks instead of returning them to the OS.

    Every micro-batch allocates a few arrays of tens to hundreds of MB (kernel outputs, the
    network's output). glibc serves blocks that large with fresh mmap pages, so each batch pays
    the page faults and zeroing again (about 40 ms per 200 MB here). Serving them from the heap
    (M_MMAP_MAX = 0) and not trimming it lets the next batch reuse warm pages. Process-wide and
    idempotent; a no-op (False) off glibc.
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


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def versions() -> dict[str, Any]:
    import nibabel
    import scipy

    out: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__,
                           "scipy": scipy.__version__, "nibabel": nibabel.__version__,
                           "platform": platform.platform()}
    from . import __version__

    out["regrisk"] = __version__
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        out["kernels"] = kernels.build_info()
    except Exception:  # build info is informative only
        pass
    return out


# -- the estimator ----------------------------------------------------------------------------------

class Estimator:
    """Per-voxel uncertainty of a registration network by transformation equivariance.

    model: ``"default"`` (the packaged network), a path to an ONNX file with a card, or a
    callable ``f(source, target) -> (B, 3, D, H, W)`` (float32 (B, 1, D, H, W) inputs already on
    the grid; canonical voxel displacements out). A callable's grid is the target's native
    grid unless ``card`` gives one. device: ``"cpu"`` or ``"cuda"`` (CUDA backends).
    threads: CPU threads for the network and the kernels (default: all cores). batch: samples
    per network call (default: sized to ``memory_budget`` bytes, default half the available
    memory). backend: a registered backend name to force one. reuse_memory: keep freed large
    blocks in the heap between micro-batches (see :func:`keep_freed_memory`).
    """

    def __init__(self, model: Any, device: str = "cpu", threads: int | None = None,
                 batch: int | None = None, memory_budget: int | None = None, *,
                 card: ModelCard | None = None, backend: str | None = None,
                 backend_options: dict[str, Any] | None = None,
                 activation_floats: int = DEFAULT_ACTIVATION_FLOATS,
                 reuse_memory: bool = True) -> None:
        if device not in ("cpu", "cuda"):
            raise ModelError(f"device {device!r}: use 'cpu' or 'cuda'")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ModelError(f"threads must be an integer >= 1, got {threads!r}")
        if batch is not None and (not isinstance(batch, int) or batch < 1):
            raise ModelError(f"batch must be an integer >= 1, got {batch!r}")
        if memory_budget is not None and memory_budget <= 0:
            raise BudgetError(f"memory budget must be positive, got {memory_budget}")
        self.device = device
        self.threads = threads
        self.batch = batch
        self.memory_budget = memory_budget
        self.activation_floats = int(activation_floats)
        self._backend_name = backend
        self._backend_options = dict(backend_options or {})
        self.resolved = model_loading.resolve(model, card)
        self.card: ModelCard | None = self.resolved.card
        self._backend: Backend | None = None
        self._backend_grid: tuple[int, ...] | None = None
        if self.resolved.kind == "onnx":
            self._backend = self._make_backend(self.card)  # type: ignore[arg-type]
        if threads is not None and device == "cpu":
            kernels.set_num_threads(threads)
        if reuse_memory and device == "cpu":
            keep_freed_memory()

    # -- plumbing ---------------------------------------------------------------------------
    def _make_backend(self, card: ModelCard) -> Backend:
        return create_backend(self.resolved.source, card, device=self.device,
                              name=self._backend_name, threads=self.threads,
                              options=self._backend_options)

    def _backend_for(self, target_shape: tuple[int, int, int]) -> tuple[Backend, ModelCard]:
        if self.resolved.kind == "callable":
            card = self.card or model_loading.callable_card(target_shape, self.resolved.label)
            if self._backend is None or self._backend_grid != tuple(card.grid):
                self._backend = self._make_backend(card)
                self._backend_grid = tuple(card.grid)
            return self._backend, card
        assert self._backend is not None and self.card is not None
        return self._backend, self.card

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> "Estimator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _feeds(self, card: ModelCard, src: Array, tgt: Array, xp: Any) -> dict[str, Array]:
        if card.inputs.layout == "pair":
            return {card.inputs.source: src, card.inputs.target: tgt}
        pair = (src, tgt) if card.inputs.order == ("source", "target") else (tgt, src)
        return {card.inputs.concat: xp.concatenate(pair, axis=1)}

    def _infer(self, backend: Backend, card: ModelCard, src: Array, tgt: Array, xp: Any,
               clock: _Clock) -> Array:
        """Canonical (b, 3, *grid) for a batch of b perturbed sources, honouring a fixed batch."""
        b = src.shape[0]
        fixed = backend.fixed_batch
        outs = []
        step = fixed or b
        for s in range(0, b, step):
            part_src, part_tgt = src[s:s + step], tgt[s:s + step]
            n = part_src.shape[0]
            if fixed and n < fixed:  # pad the last group; the extra outputs are dropped
                reps = [part_src] + [part_src[-1:]] * (fixed - n)
                part_src = xp.concatenate(reps, axis=0)
                part_tgt = xp.ascontiguousarray(xp.broadcast_to(part_tgt[:1], part_src.shape))
            with clock.stage("inference"):
                raw = backend.run(self._feeds(card, part_src, part_tgt, xp))
            with clock.stage("convert"):
                try:
                    u = conventions.to_canonical(raw, card.output, card.grid)
                except ValueError as exc:
                    raise ModelError(f"model {self.resolved.label}: {exc}") from None
            outs.append(u[:n] if n < u.shape[0] else u)
        if len(outs) == 1:
            return outs[0]
        return xp.concatenate(outs, axis=0)

    # -- preparation ------------------------------------------------------------------------
    def _prepare(self, source: Any, target: Any, clock: _Clock | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        src_img = io.load_image(source, "source")
        tgt_img = io.load_image(target, "target")
        t_load = time.perf_counter() - t0
        backend, card = self._backend_for(tgt_img.shape)
        xp = backend.xp
        clock = clock or _Clock(xp)
        clock.times["load"] = t_load
        with clock.stage("to_grid"):
            smap = spaces.grid_map(src_img.shape, src_img.affine, card)
            tmap = spaces.grid_map(tgt_img.shape, tgt_img.affine, card)
            src_native = xp.asarray(src_img.data)
            tgt_native = xp.asarray(tgt_img.data)
            S = smap.to_grid(src_native, kernels)
            T = tmap.to_grid(tgt_native, kernels)
        with clock.stage("preprocess"):
            S = conventions.preprocess(S, card, "source")
            T = conventions.preprocess(T, card, "target")
        return dict(src=src_img, tgt=tgt_img, backend=backend, card=card, xp=xp, clock=clock,
                    smap=smap, tmap=tmap, S=S, T=T, src_native=src_native)

    def _native_fields(self, p: dict[str, Any], u: Array) -> tuple[Array, Array]:
        """(world displacement mm (3, native), source-native displacement for warping) for a
        canonical model-grid field ``u``; see the module docstring for the definition."""
        xp, smap, tmap = p["xp"], p["smap"], p["tmap"]
        # P(x) = A_s (x + u(x)) + b_s: source native voxel matched to model voxel x
        P_grid = kernels.compose(u, affine=smap.pullback)
        P_grid += conventions.identity_grid(tmap.grid_shape, xp)
        P = tmap.to_native(P_grid, kernels)                      # (3, native target)
        y = conventions.identity_grid(tmap.native_shape, xp)
        Ls = xp.asarray(smap.native_affine[:3, :3].astype(np.float32))
        Lt = xp.asarray(tmap.native_affine[:3, :3].astype(np.float32))
        off = xp.asarray((smap.native_affine[:3, 3] - tmap.native_affine[:3, 3]).astype(np.float32))
        n = int(np.prod(tmap.native_shape))
        world = (Ls @ P.reshape(3, n) - Lt @ y.reshape(3, n) + off[:, None]).reshape(P.shape)
        P -= y  # displacement into the source's native voxels, on the target's native grid
        return xp.ascontiguousarray(world, dtype=xp.float32), P

    # -- public API -------------------------------------------------------------------------------
    def predict(self, source: Any, target: Any) -> Prediction:
        """One unperturbed pass: the raw prediction in mm and on the model grid."""
        p = self._prepare(source, target)
        xp, clock, card = p["xp"], p["clock"], p["card"]
        u = self._infer(p["backend"], card, p["S"][None, None], p["T"][None, None], xp, clock)[0]
        with clock.stage("to_native"):
            world, disp_src = self._native_fields(p, u)
            warped = kernels.warp(p["src_native"], disp_src, mode="fill")
        return Prediction(_to_numpy(world), _to_numpy(u), p["smap"].to_mm.copy(),
                          p["tmap"].grid_affine.copy(), p["smap"].grid_affine.copy(),
                          _to_numpy(warped), p["tgt"].affine.copy(), dict(clock.times))

    def plan_batch(self, card: ModelCard, native_voxels: int, samples: int, passes: int = 1,
                   fixed_batch: int | None = None) -> int:
        """Samples per network call within the memory budget; BudgetError if even one is over."""
        N = int(np.prod(card.grid))
        f4 = 4
        fixed = f4 * (2 * N + 9 * N + 3 * N + 3 * N + 12 * native_voxels)
        if passes > 1:
            fixed += f4 * (9 * N + 9 * N + 6 * N)
        per_sample = f4 * N * (1 + 1 + 3 + 3 + 3 + 3 + self.activation_floats)
        budget = self.memory_budget or min(_available_memory() // 2, 16 << 30)
        total = samples * passes
        if fixed_batch:
            batch = fixed_batch
        elif self.batch:
            batch = min(self.batch, total)
        else:
            cap = MAX_AUTO_BATCH.get(self.device, 4)
            batch = int(max(1, min(cap, total, (budget - fixed) // per_sample)))
        need = fixed + batch * per_sample
        if need > budget:
            raise BudgetError(f"estimated memory {_gib(need)} (batch {batch}, grid "
                              f"{'x'.join(map(str, card.grid))}) exceeds the budget {_gib(budget)}; "
                              "lower --batch or raise the budget")
        return batch

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
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 2:
            raise InputError(f"samples must be an integer >= 2 (a spread needs two), got {samples!r}")
        if isinstance(passes, bool) or not isinstance(passes, (int, np.integer)) or passes < 1:
            raise InputError(f"passes must be an integer >= 1, got {passes!r}")
        samples, passes = int(samples), int(passes)
        pert = perturbations.parse(perturbation)
        t_start = time.perf_counter()
        p = self._prepare(source, target)
        xp, clock, card, backend = p["xp"], p["clock"], p["card"], p["backend"]
        smap, tmap, S, T = p["smap"], p["tmap"], p["S"], p["T"]
        grid = tuple(card.grid)
        M = smap.to_mm
        batch = self.plan_batch(card, int(np.prod(tmap.native_shape)), samples, passes,
                                backend.fixed_batch)
        rng = np.random.default_rng(seed)
        with clock.stage("draw"):
            draws = pert.draw(samples, grid, M, rng, sobol)

        # Unperturbed prediction (also the network's warm-up).
        u0 = self._infer(backend, card, S[None, None], T[None, None], xp, clock)[0]

        welford = kernels.Welford(grid, like=S)
        nested = passes > 1
        if nested:
            outer = kernels.Welford(grid, like=S)
            intrinsic_sum = xp.zeros((6, *grid), dtype=xp.float32)
            inner: kernels.Welford | None = None
        # Work list: perturbation k repeated `passes` times, consecutive. Samples are grouped
        # by family, so micro-batches are homogeneous (all affine or all dense: no masked
        # copies); the statistics do not depend on the order.
        dense_all = draws.dense
        names = np.array(draws.families)
        family_names = list(dict.fromkeys(draws.families))
        chunks = []
        for name in family_names:
            work = np.repeat(np.flatnonzero(names == name), passes)
            chunks += [work[i:i + batch] for i in range(0, len(work), batch)]
        fam_welford: dict[str, Any] = {}
        if per_family and len(family_names) > 1:
            if any(int((names == f).sum()) * passes < 2 for f in family_names):
                raise InputError(f"per-family maps need >= 2 samples per family; "
                                 f"{samples} samples over {len(family_names)} families is too few")
            fam_welford = {f: kernels.Welford(grid, like=S) for f in family_names}
        T_batch: dict[int, Array] = {}
        S_vol = S[None]  # (1, D, H, W): one volume, B transforms broadcast in the kernel
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=samples * passes, unit="sample", desc="regrisk", leave=False)
        try:
            for ks in chunks:
                b = len(ks)
                dense = bool(dense_all[ks[0]])  # chunks are homogeneous
                with clock.stage("perturb"):
                    if dense:
                        ctrl = xp.asarray(np.stack([draws.control[k] for k in ks]))
                        fields = kernels.bspline_field(ctrl, grid)
                        src_b = kernels.warp(S_vol, fields)
                    else:
                        A = xp.asarray(draws.affine[ks])
                        src_b = kernels.warp(S_vol, affine=A)
                    if b not in T_batch:
                        T_batch[b] = xp.ascontiguousarray(xp.broadcast_to(T[None, None], (b, 1, *grid)))
                u = self._infer(backend, card, src_b, T_batch[b], xp, clock)
                with clock.stage("compose"):
                    g = kernels.compose(u, field=fields) if dense else kernels.compose(u, affine=A)
                with clock.stage("accumulate"):
                    welford.update(g)
                    if fam_welford:
                        fam_welford[draws.families[ks[0]]].update(g)
                    if nested:
                        for j in range(b):
                            if inner is None:
                                inner = kernels.Welford(grid, like=S)
                            inner.update(g[j:j + 1])
                            if inner.count == passes:
                                outer.update(xp.ascontiguousarray(inner.mean[None]))
                                intrinsic_sum += inner.covariance
                                inner = None
                if bar is not None:
                    bar.update(b)
        finally:
            if bar is not None:
                bar.close()

        with clock.stage("finalise"):
            sigma_g = welford.sigma(M)
            axes_g = welford.axis_sigma(M)
            mean_g = welford.mean
            if nested:
                intr_g = _trace_sigma(intrinsic_sum / np.float32(samples), M, xp)
                jitter_g = outer.sigma(M)
            fam_g = {f: w.sigma(M) for f, w in fam_welford.items()}
        with clock.stage("to_native"):
            sigma_n = tmap.to_native(sigma_g, kernels)
            axes_n = tmap.to_native(axes_g, kernels)
            disp_mm, disp_src = self._native_fields(p, u0)
            mean_mm, _ = self._native_fields(p, mean_g)
            warped = kernels.warp(p["src_native"], disp_src, mode="fill")
            intr_n = tmap.to_native(xp.ascontiguousarray(intr_g), kernels) if nested else None
            jitter_n = tmap.to_native(jitter_g, kernels) if nested else None
            fam_n = {f: _to_numpy(tmap.to_native(v, kernels)) for f, v in fam_g.items()}
        clock.times["total"] = time.perf_counter() - t_start
        timings = dict(clock.times)
        summary = self._summary(p, pert, samples, passes, seed, sobol, batch, timings,
                                _to_numpy(sigma_g))
        summary["parameters"]["per_family"] = sorted(fam_welford)
        return EstimateResult(
            uncertainty=_to_numpy(sigma_n), uncertainty_axes=_to_numpy(axes_n),
            displacement=_to_numpy(disp_mm), mean_displacement=_to_numpy(mean_mm),
            warped_source=_to_numpy(warped), affine=p["tgt"].affine.copy(), timings=timings,
            summary=summary, grid_uncertainty=_to_numpy(sigma_g), grid_displacement=_to_numpy(u0),
            grid_mean=_to_numpy(mean_g), grid_to_mm=M.copy(),
            intrinsic=None if intr_n is None else _to_numpy(intr_n),
            bias_jitter=None if jitter_n is None else _to_numpy(jitter_n),
            family_uncertainty=fam_n)

    def _summary(self, p: dict[str, Any], pert: perturbations.Perturbation, samples: int,
                 passes: int, seed: int | None, sobol: bool, batch: int,
                 timings: dict[str, float], sigma_grid: np.ndarray) -> dict[str, Any]:
        card: ModelCard = p["card"]
        inference = timings.get("inference", 0.0)
        total = timings.get("total", 0.0)
        return {
            "regrisk": "estimate",
            "model": {"label": self.resolved.label, "kind": self.resolved.kind},
            "card": card.to_dict(),
            "parameters": {"samples": samples, "passes": passes, "perturbation": pert.describe(),
                           "seed": seed, "sobol": sobol, "batch": batch, "device": self.device,
                           "threads": p["backend"].describe().get("threads", self.threads),
                           "memory_budget": self.memory_budget},
            "seed": seed,
            "backend": p["backend"].describe(),
            "inputs": {
                role: {"label": img.label, "shape": list(img.shape),
                       "affine": img.affine.tolist()}
                for role, img in (("source", p["src"]), ("target", p["tgt"]))
            },
            "model_grid": {"shape": list(card.grid), "target_affine": p["tmap"].grid_affine.tolist(),
                           "source_affine": p["smap"].grid_affine.tolist()},
            "statistics": {"sigma_mm_mean": float(sigma_grid.mean()),
                           "sigma_mm_max": float(sigma_grid.max()),
                           "non_inference_share": (total - inference) / total if total else None},
            "conventions": {
                "uncertainty": "sqrt(tr(M Sigma M^T)) in mm, target native grid",
                "uncertainty_axes": "std along world x, y, z (mm)",
                "displacement": "world displacement in mm along world x, y, z (NIfTI RAS+), "
                                "vector intent, shape (D, H, W, 1, 3)",
            },
            "timings": timings,
            "versions": versions(),
        }
