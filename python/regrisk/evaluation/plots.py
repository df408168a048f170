"""Figures of the evaluation: error against uncertainty (hexbin), sparsification curves, and a
slice montage. Matplotlib with the Agg backend (no display); each function writes one PNG."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():  # imported lazily: matplotlib is slow to import and needs the Agg backend
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    """Lay out, write and close one figure."""
    plt = _pyplot()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def hexbin(error: np.ndarray, uncertainty: np.ndarray, path: str | Path, *, title: str,
           r: float, rho: float) -> Path:
    """Density of (uncertainty, true error) over the voxels of the region, r and rho shown."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.0), dpi=110)
    hb = ax.hexbin(np.ravel(uncertainty), np.ravel(error), gridsize=50, bins="log", mincnt=1,
                   cmap="viridis")
    fig.colorbar(hb, ax=ax, label="voxels (log)")
    ax.set_xlabel("uncertainty (mm)")
    ax.set_ylabel("true error |u_gt - u_pred| (mm)")
    ax.set_title(f"{title}\nPearson r = {r:.3f}, Spearman rho = {rho:.3f}", fontsize=9)
    return _save(fig, path)


def sparsification(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   oracle: tuple[np.ndarray, np.ndarray], random_level: float,
                   path: str | Path, *, title: str,
                   naurc: Mapping[str, float] | None = None) -> Path:
    """Mean error of retained voxels against fraction retained, every method and the oracle."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.0), dpi=110)
    ax.plot(*oracle, color="black", lw=2, label="oracle (true error)")
    ax.axhline(random_level, color="gray", ls="--", lw=1, label="random (expected)")
    for name, (frac, curve) in curves.items():
        label = name if naurc is None else f"{name} (nAURC {naurc.get(name, float('nan')):.2f})"
        ax.plot(frac, curve, lw=1.4, label=label)
    ax.set_xlabel("fraction of voxels retained")
    ax.set_ylabel("mean true error of retained voxels (mm)")
    ax.set_xlim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def montage(image: np.ndarray, error: np.ndarray, maps: Mapping[str, np.ndarray],
            mask: np.ndarray, path: str | Path, *, title: str, axis: int = 0) -> Path:
    """The middle slice (along ``axis``) of the target, the true error and every map; values
    outside the mask are blanked so the colour scales follow the region that is scored."""
    plt = _pyplot()
    idx = image.shape[axis] // 2
    take = lambda v: np.take(v, idx, axis=axis)  # noqa: E731
    m = take(mask).astype(bool)
    panels = [("target", take(image), "gray", None)]
    panels.append(("true error (mm)", np.where(m, take(error), np.nan), "magma", None))
    for name, vol in maps.items():
        panels.append((name, np.where(m, take(vol), np.nan), "magma", None))
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.7), dpi=110)
    for ax, (name, sl, cmap, _) in zip(np.atleast_1d(axes), panels):
        finite = sl[np.isfinite(sl)]
        vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
        im = ax.imshow(sl.T, origin="lower", cmap=cmap, vmin=0 if cmap != "gray" else None,
                       vmax=vmax if cmap != "gray" else None)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
        if cmap != "gray":
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def convergence(table: list[dict], path: str | Path, *, title: str) -> Path:
    """Spearman agreement with the K=200 map against K, independent vs Sobol draws."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.6), dpi=110)
    for draws in sorted({row["draws"] for row in table}):
        rows = sorted((r for r in table if r["draws"] == draws), key=lambda r: r["samples"])
        ax.plot([r["samples"] for r in rows], [r["agreement_spearman"] for r in rows],
                marker="o", label=draws)
    ax.set_xscale("log")
    ax.set_xlabel("samples K (network passes)")
    ax.set_ylabel("Spearman rho with the reference map")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
