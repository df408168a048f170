"""What an estimate returns, and how it is written to disk.

Output conventions (on the target's native grid, with its affine):

- ``uncertainty`` sigma(x) = sqrt(tr(M Sigma(x) M^T)) in mm, Sigma the covariance of the composed
  samples' end points in the source model grid, M that grid's voxel->mm matrix.
- ``uncertainty_axes`` sqrt(diag(M Sigma M^T)): standard deviation along world x, y, z (mm).
- ``displacement`` / ``mean_displacement``: world displacement in mm along the world (NIfTI RAS+)
  axes, world(source point matched to x) - world(x); for images on one grid this is M u. Their
  files follow ITK's convention instead (LPS+ vectors, :mod:`regrisk.fieldfiles`), so that ANTs,
  ITK, SimpleITK and Slicer apply them as they are.
- ``jacobian``: det(I + du/dx) of the map x -> x + u(x) of ``displacement``, in world mm.
- ``warped_source``: the native source resampled through the unperturbed prediction.
- ``error_mm`` / ``error_bound_mm`` (with a calibration only, :mod:`regrisk.calibration`):
  expected true error and its upper bound at the calibration's coverage, in mm.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import fieldfiles, io, limits


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


# (attribute, file stem, header description) of the maps every estimate writes.
_MAPS = (
    ("uncertainty", "uncertainty", "regrisk sigma (mm)", False),
    ("uncertainty_axes", "uncertainty_axes", "regrisk per-axis std x,y,z (mm)", False),
    ("displacement", "displacement",
     "regrisk displacement, ITK/ANTs warp: LPS mm, target point -> source point", True),
    ("mean_displacement", "mean_displacement",
     "regrisk mean composed displacement, ITK/ANTs warp: LPS mm, target->source", True),
    ("jacobian", "jacobian", "regrisk det(I + du/dx) of x -> x + u(x), world mm; <= 0 folds",
     False),
    ("warped_source", "warped_source", "regrisk warped source", False),
    ("intrinsic", "intrinsic", "regrisk intrinsic spread (mm)", False),
    ("bias_jitter", "bias_jitter", "regrisk bias jitter (mm)", False),
    ("error_mm", "error_mm", "regrisk calibrated expected error (mm)", False),
    ("error_bound_mm", "error_bound_mm", "regrisk calibrated error upper bound (mm)", False),
)


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
    jacobian: np.ndarray | None = None       # (D, H, W) det(I + du/dx) of displacement
    family_uncertainty: dict[str, np.ndarray] = field(default_factory=dict)  # per_family only
    inputs: tuple[str, ...] = ()  # source, target and model files: save never replaces them
    error_mm: np.ndarray | None = None        # calibrated runs only (regrisk.calibration)
    error_bound_mm: np.ndarray | None = None  # calibrated runs only: bound at its coverage

    def _maps(self) -> list[tuple[str, np.ndarray, str, bool]]:
        """(file name, data, description, vector) of every map this result holds."""
        out = [(f"{stem}.nii.gz", getattr(self, attr), desc, vector)
               for attr, stem, desc, vector in _MAPS if getattr(self, attr) is not None]
        out += [(f"uncertainty_{fam}.nii.gz", sigma,
                 f"regrisk sigma, {fam} samples only (mm)", False)
                for fam, sigma in self.family_uncertainty.items()]
        return out

    def save(self, out_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the NIfTI outputs and summary.json into ``out_dir`` atomically. ``overwrite``
        replaces only a folder regrisk wrote, never one holding an input or the model."""
        t0 = time.perf_counter()
        with io.OutputFolder(out_dir, overwrite, protect=self.inputs) as tmp:
            maps = self._maps()
            # one file per thread: gzip (zlib) runs without the GIL, so two cores compress two
            # maps at once (1.7 -> ~0.9 s for the demo's six); any error is raised here
            with ThreadPoolExecutor(max_workers=max(1, min(len(maps), limits.cores()))) as pool:
                for done in [pool.submit(self._save_map, tmp / name, data, desc, vector)
                             for name, data, desc, vector in maps]:
                    done.result()
            files = [name for name, *_ in maps]
            self.timings["save"] = time.perf_counter() - t0
            summary = dict(self.summary, timings=dict(self.timings), files=files + ["summary.json"])
            io.write_json(tmp / "summary.json", summary)
        return Path(out_dir)

    def _save_map(self, path: Path, data: np.ndarray, desc: str, vector: bool) -> None:
        if vector:  # ITK's convention on disk: LPS+ vectors
            fieldfiles.save_displacement(path, data, self.affine, desc)
        else:
            io.save_nifti(path, data, self.affine, description=desc)
