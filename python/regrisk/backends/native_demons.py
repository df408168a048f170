"""The default network's unrolled demons, run by regrisk's own kernel inside a staged graph.

The packaged network refines with 60 demons iterations (``DemonsRefine`` in
exporters/default_model/network.py: 20 at each of 1/8, 1/4 and 1/2 resolution). Exported to
ONNX each iteration is ~230 small nodes around a 5-D GridSample, so a staged run is 61 backend
calls on tiny tensors, where per-node overhead, not arithmetic, is the cost (about 240 ms of a
530 ms pass in OpenVINO). :func:`fuse` finds that region by its module's node names, checks its
shape (levels, steps, learned steps, Gaussian), and replaces it with one ``DemonsRefine`` node
of regrisk's domain (``native_regions``), which :func:`run` executes level by level with
:func:`regrisk.kernels.demons_steps` (the warp and the fused :func:`regrisk.kernels.demons_step`
of every step of a level in one native call). A graph that does not match exactly is left as
it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .native_regions import Constants, replace

OP = "DemonsRefine"
PREFIX = "/refine/"  # torch's export names nodes by module path
EPS = 1e-4           # the force's constant in network.py


@dataclass(frozen=True)
class DemonsSpec:
    """What the region computes: per level (coarse to fine) its pooling factor, step and force
    normalisation (after softplus), and the Gaussian smoothing every step's field."""

    levels: tuple[int, ...]
    steps: int
    tau: tuple[float, ...]
    alpha: tuple[float, ...]
    kernel: tuple[float, ...]


SPEC = DemonsSpec  # what a saved plan rebuilds (backends.staged_plan)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x.astype(np.float64))


def _spec(model: Any, region: list[Any]) -> DemonsSpec | None:
    from onnx import helper

    pools = [n for n in region if n.op_type == "AveragePool"]
    samples = [n for n in region if n.op_type == "GridSample"]
    convs = [n for n in region if n.op_type == "Conv"]
    constants = Constants(model)
    tau, alpha = constants.get("refine.tau"), constants.get("refine.alpha")
    if tau is None or alpha is None or not pools or len(pools) != 2 * tau.size or not convs:
        return None
    levels = []
    for a, b in zip(pools[::2], pools[1::2]):
        ka = helper.get_attribute_value(next(x for x in a.attribute if x.name == "kernel_shape"))
        kb = helper.get_attribute_value(next(x for x in b.attribute if x.name == "kernel_shape"))
        if list(ka) != list(kb) or len(set(ka)) != 1:
            return None
        levels.append(int(ka[0]))
    weight = constants.get(convs[0].input[1])
    if weight is None or weight.ndim != 5 or len(samples) % len(levels):
        return None
    kernel = weight.reshape(weight.shape[0], -1)[0]
    if kernel.size % 2 != 1 or not np.isfinite(kernel).all():
        return None
    return DemonsSpec(tuple(levels), len(samples) // len(levels),
                      tuple(float(v) for v in _softplus(tau.ravel())),
                      tuple(float(v) for v in _softplus(alpha.ravel())),
                      tuple(float(v) for v in kernel))


def fuse(model: Any) -> tuple[Any, DemonsSpec] | None:
    """A copy of ``model`` with its demons region replaced by one ``DemonsRefine`` node, and
    the region's spec; None when the graph has no such region or it does not match."""
    nodes = list(model.graph.node)
    region = [n for n in nodes if n.name.startswith(PREFIX)]
    if not region:
        return None
    spec = _spec(model, region)
    if spec is None:
        return None
    pools = [n for n in region if n.op_type == "AveragePool"]
    source, target = pools[0].input[0], pools[1].input[0]
    # kept: constants, and pools of the two inputs (later parts of the graph share them)
    keep = {id(n) for n in region
            if n.op_type == "Constant" or (n.op_type == "AveragePool" and n.input[0] in (source, target))}
    removed = [n for n in region if id(n) not in keep]
    fused = replace(model, removed, [source, target], OP, PREFIX + OP)
    return None if fused is None else (fused, spec)


# --- running --------------------------------------------------------------------------------


def run(spec: DemonsSpec, source: np.ndarray, target: np.ndarray, threads: int | None) -> np.ndarray:
    """The region's output for (B, 1, D, H, W) normalised images: the field at the last level's
    resolution, in full-resolution voxels."""
    from .. import kernels
    from ..reference import central_gradient

    kernel = np.asarray(spec.kernel, dtype=np.float32)
    u = None
    for level, f in enumerate(spec.levels):
        s = kernels.average_pool(source, f, threads) if f > 1 else source
        t = kernels.average_pool(target, f, threads) if f > 1 else target
        u = (np.zeros((t.shape[0], 3, *t.shape[2:]), np.float32) if u is None
             else np.float32(2.0) * kernels.upsample2(u, threads))
        gt = np.ascontiguousarray(central_gradient(t))
        u = kernels.demons_steps(s, t, gt, u, kernel, steps=spec.steps, tau=spec.tau[level],
                                 alpha=spec.alpha[level], eps=EPS, threads=threads)
    return u * np.float32(spec.levels[-1])


def runner(spec: DemonsSpec, threads: int | None) -> Callable[..., list[np.ndarray]]:
    """run() as a staged graph's native part: feeds by position -> outputs by position."""
    def call(feeds: list[np.ndarray], threads: int | None = threads) -> list[np.ndarray]:
        source, target = feeds
        return [run(spec, np.ascontiguousarray(source, np.float32),
                    np.ascontiguousarray(target, np.float32), threads)]
    return call
