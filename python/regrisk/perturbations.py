"""Random spatial perturbations of the source image (pull-back maps on the source model grid).

Each perturbation tau is either affine, y = A x + b in voxels of the model grid (A, b as a 3x4
matrix), or dense, a displacement d = B-spline(control) on the grid. The engine warps the source
by tau and composes each prediction back through it (DESIGN.md); this module only draws them.

Geometry: linear parts are built in the physical (mm) frame of the model grid and conjugated
into voxels, A_vox = M^-1 L_mm M (M: the grid's 3x3 voxel->mm matrix), about the grid centre, so
a "5 degree rotation" is a true rotation on anisotropic voxels. Magnitudes are given in voxels,
mm (suffix ``mm``), percent of the grid extent (suffix ``%``) or degrees for rotations.

Families and defaults (the ``paper`` values of Tian, Hu & Iglesias where they give one):

==============  ===========================================================================
translation     t_i ~ U(-max, max) per axis; default max = 1% of the grid extent
rotation        three angles ~ U(-max, max) degrees about the world axes; default 5
scale           s ~ U(min, max), isotropic (``per_axis=1`` draws one per axis); 0.9 .. 1.1
shear           the 6 off-diagonal entries of I + S ~ U(-max, max); default 0.02
affine          rotation @ scale @ shear plus translation, each with the defaults above
                (rotation default 2 degrees here)
bspline         cubic B-spline displacement; control values ~ U(-max, max) per component;
                control grid by ``count`` points per axis (default 10) or ``spacing`` voxels;
                default max = 12.5/175 of the grid extent (12.5 voxels on the paper's 175^3)
none            identity (K identical passes: MC dropout through a stochastic graph)
==============  ===========================================================================

The paper reports one map per family with N = 50 samples each. The ``paper`` preset gives a
single map over the four paper families (translation, scale, shear, bspline): sample k draws
from family k mod 4, so every family gets K/4 samples (stratified, not a random choice, which
keeps the mixture identical across seeds and the per-family counts exact). The B-spline
"10-voxel control grid" is read as 10 control points per axis (a spacing of 10 voxels with
+-12.5 voxel displacements would fold the field); ``spacing=10`` gives the other reading.

Spec strings: ``"translation"``, ``"translation(max=2mm)"``, ``"bspline(spacing=16,max=4)"``,
``"scale(min=0.95,max=1.05)"`` and mixtures joined by ``+`` (round-robin), e.g.
``"rotation(max=3)+translation(max=2mm)"``.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import RegriskError


class PerturbationError(RegriskError, ValueError):
    """A perturbation spec or magnitude is malformed."""


# -- magnitudes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Magnitude:
    """A length: ``value`` in ``unit`` (``voxel``, ``mm`` or ``fraction`` of the grid extent)."""

    value: float
    unit: str = "voxel"

    def voxels(self, shape: tuple[int, ...], M: np.ndarray) -> np.ndarray:
        """Per-axis magnitude in voxels (3,)."""
        if self.unit == "voxel":
            return np.full(3, self.value)
        if self.unit == "fraction":
            return self.value * (np.asarray(shape, dtype=np.float64) - 1)
        # mm: the voxel length along axis i is the norm of column i of M
        return self.value / np.linalg.norm(M, axis=0)

    def to_json(self) -> str:
        return {"voxel": f"{self.value:g}", "mm": f"{self.value:g}mm",
                "fraction": f"{100 * self.value:g}%"}[self.unit]


def parse_magnitude(text: str | float, name: str) -> Magnitude:
    if isinstance(text, (int, float)):
        return Magnitude(float(text))
    m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*(mm|vox|voxels?|%|deg)?\s*", str(text))
    if not m:
        raise PerturbationError(f"perturbation: {name}={text!r} is not a number with an optional "
                                "unit (mm, vox, %)")
    try:
        value = float(m.group(1))
    except ValueError:
        raise PerturbationError(f"perturbation: {name}={text!r} is not a number") from None
    unit = {"mm": "mm", "%": "fraction", None: "voxel", "deg": "voxel"}.get(m.group(2), "voxel")
    if unit == "fraction":
        value /= 100.0
    if not math.isfinite(value) or value < 0:
        raise PerturbationError(f"perturbation: {name} must be a finite value >= 0")
    return Magnitude(value, unit)


# -- draws ------------------------------------------------------------------------------------

@dataclass
class Draws:
    """K drawn perturbations. ``affine[k]`` is the 3x4 voxel pull-back of sample k (identity for
    dense ones); ``control[k]`` is its B-spline control grid (3, c, c, c) or None."""

    families: list[str]
    affine: np.ndarray                     # (K, 3, 4) float32
    control: list[np.ndarray | None]

    def __len__(self) -> int:
        return len(self.families)

    @property
    def dense(self) -> np.ndarray:
        return np.array([c is not None for c in self.control], dtype=bool)


def _centre_conjugate(L_mm: np.ndarray, t_vox: np.ndarray, shape: tuple[int, ...],
                      M: np.ndarray) -> np.ndarray:
    """(n,3,4) voxel pull-backs y = A (x - c) + c + t with A = M^-1 L M, about the grid centre."""
    Minv = np.linalg.inv(M)
    A = Minv @ L_mm @ M
    c = (np.asarray(shape, dtype=np.float64) - 1) / 2
    b = c - A @ c + t_vox
    return np.concatenate([A, b[..., None]], axis=-1)


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    """(n,3) angles about the world x, y, z axes -> (n,3,3) Rz @ Ry @ Rx."""
    a = np.deg2rad(angles_deg)
    c, s = np.cos(a), np.sin(a)
    n = a.shape[0]
    R = np.zeros((n, 3, 3))
    Rx = np.tile(np.eye(3), (n, 1, 1)); Ry = Rx.copy(); Rz = Rx.copy()
    Rx[:, 1, 1], Rx[:, 1, 2], Rx[:, 2, 1], Rx[:, 2, 2] = c[:, 0], -s[:, 0], s[:, 0], c[:, 0]
    Ry[:, 0, 0], Ry[:, 0, 2], Ry[:, 2, 0], Ry[:, 2, 2] = c[:, 1], s[:, 1], -s[:, 1], c[:, 1]
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1] = c[:, 2], -s[:, 2], s[:, 2], c[:, 2]
    R[:] = Rz @ Ry @ Rx
    return R


_OFFDIAG = [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]


@dataclass
class Family:
    """Base: a family maps uniform numbers U (n, dims) in [0, 1) to n perturbations."""

    name: str = ""

    def dims(self, shape: tuple[int, ...]) -> int:
        raise NotImplementedError

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Draws:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"family": self.name, **self.params()}

    def _affine_draws(self, A: np.ndarray) -> Draws:
        n = A.shape[0]
        return Draws([self.name] * n, A.astype(np.float32), [None] * n)


@dataclass
class Identity(Family):
    name: str = "none"

    def dims(self, shape: tuple[int, ...]) -> int:
        return 1

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Draws:
        n = U.shape[0]
        A = np.tile(np.concatenate([np.eye(3), np.zeros((3, 1))], axis=1), (n, 1, 1))
        return self._affine_draws(A)


@dataclass
class Translation(Family):
    max: Magnitude = field(default_factory=lambda: Magnitude(0.01, "fraction"))
    name: str = "translation"

    def dims(self, shape: tuple[int, ...]) -> int:
        return 3

    def vectors(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> np.ndarray:
        """(n,3) translations in voxels."""
        u = 2 * U - 1
        if self.max.unit == "mm":  # a translation of the world frame, in voxels
            return (np.linalg.inv(M) @ (u * self.max.value).T).T
        return u * self.max.voxels(shape, M)

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Draws:
        L = np.tile(np.eye(3), (len(U), 1, 1))
        return self._affine_draws(_centre_conjugate(L, self.vectors(U, shape, M), shape, M))

    def params(self) -> dict[str, Any]:
        return {"max": self.max.to_json()}


@dataclass
class Rotation(Family):
    max_deg: float = 5.0
    name: str = "rotation"

    def dims(self, shape: tuple[int, ...]) -> int:
        return 3

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Draws:
        R = _rotation((2 * U - 1) * self.max_deg)
        return self._affine_draws(_centre_conjugate(R, np.zeros((len(U), 3)), shape, M))

    def params(self) -> dict[str, Any]:
        return {"max": f"{self.max_deg:g}deg"}


@dataclass
class Scale(Family):
    min: float = 0.9
    max: float = 1.1
    per_axis: bool = False
    name: str = "scale"

    def dims(self, shape: tuple[int, ...]) -> int:
        return 3 if self.per_axis else 1

    def factors(self, U: np.ndarray) -> np.ndarray:
        s = self.min + U * (self.max - self.min)
        return s if self.per_axis else np.repeat(s[:, :1], 3, axis=1)

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Draws:
        L = np.zeros((len(U), 3, 3))
        s = self.factors(U)
        for i in range(3):
            L[:, i, i] = s[:, i]
        return self._affine_draws(_centre_conjugate(L, np.zeros((len(U), 3)), shape, M))

    def params(self) -> dict[str, Any]:
        return {"min": self.min, "max": self.max, "per_axis": self.per_axis}


@dataclass
class Shear(Family):
    max: float = 0.02
    name: str = "shear"

    def dims(self, shape: tuple[int, ...]) -> int:
        return 6

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Draws:
        L = np.tile(np.eye(3), (len(U), 1, 1))
        for j, (r, c) in enumerate(_OFFDIAG):
            L[:, r, c] = (2 * U[:, j] - 1) * self.max
        return self._affine_draws(_centre_conjugate(L, np.zeros((len(U), 3)), shape, M))

    def params(self) -> dict[str, Any]:
        return {"max": self.max}


@dataclass
class Affine(Family):
    translation: Translation = field(default_factory=Translation)
    rotation: Rotation = field(default_factory=lambda: Rotation(max_deg=2.0))
    scale: Scale = field(default_factory=Scale)
    shear: Shear = field(default_factory=Shear)
    name: str = "affine"

    def dims(self, shape: tuple[int, ...]) -> int:
        return 3 + 3 + self.scale.dims(shape) + 6

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Draws:
        n = len(U)
        ns = self.scale.dims(shape)
        Ut, Ur, Us, Uh = U[:, :3], U[:, 3:6], U[:, 6:6 + ns], U[:, 6 + ns:]
        R = _rotation((2 * Ur - 1) * self.rotation.max_deg)
        S = np.zeros((n, 3, 3))
        s = self.scale.factors(Us)
        for i in range(3):
            S[:, i, i] = s[:, i]
        H = np.tile(np.eye(3), (n, 1, 1))
        for j, (r, c) in enumerate(_OFFDIAG):
            H[:, r, c] = (2 * Uh[:, j] - 1) * self.shear.max
        t = self.translation.vectors(Ut, shape, M)
        return self._affine_draws(_centre_conjugate(R @ S @ H, t, shape, M))

    def params(self) -> dict[str, Any]:
        return {"translation": self.translation.params(), "rotation": self.rotation.params(),
                "scale": self.scale.params(), "shear": self.shear.params()}


@dataclass
class BSpline(Family):
    max: Magnitude = field(default_factory=lambda: Magnitude(12.5 / 175, "fraction"))
    count: int | None = 10
    spacing: float | None = None
    name: str = "bspline"

    def control_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        if self.spacing is not None:
            # spacing s = (n-1)/(c-3) in the kernel's convention, so c = ceil((n-1)/s) + 3
            return tuple(max(4, int(math.ceil((n - 1) / self.spacing)) + 3) for n in shape)  # type: ignore[return-value]
        return (int(self.count),) * 3  # type: ignore[return-value,arg-type]

    def dims(self, shape: tuple[int, ...]) -> int:
        return 3 * int(np.prod(self.control_shape(shape)))

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Draws:
        n = len(U)
        cs = self.control_shape(shape)
        u = (2 * U - 1).reshape(n, 3, *cs)
        if self.max.unit == "mm":  # world-frame vectors of length <= max per component
            ctrl = np.einsum("ij,njabc->niabc", np.linalg.inv(M), u * self.max.value)
        else:
            ctrl = u * self.max.voxels(shape, M)[None, :, None, None, None]
        ctrl = ctrl.astype(np.float32)
        A = np.tile(np.concatenate([np.eye(3), np.zeros((3, 1))], axis=1), (n, 1, 1))
        return Draws([self.name] * n, A.astype(np.float32), [np.ascontiguousarray(c) for c in ctrl])

    def params(self) -> dict[str, Any]:
        grid = {"spacing": self.spacing} if self.spacing is not None else {"count": self.count}
        return {"max": self.max.to_json(), **grid}


@dataclass
class Perturbation:
    """A set of families drawn round-robin: sample k comes from ``families[k % len]``."""

    families: list[Family]
    spec: str = ""

    def draw(self, n: int, shape: tuple[int, ...], M: np.ndarray,
             rng: np.random.Generator, sobol: bool = False) -> Draws:
        """``n`` perturbations for a grid of ``shape`` with voxel->mm matrix ``M``."""
        if n < 1:
            raise PerturbationError("perturbation: need at least one sample")
        shape = tuple(int(s) for s in shape)
        M = np.asarray(M, dtype=np.float64)
        nf = len(self.families)
        parts: list[Draws] = []
        for f, fam in enumerate(self.families):
            count = len(range(f, n, nf))
            if count == 0:
                parts.append(Draws([], np.zeros((0, 3, 4), np.float32), []))
                continue
            d = fam.dims(shape)
            if sobol:
                from scipy.stats import qmc

                with warnings.catch_warnings():  # non-power-of-2 counts are fine here
                    warnings.simplefilter("ignore")
                    U = qmc.Sobol(d, scramble=True, seed=rng).random(count)
            else:
                U = rng.random((count, d))
            parts.append(fam.from_uniform(U, shape, M))
        # interleave back into sample order k -> family k % nf
        families, affine, control = [], np.zeros((n, 3, 4), np.float32), []
        pos = [0] * nf
        for k in range(n):
            f = k % nf
            p, i = parts[f], pos[f]
            families.append(p.families[i]); affine[k] = p.affine[i]; control.append(p.control[i])
            pos[f] += 1
        return Draws(families, affine, control)

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "families": [f.describe() for f in self.families],
                "assignment": "sample k uses family k mod len(families)"}


# -- parsing ----------------------------------------------------------------------------------

PRESETS = ("paper", "translation", "rotation", "scale", "shear", "affine", "bspline", "none")


def _kv(args: str, family: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if not args.strip():
        return out
    for part in args.split(","):
        if "=" not in part:
            raise PerturbationError(f"perturbation: {family}({args}): expected key=value")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _num(v: str, name: str) -> float:
    try:
        x = float(v.removesuffix("deg"))
    except ValueError:
        raise PerturbationError(f"perturbation: {name}={v!r} is not a number") from None
    if not math.isfinite(x):
        raise PerturbationError(f"perturbation: {name} must be finite")
    return x


def _family(name: str, kv: dict[str, str]) -> Family:
    allowed = {
        "translation": {"max"}, "rotation": {"max"}, "scale": {"min", "max", "per_axis"},
        "shear": {"max"}, "bspline": {"max", "count", "spacing"}, "none": set(),
        "affine": {"translation", "rotation", "scale_min", "scale_max", "shear"},
    }
    if name not in allowed:
        raise PerturbationError(f"perturbation: unknown family {name!r}; use one of "
                                f"{', '.join(PRESETS)}")
    extra = sorted(set(kv) - allowed[name])
    if extra:
        raise PerturbationError(f"perturbation: {name} has no parameter {', '.join(extra)} "
                                f"(allowed: {', '.join(sorted(allowed[name])) or 'none'})")
    if name == "none":
        return Identity()
    if name == "translation":
        return Translation(max=parse_magnitude(kv["max"], "translation.max")) if "max" in kv else Translation()
    if name == "rotation":
        return Rotation(max_deg=_num(kv.get("max", "5"), "rotation.max"))
    if name == "scale":
        lo, hi = _num(kv.get("min", "0.9"), "scale.min"), _num(kv.get("max", "1.1"), "scale.max")
        if not 0 < lo <= hi:
            raise PerturbationError("perturbation: scale needs 0 < min <= max")
        return Scale(min=lo, max=hi, per_axis=kv.get("per_axis", "0").lower() in ("1", "true", "yes"))
    if name == "shear":
        m = _num(kv.get("max", "0.02"), "shear.max")
        if not 0 <= m < 1:
            raise PerturbationError("perturbation: shear.max must be in [0, 1)")
        return Shear(max=m)
    if name == "bspline":
        fam = BSpline()
        if "max" in kv:
            fam.max = parse_magnitude(kv["max"], "bspline.max")
        if "count" in kv and "spacing" in kv:
            raise PerturbationError("perturbation: bspline takes count or spacing, not both")
        if "count" in kv:
            c = _num(kv["count"], "bspline.count")
            if c != int(c) or c < 4:
                raise PerturbationError("perturbation: bspline.count must be an integer >= 4")
            fam.count = int(c)
        if "spacing" in kv:
            s = _num(kv["spacing"], "bspline.spacing")
            if s <= 0:
                raise PerturbationError("perturbation: bspline.spacing must be > 0 voxels")
            fam.spacing, fam.count = s, None
        return fam
    # affine
    fam = Affine()
    if "translation" in kv:
        fam.translation = Translation(max=parse_magnitude(kv["translation"], "affine.translation"))
    if "rotation" in kv:
        fam.rotation = Rotation(max_deg=_num(kv["rotation"], "affine.rotation"))
    lo = _num(kv.get("scale_min", "0.9"), "affine.scale_min")
    hi = _num(kv.get("scale_max", "1.1"), "affine.scale_max")
    if not 0 < lo <= hi:
        raise PerturbationError("perturbation: affine needs 0 < scale_min <= scale_max")
    fam.scale = Scale(min=lo, max=hi)
    if "shear" in kv:
        fam.shear = Shear(max=_num(kv["shear"], "affine.shear"))
    return fam


def parse(spec: "str | Perturbation | Family") -> Perturbation:
    """A :class:`Perturbation` from a preset name, a spec string or family objects."""
    if isinstance(spec, Perturbation):
        return spec
    if isinstance(spec, Family):
        return Perturbation([spec], spec.name)
    if not isinstance(spec, str) or not spec.strip():
        raise PerturbationError("perturbation: expected a preset name or spec string")
    text = spec.strip().lower()
    if text == "paper":
        return Perturbation([Translation(), Scale(), Shear(), BSpline()], "paper")
    families = []
    for term in text.split("+"):
        m = re.fullmatch(r"\s*([a-z_]+)\s*(?:\((.*)\))?\s*", term)
        if not m:
            raise PerturbationError(f"perturbation: cannot parse {term.strip()!r}")
        families.append(_family(m.group(1), _kv(m.group(2) or "", m.group(1))))
    return Perturbation(families, spec.strip())
