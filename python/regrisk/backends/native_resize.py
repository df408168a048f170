"""Displacement-field upsampling (ONNX ``Resize``, linear x2) run by regrisk's own kernel.

Networks that predict a field at half resolution bring it to full resolution with a linear
Resize before sampling with it or returning it (the default network does both). OpenVINO ran
each of the default graph's two in about 11 ms plus ~2 ms of layout reorders a pass (its
per-node profile, 80x96x80, 3 channels); :func:`regrisk.kernels.upsample2` does one in ~3 ms.

:func:`fuse` replaces a Resize only where that is safe and useful:
- linear, half-pixel centres (``half_pixel`` or ``pytorch_half_pixel``, which agree for a x2
  output), no antialiasing, 5-D, scales exactly (1, 1, 2, 2, 2) from constants;
- a *field* resize: what it makes reaches the grid of a GridSample or the graph's output
  without passing a convolution. A resize inside a convolutional decoder stays with the
  backend, where cutting the dense stage apart would cost more than it saves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .native_regions import DOMAIN, Constants, attributes

OP = "Upsample2"
DENSE = {"Conv", "ConvTranspose", "MatMul", "Gemm", "ConvInteger", "QLinearConv"}
HALF_PIXEL = {"half_pixel", "pytorch_half_pixel"}


def _constant(constants: Constants, producers: dict[str, Any], name: str) -> np.ndarray | None:
    """A tensor's value when it is a constant, or a Concat of constants (torch's export of a
    scale factor list)."""
    value = constants.get(name)
    if value is not None or name not in producers:
        return value
    node = producers[name]
    if node.op_type != "Concat":
        return None
    parts = [constants.get(i) for i in node.input]
    if any(p is None for p in parts):
        return None
    return np.concatenate([np.atleast_1d(p) for p in parts])


def _is_x2_linear(node: Any, constants: Constants, producers: dict[str, Any]) -> bool:
    attrs = attributes(node)
    if attrs.get("mode", "nearest") != "linear" or attrs.get("antialias", 0):
        return False
    if attrs.get("coordinate_transformation_mode", "half_pixel") not in HALF_PIXEL:
        return False
    if len(node.input) < 3 or not node.input[2] or (len(node.input) > 3 and node.input[3]):
        return False  # sizes instead of scales: the output extent is not known to be 2n
    scales = _constant(constants, producers, node.input[2])
    return scales is not None and scales.shape == (5,) and \
        np.array_equal(scales.astype(np.float64), [1.0, 1.0, 2.0, 2.0, 2.0])


def _field_resize(model: Any, node: Any, consumers: dict[str, list[tuple[Any, int]]]) -> bool:
    """Whether what ``node`` makes reaches a GridSample's grid or the graph's output with no
    dense node (convolution, matrix product) on the way, and nothing else dense reads it."""
    outputs = {o.name for o in model.graph.output}
    todo, seen, reaches = [node.output[0]], set(), False
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        reaches |= name in outputs
        for user, slot in consumers.get(name, []):
            if user.op_type in DENSE:
                return False
            if user.op_type == "GridSample":
                if slot != 1:  # resampled as an image, not used as a sampling grid
                    return False
                reaches = True
                continue
            todo.extend(o for o in user.output if o)
        if len(seen) > 200:  # a field's way to its sampler is a handful of reshapes
            return False
    return reaches


def fuse(model: Any) -> tuple[Any, int] | None:
    """A copy of ``model`` with every field resize (module docstring) replaced by one
    ``Upsample2`` node, and how many were; None when there is none."""
    from onnx import ModelProto, helper

    constants = Constants(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for n in model.graph.node:
        for slot, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, slot))
    picked = [n for n in model.graph.node if n.op_type == "Resize"
              and _is_x2_linear(n, constants, producers) and _field_resize(model, n, consumers)]
    if not picked:
        return None
    # one node for one node, same output, reading a subset of what it read: the graph stays
    # closed, so the swap is done on a copy in place (native_regions.replace checks a region)
    keep = {n.output[0] for n in picked}
    copy = ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if node.op_type == "Resize" and node.output[0] in keep:
            source = node.input[0]
            node.op_type, node.domain, node.name = OP, DOMAIN, f"{node.name or node.output[0]}/{OP}"
            del node.input[:]
            node.input.append(source)
            del node.attribute[:]
    if all(o.domain != DOMAIN for o in copy.opset_import):
        copy.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return copy, len(picked)


def runner(spec: int, threads: int | None) -> Callable[..., list[np.ndarray]]:
    """kernels.upsample2 as a staged graph's native part (``spec``: the count, unused)."""
    from .. import kernels

    def call(feeds: list[np.ndarray], threads: int | None = threads) -> list[np.ndarray]:
        return [kernels.upsample2(np.ascontiguousarray(feeds[0], np.float32), threads)]
    return call
