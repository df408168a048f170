"""Rewrite 5-D GridSample nodes of an ONNX graph as gathers, so that runtimes without a 3-D
GridSample (OpenVINO's ONNX frontend takes only 4-D inputs) compile the whole graph.

Each trilinear GridSample(X (B, C, D, H, W), G (B, d, h, w, 3)) becomes plain arithmetic on
opset-15 operators: the normalised (x, y, z) grid is turned into voxel positions (i, j, k) of X
(align-corners or not), border padding clamps the positions into the volume and zero padding
masks the corners that fall outside, and the eight corner values of every sample are read by
one GatherND from X laid out as (B, D*H*W, C), weighted and summed. Every shape is taken from the tensors at run time, so the
rewritten graph keeps a dynamic batch and runs on any grid the original ran on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ModelError

_MODES = {"linear", "bilinear"}
_PADDINGS = {"border", "zeros"}


class GridSampleRewriteError(ModelError):
    """A GridSample this rewrite does not cover (nearest/cubic mode, reflection padding)."""


def gridsample_attributes(node: Any) -> tuple[str, str, bool]:
    """(mode, padding_mode, align_corners) of a GridSample node, ONNX defaults filled in."""
    from onnx import helper

    out = {"mode": "linear", "padding_mode": "zeros", "align_corners": 0}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return str(out["mode"]), str(out["padding_mode"]), bool(out["align_corners"])


class _Builder:
    """Appends nodes with names unique to one GridSample (``prefix``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self) -> str:
        self._n += 1
        return f"{self.prefix}/t{self._n}"

    def const(self, value: Any, dtype: Any) -> str:
        from onnx import numpy_helper

        name = self.name()
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        from onnx import helper

        outs = [self.name() for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=outs[0] + "_op",
                                           **attrs))
        return outs[0] if outputs == 1 else outs


def _positions(b: _Builder, grid: str, size_f: str, align: bool, border: bool) -> str:
    """(B, d, h, w, 3) voxel positions of X along (i, j, k) from the normalised (x, y, z)."""
    ijk = b.op("Gather", grid, b.const([2, 1, 0], np.int64), axis=-1)
    one, half = b.const(1.0, np.float32), b.const(0.5, np.float32)
    shifted = b.op("Add", ijk, one)
    if align:  # -1 -> 0, +1 -> n - 1
        pos = b.op("Mul", b.op("Mul", shifted, half), b.op("Sub", size_f, one))
    else:      # -1 -> -0.5, +1 -> n - 0.5
        pos = b.op("Mul", b.op("Sub", b.op("Mul", shifted, size_f), one), half)
    if border:
        pos = b.op("Min", b.op("Max", pos, b.const(0.0, np.float32)), b.op("Sub", size_f, one))
    return pos


def _corner_terms(b: _Builder, pos: str, size_i: str, border: bool) -> tuple[str, str]:
    """Flat indices (B, 8n, 1) int64 and weights (B, 8n, 1) of the eight corners of each of the
    n sample positions ``pos`` (B, d, h, w, 3), the corner varying fastest."""
    floor = b.op("Floor", pos)
    w1 = b.op("Sub", pos, floor)
    w0 = b.op("Sub", b.const(1.0, np.float32), w1)
    i0 = b.op("Cast", floor, to=7)  # int64
    i1 = b.op("Add", i0, b.const(1, np.int64))
    zero, last = b.const(0, np.int64), b.op("Sub", size_i, b.const(1, np.int64))
    dims = b.op("Split", size_i, b.const([1, 1, 1], np.int64), axis=0, outputs=3)
    strides = b.op("Concat", b.op("Mul", dims[1], dims[2]), dims[2], b.const([1], np.int64), axis=0)
    last_axis = b.const([-1], np.int64)
    offsets, weights = [], []
    for idx, w in ((i0, w0), (i1, w1)):
        if not border:  # zero padding: a corner outside the volume contributes nothing
            inside = b.op("And", b.op("GreaterOrEqual", idx, zero), b.op("LessOrEqual", idx, last))
            w = b.op("Mul", w, b.op("Cast", inside, to=1))
        clamped = b.op("Min", b.op("Max", idx, zero), last)
        offsets.append(b.op("Unsqueeze", b.op("Mul", clamped, strides), last_axis))
        weights.append(b.op("Unsqueeze", w, last_axis))
    # (B, d, h, w, 3, 2): per axis the lower and upper corner; the axes combine by broadcasting
    shapes = ([0, -1, 2, 1, 1], [0, -1, 1, 2, 1], [0, -1, 1, 1, 2])
    parts = []
    for pair in (offsets, weights):
        both = b.op("Concat", *pair, axis=-1)
        axes = b.op("Split", both, b.const([1, 1, 1], np.int64), axis=-2, outputs=3)
        parts.append([b.op("Reshape", t, b.const(sh, np.int64)) for t, sh in zip(axes, shapes)])
    column = b.const([0, -1, 1], np.int64)
    o, w = parts
    index = b.op("Reshape", b.op("Add", b.op("Add", o[0], o[1]), o[2]), column)
    weight = b.op("Reshape", b.op("Mul", b.op("Mul", w[0], w[1]), w[2]), column)
    return index, weight


def _replacement(node: Any, prefix: str) -> tuple[list[Any], list[Any]]:
    from onnx import helper

    mode, padding, align = gridsample_attributes(node)
    if mode not in _MODES or padding not in _PADDINGS:
        raise GridSampleRewriteError(f"GridSample {node.name!r}: mode {mode!r} with padding "
                                     f"{padding!r} is not rewritten")
    border = padding == "border"
    b = _Builder(prefix)
    x, grid = node.input[0], node.input[1]
    size_i = b.op("Shape", x, start=2, end=5)
    pos = _positions(b, grid, b.op("Cast", size_i, to=1), align, border)
    index, weight = _corner_terms(b, pos, size_i, border)
    # X as (B, D*H*W, C): one GatherND (per batch item) reads every corner of every channel
    rows = b.op("Transpose", b.op("Reshape", x, b.const([0, 0, -1], np.int64)), perm=[0, 2, 1])
    values = b.op("Mul", b.op("GatherND", rows, index, batch_dims=1), weight)      # (B, 8n, C)
    corners = b.op("Concat", b.const([0, -1, 8], np.int64), b.op("Shape", x, start=1, end=2), axis=0)
    summed = b.op("ReduceSum", b.op("Reshape", values, corners), b.const([2], np.int64),
                  keepdims=0)                                                        # (B, n, C)
    out_shape = b.op("Concat", b.op("Shape", x, start=0, end=2),
                     b.op("Shape", grid, start=1, end=4), axis=0)
    b.nodes.append(helper.make_node("Reshape", [b.op("Transpose", summed, perm=[0, 2, 1]), out_shape],
                                    [node.output[0]], name=f"{prefix}/out"))
    return b.nodes, b.inits


def five_d_gridsamples(model: Any) -> list[int]:
    """Indices (in ``model.graph.node``) of the GridSample nodes whose input is 5-D (by the
    declared or inferred rank; an unknown rank counts as 5-D)."""
    ranks = _ranks(model)
    return [i for i, node in enumerate(model.graph.node)
            if node.op_type == "GridSample" and ranks.get(node.input[0], 5) == 5]


def _ranks(model: Any) -> dict[str, int]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # shape inference is a hint here; an unknown rank counts as 5-D
        inferred = model
    out = {}
    graph = inferred.graph
    for v in list(graph.value_info) + list(graph.input) + list(graph.output):
        t = v.type.tensor_type
        if t.HasField("shape"):
            out[v.name] = len(t.shape.dim)
    return out


def rewrite_gridsample(model: Any) -> int:
    """Replace every 5-D GridSample of ``model`` (in place) by gathers; returns how many.
    GridSampleRewriteError for a mode or padding the rewrite does not cover (nothing changed)."""
    from onnx import NodeProto

    targets = set(five_d_gridsamples(model))
    if not targets:
        return 0
    new_nodes, new_inits = [], []
    for i, node in enumerate(model.graph.node):
        if i not in targets:
            new_nodes.append(NodeProto.FromString(node.SerializeToString()))
            continue
        nodes, inits = _replacement(node, f"gs{i}")
        new_nodes.extend(nodes)
        new_inits.extend(inits)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    model.graph.initializer.extend(new_inits)
    return len(targets)
