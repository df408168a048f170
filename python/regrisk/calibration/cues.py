"""Per-voxel cues of one registration, on the target's native grid.

Each cue is expected to grow with the registration's true error, which is what lets the error
model be monotone in every one of them:

- ``sigma`` and its per-axis parts: the paper's equivariance spread (mm);
- ``sigma_smooth``: sigma averaged over a few voxels (the error is spatially smooth, sigma noisy);
- ``ic`` / ``ic_smooth``: inverse consistency |u_f(x) + u_b(x + u_f(x))| (mm) from one reversed
  pass (the only extra network pass);
- ``ncc_residual`` / ``ncc_residual_wide``: 1 - local NCC of warped source and target with a
  Gaussian window (a misaligned edge shows up here even when the spread is small);
- ``intensity_residual``: smoothed |warped source - target| in units of the target's range;
- ``log_jacobian``: |log det J| of the predicted map (strong local volume change);
- ``displacement``: |u| in mm (large motion is where networks err most);
- ``flow_residual``: the misalignment left between warped source and target, in mm, as one
  Lucas-Kanade step estimates it (the local least-squares shift that would explain their
  difference from the image gradients). Unlike the intensity residuals it is in the error's own
  unit, so an image with weaker contrast does not read as better aligned.

Case-level cues (means over the target's foreground) let one model shift its whole map when a
registration failed outright, which no local cue sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .alignment import Window, inverse_consistency, local_ncc, residual_flow

VOXEL_CUES = ("sigma", "sigma_x", "sigma_y", "sigma_z", "sigma_smooth", "ic", "ic_smooth",
              "ncc_residual", "ncc_residual_wide", "intensity_residual", "log_jacobian",
              "displacement", "flow_residual")
CASE_CUES = ("case_sigma", "case_ic", "case_ncc_residual", "case_flow_residual")
# Windows in mm, turned into voxels of each target's grid, so that a calibration made on one
# resolution reads a target of another at the same physical scale (2 voxels on the 2 mm grid of
# the default model). A calibration keeps the settings it was fitted with; one written before
# windows were in mm has "<name>_vox" keys, read as voxels of the target's grid as then.
WINDOWS = ("smooth", "ncc_window", "ncc_wide_window", "flow_window")
SETTINGS = {"smooth_mm": 4.0, "ncc_window_mm": 4.0, "ncc_wide_window_mm": 8.0,
            "flow_window_mm": 4.0, "flow_damping": 0.01,
            "foreground": "target > min + 0.05 (p99 - min)"}


@dataclass
class Cues:
    """The cue maps (name -> (D, H, W) float32) and the case-level means."""

    maps: dict[str, np.ndarray]
    case: dict[str, float]


def foreground(image: np.ndarray) -> np.ndarray:
    """The evaluation's foreground rule (one definition for calibration and estimate)."""
    from ..evaluation.protocol import foreground as fg

    return fg(image)


def windows(settings: dict[str, Any], affine: np.ndarray) -> dict[str, Window]:
    """Each window of ``settings`` in voxels of the grid of ``affine`` (per axis for mm)."""
    spacing = np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)
    out: dict[str, Window] = {}
    for name in WINDOWS:
        if f"{name}_mm" in settings:
            out[name] = tuple(float(settings[f"{name}_mm"]) / float(h) for h in spacing)
        elif f"{name}_vox" in settings:
            out[name] = float(settings[f"{name}_vox"])
        else:
            raise KeyError(f"cue setting {name}_mm missing")
    return out


def settings_of(saved: dict[str, Any]) -> dict[str, Any]:
    """The cue settings a calibration was fitted with (its JSON "cues" block); a window or
    setting it predates (a cue added since, which its model does not weigh) takes the default."""
    out = {k: v for k, v in saved.items() if k in SETTINGS or k.endswith("_vox")}
    for name in WINDOWS:
        if f"{name}_mm" not in out and f"{name}_vox" not in out:
            out[f"{name}_mm"] = SETTINGS[f"{name}_mm"]
    out.setdefault("flow_damping", SETTINGS["flow_damping"])
    return out


def compute(result: Any, target: np.ndarray, backward_mm: np.ndarray,
            source_affine: np.ndarray, threads: int = 1,
            settings: dict[str, Any] | None = None) -> Cues:
    """Every cue of an estimate ``result`` (an EstimateResult) for the target volume
    ``target``; ``backward_mm`` is the reversed pass's displacement (Prediction.displacement);
    ``settings`` those of the calibration that will read the cues (default: ``SETTINGS``).
    The maps are independent, so up to ``threads`` are computed at once (SciPy's filters and
    NumPy's loops run without the GIL); each is the same computation whatever the count."""
    from concurrent.futures import ThreadPoolExecutor

    from scipy import ndimage

    settings = SETTINGS if settings is None else settings
    win = windows(settings, result.affine)
    sigma = np.asarray(result.uncertainty, np.float32)
    axes = np.asarray(result.uncertainty_axes, np.float32)
    warped = np.asarray(result.warped_source, np.float32)
    smooth = lambda v: ndimage.gaussian_filter(v, win["smooth"], mode="nearest")  # noqa: E731
    span = float(np.percentile(target, 99) - target.min()) or 1.0
    jobs = {  # the costliest first, so two threads finish together
        "flow_residual": lambda: residual_flow(warped, target, result.affine,
                                               win["flow_window"],
                                               float(settings["flow_damping"])),
        "ic": lambda: inverse_consistency(np.asarray(result.displacement), result.affine,
                                          backward_mm, source_affine),
        "ncc_residual": lambda: np.clip(
            1.0 - local_ncc(warped, target, win["ncc_window"]), 0.0, 2.0),
        "ncc_residual_wide": lambda: np.clip(
            1.0 - local_ncc(warped, target, win["ncc_wide_window"]), 0.0, 2.0),
        "intensity_residual": lambda: smooth(np.abs(warped - target) / span),
        "sigma_smooth": lambda: smooth(sigma),
        "log_jacobian": lambda: np.abs(np.log(np.clip(
            result.jacobian if result.jacobian is not None else _jacobian(result), 1e-3, None))),
        "displacement": lambda: np.linalg.norm(np.asarray(result.displacement), axis=0),
    }
    with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        done = {name: f.result() for name, f in futures.items()}
    ic = done["ic"]
    maps = {"sigma": sigma, "sigma_x": axes[0], "sigma_y": axes[1], "sigma_z": axes[2],
            **done, "ic_smooth": smooth(ic)}
    maps = {n: np.ascontiguousarray(maps[n], dtype=np.float32) for n in VOXEL_CUES}
    fg = foreground(target)
    case = {"case_sigma": float(sigma[fg].mean()), "case_ic": float(ic[fg].mean()),
            "case_ncc_residual": float(maps["ncc_residual"][fg].mean()),
            "case_flow_residual": float(maps["flow_residual"][fg].mean())}
    return Cues(maps, case)


def _jacobian(result: Any) -> np.ndarray:
    from .. import jacobian

    return jacobian.determinant(np.asarray(result.displacement), result.affine)


def observe(est: Any, source: Any, target: Any, **estimate: Any) -> tuple[Any, Cues]:
    """Run the estimate and the one reversed pass; (EstimateResult, Cues). ``source`` and
    ``target`` are anything ``io.load_image`` reads."""
    from .. import io

    result = est.estimate(source, target, **estimate)
    src = io.load_image(source, "source")
    tgt = io.load_image(target, "target")
    backward = est.predict((tgt.data, tgt.affine), (src.data, src.affine))
    return result, compute(result, tgt.data, np.asarray(backward.displacement), src.affine)
