"""Variance reduction and the map's own precision.

Every sample is one network pass, so the number of samples is the price of a map. Two levers
make a K-sample map closer to its K -> infinity limit, and one measurement says how close:

- the **design** of the draws (:mod:`regrisk.perturbations`): ``stratified`` puts, along every
  uniform parameter of a family, one draw in each of K equal strata (a Latin hypercube). Each
  draw keeps its family's law; what is evened out is how much perturbation each voxel sees
  across the K draws, which for the B-spline family (thousands of independent local control
  values) is the dominant noise of a small-K map;
- **allocation** (``neyman``, :mod:`regrisk.allocation`): a mixture's passes go to the
  families in proportion to their weight times their spread, measured on a pilot of 2 draws
  per family, and the map is the mixture covariance rebuilt from per-family accumulators
  (unbiased for any allocation): on the ``paper`` mixture most passes go to the B-spline
  family, whose spread dominates the map;
- **control variates** (``control``, :mod:`regrisk.controls`): a dense family's displacement,
  whose variance is known exactly from its law, corrects the sampling noise of that family's
  spread;
- **pooling**: the per-voxel covariance is smoothed with a Gaussian of ``pool_mm`` FWHM before
  sigma is taken, trading a little resolution for a lot less noise;
- **precision**: two half-maps from alternating perturbations of each family are compared by
  Spearman over the target's foreground; Spearman-Brown's formula turns the half-map agreement
  r into the reliability 2r / (1 + r) of the full map, and its square root estimates the map's
  Spearman agreement with its own limit.

``none`` is the paper's estimator exactly: i.i.d. draws, no pooling.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import limits
from .arrays import array_module, to_numpy
from .controls import POOL_MM as _CONTROL_MM
from .errors import InputError

Array = Any
# Voxels used for the Spearman of the half-maps: a fixed stride keeps the check ~10 ms.
MAX_PRECISION_VOXELS = 200_000
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class VarianceReduction:
    """What a run does to get more map per pass: the draw design and the pooling kernel."""

    design: str = "iid"
    pool_mm: float = 0.0
    allocation: str = "proportional"  # or "neyman" (regrisk.allocation)
    control: bool = False             # dense families' displacement as a control variate
    control_mm: float = _CONTROL_MM   # FWHM of the control's slope smoothing

    @property
    def neyman(self) -> bool:
        return self.allocation == "neyman"

    @property
    def per_family(self) -> bool:
        """Whether the map is rebuilt from per-family accumulators (regrisk.strata)."""
        return self.neyman or self.control

    @property
    def name(self) -> str:
        parts = [p for p in ("neyman" if self.neyman else "",
                             ("control" if self.control_mm == _CONTROL_MM else
                              f"control({self.control_mm:g}mm)") if self.control else "",
                             "stratified" if self.design == "stratified" else "",
                             f"pooled({self.pool_mm:g}mm)" if self.pool_mm else "") if p]
        return "+".join(parts) or ("sobol" if self.design == "sobol" else "none")

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "design": self.design, "pool_fwhm_mm": self.pool_mm,
               "allocation": self.allocation, "control_variate": self.control}
        if self.control:
            out["control_slope_fwhm_mm"] = self.control_mm
        return out


def parse(spec: "str | VarianceReduction", sobol: bool = False) -> VarianceReduction:
    """``none``, ``neyman``, ``control``, ``stratified``, ``pooled``, ``pooled(4mm)`` or a
    ``+`` combination."""
    if isinstance(spec, VarianceReduction):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("variance reduction: expected none, neyman, control, stratified, pooled "
                         "or a + combination")
    design, pool, allocation, control = ("sobol" if sobol else "iid"), 0.0, "proportional", False
    control_mm = _CONTROL_MM
    for term in spec.strip().lower().split("+"):
        m = re.fullmatch(r"\s*(none|neyman|control|stratified|pooled)\s*(?:\(\s*([0-9.]+)\s*(?:mm)?\s*\))?\s*",
                         term)
        if not m:
            raise InputError(f"variance reduction: cannot parse {term.strip()!r} (use none, "
                             "neyman, control or control(24mm), stratified, pooled or "
                             "pooled(4mm), joined by +)")
        if m.group(1) == "neyman":
            allocation = "neyman"
        elif m.group(1) == "control":
            control = True
            control_mm = float(m.group(2)) if m.group(2) else _CONTROL_MM
            if not 0 <= control_mm <= 200:
                raise InputError(f"variance reduction: control slope FWHM must be in [0, 200] mm, "
                                 f"got {control_mm:g}")
        elif m.group(1) == "stratified":
            design = "stratified"
        elif m.group(1) == "pooled":
            pool = float(m.group(2)) if m.group(2) else DEFAULT_POOL_MM
            if not 0 < pool <= 50:
                raise InputError(f"variance reduction: pooled FWHM must be in (0, 50] mm, got {pool:g}")
    if design == "stratified" and sobol:
        raise InputError("variance reduction: stratified and --sobol are two designs; pick one")
    return VarianceReduction(design, pool, allocation, control, control_mm)


DEFAULT_POOL_MM = 4.0
# What a run uses when it asks for nothing: the best combination measured (benchmarks/
# EVALUATION.md, "Variance reduction"); "none" where K leaves fewer than 2 draws per family.
DEFAULT = "neyman+control"


def default_for(samples: int, families: int, passes: int = 1,
                sobol: bool = False) -> VarianceReduction:
    """The default estimator for a run of at most ``samples`` draws over ``families``: the
    paper's where K leaves fewer than 2 draws per family, for the nested design (``passes``
    > 1) and for Sobol draws."""
    plain = passes > 1 or sobol or (families > 1 and samples < 2 * families)
    return parse("none" if plain else DEFAULT, sobol)


def pool_covariance(cov6: Array, fwhm_mm: float, spacing_mm: np.ndarray) -> Array:
    """Each of the six covariance terms smoothed by a Gaussian of ``fwhm_mm`` (per-axis sigma
    in voxels from the grid's spacing); edges replicate, so the border is not pulled to 0."""
    xp = array_module(cov6)
    sigma_vox = [fwhm_mm / FWHM_PER_SIGMA / float(s) for s in spacing_mm]
    native = _native_pooling(cov6, sigma_vox)
    if native is not None:
        return native
    if xp is np:
        from scipy.ndimage import gaussian_filter
    else:
        from cupyx.scipy.ndimage import gaussian_filter
    out = xp.empty_like(cov6)
    for k in range(cov6.shape[0]):
        out[k] = gaussian_filter(cov6[k], sigma_vox, mode="nearest", truncate=3.0)
    return out


def gaussian_taps(sigma: float, truncate: float = 3.0) -> np.ndarray:
    """SciPy's Gaussian (``scipy.ndimage.gaussian_filter``): radius int(truncate sigma + 0.5),
    weights exp(-x^2 / 2 sigma^2) normalised to sum 1."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / float(sigma)) ** 2)
    return w / w.sum()


def _native_pooling(cov: Array, sigma_vox: list[float]) -> Array | None:
    """The pooling by regrisk's separable kernel (the C++ smoothing, about 4x SciPy's on 2
    cores) for float32 NumPy arrays; None where it does not apply (CuPy, other dtypes, kernels
    past its 513 taps), which SciPy then does."""
    from . import kernels

    taps = [gaussian_taps(s) if s > 0 else np.ones(1) for s in sigma_vox]
    if array_module(cov) is not np or cov.dtype != np.float32 or max(t.size for t in taps) > 513:
        return None
    vol = np.ascontiguousarray(cov).reshape(1, cov.shape[0], *cov.shape[1:])
    return kernels.gaussian_smooth(vol, taps).reshape(cov.shape)


def precision_region(target: Array) -> np.ndarray:
    """Flat voxel indices of the target's foreground on the model grid (above a tenth of its
    maximum), thinned by a fixed stride to at most MAX_PRECISION_VOXELS."""
    t = to_numpy(target).ravel()
    idx = np.flatnonzero(t > 0.1 * float(t.max())) if t.size and t.max() > 0 else np.arange(t.size)
    if idx.size < 100:
        idx = np.arange(t.size)
    stride = max(1, idx.size // MAX_PRECISION_VOXELS)
    return idx[::stride]


def split_half_precision(sigma_a: Array, sigma_b: Array, region: np.ndarray) -> dict[str, float]:
    """Agreement of two half-maps, and what it says about the full map (module docstring)."""
    from .ranking import spearman

    a = to_numpy(sigma_a).ravel()[region]
    b = to_numpy(sigma_b).ravel()[region]
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant half-map ranks nothing
        return {"split_half_spearman": 0.0, "reliability": 0.0, "precision": 0.0}
    r = spearman(a, b)
    reliability = max(0.0, 2 * r / (1 + r)) if r > -1 else 0.0
    return {"split_half_spearman": r, "reliability": reliability,
            "precision": math.sqrt(reliability)}


# -- how many samples --------------------------------------------------------------------------

DEFAULT_PRECISION = 0.90
DEFAULT_MAX_SAMPLES = 200


@dataclass(frozen=True)
class SamplePlan:
    """A fixed K (``samples``), or adaptive: rounds of draws until the split-half precision
    reaches ``precision`` or ``max_samples`` have run (which is reported, not hidden)."""

    samples: int | None
    precision: float = DEFAULT_PRECISION
    max_samples: int = DEFAULT_MAX_SAMPLES

    @property
    def adaptive(self) -> bool:
        return self.samples is None

    @property
    def most(self) -> int:
        return self.max_samples if self.samples is None else self.samples

    def rounds(self, families: int) -> list[int]:
        """Sizes of the successive draws: all K at once, or a first round of at least 16 then
        steps of at least 8 (an even number per family, so each family keeps its share and its
        two halves), the last one cut at max_samples."""
        if self.samples is not None:
            return [self.samples]
        # an even count per family and round keeps the two stratified halves aligned
        first = families * 2 * max(1, math.ceil(8 / families))
        step = families * 2 * max(1, math.ceil(4 / families))
        sizes, total = [], 0
        while total < self.max_samples:
            n = min(first if not sizes else step, self.max_samples - total)
            sizes.append(n)
            total += n
        return sizes


def sample_plan(samples: Any, precision: Any = None, max_samples: Any = None) -> SamplePlan:
    """Validate the user's sample settings (InputError naming the bad one)."""
    if isinstance(samples, str) and samples.strip().lower() == "auto":
        p = DEFAULT_PRECISION if precision is None else precision
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1:
            raise InputError(f"precision must be a number in (0, 1), got {p!r}")
        most = DEFAULT_MAX_SAMPLES if max_samples is None else limits.integer(
            max_samples, "max_samples", 4, limits.MAX_SAMPLES)
        return SamplePlan(None, float(p), most)
    if precision is not None or max_samples is not None:
        raise InputError("precision and max_samples go with samples='auto' (--samples auto)")
    return SamplePlan(limits.integer(samples, "samples", 2, limits.MAX_SAMPLES))
