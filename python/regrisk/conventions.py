"""Card conventions <-> canonical form, converted once at the model boundary.

Canonical (DESIGN.md): a displacement field (B, 3, D, H, W), float32, channel c along array
axis c, in voxels of the model grid, phi(x) = x + u(x), align-corners sampling.

A card's output may differ in channel axis (first/last), channel order (ijk/xyz), units
(voxel, unit [0, 1], normalized [-1, 1], each with an align-corners flag) and kind
(displacement, absolute map, or stationary velocity integrated here by scaling and squaring).

Coordinate units, per axis with n voxels, for a position p in voxels:

- unit, align_corners:       v = p / (n - 1)           (uniGradICON)
- unit, no align_corners:    v = (p + 0.5) / n
- normalized, align_corners: v = 2 p / (n - 1) - 1     (torch grid_sample, align_corners=True)
- normalized, no a.c.:       v = (2 p + 1) / n - 1     (torch grid_sample default)

A displacement is a difference of positions, so only the scale applies to it; a map also
carries the offset. Every function here works on NumPy or CuPy arrays alike.

Intensity preprocessing (``preprocess``) also lives here: it is the other card convention.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .arrays import array_module, identity_grid
from .card import ModelCard, Output
from .errors import CardError, InputError, ModelError

Array = Any


def unit_scale_offset(units: str, align_corners: bool, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per axis with v = scale * p + offset (p in voxels)."""
    n = np.asarray(n, dtype=np.float64)
    if units == "voxel":
        return np.ones(3), np.zeros(3)
    if units == "unit":
        return (1 / (n - 1), np.zeros(3)) if align_corners else (1 / n, 0.5 / n)
    if units == "normalized":
        return (2 / (n - 1), -np.ones(3)) if align_corners else (2 / n, 1 / n - 1)
    raise CardError(f"model card: unknown units {units!r}")


def _per_channel(values: np.ndarray, xp: Any) -> Array:
    return xp.asarray(np.asarray(values, dtype=np.float32).reshape(1, 3, 1, 1, 1))


def is_canonical(out: Output) -> bool:
    """True when the card's output needs no conversion at all."""
    return (out.kind == "displacement" and out.units == "voxel" and out.channel_order == "ijk"
            and out.channel_axis == "first")


def to_canonical(raw: Array, out: Output, grid: tuple[int, int, int]) -> Array:
    """The graph's output ``raw`` (batched, in the card's convention) -> canonical (B,3,D,H,W)."""
    xp = array_module(raw)
    a = raw
    if a.ndim != 5:
        raise ModelError(f"model output has {a.ndim} dimensions, expected 5 (batched 3-D field)")
    if out.channel_axis == "last":
        a = xp.moveaxis(a, -1, 1)
    if a.shape[1] != 3 or tuple(a.shape[2:]) != tuple(grid):
        raise ModelError(f"model output shape {tuple(raw.shape)} does not match the card "
                         f"(3 channels {out.channel_axis}, grid {tuple(grid)})")
    if is_canonical(out):
        # Already canonical: no copy (the engine only reads the field).
        return xp.ascontiguousarray(a, dtype=xp.float32)
    if out.channel_order == "xyz":
        a = a[:, ::-1]
    scale, offset = unit_scale_offset(out.units, out.align_corners, np.asarray(grid))
    a = xp.array(a, dtype=xp.float32, copy=True, order="C")  # one owned copy, edited in place
    if out.kind == "map":
        a -= _per_channel(offset, xp)
        a /= _per_channel(scale, xp)
        a -= identity_grid(grid, xp)[None]
    else:
        if out.units != "voxel":
            a /= _per_channel(scale, xp)
        if out.kind == "velocity":
            a = integrate_velocity(a, out.steps, out.padding)
    return a


def from_canonical(u: Array, out: Output, grid: tuple[int, int, int]) -> Array:
    """Inverse of :func:`to_canonical` (velocity: the field that integrates to ``u`` is not
    computed; ``u`` must then be a velocity already). Used by tests and exporters."""
    xp = array_module(u)
    a = xp.array(u, dtype=xp.float32, copy=True)
    scale, offset = unit_scale_offset(out.units, out.align_corners, np.asarray(grid))
    if out.kind == "map":
        a += identity_grid(grid, xp)[None]
        a *= _per_channel(scale, xp)
        a += _per_channel(offset, xp)
    elif out.units != "voxel":
        a *= _per_channel(scale, xp)
    if out.channel_order == "xyz":
        a = a[:, ::-1]
    if out.channel_axis == "last":
        a = xp.moveaxis(a, 1, -1)
    return xp.ascontiguousarray(a)


def integrate_velocity(v: Array, steps: int, padding: str = "zeros") -> Array:
    """exp(v) by scaling and squaring: u = v / 2^steps, then ``steps`` times u <- u o u,
    i.e. u(x) + u(x + u(x)) (the compose kernel). ``padding`` must match how the network was
    trained: "zeros" (VoxelMorph's integration layer) or "border"."""
    from . import kernels

    mode = "fill" if padding == "zeros" else "border"
    u = v / np.float32(2.0 ** steps)
    for _ in range(steps):
        u = kernels.compose(u, field=u, mode=mode, fill=0.0)
    return u


# -- intensity preprocessing -----------------------------------------------------------------

def preprocess(volume: Array, card: ModelCard, role: str = "image") -> Array:
    """Apply the card's intensity preprocessing to one (D, H, W) volume (float32 copy)."""
    xp = array_module(volume)
    p = card.preprocess
    v = xp.asarray(volume, dtype=xp.float32)
    if p.method == "none":
        return xp.ascontiguousarray(v).copy()
    if p.method == "minmax":
        lo, hi = float(v.min()), float(v.max())
    else:
        lo, hi = (float(x) for x in xp.percentile(v, [p.low, p.high]))
    if not hi > lo:
        raise InputError(f"{role}: intensities are constant after {p.method} preprocessing "
                         f"(low = high = {lo:g})")
    out = xp.clip(v, lo, hi) if p.method == "percentile" else v.copy()
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return xp.ascontiguousarray(out, dtype=xp.float32)
