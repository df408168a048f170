"""Nearest 2x upsampling folded into the 3x3x3 convolution that reads it.

A registration U-Net's decoder doubles a coarse feature map by nearest-neighbour resizing,
concatenates a skip connection and convolves the result at the fine grid: most of that
convolution's multiplications fall on copies of the same coarse value. Per axis, a 3-tap
convolution of the doubled signal is a stride-2 transposed convolution of the coarse one with 4
taps, ``[w2, w1 + w2, w0 + w1, w0]`` (an even output reads the coarse values p - 1 and p with
weights w0 and w1 + w2, an odd one p and p + 1 with w0 + w1 and w2; zero padding of the fine grid
is zero padding of the coarse one). So

    Conv(Concat(Resize2x(y), x), W, b) = ConvTranspose(y, W_y') + Conv(x, W_x, b)

with 8 instead of 27 multiplications per fine voxel for y's channels, and no resized or
concatenated tensor at the fine grid. The same sums in another order: outputs agree with the
graph's to float32 rounding (the tests compare with ONNX Runtime on the original graph). On the
benchmark U-Net at 128^3, OpenVINO's pass went 0.25 -> 0.19 s (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .native_regions import Constants, attributes, plain_conv3x3x3

# per axis: the transposed convolution's 4 taps as sums of the convolution's 3
_TAPS = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], np.float64)
# (coordinate_transformation_mode, nearest_mode) pairs whose doubling reads coarse floor(o / 2)
# (ONNX defaults: half_pixel, round_prefer_floor); other pairs shift by half a voxel
_FLOOR_HALF = {("asymmetric", "floor"), ("asymmetric", "round_prefer_floor"),
               ("half_pixel", "round_prefer_floor"), ("pytorch_half_pixel", "round_prefer_floor")}


def transposed_weight(w: np.ndarray) -> np.ndarray:
    """A (out, in, 3, 3, 3) convolution weight on the doubled grid -> the (in, out, 4, 4, 4)
    weight of the stride-2 transposed convolution on the coarse grid (summed in float64)."""
    return np.einsum("ja,kb,lc,oiabc->iojkl", _TAPS, _TAPS, _TAPS,
                     w.astype(np.float64)).astype(np.float32)


def fold_upsampling(model: Any) -> int:
    """Rewrites ``model`` (an onnx.ModelProto) in place; returns how many convolutions were
    folded. Folds a 3-D Conv (3x3x3, stride 1, padding 1, no dilation or groups, constant
    weight) whose input is a nearest 2x Resize with constant scales, or a channel Concat used by
    this Conv alone with one such Resize among its parts. Anything else is left as it was."""
    if any(a.type in (5, 10) for n in model.graph.node for a in n.attribute):
        return 0  # If / Loop / Scan bodies may read names the use counts here do not see
    graph = _Graph(model)
    folds = [f for f in (graph.fold_plan(n) for n in model.graph.node) if f is not None]
    if not folds:
        return 0
    replaced = {id(f["conv"]): f for f in folds}
    dropped = {id(f["concat"]) for f in folds if f["concat"] is not None}
    nodes = []
    for node in model.graph.node:
        if id(node) in replaced:
            nodes += graph.rewrite(replaced[id(node)])
        elif id(node) not in dropped:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _drop_unused(model, {f["conv"].input[1] for f in folds})
    return len(folds)


class _Graph:
    """The lookups a fold needs: producers, use counts, constants, channel counts."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.uses: dict[str, int] = {}
        for n in model.graph.node:
            for name in n.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        for o in model.graph.output:
            self.uses[o.name] = self.uses.get(o.name, 0) + 1
        self.value = Constants(model).get  # initializers and Constant nodes by name
        self._channels: dict[str, int] | None = None

    def channels(self, name: str) -> int | None:
        """A tensor's channel count (dim 1) by ONNX shape inference, None if unknown."""
        if self._channels is None:
            self._channels = _inferred_channels(self.model)
        return self._channels.get(name)

    def is_doubling(self, name: str) -> bool:
        node = self.producer.get(name)
        if node is None or node.op_type != "Resize" or len(node.input) < 3:
            return False
        attr = attributes(node)
        modes = (attr.get("coordinate_transformation_mode", "half_pixel"),
                 attr.get("nearest_mode", "round_prefer_floor"))
        if attr.get("mode", "nearest") != "nearest" or modes not in _FLOOR_HALF:
            return False
        if "axes" in attr or (len(node.input) > 3 and node.input[3]) or not node.input[2]:
            return False  # sizes or partial axes: not a known constant doubling
        scales = self.value(node.input[2])
        return scales is not None and np.asarray(scales).tolist() == [1, 1, 2, 2, 2]

    def fold_plan(self, conv: Any) -> dict[str, Any] | None:
        """What folding ``conv`` takes, or None when it does not apply."""
        if len(conv.input) < 2 or not plain_conv3x3x3(conv):
            return None
        weight = self.value(conv.input[1])
        if weight is None or weight.ndim != 5:
            return None
        src = self.producer.get(conv.input[0])
        concat = None
        if self.is_doubling(conv.input[0]):
            parts = [conv.input[0]]
        elif (src is not None and src.op_type == "Concat" and attributes(src).get("axis") in (1, -4)
              and self.uses.get(src.output[0]) == 1):
            parts, concat = list(src.input), src
        else:
            return None
        doubled = [i for i, p in enumerate(parts) if self.is_doubling(p)]
        chans = [self.channels(p) for p in parts] if concat is not None else [weight.shape[1]]
        if len(doubled) != 1 or None in chans or sum(chans) != weight.shape[1]:  # type: ignore[arg-type]
            return None
        k = doubled[0]
        lo = sum(chans[:k])  # type: ignore[arg-type]
        return {"conv": conv, "concat": concat, "parts": parts, "k": k, "lo": lo,
                "hi": lo + chans[k], "weight": weight}

    def rewrite(self, f: dict[str, Any]) -> list[Any]:
        """The nodes that replace ``f``'s Conv (and its Concat); their weights are added."""
        from onnx import helper, numpy_helper

        conv, w, lo, hi = f["conv"], f["weight"], f["lo"], f["hi"]
        base = (conv.name or conv.output[0]) + "/fold"
        bias = [conv.input[2]] if len(conv.input) > 2 and conv.input[2] else []
        coarse = self.producer[f["parts"][f["k"]]].input[0]
        self.model.graph.initializer.append(
            numpy_helper.from_array(transposed_weight(w[:, lo:hi]), base + "/coarse_w"))
        rest = [p for i, p in enumerate(f["parts"]) if i != f["k"]]
        up = dict(kernel_shape=[4] * 3, strides=[2] * 3, pads=[1] * 6)
        if not rest:
            return [helper.make_node("ConvTranspose", [coarse, base + "/coarse_w", *bias],
                                     [conv.output[0]], name=base + "/coarse", **up)]
        self.model.graph.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(np.concatenate([w[:, :lo], w[:, hi:]], axis=1)), base + "/rest_w"))
        nodes = []
        fine = rest[0]
        if len(rest) > 1:
            fine = base + "/rest_in"
            nodes.append(helper.make_node("Concat", rest, [fine], name=fine, axis=1))
        nodes += [
            helper.make_node("ConvTranspose", [coarse, base + "/coarse_w"], [base + "/coarse"],
                             name=base + "/coarse", **up),
            helper.make_node("Conv", [fine, base + "/rest_w", *bias], [base + "/rest"],
                             name=base + "/rest", kernel_shape=[3] * 3, pads=[1] * 6),
            helper.make_node("Add", [base + "/coarse", base + "/rest"], [conv.output[0]],
                             name=base + "/sum")]
        return nodes


def _inferred_channels(model: Any) -> dict[str, int]:
    import onnx

    try:  # a graph too large to serialise (> 2 GB) or one inference rejects: no channels known
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # onnx raises ValueError / InferenceError / protobuf errors
        return {}
    out = {}
    for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 5 and dims[1].HasField("dim_value"):
            out[v.name] = int(dims[1].dim_value)
    return out


def _drop_unused(model: Any, weights: set[str]) -> None:
    """Removes the Resizes no longer read, then their scale Constants, and the folded
    convolutions' weights when nothing else reads them."""
    for kinds in (("Resize",), ("Constant",)):
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        keep = [n for n in model.graph.node if n.op_type not in kinds or n.output[0] in used]
        del model.graph.node[:]
        model.graph.node.extend(keep)
    used = {i for n in model.graph.node for i in n.input} | {i.name for i in model.graph.input}
    keep_inits = [t for t in model.graph.initializer if t.name not in weights or t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep_inits)
