"""The default network's local contrast normalisation, run by regrisk's smoothing kernel.

``LocalNormalize`` (exporters/default_model/network.py) maps each image to
``scale * c / sqrt(G * c^2 + eps)`` with ``c = x - G * x`` and G a separable Gaussian with
replicated borders. Exported, each image's copy is ~150 nodes (six one-channel convolutions
with their pads); OpenVINO ran the two in about 55 ms a pass, most of it in those convolutions.
:func:`fuse` replaces every such region (``/normalize/``, ``/normalize_1/``, ...) whose shape
and constants match by one ``LocalNormalize`` node that :func:`run` executes with
:func:`regrisk.kernels.gaussian_smooth`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .native_regions import Constants, replace

OP = "LocalNormalize"
PREFIX = re.compile(r"^(/normalize(?:_\d+)?/)")


@dataclass(frozen=True)
class NormalizeSpec:
    kernel: tuple[float, ...]
    eps: float
    scale: float


SPEC = NormalizeSpec  # what a saved plan rebuilds (backends.staged_plan)


def _scalar_operand(constants: Constants, node: Any) -> float | None:
    values = [constants.get(i) for i in node.input]
    scalars = [v for v in values if v is not None and v.size == 1]
    return float(scalars[0].ravel()[0]) if len(scalars) == 1 else None


def _spec(constants: Constants, region: list[Any]) -> NormalizeSpec | None:
    ops = Counter(n.op_type for n in region)
    if ops["Conv"] != 6 or ops["Sqrt"] != 1 or ops["Div"] != 1 or ops["Pad"] != 6:
        return None
    weights = [constants.get(n.input[1]) for n in region if n.op_type == "Conv"]
    if any(w is None or w.size != weights[0].size for w in weights):
        return None
    kernel = weights[0].ravel()
    if kernel.size % 2 != 1 or any(not np.array_equal(w.ravel(), kernel) for w in weights):
        return None
    eps = [_scalar_operand(constants, n) for n in region if n.op_type == "Add"]
    # the output's scale: the Mul of c by a scalar (Mul nodes of shapes are scalar-by-scalar)
    scale = [_scalar_operand(constants, n) for n in region
             if n.op_type == "Mul" and constants.get(n.input[0]) is None]
    scale = [v for v in scale if v is not None]
    if len([e for e in eps if e is not None]) != 1 or len(scale) != 1:
        return None
    return NormalizeSpec(tuple(float(v) for v in kernel), next(e for e in eps if e is not None),
                         scale[0])


def fuse(model: Any) -> tuple[Any, NormalizeSpec] | None:
    """``model`` with every normalisation region replaced (all must share one spec); None if
    there is none or one does not match."""
    prefixes = dict.fromkeys(m.group(1) for m in map(PREFIX.match, (n.name for n in model.graph.node))
                             if m)
    spec, constants = None, Constants(model)  # replacing keeps every constant
    for prefix in prefixes:  # each on the graph as the previous replacement left it
        region = [n for n in model.graph.node if n.name.startswith(prefix)]
        this = _spec(constants, region)
        if this is None or (spec is not None and this != spec):
            return None
        spec = this
        source = next(n for n in region if n.op_type == "Pad").input[0]
        model = replace(model, [n for n in region if n.op_type != "Constant"], [source], OP,
                        prefix + OP)
        if model is None:
            return None
    return None if spec is None else (model, spec)


def run(spec: NormalizeSpec, x: np.ndarray, threads: int | None) -> np.ndarray:
    from .. import kernels

    x = np.ascontiguousarray(x, dtype=np.float32)
    c = x - kernels.gaussian_smooth(x, spec.kernel, threads=threads)
    var = kernels.gaussian_smooth(np.ascontiguousarray(c * c), spec.kernel, threads=threads)
    var += np.float32(spec.eps)
    np.sqrt(var, out=var)
    c *= np.float32(spec.scale)
    c /= var
    return c


def runner(spec: NormalizeSpec, threads: int | None) -> Callable[..., list[np.ndarray]]:
    """run() as a staged graph's native part."""
    def call(feeds: list[np.ndarray], threads: int | None = threads) -> list[np.ndarray]:
        return [run(spec, feeds[0], threads)]
    return call
