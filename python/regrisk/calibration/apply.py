"""What an estimate does with a calibration: the error map, its bound and the QC block."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import io, limits
from ..errors import InputError
from . import cues, model as error_model, qc
from .store import Calibration, model_identity


def annotate(est: Any, result: Any, source: Any, target: Any, cal: Calibration,
             mask: Any = None, threshold: float | None = None) -> Any:
    """Add ``error_mm``, ``error_bound_mm`` and ``summary['qc']`` to an EstimateResult of
    ``est`` for ``source`` -> ``target`` (one reversed network pass)."""
    cal.check_model(model_identity(est))  # a callable's grid is known only now
    thr = cal.default_threshold if threshold is None else float(threshold)
    if not np.isfinite(thr) or thr <= 0:
        raise InputError(f"--qc-threshold must be a positive number of mm, got {threshold}")
    tgt = io.load_image(target, "target")
    region, region_name = _region(mask, tgt)
    # the loaded target, not ``target``: a path would be read and checked a second time
    result.error_mm, result.error_bound_mm, case_cues = error_maps(est, result, source, tgt, cal)
    result.summary["qc"] = qc.block(cal.rule, result.error_mm, result.error_bound_mm, region,
                                    thr, case_cues, cal.id, region_name)
    result.summary["calibration"] = {"id": cal.id, "path": cal.path,
                                     "coverage": cal.model.coverage,
                                     # sigma is noisier below this K: the bound was fitted here
                                     "samples": cal.payload.get("cues", {}).get("samples"),
                                     "held_out": cal.payload.get("held_out")}
    return result


def error_maps(est: Any, result: Any, source: Any, target: Any, cal: Calibration
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(expected error, bound, case cues) of an estimate: one reversed pass, the cues, the
    calibration's model. Maps (D, H, W) float32 on the target's grid, in mm."""
    src = io.load_image(source, "source")
    tgt = io.load_image(target, "target")
    backward = est.predict((tgt.data, tgt.affine), (src.data, src.affine))
    cores = limits.cores()
    c = cues.compute(result, tgt.data, np.asarray(backward.displacement), src.affine,
                     threads=min(est.threads or cores, cores),
                     settings=cues.settings_of(cal.payload.get("cues", {})))
    case_cues = np.array([c.case[n] for n in cues.CASE_CUES])
    x = error_model.features({n: m.ravel() for n, m in c.maps.items()}, case_cues,
                             cal.model.names)
    expected, bound = cal.model.expected_and_bound(x)
    return (expected.reshape(tgt.shape).astype(np.float32),
            bound.reshape(tgt.shape).astype(np.float32), case_cues)


def _region(mask: Any, tgt: io.Image) -> tuple[np.ndarray, str]:
    if mask is None:
        return cues.foreground(tgt.data), "target foreground"
    m, _ = io.load_mask(mask, "mask")
    if m.shape != tgt.shape:
        raise InputError(f"mask shape {m.shape} differs from the target's {tgt.shape}")
    if not m.any():
        raise InputError("mask is empty")
    return m.astype(bool), "mask"
