"""Known-deformation cases for calibration, from real images.

Each case is the evaluation's construction (:mod:`regrisk.evaluation.groundtruth`): a base
image ``I`` warped by a known pull-back ``G`` is the source, ``I`` the target, the true map
``G^-1``. The mix covers what the network handles (the protocol's translation, affine and
nonlinear ranges) and what it does not (shifts up to 25% of the grid, stronger nonlinear
fields), so that failed registrations are part of what the error model and the verdict learn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import io
from ..evaluation import groundtruth, protocol

Generator = Callable[[tuple[int, int, int], np.random.Generator], groundtruth.GroundTruth]

FAMILIES: dict[str, Generator] = {
    "translation": groundtruth.translation,
    "translation_far": lambda shape, rng: groundtruth.translation(shape, rng, fraction=0.25),
    # not in the mix: partial failures, kept for held-out checks of the verdict
    "translation_mid": lambda shape, rng: groundtruth.translation(shape, rng, fraction=0.18),
    "affine": groundtruth.affine,
    "affine_strong": lambda shape, rng: groundtruth.affine(shape, rng, shear=0.2,
                                                           scale=(0.7, 1.3)),
    "nonlinear": groundtruth.nonlinear,
    "nonlinear_strong": lambda shape, rng: groundtruth.nonlinear(shape, rng, amplitude=0.3),
}
# One cycle of the mix: nonlinear is the most common use and the hardest to score.
MIX = ("nonlinear", "translation", "affine", "nonlinear", "translation_far", "nonlinear",
       "affine_strong", "nonlinear_strong")


@dataclass(frozen=True)
class CaseSpec:
    index: int
    image: int      # index into the image list
    family: str
    seed: int


def plan(n_cases: int, n_images: int, seed: int = 0) -> list[CaseSpec]:
    """``n_cases`` cases cycling through the mix and, within each step of the mix, the images
    (so every family is seen on every image as soon as there are enough cases)."""
    out = []
    for i in range(n_cases):
        family = MIX[(i // n_images) % len(MIX)]
        s = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        out.append(CaseSpec(i, i % n_images, family, s))
    return out


def build(spec: CaseSpec, image: io.Image) -> protocol.Case:
    """The case: source I o G, target I, truth G^-1, scored region (foreground where the true
    correspondence lies inside the image)."""
    truth = FAMILIES[spec.family](image.shape, np.random.default_rng(spec.seed))
    truth.kind = spec.family
    region = protocol._region(image.data, None, truth)
    return protocol.Case(spec.family, spec.index, f"image{spec.image}", image.data, image.affine,
                         truth.apply(image.data), truth, region, spec.seed)


def iter_cases(specs: Sequence[CaseSpec], images: Sequence[io.Image]) -> Iterator[protocol.Case]:
    for spec in specs:
        yield build(spec, images[spec.image])


def true_error(case: protocol.Case, displacement_mm: np.ndarray) -> np.ndarray:
    """|u_gt - u_pred| in mm per voxel (the evaluation's definition)."""
    return protocol.true_error(case, np.asarray(displacement_mm, np.float32))


def load_images(paths: Sequence[Any]) -> list[io.Image]:
    return [io.load_image(p, f"image {i + 1}") for i, p in enumerate(paths)]


@dataclass
class CaseRecord:
    """What calibration keeps of one case: the cue table and true error on a random subset of
    the scored voxels (an unbiased sample of the region), and the case-level cues."""

    family: str
    image: int
    seed: int
    cues: np.ndarray        # (N, len(VOXEL_CUES)) float32
    case_cues: np.ndarray   # (len(CASE_CUES),) float64
    error: np.ndarray       # (N,) true error in mm
    true_mean_error: float  # over the whole scored region

    def save(self, path: Any) -> None:
        np.savez_compressed(path, family=self.family, image=self.image, seed=self.seed,
                            cues=self.cues, case_cues=self.case_cues, error=self.error,
                            true_mean_error=self.true_mean_error)

    @classmethod
    def load(cls, path: Any) -> "CaseRecord":
        with np.load(path) as z:
            return cls(str(z["family"]), int(z["image"]), int(z["seed"]), z["cues"],
                       z["case_cues"], z["error"], float(z["true_mean_error"]))


def record(est: Any, case: protocol.Case, samples: int, voxels: int = 20000) -> CaseRecord:
    """Estimate the case (K = ``samples``, the 'paper' perturbations), take its cues and true
    error, and keep ``voxels`` random voxels of the scored region."""
    from . import cues as cue_mod

    src, tgt = (case.source, case.affine), (case.image, case.affine)
    result, c = cue_mod.observe(est, src, tgt, samples=samples, perturbation="paper",
                                seed=case.seed % (2**31), variance_reduction="none")
    error = true_error(case, result.displacement)
    idx = np.flatnonzero(case.region)
    rng = np.random.default_rng(case.seed)
    pick = np.sort(rng.choice(idx, size=min(voxels, idx.size), replace=False))
    table = np.stack([c.maps[n].ravel()[pick] for n in cue_mod.VOXEL_CUES], axis=1)
    return CaseRecord(case.kind, int(case.base.removeprefix("image")), case.seed,
                      table.astype(np.float32),
                      np.array([c.case[n] for n in cue_mod.CASE_CUES], dtype=np.float64),
                      error.ravel()[pick].astype(np.float32),
                      float(error[case.region].mean()))


def collect(est: Any, images: Sequence[io.Image], n_cases: int, samples: int, seed: int = 0,
            say: Callable[[str], None] = lambda msg: None,
            cache: Any = None) -> list[CaseRecord]:
    """Records of ``n_cases`` planned cases; with a ``cache`` folder, each record is kept there
    as it completes (``case_NNN.npz``) and reused by a rerun with the same plan."""
    from pathlib import Path

    out = []
    for spec in plan(n_cases, len(images), seed):
        path = Path(cache) / f"case_{spec.index:03d}.npz" if cache is not None else None
        if path is not None and path.is_file():
            out.append(CaseRecord.load(path))
            continue
        say(f"case {spec.index + 1}/{n_cases}: {spec.family} on image {spec.image + 1}")
        rec = record(est, build(spec, images[spec.image]), samples)
        if path is not None:
            rec.save(path.with_suffix(".tmp.npz"))
            path.with_suffix(".tmp.npz").replace(path)
        out.append(rec)
    return out
