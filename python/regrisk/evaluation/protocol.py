"""The paper's evaluation protocol as a function: known transform, register, compare.

For every ground-truth kind, repeat and base image (``source``, ``target`` or both of the
given pair), one case is built (see ``groundtruth``): the base image ``I`` warped by a known
pull-back ``G`` is the new source, ``I`` itself the target, and the map the model should
predict is ``G^{-1}``. The true error per voxel is ``|M u_gt - u_pred|`` in mm (M the 3x3
voxel-to-mm part of the image affine) inside the region scored: the mask (default: the base
image's foreground) restricted to voxels whose true correspondence lies inside the image
(``x + u_gt(x)`` inside the grid; elsewhere the transformed source holds no evidence).

Methods scored on the same voxels (see ``baselines``): the engine's equivariance map for each
perturbation preset, the inverse-consistency error, MC dropout through the stochastic graph
(when one exists), and a random map. ``convergence`` adds, for the first case of each kind,
the agreement of K-sample maps with a K = 200 map (independent and Sobol draws).
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..arrays import identity_grid
from ..errors import InputError
from . import baselines, groundtruth, metrics

CONVERGENCE_SAMPLES = (4, 8, 16, 32, 50, 100, 200)


@dataclass
class EvaluationConfig:
    """Every option of ``regrisk evaluate`` (the CLI builds one of these)."""

    model: Any = "default"
    source: Any = None
    target: Any = None
    mask: Any = None
    ground_truth: Sequence[str] = ("translation", "affine", "nonlinear")
    samples: int = 16
    repeats: int = 1
    seed: int = 0
    perturbation: Sequence[str] = ("paper",)
    convergence: bool = False
    convergence_samples: Sequence[int] = CONVERGENCE_SAMPLES
    base: str = "both"
    stochastic_model: Any = None
    baselines: Sequence[str] = ("inverse_consistency", "mc_dropout", "random")
    plots: str = "first"  # "all" cases, "first" case of each kind, or "none"
    device: str = "cpu"
    threads: int | None = None
    overwrite: bool = False
    calibration: Any = "auto"  # "auto": the shipped one for the default model; None: none
    qc_threshold: float | None = None  # mm; None: the calibration's default

    def check(self) -> None:
        if self.source is None or self.target is None:
            raise InputError("evaluate needs a source and a target image")
        kinds = list(self.ground_truth)
        if "all" in kinds:
            kinds = list(groundtruth.KINDS)
        bad = [k for k in kinds if k not in groundtruth.KINDS]
        if bad or not kinds:
            raise InputError(f"--ground-truth must be translation, affine, nonlinear or all, not {bad or kinds}")
        self.ground_truth = tuple(dict.fromkeys(kinds))
        if not isinstance(self.samples, int) or self.samples < 2:
            raise InputError(f"--samples must be an integer >= 2 (got {self.samples!r})")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise InputError(f"--repeats must be an integer >= 1 (got {self.repeats!r})")
        if self.base not in ("source", "target", "both"):
            raise InputError(f"--base must be source, target or both (got {self.base!r})")
        if isinstance(self.perturbation, str):
            self.perturbation = (self.perturbation,)
        if not self.perturbation:
            raise InputError("--perturbation needs at least one preset or spec")
        unknown = [b for b in self.baselines if b not in baselines.NAMES]
        if unknown:
            raise InputError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(baselines.NAMES)}")
        if self.plots not in ("all", "first", "none"):
            raise InputError(f"plots must be all, first or none (got {self.plots!r})")
        ks = sorted(set(int(k) for k in self.convergence_samples))
        if self.convergence and (not ks or ks[0] < 2):
            raise InputError("convergence sample counts must be integers >= 2")
        self.convergence_samples = tuple(ks)


@dataclass
class Case:
    kind: str
    repeat: int
    base: str
    image: np.ndarray          # I, the target of the registered pair
    affine: np.ndarray         # (4, 4) voxel -> mm of I (and of the new source)
    source: np.ndarray         # I o G
    truth: groundtruth.GroundTruth
    region: np.ndarray         # bool (D, H, W): voxels scored
    seed: int


@dataclass
class EvaluationResult:
    out: Path
    rows: list[dict[str, Any]]
    convergence: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> str:
        return summary_table(self.rows)


# -- inputs --------------------------------------------------------------------------------------

def foreground(image: np.ndarray) -> np.ndarray:
    """Voxels brighter than 5% of the 99th percentile (skull-stripped MRI: the brain)."""
    hi = float(np.percentile(image, 99))
    lo = float(image.min())
    return image > lo + 0.05 * (hi - lo)


def _region(image: np.ndarray, mask: np.ndarray | None, truth: groundtruth.GroundTruth) -> np.ndarray:
    base = foreground(image) if mask is None else mask
    shape = np.array(image.shape)[:, None, None, None]
    pts = identity_grid(image.shape).astype(np.float64) + truth.displacement
    inside = np.all((pts >= 0) & (pts <= shape - 1), axis=0)
    return base & inside


def build_cases(cfg: EvaluationConfig) -> list[Case]:
    return list(iter_cases(cfg))


def iter_cases(cfg: EvaluationConfig) -> Iterator[Case]:
    """The cases one at a time (each holds a few full-size volumes); inputs are validated
    before the first is yielded."""
    bases = {"source": ["source"], "target": ["target"], "both": ["source", "target"]}[cfg.base]
    images = _base_images(cfg, bases)
    mask = _mask(cfg, images)
    for ki, kind in enumerate(cfg.ground_truth):
        for r in range(cfg.repeats):
            for bi, b in enumerate(bases):
                img, aff = images[b]
                seed = int(np.random.SeedSequence([cfg.seed, ki, r, bi]).generate_state(1)[0])
                truth = groundtruth.make(kind, img.shape, np.random.default_rng(seed))
                region = _region(img, mask, truth)
                if region.sum() < 10:
                    raise InputError(f"{b} image: fewer than 10 voxels to score (mask/foreground empty?)")
                yield Case(kind, r, b, img, aff, truth.apply(img), truth, region, seed)


def _base_images(cfg: EvaluationConfig, bases: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(volume, affine) of each base image, read and validated by ``io``."""
    images = {}
    for b in bases:
        img = io.load_image(getattr(cfg, b), b)
        if min(img.shape) < 4:
            raise InputError(f"{b}: every axis needs at least 4 voxels, got shape {img.shape}")
        images[b] = (img.data, img.affine)
    return images


def _mask(cfg: EvaluationConfig, images: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """The user's region of interest, on the grid of every base image (None: foreground)."""
    if cfg.mask is None:
        return None
    mask, _ = io.load_mask(cfg.mask, "mask")
    for b, (img, _) in images.items():
        if img.shape != mask.shape:
            raise InputError(f"mask shape {mask.shape} differs from the {b} image's {img.shape} "
                             f"(the mask must be on the grid of every base image; see --base)")
    return mask


# -- running -------------------------------------------------------------------------------------

def _estimator(model: Any, cfg: EvaluationConfig) -> Any:
    from ..engine import Estimator

    return Estimator(model, device=cfg.device, threads=cfg.threads)


def true_error(case: Case, predicted_mm: np.ndarray) -> np.ndarray:
    """|M u_gt - u_pred| per voxel in mm; ``predicted_mm`` world (mm) vectors on the target grid."""
    gt_mm = groundtruth.voxel_to_mm(case.truth.displacement, case.affine)
    return np.linalg.norm(gt_mm - predicted_mm, axis=0).astype(np.float32)


def _row(case: Case, method: str, samples: int, s: metrics.Scores, seconds: float) -> dict[str, Any]:
    return {"method": method, "ground_truth": case.kind, "repeat": case.repeat, "base": case.base,
            "samples": samples, **{k: (round(v, 6) if isinstance(v, float) else v)
                                   for k, v in s.as_dict().items()},
            "seconds": round(seconds, 3)}


def run_case(case: Case, est: Any, cfg: EvaluationConfig, stochastic: Any | None,
             plot_dir: Path | None, calibration: Any = None
             ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Every method on one case; returns the metric rows and the maps (for plots). With a
    ``calibration``, its error map is scored too, with its bound's coverage and the verdict."""
    src, tgt = (case.source, case.affine), (case.image, case.affine)
    maps: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    samples: dict[str, int] = {}
    predicted = None
    for pi, spec in enumerate(cfg.perturbation):
        t0 = time.perf_counter()
        res = est.estimate(src, tgt, samples=cfg.samples, perturbation=spec,  # the paper's
                           seed=case.seed + 7919 * pi, variance_reduction="none")  # estimator
        name = f"equivariance:{spec}"
        maps[name], seconds[name], samples[name] = (np.asarray(res.uncertainty, np.float32),
                                                    time.perf_counter() - t0, cfg.samples)
        if predicted is None:
            predicted = baselines.displacement_world(res.displacement, case.affine)
            first = res
    if predicted is None:  # pragma: no cover - check() requires one perturbation
        predicted = baselines.predict_world(est, src, tgt, case.affine)
    error = true_error(case, predicted)
    for name in cfg.baselines:
        t0 = time.perf_counter()
        if name == "inverse_consistency":
            maps[name] = baselines.inverse_consistency(est, case.source, case.image, case.affine,
                                                       forward_mm=predicted)
            samples[name] = 2
        elif name == "mc_dropout":
            if stochastic is None:
                continue
            maps[name] = baselines.mc_dropout(stochastic, src, tgt, cfg.samples, case.seed + 31)
            samples[name] = cfg.samples
        elif name == "random":
            maps[name] = baselines.random_map(case.image.shape, case.seed + 17)
            samples[name] = 0
        seconds[name] = time.perf_counter() - t0
    extra = {}
    if calibration is not None:
        t0 = time.perf_counter()
        maps["calibrated"], bound, extra = _calibrated(case, est, first, calibration, cfg, error)
        seconds["calibrated"], samples["calibrated"] = time.perf_counter() - t0, cfg.samples
    rows = []
    scored = {}
    for name, u in maps.items():
        s = metrics.score(error[case.region], u[case.region])
        scored[name] = s
        rows.append(_row(case, name, samples[name], s, seconds[name]))
        if name == "calibrated":
            rows[-1].update(extra)
    if plot_dir is not None:
        _plot_case(case, error, maps, scored, plot_dir)
    return rows, {"error": error, **maps}


def _calibrated(case: Case, est: Any, res: Any, cal: Any, cfg: EvaluationConfig,
                error: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The calibrated error map of one case, its bound, and what the row adds: the bound's
    coverage, the predicted and true mean error, the verdict (on the scored region)."""
    from ..calibration import apply

    src, tgt = (case.source, case.affine), (case.image, case.affine)
    expected, bound, case_cues = apply.error_maps(est, res, src, tgt, cal)
    thr = cal.default_threshold if cfg.qc_threshold is None else float(cfg.qc_threshold)
    predicted = float(expected[case.region].mean())
    return expected, bound, {
        "coverage": round(float((error[case.region] <= bound[case.region]).mean()), 6),
        "predicted_mean_error": round(predicted, 6),
        "verdict": cal.rule.verdict(predicted, thr, case_cues)}


def _plot_case(case: Case, error: np.ndarray, maps: dict[str, np.ndarray],
               scored: dict[str, metrics.Scores], plot_dir: Path) -> None:
    from . import plots

    tag = f"{case.kind}_r{case.repeat}_{case.base}"
    e = error[case.region]
    curves = {n: metrics.sparsification_curve(e, u[case.region], points=200) for n, u in maps.items()}
    plots.sparsification(curves, metrics.sparsification_curve(e, e, points=200), float(e.mean()),
                         plot_dir / f"sparsification_{tag}.png",
                         title=f"{case.kind} ground truth, repeat {case.repeat}, base {case.base}",
                         naurc={n: s.naurc for n, s in scored.items()})
    for n, u in maps.items():
        if n == "random":
            continue
        plots.hexbin(e, u[case.region], plot_dir / f"hexbin_{tag}_{_slug(n)}.png",
                     title=f"{n} vs true error ({case.kind})", r=scored[n].pearson,
                     rho=scored[n].spearman)
    plots.montage(case.image, error, {n: u for n, u in maps.items() if n != "random"},
                  case.region, plot_dir / f"montage_{tag}.png",
                  title=f"{case.kind} ground truth: true error and uncertainty (mm), middle slice")


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def run_convergence(case: Case, est: Any, cfg: EvaluationConfig,
                    reference_samples: int = 200) -> list[dict[str, Any]]:
    """Sample efficiency on one case (first perturbation preset): for each K, the K-sample map
    from independent and from Sobol draws, its Spearman/Pearson agreement with one reference
    map of ``reference_samples`` independent draws (another seed, shared by both draw types,
    so both are compared with the same best estimate), and its metrics against the true error.
    """
    src, tgt = (case.source, case.affine), (case.image, case.affine)
    spec = cfg.perturbation[0]
    ref = est.estimate(src, tgt, samples=reference_samples, perturbation=spec,
                       seed=case.seed + 100_003, variance_reduction="none")
    ref_map = np.asarray(ref.uncertainty)[case.region]
    error = true_error(case, baselines.displacement_world(ref.displacement, case.affine))[case.region]
    rows = []
    for draws, sobol in (("independent", False), ("sobol", True)):
        for k in cfg.convergence_samples:
            t0 = time.perf_counter()
            res = est.estimate(src, tgt, samples=k, perturbation=spec, seed=case.seed + 200_003,
                               sobol=sobol, variance_reduction="none")
            dt = time.perf_counter() - t0
            u = np.asarray(res.uncertainty)[case.region]
            s = metrics.score(error, u)
            rows.append({"ground_truth": case.kind, "repeat": case.repeat, "base": case.base,
                         "perturbation": spec, "draws": draws, "samples": k,
                         "reference_samples": reference_samples,
                         "agreement_spearman": round(metrics.spearman(ref_map, u), 6),
                         "agreement_pearson": round(metrics.pearson(ref_map, u), 6),
                         "pearson": round(s.pearson, 6), "spearman": round(s.spearman, 6),
                         "naurc": round(s.naurc, 6), "seconds": round(dt, 3)})
    return rows


def _calibration(cfg: EvaluationConfig, est: Any) -> Any | None:
    """The calibration scored beside the maps (refused when made for another model)."""
    from ..calibration import store

    if cfg.calibration is None:
        return None
    auto = cfg.calibration == "auto"
    cal = store.for_model(cfg.model, None if auto else cfg.calibration)
    if cal is not None and not callable(cfg.model):
        cal.check_model(store.model_identity(est))
    return cal


def _stochastic_estimator(cfg: EvaluationConfig) -> Any | None:
    """The MC-dropout model: explicit, the packaged stochastic default, a sibling
    ``<model>_stochastic.onnx``, or the model itself when its card says stochastic."""
    if "mc_dropout" not in cfg.baselines:
        return None
    path = cfg.stochastic_model
    if path is None:
        path = baselines.find_stochastic(cfg.model)
    if path is None:
        return None
    return _estimator(path, cfg)


# -- outputs -------------------------------------------------------------------------------------

FIELDS = ["method", "ground_truth", "repeat", "base", "samples", "pearson", "spearman", "naurc",
          "aurc", "aurc_oracle", "aurc_random", "voxels", "mean_error", "mean_uncertainty",
          "seconds", "coverage", "predicted_mean_error", "verdict"]
CONV_FIELDS = ["ground_truth", "repeat", "base", "perturbation", "draws", "samples", "reference_samples",
               "agreement_spearman", "agreement_pearson", "pearson", "spearman", "naurc", "seconds"]


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in fields})


def _mean_sd(values: list[float]) -> str:
    v = np.array([x for x in values if not (isinstance(x, float) and math.isnan(x))], dtype=float)
    if v.size == 0:
        return "n/a"
    if v.size == 1:
        return f"{v[0]:.3f}"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: mean ± sd over cases of r, rho, nAURC per ground truth and method."""
    lines = ["| ground truth | method | cases | Pearson r | Spearman rho | nAURC | mean error (mm) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    kinds = list(dict.fromkeys(r["ground_truth"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for kind in kinds:
        for m in methods:
            sel = [r for r in rows if r["ground_truth"] == kind and r["method"] == m]
            if not sel:
                continue
            lines.append(f"| {kind} | {m} | {len(sel)} | {_mean_sd([r['pearson'] for r in sel])} | "
                         f"{_mean_sd([r['spearman'] for r in sel])} | {_mean_sd([r['naurc'] for r in sel])} | "
                         f"{_mean_sd([r['mean_error'] for r in sel])} |")
    return "\n".join(lines)


def qc_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per case, the calibrated map's bound coverage and the verdict against the
    case's true mean error (empty without a calibration)."""
    cal = [r for r in rows if r["method"] == "calibrated"]
    if not cal:
        return ""
    lines = ["| ground truth | repeat | base | true mean error (mm) | predicted (mm) | verdict | "
             "bound coverage |", "|---|---:|---|---:|---:|---|---:|"]
    for r in cal:
        lines.append(f"| {r['ground_truth']} | {r['repeat']} | {r['base']} | {r['mean_error']:.3f} | "
                     f"{r['predicted_mean_error']:.3f} | {r['verdict']} | {r['coverage']:.3f} |")
    return "\n".join(lines)


def convergence_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| ground truth | draws | K | agreement rho with the reference map | r | rho | nAURC | seconds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['ground_truth']} | {r['draws']} | {r['samples']} | "
                     f"{r['agreement_spearman']:.3f} | {r['pearson']:.3f} | {r['spearman']:.3f} | "
                     f"{r['naurc']:.3f} | {r['seconds']:.2f} |")
    return "\n".join(lines)


def _summary_md(cfg: EvaluationConfig, rows: list[dict[str, Any]], conv: list[dict[str, Any]],
                info: dict[str, Any]) -> str:
    out = ["# regrisk evaluate", "",
           f"Model: `{info['model']}`; samples K = {cfg.samples}; perturbation(s): "
           f"{', '.join(cfg.perturbation)}; repeats {cfg.repeats}; base image(s): {cfg.base}; "
           f"seed {cfg.seed}; MC dropout: {info['stochastic']}.", "",
           "Each case: the base image warped by a known transform G is the source, the base image "
           "the target; the true map is G^-1. True error |u_gt - u_pred| in mm over the scored "
           "region (mask or foreground, where the true correspondence lies in the image). "
           "Values: mean ± sd over cases. nAURC: 0 oracle, 1 random, lower is better.", "",
           summary_table(rows), "",
           *(["Calibrated error map (method `calibrated`): coverage of its upper bound and the "
              "QC verdict per case.", "", qc_table(rows), ""] if qc_table(rows) else []),
           "Paper (uniGradICON): Pearson r 0.71-0.78 against linear ground truth; r 0.43 and "
           "rho 0.48 against nonlinear; nAURC 0.29-0.47.", ""]
    if conv:
        out += ["## Sample efficiency", "",
                f"Agreement: Spearman rho between the K-sample map and one reference map of K = "
                f"{max(cfg.convergence_samples)} independent draws with another seed.", "",
                convergence_table(conv), ""]
    out += [f"Total time {info['seconds']:.1f} s.", ""]
    return "\n".join(out)


def evaluate(out: str | os.PathLike[str] | None = None, *, config: EvaluationConfig | None = None,
             progress: Callable[[str], None] | None = None, **options: Any) -> EvaluationResult:
    """Run the protocol and write ``metrics.csv``, ``summary.md`` (and ``convergence.csv``,
    ``plots/``) into ``out`` atomically; with ``out=None`` nothing is written.

    Options are the fields of :class:`EvaluationConfig` (model, source, target, mask,
    ground_truth, samples, repeats, seed, perturbation, convergence, base, ...)."""
    cfg = config or EvaluationConfig(**options)
    cfg.check()
    say = progress or (lambda msg: None)
    t_start = time.perf_counter()
    # The same atomic folder as `estimate`: refused before any computation, built beside the
    # destination and renamed into place only when everything is written.
    inputs = [p for p in (cfg.source, cfg.target, cfg.mask, cfg.model, cfg.stochastic_model)
              if isinstance(p, (str, os.PathLike))]  # never inside a folder --overwrite replaces
    folder = io.OutputFolder(out, cfg.overwrite, protect=inputs) if out is not None else None
    with (folder if folder is not None else contextlib.nullcontext()) as stage:
        plot_dir = None
        if stage is not None and cfg.plots != "none":
            plot_dir = stage / "plots"
            plot_dir.mkdir()
        rows, conv, stochastic = _run_cases(cfg, plot_dir, say)
        info = {"model": _describe_model(cfg.model),
                "stochastic": "yes" if stochastic else "no stochastic graph",
                "seconds": time.perf_counter() - t_start}
        if stage is not None:
            _write_outputs(stage, plot_dir, cfg, rows, conv, info)
    return EvaluationResult(Path(out) if out is not None else Path(), rows, conv)


def _run_cases(cfg: EvaluationConfig, plot_dir: Path | None, say: Callable[[str], None]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """(metric rows, convergence rows, whether a stochastic graph was scored) over all cases."""
    cases = iter_cases(cfg)
    first_case = next(cases)  # validates images and mask before the model is loaded
    est = _estimator(cfg.model, cfg)
    stochastic = _stochastic_estimator(cfg)
    calibration = _calibration(cfg, est)
    rows: list[dict[str, Any]] = []
    conv: list[dict[str, Any]] = []
    seen_kinds: set[str] = set()
    total = len(cfg.ground_truth) * cfg.repeats * (2 if cfg.base == "both" else 1)
    for i, case in enumerate(itertools.chain([first_case], cases)):
        first = case.kind not in seen_kinds
        seen_kinds.add(case.kind)
        want_plot = plot_dir if (cfg.plots == "all" or first) else None
        say(f"case {i + 1}/{total}: {case.kind}, repeat {case.repeat}, base {case.base}")
        case_rows, _ = run_case(case, est, cfg, stochastic, want_plot, calibration)
        rows.extend(case_rows)
        if cfg.convergence and first:
            say(f"convergence on {case.kind} (K = {', '.join(map(str, cfg.convergence_samples))})")
            conv.extend(run_convergence(case, est, cfg, max(cfg.convergence_samples)))
    return rows, conv, stochastic is not None


def _write_outputs(stage: Path, plot_dir: Path | None, cfg: EvaluationConfig,
                   rows: list[dict[str, Any]], conv: list[dict[str, Any]],
                   info: dict[str, Any]) -> None:
    """metrics.csv, convergence.csv and its plots, summary.md and config.json into ``stage``."""
    _write_csv(stage / "metrics.csv", rows, FIELDS)
    if conv:
        _write_csv(stage / "convergence.csv", conv, CONV_FIELDS)
        if plot_dir is not None:
            from . import plots

            for kind in dict.fromkeys(r["ground_truth"] for r in conv):
                plots.convergence([r for r in conv if r["ground_truth"] == kind],
                                  plot_dir / f"convergence_{kind}.png",
                                  title=f"sample efficiency, {kind} ground truth")
    (stage / "summary.md").write_text(_summary_md(cfg, rows, conv, info))
    (stage / "config.json").write_text(json.dumps(  # "regrisk": the marker --overwrite needs
        {"regrisk": "evaluate", "model": info["model"], "samples": cfg.samples, "repeats": cfg.repeats,
         "seed": cfg.seed, "ground_truth": list(cfg.ground_truth),
         "perturbation": list(cfg.perturbation), "base": cfg.base,
         "baselines": list(cfg.baselines), "convergence": cfg.convergence,
         "convergence_samples": list(cfg.convergence_samples),
         "seconds": round(info["seconds"], 2)}, indent=2))


def _describe_model(model: Any) -> str:
    if callable(model):
        return getattr(model, "__name__", type(model).__name__)
    return str(model)
