"""Baseline uncertainty maps scored beside the equivariance map.

- inverse consistency: register the pair both ways; with S o phi_f ~= T and T o phi_b ~= S,
  phi_b o phi_f should be the identity, so the map is |u_f(x) + u_b(x + u_f(x))| in mm
  (u_b sampled trilinearly at the forward-mapped point; the compose kernel's field rule).
- MC dropout: K passes of a stochastic graph (dropout left on) without perturbation; the
  engine's ``"none"`` preset gives the per-voxel spread in mm.
- random: i.i.d. uniform values, the reference every ranking metric should beat.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError

NAMES = ("inverse_consistency", "mc_dropout", "random")


def _kernels() -> Any:
    from .groundtruth import _ops

    return _ops()


def displacement_world(displacement_mm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (mm) displacement vectors (3, D, H, W) from the engine's ``displacement``.

    The engine reports the unperturbed prediction as world(source point matched to x) -
    world(x) in mm (channel c = world axis c), which on one shared grid is M u: the same vector
    ``groundtruth.voxel_to_mm`` gives for the truth. This is the one place that relies on it."""
    return np.ascontiguousarray(displacement_mm, dtype=np.float32)


def world_to_voxel(displacement_world_mm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Voxel displacements M^-1 v from world vectors v (M: the 3x3 part of ``affine``)."""
    minv = np.linalg.inv(np.asarray(affine, dtype=np.float64)[:3, :3])
    return np.ascontiguousarray(np.einsum("ij,j...->i...", minv, displacement_world_mm.astype(np.float64)),
                                dtype=np.float32)


def predict_world(est: Any, source: Any, target: Any, affine: np.ndarray) -> np.ndarray:
    """One unperturbed pass, as world (mm) vectors on the target grid."""
    return displacement_world(np.asarray(est.predict(source, target).displacement), affine)


def inverse_consistency(est: Any, source: np.ndarray, target: np.ndarray, affine: np.ndarray,
                        forward_mm: np.ndarray | None = None) -> np.ndarray:
    """|phi_b(phi_f(x)) - x| in mm per target voxel. ``source`` and ``target`` share the grid
    ``affine`` (the evaluation's pairs do); ``forward_mm`` reuses a forward prediction."""
    from .groundtruth import voxel_to_mm

    if forward_mm is None:
        forward_mm = predict_world(est, (source, affine), (target, affine), affine)
    backward_mm = predict_world(est, (target, affine), (source, affine), affine)
    uf = world_to_voxel(forward_mm, affine)
    ub = world_to_voxel(backward_mm, affine)
    loop = _kernels().compose(uf, field=ub, mode="border")  # u_f(x) + u_b(x + u_f(x))
    return np.linalg.norm(voxel_to_mm(loop, affine), axis=0).astype(np.float32)


def mc_dropout(stochastic_est: Any, source: Any, target: Any, samples: int, seed: int) -> np.ndarray:
    res = stochastic_est.estimate(source, target, samples=samples, perturbation="none", seed=seed)
    return np.asarray(res.uncertainty, dtype=np.float32)


def random_map(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def find_stochastic(model: Any) -> str | None:
    """The stochastic graph that goes with ``model``, or None when there is none."""
    if callable(model) or model is None:
        return None
    if isinstance(model, str) and model == "default":
        from ..model_loading import packaged_model_path

        try:
            return str(packaged_model_path("default-stochastic"))
        except ModelError:  # not installed with this regrisk
            return None
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        sibling = p.with_name(p.stem + "_stochastic" + p.suffix)
        if sibling.is_file():
            return str(sibling)
        try:
            from ..card import read_card

            if p.is_file() and read_card(p).stochastic:
                return str(p)
        except (OSError, ValueError):  # no readable card: the engine reports it later
            return None
    return None
