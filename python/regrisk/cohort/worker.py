"""One warm estimator that runs pairs: the model is loaded once, then every pair it is given
is estimated, thumbnailed and written into its own folder atomically (built in a temporary
folder beside it and renamed whole, so an interrupted or killed pair leaves no half result).
The local engine uses it directly; the Ray engine runs it as an actor."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..errors import InputError, RegriskError, first_line
from . import calibrated
from .outcome import DONE, FAILED, Outcome, qc_numbers, region_statistics
from .overview import thumbnail
from .pairs import Pair
from .settings import EstimateSettings

THUMBNAIL = "overview.png"


class PairWorker:
    def __init__(self, model: Any, settings: EstimateSettings) -> None:
        from ..engine import Estimator

        self.settings = settings
        self.estimator = Estimator(model, **settings.estimator)
        self.calibration = calibrated.load(model, settings)  # checked by the driver
        self.where = {"host": socket.gethostname(), "pid": os.getpid()}

    def pid(self) -> int:
        return os.getpid()

    def run(self, pair: Pair, out_dir: str | os.PathLike[str]) -> Outcome:
        """Estimate ``pair`` into ``out_dir``; a failure comes back as a FAILED outcome with its
        one-line error (the cohort goes on), never as an exception."""
        t0 = time.perf_counter()
        try:
            stats, qc = self._estimate_and_save(pair, Path(out_dir))
        except Exception as exc:  # any failure of one pair is that pair's, not the cohort's
            typed = not isinstance(exc, RegriskError)
            return Outcome(pair.id, FAILED, time.perf_counter() - t0,
                           error=first_line(exc, typed=typed), worker=dict(self.where))
        return Outcome(pair.id, DONE, time.perf_counter() - t0, stats=stats, qc=qc,
                       worker=dict(self.where))

    def _estimate_and_save(self, pair: Pair,
                           out_dir: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
        target = io.load_image(str(pair.target), "target")
        mask = _mask(pair, target)
        result = self.estimator.estimate(str(pair.source), target, **self.settings.estimate)
        if self.calibration is not None:  # error maps and the summary's qc block
            from ..calibration.apply import annotate

            annotate(self.estimator, result, str(pair.source), target, self.calibration,
                     None if pair.mask is None else str(pair.mask),
                     self.settings.calibration.get("qc_threshold"))
        stats = region_statistics(result.uncertainty, mask, result.summary)
        qc = qc_numbers(result.summary)
        with io.OutputFolder(out_dir, overwrite=True) as stage:
            result.save(stage, overwrite=True)
            title = f"{pair.id}: sigma mean {stats['sigma_mean_mm']:.3g} mm"
            thumbnail(stage / THUMBNAIL, target.data, result.uncertainty, mask, title)
        return stats, qc

    def close(self) -> None:
        self.estimator.close()


def _mask(pair: Pair, target: io.Image) -> np.ndarray | None:
    """The pair's region mask on the target's grid (same shape and affine), or None."""
    if pair.mask is None:
        return None
    mask, affine = io.load_mask(str(pair.mask), "mask")
    if mask.shape != target.shape or not np.allclose(affine, target.affine, atol=1e-3):
        raise InputError(f"mask {pair.mask}: not on the target's grid (shape {mask.shape}, "
                         f"target {target.shape})")
    return mask
