"""What a run records about itself: versions, parameters, inputs, grids and timings."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

import numpy as np

CONVENTIONS = {
    "uncertainty": "sqrt(tr(M Sigma M^T)) in mm, target native grid",
    "uncertainty_axes": "std along world x, y, z (mm)",
    "displacement": "ITK/ANTs displacement field: vector intent, shape (X, Y, Z, 1, 3), mm "
                    "along LPS+ world axes (ITK's; NIfTI's RAS+ with x and y negated), on the "
                    "target grid, target point -> matched source point (antsApplyTransforms, "
                    "SimpleITK DisplacementFieldTransform and Slicer apply it as it is); "
                    "in the Python API (EstimateResult.displacement) the same field is RAS+ mm",
    "mean_displacement": "as displacement, for the mean of the composed samples",
    "jacobian": "det(I + du/dx) of x -> x + u(x), u = displacement, x in world mm (as ANTs' "
                "CreateJacobianDeterminantImage); det <= 0 is folding, counted in "
                "summary jacobian over the target voxels inside the model grid's field of view",
    "error_mm": "calibrated expected true error (mm), target native grid; written only with a "
                "calibration (summary calibration names it)",
    "error_bound_mm": "upper bound of the true error (mm) at the calibration's coverage",
}


def versions() -> dict[str, Any]:
    """Versions of regrisk, its numerical stack and the native build."""
    import nibabel
    import scipy

    from . import __version__, kernels

    out: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__,
                           "scipy": scipy.__version__, "nibabel": nibabel.__version__,
                           "platform": platform.platform(), "regrisk": __version__}
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


@dataclass
class RunParameters:
    """What the user asked for, as recorded in ``summary.json``."""

    samples: int
    passes: int
    perturbation: dict[str, Any]
    seed: int | None
    sobol: bool
    batch: int
    device: str
    threads: int | None
    memory_budget: int | None
    per_family: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summary(*, model: dict[str, Any], card: dict[str, Any], params: RunParameters,
            backend: dict[str, Any], pair: Any, timings: dict[str, float],
            sigma_grid: np.ndarray) -> dict[str, Any]:
    """The ``summary.json`` payload of one estimate (``pair``: a prepared pair)."""
    inference, total = timings.get("inference", 0.0), timings.get("total", 0.0)
    return {
        "regrisk": "estimate",
        "model": model,
        "card": card,
        "parameters": params.to_dict(),
        "seed": params.seed,
        "backend": backend,
        "inputs": {role: {"label": img.label, "shape": list(img.shape),
                          "affine": img.affine.tolist()}
                   for role, img in (("source", pair.source), ("target", pair.target))},
        "model_grid": {"shape": list(pair.tmap.grid_shape),
                       "target_affine": pair.tmap.grid_affine.tolist(),
                       "source_affine": pair.smap.grid_affine.tolist()},
        "statistics": {"sigma_mm_mean": float(sigma_grid.mean()),
                       "sigma_mm_max": float(sigma_grid.max()),
                       "non_inference_share": (total - inference) / total if total else None},
        "conventions": dict(CONVENTIONS),
        "qc": "uncalibrated",  # replaced by the calibrated verdict (regrisk.calibration.apply)
        "timings": timings,
        "versions": versions(),
    }
