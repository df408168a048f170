"""The end-to-end demo: the packaged default network on the packaged real brain pair.

Source Colin27, target MNI152 (both T1, 2 mm, shipped under ``regrisk/data``; see NOTICE).
:func:`run_demo` estimates the uncertainty with the paper preset (K = 50 by default), writes the
engine's outputs and ``overview.png`` (orthogonal slices of target, source, warped source and
the uncertainty over the target) into one folder, atomically.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

SOURCE = "colin27_t1.nii.gz"
TARGET = "mni152_t1.nii.gz"
SOURCE_LABELS = "colin27_labels.nii.gz"
TARGET_LABELS = "mni152_labels.nii.gz"


def data_path(name: str) -> Path:
    """Path of a packaged sample file (``regrisk/data/<name>``)."""
    from .errors import InputError

    path = Path(str(resources.files("regrisk") / "data" / name))
    if not path.is_file():
        raise InputError(f"sample data {name}: not installed with regrisk (regrisk/data/{name})")
    return path


@dataclass
class DemoResult:
    out: Path
    files: list[str]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    sigma_brain_mean_mm: float = 0.0
    sigma_brain_p95_mm: float = 0.0
    dice_before: dict[str, float] = field(default_factory=dict)  # per tissue, and "mean"
    dice_after: dict[str, float] = field(default_factory=dict)


TISSUES = {1: "csf", 2: "grey_matter", 3: "white_matter"}


def tissue_dice(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Dice of each tissue label (CSF, GM, WM) of two label maps on one grid, and their mean."""
    out = {}
    for lab, name in TISSUES.items():
        x, y = a == lab, b == lab
        size = int(x.sum()) + int(y.sum())
        out[name] = 2.0 * float(np.logical_and(x, y).sum()) / size if size else float("nan")
    out["mean"] = float(np.mean([out[n] for n in TISSUES.values()]))
    return out


def warp_labels_world(labels: np.ndarray, labels_affine: np.ndarray, target_affine: np.ndarray,
                      displacement_mm: np.ndarray) -> np.ndarray:
    """Source labels pulled back onto the target grid by a world-mm displacement (3, D, H, W):
    target voxel x -> world A_t x + u(x) -> source voxel, nearest neighbour, 0 outside.
    (A rounded index, not scipy.ndimage, whose import would cost the demo a third of a second.)"""
    shape = displacement_mm.shape[1:]
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = target_affine[:3, :3] @ idx + target_affine[:3, 3:4] + displacement_mm.reshape(3, -1)
    vox = np.linalg.inv(labels_affine)
    pos = np.floor(vox[:3, :3] @ world + vox[:3, 3:4] + 0.5).astype(np.int64)
    inside = np.all((pos >= 0) & (pos < np.array(labels.shape)[:, None]), axis=0)
    out = np.zeros(pos.shape[1], dtype=labels.dtype)
    out[inside] = labels[tuple(pos[:, inside])]
    return out.reshape(shape)


def _slices(vol: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices of a RAS-ordered (i=x, j=y, k=z) volume, displayed
    with superior / anterior up (transpose + origin='lower')."""
    i, j, k = centre
    return [vol[:, :, k].T, vol[:, j, :].T, vol[i, :, :].T]


def overview_png(path: str | os.PathLike[str], target: np.ndarray, source: np.ndarray,
                 warped: np.ndarray, sigma: np.ndarray, mask: np.ndarray | None = None,
                 title: str = "") -> None:
    """Four columns (target, source, warped source, sigma over target) x three orientations,
    written to ``path`` whole (:func:`overview_bytes`)."""
    from .io import atomic_file

    png = overview_bytes(target, source, warped, sigma, mask, title)
    with atomic_file(path) as tmp:
        tmp.write_bytes(png)


def overview_bytes(target: np.ndarray, source: np.ndarray, warped: np.ndarray,
                   sigma: np.ndarray, mask: np.ndarray | None = None, title: str = "") -> bytes:
    """The overview figure (:func:`overview_png`) as PNG bytes."""
    import io as bytes_io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = tuple(int(n) // 2 for n in target.shape)
    if mask is not None and mask.any():
        centre = tuple(int(round(c)) for c in np.argwhere(mask).mean(axis=0))
    shown = sigma if mask is None else np.where(mask, sigma, np.nan)
    finite = shown[np.isfinite(shown)]
    vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    gray = dict(cmap="gray", origin="lower", interpolation="nearest")
    cols = ["target (MNI152)", "source (Colin27)", "warped source", "uncertainty sigma"]
    fig, axes = plt.subplots(3, 4, figsize=(12, 9.2), facecolor="white")
    heat = None
    lo, hi = np.percentile(target, [1, 99.5])
    lim = dict(vmin=float(lo), vmax=float(hi))
    lo, hi = np.percentile(source, [1, 99.5])
    slim = dict(vmin=float(lo), vmax=float(hi))
    for row, (t, s, w, u) in enumerate(zip(_slices(target, centre), _slices(source, centre),
                                           _slices(warped, centre), _slices(shown, centre))):
        for col, img in enumerate((t, s, w)):  # the warped source keeps the source's scale
            axes[row, col].imshow(img, **gray, **(lim if col == 0 else slim))
        axes[row, 3].imshow(t, **gray, **lim)
        heat = axes[row, 3].imshow(u, cmap="inferno", origin="lower", vmin=0.0, vmax=vmax,
                                   alpha=0.75, interpolation="nearest")
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(("axial", "coronal", "sagittal")[row])
    for col, name in enumerate(cols):
        axes[0, col].set_title(name)
    fig.subplots_adjust(left=0.03, right=0.9, top=0.92, bottom=0.02, wspace=0.03, hspace=0.05)
    cax = fig.add_axes([0.915, 0.15, 0.015, 0.7])
    cb = fig.colorbar(heat, cax=cax)
    cb.set_label("sigma (mm)")
    if title:
        fig.suptitle(title, fontsize=11)
    buffer = bytes_io.BytesIO()
    try:
        # zlib level 1: a third of the encoding time for a file about a fifth larger
        fig.savefig(buffer, format="png", dpi=90, facecolor="white",
                    pil_kwargs={"compress_level": 1})
    finally:
        plt.close(fig)
    return buffer.getvalue()


def run_demo(out: str | os.PathLike[str] = "regrisk-demo", samples: int = 50, seed: int = 0,
             threads: int | None = None, overwrite: bool = False, progress: bool = False,
             model: Any = "default") -> DemoResult:
    """Estimate the uncertainty of the default network on the sample pair; write the outputs."""
    import nibabel as nib

    from . import io
    from .engine import Estimator

    t0 = time.perf_counter()
    out = Path(out)
    io.check_output(out, overwrite)  # refuse before any computation
    src_path, tgt_path = data_path(SOURCE), data_path(TARGET)
    with Estimator(model, threads=threads) as est:
        res = est.estimate(str(src_path), str(tgt_path), samples=samples, perturbation="paper",
                           seed=seed, progress=progress)
    target = np.asarray(nib.load(str(tgt_path)).dataobj, dtype=np.float32)
    source = np.asarray(nib.load(str(src_path)).dataobj, dtype=np.float32)
    tgt_lab_img = nib.load(str(data_path(TARGET_LABELS)))
    src_lab_img = nib.load(str(data_path(SOURCE_LABELS)))
    tgt_lab = np.asarray(tgt_lab_img.dataobj)
    brain = tgt_lab > 0
    # the real tissue labels say whether the network registered the pair at all
    identity = np.zeros((3, *tgt_lab.shape), dtype=np.float64)
    src_lab = np.asarray(src_lab_img.dataobj)
    before = tissue_dice(warp_labels_world(src_lab, src_lab_img.affine, res.affine, identity), tgt_lab)
    after = tissue_dice(warp_labels_world(src_lab, src_lab_img.affine, res.affine,
                                          np.asarray(res.displacement, dtype=np.float64)), tgt_lab)
    sigma = np.asarray(res.uncertainty, dtype=np.float32)
    same_grid = source.shape == target.shape == sigma.shape
    with io.OutputFolder(out, overwrite) as stage, ThreadPoolExecutor(1) as saver:
        # the maps compress (zlib, no GIL) while the overview renders (matplotlib, Python);
        # the PNG goes in after them: save() puts its folder in place whole
        saving = saver.submit(res.save, stage, overwrite=True)
        title = (f"regrisk demo: default network, paper preset, K = {samples}; sigma in the "
                 f"brain: mean {float(sigma[brain].mean()):.2f} mm; tissue Dice "
                 f"{before['mean']:.3f} -> {after['mean']:.3f}")
        png = overview_bytes(target, source if same_grid else target,
                             np.asarray(res.warped_source, dtype=np.float32), sigma, brain, title)
        saving.result()
        (stage / "overview.png").write_bytes(png)
        files = sorted(p.name for p in stage.iterdir())
    return DemoResult(out, files, time.perf_counter() - t0, dict(res.timings),
                      float(sigma[brain].mean()), float(np.percentile(sigma[brain], 95)),
                      before, after)
