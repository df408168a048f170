"""Real brain templates from registry packages, resliced to the model grid, with tissue labels.

Sources (read from installed packages, never downloaded at run time):
- MNI ICBM152 2009a nonlinear symmetric T1 template and its grey/white matter probability maps,
  shipped in the nilearn wheel (``nilearn/datasets/data``).
- Colin27 ("ch2bet", the brain-extracted single-subject average), shipped by Debian's
  ``mricron-data`` under /usr/share/mricron/templates.

Labels (0 background, 1 CSF, 2 grey matter, 3 white matter):
- MNI152: argmax over (background, CSF, GM, WM) where GM/WM are the template's probability maps,
  CSF = brain mask (T1 > 0) minus GM minus WM, background = 1 - brain mask.
- Colin27: no tissue map ships, so it is derived from the intensities: inside the brain mask
  (ch2bet > 0, after reslicing), 3-class k-means on the T1 intensity (initialised at the 5th,
  50th and 95th percentiles), clusters ordered by mean intensity as CSF < GM < WM (T1 contrast).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

GRID = (80, 96, 80)
SPACING = 2.0
# World (mm, RAS) position of the grid centre: the centre of the brains' bounding box.
CENTRE = (0.0, -17.0, 5.0)
COLIN_DIR = "/usr/share/mricron/templates"
LABEL_NAMES = ("background", "csf", "grey_matter", "white_matter")


def grid_affine(grid: tuple[int, int, int] = GRID, spacing: float = SPACING,
                centre: tuple[float, float, float] = CENTRE) -> np.ndarray:
    """Voxel -> world affine of the model grid (RAS, isotropic ``spacing``)."""
    aff = np.eye(4)
    aff[:3, :3] *= spacing
    aff[:3, 3] = np.asarray(centre) - spacing * (np.asarray(grid) - 1) / 2.0
    return aff


def nilearn_data_dir() -> str:
    import nilearn

    return os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data")


def _reslice(path: str, affine: np.ndarray, grid: tuple[int, int, int], order: int = 1) -> np.ndarray:
    import nibabel as nib
    from scipy.ndimage import map_coordinates

    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    # grid voxel -> world -> source voxel
    m = np.linalg.inv(img.affine) @ affine
    idx = np.indices(grid, dtype=np.float64).reshape(3, -1)
    src = m[:3, :3] @ idx + m[:3, 3:4]
    out = map_coordinates(data, src, order=order, mode="constant", cval=0.0)
    return out.reshape(grid).astype(np.float32)


@dataclass
class Template:
    name: str
    image: np.ndarray   # (D, H, W) float32 in [0, 1]
    labels: np.ndarray  # (D, H, W) uint8, LABEL_NAMES
    affine: np.ndarray  # (4, 4) voxel -> world


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return ((x - lo) / max(hi - lo, 1e-8)).astype(np.float32)


def load_mni152(grid: tuple[int, int, int] = GRID) -> Template:
    d = nilearn_data_dir()
    aff = grid_affine(grid)
    t1 = _reslice(os.path.join(d, "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"), aff, grid)
    gm = _reslice(os.path.join(d, "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"), aff, grid) / 255.0
    wm = _reslice(os.path.join(d, "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"), aff, grid) / 255.0
    brain = (t1 > 0.5).astype(np.float32)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    labels = np.argmax(np.stack([1.0 - brain, csf, gm * brain, wm * brain]), axis=0).astype(np.uint8)
    return Template("MNI152-2009a", _minmax(t1), labels, aff)


def load_colin27(grid: tuple[int, int, int] = GRID) -> Template:
    from scipy.cluster.vq import kmeans2

    aff = grid_affine(grid)
    path = os.path.join(COLIN_DIR, "ch2bet.nii.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} missing: apt-get install mricron-data")
    t1 = _reslice(path, aff, grid)
    mask = t1 > 0.5
    vals = t1[mask].astype(np.float64)
    init = np.percentile(vals, [5, 50, 95]).reshape(3, 1)
    centres, assign = kmeans2(vals.reshape(-1, 1), init, minit="matrix", seed=0)
    rank = np.argsort(np.argsort(centres.ravel()))  # cluster -> 0 (darkest) .. 2 (brightest)
    labels = np.zeros(grid, np.uint8)
    labels[mask] = (rank[assign] + 1).astype(np.uint8)
    return Template("Colin27", _minmax(t1), labels, aff)


@lru_cache(maxsize=None)
def load_all(grid: tuple[int, int, int] = GRID) -> tuple[Template, ...]:
    return (load_mni152(grid), load_colin27(grid))
