"""A pair's overview thumbnail for the cohort report: orthogonal slices through the target, and
the uncertainty sigma (mm) as a heat map over them."""

from __future__ import annotations

import os

import numpy as np


def _centre(shape: tuple[int, ...], mask: np.ndarray | None) -> tuple[int, int, int]:
    if mask is not None and mask.any():
        return tuple(int(round(c)) for c in np.argwhere(mask).mean(axis=0))  # type: ignore[return-value]
    return tuple(n // 2 for n in shape)  # type: ignore[return-value]


def _slices(vol: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    i, j, k = centre
    return [vol[:, :, k].T, vol[:, j, :].T, vol[i, :, :].T]


def thumbnail(path: str | os.PathLike[str], target: np.ndarray, sigma: np.ndarray,
              mask: np.ndarray | None = None, title: str = "") -> None:
    """Two rows (target; sigma over the target) by three orientations, as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = _centre(target.shape, mask)
    shown = sigma if mask is None else np.where(mask, sigma, np.nan)
    finite = shown[np.isfinite(shown)]
    vmax = float(np.percentile(finite, 99)) if finite.size else 0.0
    gray = dict(cmap="gray", origin="lower", interpolation="nearest",
                vmin=float(np.percentile(target, 1)), vmax=float(np.percentile(target, 99.5)))
    fig, axes = plt.subplots(2, 3, figsize=(4.8, 3.4), facecolor="white")
    heat = None
    for col, (t, s) in enumerate(zip(_slices(target, centre), _slices(shown, centre))):
        axes[0, col].imshow(t, **gray)
        axes[1, col].imshow(t, **gray)
        heat = axes[1, col].imshow(s, cmap="inferno", origin="lower", vmin=0.0,
                                   vmax=vmax if vmax > 0 else 1.0, alpha=0.75,
                                   interpolation="nearest")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("target", fontsize=8)
    axes[1, 0].set_ylabel("sigma", fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.86, top=0.9 if title else 0.98, bottom=0.02,
                        wspace=0.03, hspace=0.04)
    bar = fig.colorbar(heat, cax=fig.add_axes([0.88, 0.06, 0.025, 0.4]))
    bar.ax.tick_params(labelsize=7)
    bar.set_label("mm", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    try:
        fig.savefig(path, dpi=70, facecolor="white")
    finally:
        plt.close(fig)
