"""A network's last layer, the 3x3x3 convolution that makes the displacement field, run by
regrisk's own kernel (:func:`regrisk.kernels.conv3x3x3`) after the backend's stage.

A U-Net that predicts the field directly ends in a convolution from its full-resolution
features to 3 channels (often scaled by a constant). Backends block such a layer for many
output channels; regrisk's kernel keeps up to 4 output channels' sums in registers. On the
benchmark U-Net at 128^3 (8 -> 3 channels, 2 cores) OpenVINO's pass went 0.192 -> 0.184 s
(best of 20, alternating) with its last layer here (benchmarks/RESULTS.md).

:func:`fuse` replaces the graph's last node(s) when they are exactly: a Conv (3x3x3, stride 1,
padding 1, no dilation or groups, at most 4 output channels, constant weight and bias) whose
result is the graph's only output, optionally through one Mul or Div by a finite scalar
constant (folded into the weight and bias). Anything else is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .native_regions import Constants, plain_conv3x3x3, replace

OP = "FieldHead"
MAX_OUT = 4  # the kernel holds 4 output channels in registers; wider layers are the backend's


@dataclass(frozen=True)
class HeadSpec:
    """The convolution: weight (out, in, 3, 3, 3) flattened in C order, and the bias, both with
    the output's scale folded in."""

    shape: tuple[int, ...]
    weight: tuple[float, ...]
    bias: tuple[float, ...]


SPEC = HeadSpec  # what a saved plan rebuilds (backends.staged_plan)


def _scale(node: Any, constants: Constants, made: str) -> float | None:
    """The factor a Mul or Div by a finite scalar constant applies to ``made``; None if not."""
    if node.op_type not in ("Mul", "Div") or len(node.input) != 2 or made not in node.input:
        return None
    other = node.input[1] if node.input[0] == made else node.input[0]
    if node.op_type == "Div" and other != node.input[1]:
        return None  # c / x is not a scaling of x
    value = constants.get(other)
    if value is None or value.size != 1 or not np.isfinite(value).all() or value.ravel()[0] == 0:
        return None
    v = float(value.ravel()[0])
    return v if node.op_type == "Mul" else 1.0 / v


def fuse(model: Any) -> tuple[Any, HeadSpec] | None:
    """A copy of ``model`` whose last convolution (module docstring) is one ``FieldHead`` node,
    and its spec; None when the graph does not end that way."""
    if len(model.graph.output) != 1:
        return None
    producers = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    constants = Constants(model)
    last = producers.get(model.graph.output[0].name)
    if last is None:
        return None
    removed, scale = [last], 1.0
    if last.op_type != "Conv":
        convs = [producers[i] for i in last.input if i in producers and producers[i].op_type == "Conv"]
        conv = convs[0] if len(convs) == 1 else None
        if conv is None or readers.get(conv.output[0]) != 1:
            return None
        factor = _scale(last, constants, conv.output[0])
        if factor is None:
            return None
        removed, scale = [conv, last], factor
        # the scale's Constant node too, when nothing else reads it
        removed += [producers[i] for i in last.input if i in producers
                    and producers[i].op_type == "Constant" and readers.get(i) == 1]
    spec = _spec(removed[0], constants, scale)
    if spec is None:
        return None
    fused = replace(model, removed, [removed[0].input[0]], OP, f"{removed[0].name or OP}/{OP}")
    return None if fused is None else (fused, spec)


def _spec(conv: Any, constants: Constants, scale: float) -> HeadSpec | None:
    if len(conv.input) < 2 or not plain_conv3x3x3(conv):
        return None
    w = constants.get(conv.input[1])
    b = constants.get(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
    if w is None or w.ndim != 5 or not 1 <= w.shape[0] <= MAX_OUT:
        return None
    if b is None and len(conv.input) > 2 and conv.input[2]:
        return None  # a bias computed in the graph
    bias = np.zeros(w.shape[0], np.float32) if b is None else b.astype(np.float32)
    w32 = (w.astype(np.float32) * np.float32(scale)).astype(np.float32)
    b32 = (bias * np.float32(scale)).astype(np.float32)
    if not (np.isfinite(w32).all() and np.isfinite(b32).all()):
        return None
    return HeadSpec(tuple(int(n) for n in w.shape), tuple(float(v) for v in w32.ravel()),
                    tuple(float(v) for v in b32))


def runner(spec: HeadSpec, threads: int | None) -> Callable[..., list[np.ndarray]]:
    """kernels.conv3x3x3 as a staged graph's native part."""
    from .. import kernels

    weight = np.asarray(spec.weight, np.float32).reshape(spec.shape)
    bias = np.asarray(spec.bias, np.float32)

    def call(feeds: list[np.ndarray], threads: int | None = threads) -> list[np.ndarray]:
        return [kernels.conv3x3x3(np.ascontiguousarray(feeds[0], np.float32), weight, bias,
                                  threads)]
    return call
