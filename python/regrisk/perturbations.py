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

Ranges (checked when a family is built, from a spec or the API, in the unit typed): lengths
(translation and B-spline maxima) 0..256 voxels, 0..512 mm or 0..50%; rotation 0..180 degrees;
scale 0.1 <= min <= max <= 10; shear 0..0.45; B-spline count 4..64 points per axis or spacing
1..10000 voxels. A run draws at most 2^27 uniform numbers, and ``--sobol`` at most 21201 per
sample and family (scipy's limit).

Drawing is separate from applying: ``Perturbation.draw`` returns a :class:`DrawSet` of
homogeneous :class:`Block` s, one per family (affine matrices or B-spline control grids), which
the engine batches as they are; ``DrawSet.sample_order`` gives the interleaved per-sample view.
Each family class owns its parameters, their defaults and their spec parsing.

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
from numbers import Real
from typing import Any, ClassVar

import numpy as np

from .errors import RegriskError


class PerturbationError(RegriskError, ValueError):
    """A perturbation spec or magnitude is malformed or out of its range."""


# -- ranges -----------------------------------------------------------------------------------
# Far beyond any useful perturbation, and small enough that every drawn value, its float32 copy
# and the composed fields stay finite. Checked when a family is built (spec or API), in the
# units the user typed.
MAX_LENGTH = {"voxel": 256.0, "mm": 512.0, "fraction": 0.5}  # translation / B-spline maxima
MAX_ROTATION_DEG = 180.0
SCALE_RANGE = (0.1, 10.0)
MAX_SHEAR = 0.45  # off-diagonal entries below 1/2: I + S stays strictly diagonally dominant
BSPLINE_COUNT = (4, 64)  # control points per axis
BSPLINE_SPACING = (1.0, 10_000.0)  # voxels between control points
SOBOL_MAX_DIMS = 21_201  # scipy's scrambled Sobol sequence: dimensions per family at most


def _in_range(x: float, name: str, low: float, high: float, unit: str = "") -> float:
    """``x`` when finite and within [low, high]; the message uses the user's unit."""
    if not (math.isfinite(x) and low <= x <= high):
        raise PerturbationError(f"perturbation: {name}={x:g}{unit} is out of range: use "
                                f"{low:g}{unit} to {high:g}{unit}")
    return x


# -- magnitudes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Magnitude:
    """A length: ``value`` in ``unit`` (``voxel``, ``mm`` or ``fraction`` of the grid extent)."""

    value: float
    unit: str = "voxel"

    def __post_init__(self) -> None:
        _check_length(self.value, self.unit, "magnitude")

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


def _check_length(value: float, unit: str, name: str) -> None:
    """PerturbationError unless 0 <= value <= MAX_LENGTH[unit], shown in the user's unit."""
    if unit not in MAX_LENGTH:
        raise PerturbationError(f"perturbation: {name}: unknown unit {unit!r}")
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or value < 0:
        raise PerturbationError(f"perturbation: {name} must be a finite value >= 0")
    if value > MAX_LENGTH[unit]:
        suffix, factor = {"voxel": (" voxels", 1.0), "mm": ("mm", 1.0),
                          "fraction": ("%", 100.0)}[unit]
        _in_range(value * factor, name, 0.0, MAX_LENGTH[unit] * factor, suffix)


def parse_magnitude(text: str | float, name: str) -> Magnitude:
    if isinstance(text, Real) and not isinstance(text, bool):
        _check_length(float(text), "voxel", name)
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
    _check_length(value, unit, name)
    return Magnitude(value, unit)


# -- draws ------------------------------------------------------------------------------------

@dataclass
class Block:
    """Draws of one family: sample indices ``index`` (positions k in the run), and either
    ``affine`` (n, 3, 4) voxel pull-backs or ``control`` (n, 3, c0, c1, c2) B-spline grids."""

    family: str
    index: np.ndarray
    affine: np.ndarray | None = None
    control: np.ndarray | None = None

    @property
    def dense(self) -> bool:
        return self.control is not None

    def __len__(self) -> int:
        return len(self.index)

    def take(self, rows: np.ndarray) -> "Block":
        """The sub-block of the given rows (a micro-batch)."""
        pick = (lambda a: None if a is None else np.ascontiguousarray(a[rows]))
        return Block(self.family, self.index[rows], pick(self.affine), pick(self.control))


@dataclass
class Draws:
    """K drawn perturbations in sample order. ``affine[k]`` is the 3x4 voxel pull-back of sample
    k (identity for dense ones); ``control[k]`` is its B-spline control grid or None."""

    families: list[str]
    affine: np.ndarray                     # (K, 3, 4) float32
    control: list[np.ndarray | None]

    def __len__(self) -> int:
        return len(self.families)

    @property
    def dense(self) -> np.ndarray:
        return np.array([c is not None for c in self.control], dtype=bool)


@dataclass
class DrawSet:
    """All draws of a run as homogeneous blocks, in family order."""

    blocks: list[Block]
    count: int

    def family_names(self) -> list[str]:
        return list(dict.fromkeys(b.family for b in self.blocks))

    def family_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for b in self.blocks:
            counts[b.family] = counts.get(b.family, 0) + len(b)
        return counts

    def sample_order(self) -> Draws:
        """The per-sample view (sample k -> its family's draw), for scripts replaying draws."""
        families = [""] * self.count
        affine = np.tile(np.eye(3, 4, dtype=np.float32), (self.count, 1, 1))
        control: list[np.ndarray | None] = [None] * self.count
        for b in self.blocks:
            for row, k in enumerate(b.index):
                families[k] = b.family
                if b.dense:
                    control[k] = b.control[row]  # type: ignore[index]
                else:
                    affine[k] = b.affine[row]  # type: ignore[index]
        return Draws(families, affine, control)


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


def _shear_matrices(U: np.ndarray, max_value: float) -> np.ndarray:
    """(n,3,3) I + S with the 6 off-diagonal entries ~ U(-max, max) from U (n, 6)."""
    H = np.tile(np.eye(3), (len(U), 1, 1))
    for j, (r, c) in enumerate(_OFFDIAG):
        H[:, r, c] = (2 * U[:, j] - 1) * max_value
    return H


def _diagonal(s: np.ndarray) -> np.ndarray:
    """(n,3,3) diagonal matrices from (n,3) factors."""
    L = np.zeros((len(s), 3, 3))
    for i in range(3):
        L[:, i, i] = s[:, i]
    return L


def _num(v: str, name: str) -> float:
    try:
        x = float(v.removesuffix("deg"))
    except ValueError:
        raise PerturbationError(f"perturbation: {name}={v!r} is not a number") from None
    if not math.isfinite(x):
        raise PerturbationError(f"perturbation: {name} must be finite")
    return x


def _flag(v: str, name: str) -> bool:
    t = v.strip().lower()
    if t not in ("1", "true", "yes", "0", "false", "no"):
        raise PerturbationError(f"perturbation: {name}={v!r}: use 1/0, true/false or yes/no")
    return t in ("1", "true", "yes")


def _scale_range(lo: float, hi: float, what: str) -> tuple[float, float]:
    low, high = SCALE_RANGE
    if not (math.isfinite(lo) and math.isfinite(hi) and low <= lo <= hi <= high):
        raise PerturbationError(f"perturbation: {what} needs {low:g} <= min <= max <= {high:g}, "
                                f"got {lo:g}, {hi:g}")
    return lo, hi


def _real(x: Any, name: str) -> float:
    """A parameter given through the API: a real number (not a bool, not a string)."""
    if isinstance(x, bool) or not isinstance(x, Real):
        raise PerturbationError(f"perturbation: {name} must be a number, got {x!r}")
    return float(x)


def _bspline_count(c: Any) -> int:
    low, high = BSPLINE_COUNT
    if isinstance(c, bool) or not isinstance(c, Real) or not math.isfinite(c) or c != int(c) \
            or not low <= c <= high:
        got = f"{c:g}" if isinstance(c, Real) and not isinstance(c, bool) else repr(c)
        raise PerturbationError(f"perturbation: bspline.count must be an integer >= {low} and "
                                f"<= {high} (control points per axis), got {got}")
    return int(c)


def _rotation_max(x: float, name: str) -> float:
    return _in_range(x, name, 0.0, MAX_ROTATION_DEG, " deg")


def _shear_max(x: float, name: str) -> float:
    return _in_range(x, name, 0.0, MAX_SHEAR)


# -- families ---------------------------------------------------------------------------------

@dataclass
class Family:
    """Base: a family maps uniform numbers U (n, dims) in [0, 1) to a block of n draws.
    Subclasses set ``NAME`` and ``PARAMS`` (spec keys) and parse them in ``from_spec``."""

    NAME: ClassVar[str] = ""
    PARAMS: ClassVar[frozenset[str]] = frozenset()

    @property
    def name(self) -> str:
        return self.NAME

    @classmethod
    def from_spec(cls, kv: dict[str, str]) -> "Family":
        return cls()

    def dims(self, shape: tuple[int, ...]) -> int:
        raise NotImplementedError

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Block:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"family": self.name, **self.params()}

    def _affine_block(self, A: np.ndarray) -> Block:
        return Block(self.name, np.arange(len(A)), affine=A.astype(np.float32))


@dataclass
class Identity(Family):
    NAME: ClassVar[str] = "none"

    def dims(self, shape: tuple[int, ...]) -> int:
        return 1

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Block:
        return self._affine_block(np.tile(np.eye(3, 4), (U.shape[0], 1, 1)))


@dataclass
class Translation(Family):
    max: Magnitude = field(default_factory=lambda: Magnitude(0.01, "fraction"))
    NAME: ClassVar[str] = "translation"
    PARAMS: ClassVar[frozenset[str]] = frozenset({"max"})

    def __post_init__(self) -> None:
        if not isinstance(self.max, Magnitude):
            raise PerturbationError("perturbation: translation.max must be a Magnitude")

    @classmethod
    def from_spec(cls, kv: dict[str, str]) -> "Translation":
        return cls(max=parse_magnitude(kv["max"], "translation.max")) if "max" in kv else cls()

    def dims(self, shape: tuple[int, ...]) -> int:
        return 3

    def vectors(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> np.ndarray:
        """(n,3) translations in voxels."""
        u = 2 * U - 1
        if self.max.unit == "mm":  # a translation of the world frame, in voxels
            return (np.linalg.inv(M) @ (u * self.max.value).T).T
        return u * self.max.voxels(shape, M)

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Block:
        L = np.tile(np.eye(3), (len(U), 1, 1))
        return self._affine_block(_centre_conjugate(L, self.vectors(U, shape, M), shape, M))

    def params(self) -> dict[str, Any]:
        return {"max": self.max.to_json()}


@dataclass
class Rotation(Family):
    max_deg: float = 5.0
    NAME: ClassVar[str] = "rotation"
    PARAMS: ClassVar[frozenset[str]] = frozenset({"max"})

    def __post_init__(self) -> None:
        _rotation_max(_real(self.max_deg, "rotation.max"), "rotation.max")

    @classmethod
    def from_spec(cls, kv: dict[str, str]) -> "Rotation":
        return cls(max_deg=_rotation_max(_num(kv.get("max", "5"), "rotation.max"), "rotation.max"))

    def dims(self, shape: tuple[int, ...]) -> int:
        return 3

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Block:
        R = _rotation((2 * U - 1) * self.max_deg)
        return self._affine_block(_centre_conjugate(R, np.zeros((len(U), 3)), shape, M))

    def params(self) -> dict[str, Any]:
        return {"max": f"{self.max_deg:g}deg"}


@dataclass
class Scale(Family):
    min: float = 0.9
    max: float = 1.1
    per_axis: bool = False
    NAME: ClassVar[str] = "scale"
    PARAMS: ClassVar[frozenset[str]] = frozenset({"min", "max", "per_axis"})

    def __post_init__(self) -> None:
        _scale_range(_real(self.min, "scale.min"), _real(self.max, "scale.max"), "scale")

    @classmethod
    def from_spec(cls, kv: dict[str, str]) -> "Scale":
        lo, hi = _scale_range(_num(kv.get("min", "0.9"), "scale.min"),
                              _num(kv.get("max", "1.1"), "scale.max"), "scale")
        return cls(min=lo, max=hi, per_axis=_flag(kv.get("per_axis", "0"), "scale.per_axis"))

    def dims(self, shape: tuple[int, ...]) -> int:
        return 3 if self.per_axis else 1

    def factors(self, U: np.ndarray) -> np.ndarray:
        s = self.min + U * (self.max - self.min)
        return s if self.per_axis else np.repeat(s[:, :1], 3, axis=1)

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Block:
        L = _diagonal(self.factors(U))
        return self._affine_block(_centre_conjugate(L, np.zeros((len(U), 3)), shape, M))

    def params(self) -> dict[str, Any]:
        return {"min": self.min, "max": self.max, "per_axis": self.per_axis}


@dataclass
class Shear(Family):
    max: float = 0.02
    NAME: ClassVar[str] = "shear"
    PARAMS: ClassVar[frozenset[str]] = frozenset({"max"})

    def __post_init__(self) -> None:
        _shear_max(_real(self.max, "shear.max"), "shear.max")

    @classmethod
    def from_spec(cls, kv: dict[str, str]) -> "Shear":
        return cls(max=_shear_max(_num(kv.get("max", "0.02"), "shear.max"), "shear.max"))

    def dims(self, shape: tuple[int, ...]) -> int:
        return 6

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Block:
        L = _shear_matrices(U, self.max)
        return self._affine_block(_centre_conjugate(L, np.zeros((len(U), 3)), shape, M))

    def params(self) -> dict[str, Any]:
        return {"max": self.max}


@dataclass
class Affine(Family):
    translation: Translation = field(default_factory=Translation)
    rotation: Rotation = field(default_factory=lambda: Rotation(max_deg=2.0))
    scale: Scale = field(default_factory=Scale)
    shear: Shear = field(default_factory=Shear)
    NAME: ClassVar[str] = "affine"
    PARAMS: ClassVar[frozenset[str]] = frozenset(
        {"translation", "rotation", "scale_min", "scale_max", "shear"})

    @classmethod
    def from_spec(cls, kv: dict[str, str]) -> "Affine":
        fam = cls()
        if "translation" in kv:
            fam.translation = Translation(max=parse_magnitude(kv["translation"], "affine.translation"))
        if "rotation" in kv:
            fam.rotation = Rotation(max_deg=_rotation_max(_num(kv["rotation"], "affine.rotation"),
                                                          "affine.rotation"))
        lo, hi = _scale_range(_num(kv.get("scale_min", "0.9"), "affine.scale_min"),
                              _num(kv.get("scale_max", "1.1"), "affine.scale_max"),
                              "affine scale_min/scale_max")
        fam.scale = Scale(min=lo, max=hi)
        if "shear" in kv:  # the same range as shear(max=...)
            fam.shear = Shear(max=_shear_max(_num(kv["shear"], "affine.shear"), "affine.shear"))
        return fam

    def dims(self, shape: tuple[int, ...]) -> int:
        return 3 + 3 + self.scale.dims(shape) + 6

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Block:
        ns = self.scale.dims(shape)
        Ut, Ur, Us, Uh = U[:, :3], U[:, 3:6], U[:, 6:6 + ns], U[:, 6 + ns:]
        R = _rotation((2 * Ur - 1) * self.rotation.max_deg)
        S = _diagonal(self.scale.factors(Us))
        H = _shear_matrices(Uh, self.shear.max)
        t = self.translation.vectors(Ut, shape, M)
        return self._affine_block(_centre_conjugate(R @ S @ H, t, shape, M))

    def params(self) -> dict[str, Any]:
        return {"translation": self.translation.params(), "rotation": self.rotation.params(),
                "scale": self.scale.params(), "shear": self.shear.params()}


@dataclass
class BSpline(Family):
    max: Magnitude = field(default_factory=lambda: Magnitude(12.5 / 175, "fraction"))
    count: int | None = 10
    spacing: float | None = None
    NAME: ClassVar[str] = "bspline"
    PARAMS: ClassVar[frozenset[str]] = frozenset({"max", "count", "spacing"})

    def __post_init__(self) -> None:
        if not isinstance(self.max, Magnitude):
            raise PerturbationError("perturbation: bspline.max must be a Magnitude")
        if self.spacing is not None:
            _in_range(_real(self.spacing, "bspline.spacing"), "bspline.spacing",
                      *BSPLINE_SPACING, " voxels")
        elif _bspline_count(self.count) is None:
            raise PerturbationError("perturbation: bspline needs count or spacing")

    @classmethod
    def from_spec(cls, kv: dict[str, str]) -> "BSpline":
        if "count" in kv and "spacing" in kv:
            raise PerturbationError("perturbation: bspline takes count or spacing, not both")
        fam: dict[str, Any] = {}
        if "max" in kv:
            fam["max"] = parse_magnitude(kv["max"], "bspline.max")
        if "count" in kv:
            fam["count"] = _bspline_count(_num(kv["count"], "bspline.count"))
        if "spacing" in kv:
            fam["spacing"], fam["count"] = _num(kv["spacing"], "bspline.spacing"), None
        return cls(**fam)

    def control_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        if self.spacing is not None:
            # spacing s = (n-1)/(c-3) in the kernel's convention, so c = ceil((n-1)/s) + 3
            return tuple(max(4, int(math.ceil((n - 1) / self.spacing)) + 3) for n in shape)  # type: ignore[return-value]
        return (int(self.count),) * 3  # type: ignore[return-value,arg-type]

    def dims(self, shape: tuple[int, ...]) -> int:
        return 3 * int(np.prod(self.control_shape(shape)))

    def from_uniform(self, U: np.ndarray, shape: tuple[int, ...], M: np.ndarray) -> Block:
        n = len(U)
        u = (2 * U - 1).reshape(n, 3, *self.control_shape(shape))
        if self.max.unit == "mm":  # world-frame vectors of length <= max per component
            ctrl = np.einsum("ij,njabc->niabc", np.linalg.inv(M), u * self.max.value)
        else:
            ctrl = u * self.max.voxels(shape, M)[None, :, None, None, None]
        return Block(self.name, np.arange(n), control=np.ascontiguousarray(ctrl, dtype=np.float32))

    def params(self) -> dict[str, Any]:
        grid = {"spacing": self.spacing} if self.spacing is not None else {"count": self.count}
        return {"max": self.max.to_json(), **grid}


FAMILIES: dict[str, type[Family]] = {
    cls.NAME: cls for cls in (Translation, Rotation, Scale, Shear, Affine, BSpline, Identity)}


DESIGNS = ("iid", "sobol", "stratified")


def _stratified(count: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    """Latin hypercube: along every dimension the ``count`` values fall one in each of
    ``count`` equal strata, in an independent random order. Each value is still U(0, 1), so
    every single draw keeps its family's law; only the spread across draws is evened out."""
    strata = np.argsort(rng.random((dims, count)), axis=1).T  # (count, dims) permutations
    return (strata + rng.random((count, dims))) / count


def _interleaved(counts: "list[int]", n: int, families: int) -> list[np.ndarray]:
    """Sample numbers of each family when family f draws ``counts[f]``: round-robin over the
    families that still have draws (equal counts give k -> family k mod len)."""
    if len(counts) != families or sum(counts) != n or min(counts) < 0:
        raise PerturbationError(f"perturbation: draws per family {list(counts)} are not "
                                f"{families} counts summing to {n}")
    out: list[list[int]] = [[] for _ in counts]
    k = 0
    for r in range(max(counts)):
        for f, c in enumerate(counts):
            if r < c:
                out[f].append(k)
                k += 1
    return [np.asarray(o, dtype=np.int64) for o in out]


def _uniform(count: int, dims: int, rng: np.random.Generator, design: str) -> np.ndarray:
    """(count, dims) numbers in [0, 1) by design: i.i.d., scrambled Sobol or stratified."""
    if design == "iid":
        return rng.random((count, dims))
    if design == "stratified":  # two independent halves, interleaved (see variance.py)
        U = np.empty((count, dims))
        U[0::2] = _stratified(len(range(0, count, 2)), dims, rng)
        if count > 1:
            U[1::2] = _stratified(count // 2, dims, rng)
        return U
    from scipy.stats import qmc

    with warnings.catch_warnings():  # non-power-of-2 counts are fine here
        warnings.simplefilter("ignore")
        return qmc.Sobol(dims, scramble=True, seed=rng).random(count)


@dataclass
class Perturbation:
    """A set of families drawn round-robin: sample k comes from ``families[k % len]``."""

    families: list[Family]
    spec: str = ""

    def draw(self, n: int, shape: tuple[int, ...], M: np.ndarray,
             rng: np.random.Generator, sobol: bool = False, design: str | None = None,
             counts: "list[int] | None" = None) -> DrawSet:
        """``n`` perturbations for a grid of ``shape`` with voxel->mm matrix ``M``, as one block
        per family (families draw in order from ``rng``; the draws do not depend on batching).
        design: ``iid`` (default), ``sobol`` (as ``sobol=True``) or ``stratified``: per family,
        its even-numbered and its odd-numbered draws each form a Latin hypercube over the
        family's uniform parameters (two independent halves, so that the split-half precision
        of :mod:`regrisk.variance` compares independent replicates). ``counts``: draws per
        family (in order, summing to ``n``) instead of the round-robin's equal shares; the
        samples are then numbered round-robin over the families that still have draws."""
        if n < 1:
            raise PerturbationError("perturbation: need at least one sample")
        design = design or ("sobol" if sobol else "iid")
        if design not in DESIGNS:
            raise PerturbationError(f"perturbation: design {design!r}; use one of {', '.join(DESIGNS)}")
        shape = tuple(int(s) for s in shape)
        nf = len(self.families)
        indices = [np.arange(f, n, nf) for f in range(nf)] if counts is None else \
            _interleaved(counts, n, nf)
        self.check_draws(n, design, shape, counts)
        M = np.asarray(M, dtype=np.float64)
        blocks = []
        for fam, index in zip(self.families, indices):
            if len(index) == 0:
                continue
            block = fam.from_uniform(_uniform(len(index), fam.dims(shape), rng, design), shape, M)
            block.index = index
            blocks.append(block)
        return DrawSet(blocks, n)

    def check_draws(self, n: int, design: str, shape: tuple[int, ...] | None = None,
                    counts: "list[int] | None" = None) -> None:
        """PerturbationError when ``n`` draws cannot be made: a family with more dimensions
        than scrambled Sobol supports, or more uniform numbers than MAX_DRAW_VALUES. Without
        ``shape`` (at parse time) a B-spline given by spacing is checked later, at draw time."""
        from .limits import MAX_DRAW_VALUES

        total = 0
        for f, fam in enumerate(self.families):
            if shape is None and isinstance(fam, BSpline) and fam.spacing is not None:
                continue
            dims = fam.dims(shape or (1, 1, 1))
            if design == "sobol" and dims > SOBOL_MAX_DIMS:
                raise PerturbationError(
                    f"perturbation: {fam.name} draws {dims} numbers per sample; --sobol supports "
                    f"at most {SOBOL_MAX_DIMS} (use a smaller control grid or drop --sobol)")
            total += dims * (counts[f] if counts is not None else -(-n // len(self.families)))
        if total > MAX_DRAW_VALUES:
            raise PerturbationError(
                f"perturbation: {n} samples of {self.spec or 'this perturbation'} need {total} "
                f"random numbers; at most {MAX_DRAW_VALUES} (fewer samples or a coarser "
                "B-spline grid)")

    def family_counts(self, n: int) -> dict[str, int]:
        """Samples each family name gets out of ``n`` (round-robin), as ``draw`` assigns them."""
        counts: dict[str, int] = {}
        for f, fam in enumerate(self.families):
            counts[fam.name] = counts.get(fam.name, 0) + len(range(f, n, len(self.families)))
        return {k: v for k, v in counts.items() if v}

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


def _family(name: str, kv: dict[str, str]) -> Family:
    cls = FAMILIES.get(name)
    if cls is None:
        raise PerturbationError(f"perturbation: unknown family {name!r}; use one of "
                                f"{', '.join(PRESETS)}")
    extra = sorted(set(kv) - cls.PARAMS)
    if extra:
        raise PerturbationError(f"perturbation: {name} has no parameter {', '.join(extra)} "
                                f"(allowed: {', '.join(sorted(cls.PARAMS)) or 'none'})")
    return cls.from_spec(kv)


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
