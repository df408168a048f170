"""A graph run in stages: its network parts in a backend, its 5-D GridSamples by regrisk's warp.

Runtimes without a 3-D GridSample (OpenVINO's ONNX frontend takes only 4-D ones) still run
registration networks whose graph warps images or composes maps inside (uniGradICON's cascade,
VoxelMorph's integration): the graph is cut at every 5-D GridSample; the pieces between cuts are
standalone ONNX graphs that the backend compiles, and each GridSample becomes a call to
:func:`regrisk.kernels.warp` (trilinear, border clamping or zero fill, the same align-corners
conventions). Tensors that cross a cut are handed on as NumPy arrays.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ModelError
from .gridsample import gridsample_attributes

Array = Any
# compile(stage graph with its feeds' shapes declared) -> run(feeds) -> {output name: array}
StageCompiler = Callable[[Any], Callable[[Mapping[str, Array]], dict[str, Array]]]


@dataclass
class Stage:
    """A piece of the graph the backend runs: a standalone ONNX model."""

    graph: Any
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def with_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> Any:
        """A copy of the graph whose inputs declare ``shapes`` (frontends that convert op by
        op, as OpenVINO's, need every rank known)."""
        from onnx import ModelProto

        model = ModelProto()
        model.CopyFrom(self.graph)
        for value in model.graph.input:
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for n in shapes[value.name]:
                dims.add().dim_value = int(n)
        return model


@dataclass
class Native:
    """A node of regrisk's own domain (e.g. the fused demons, ``backends.native_demons``), run
    by ``run(inputs in order[, threads]) -> outputs in order`` (threads: the CPU team size of
    this call; omitted, the runner's own)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    run: Callable[..., list[Array]]
    op: str = ""  # the node's op type


@dataclass
class Sample:
    """One 5-D GridSample, run by the warp kernel."""

    volume: str
    grid: str
    output: str
    border: bool
    align_corners: bool


def split(model: Any, cuts: Sequence[int],
          natives: Mapping[str, Callable[..., list[Array]]] | None = None
          ) -> list[Stage | Sample | Native]:
    """``model`` cut at the nodes at indices ``cuts`` (of ``model.graph.node``, which ONNX keeps
    in topological order) into stages, samples (GridSample nodes) and native parts (nodes
    whose op type ``natives`` maps to the function that runs them), in run order."""
    nodes = list(model.graph.node)
    context = _Context(model)
    natives = dict(natives or {})
    parts: list[Stage | Sample | Native] = []
    start = 0
    for cut in list(cuts) + [len(nodes)]:
        piece = [n for n in nodes[start:cut] if n.op_type != "Constant"]
        stage = _stage(context, piece, cut) if piece else None
        if stage is not None and stage.outputs:  # none: what only removed nodes read
            parts.append(stage)
        if cut < len(nodes) and nodes[cut].op_type in natives:
            node = nodes[cut]
            parts.append(Native(tuple(node.input), tuple(node.output), natives[node.op_type],
                                node.op_type))
        elif cut < len(nodes):
            gs = nodes[cut]
            mode, padding, align = gridsample_attributes(gs)
            if mode not in ("linear", "bilinear") or padding not in ("border", "zeros"):
                raise ModelError(f"GridSample {gs.name!r}: mode {mode!r}, padding {padding!r} "
                                 "cannot run staged (linear with border or zeros only)")
            parts.append(Sample(gs.input[0], gs.input[1], gs.output[0], padding == "border", align))
        start = cut + 1
    return parts


def _last_uses(model: Any) -> dict[str, int]:
    """Tensor name -> index of the last node that reads it (graph outputs: past the end)."""
    last: dict[str, int] = {}
    for i, node in enumerate(model.graph.node):
        for name in node.input:
            last[name] = i
    for out in model.graph.output:
        last[out.name] = len(model.graph.node) + 1
    return last


class _Context:
    """What every stage of one graph looks up, built once per split (shape inference over a
    15,000-node graph takes a tenth of a second: once per stage it was most of the start-up)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.last_use = _last_uses(model)
        self.types = _elem_types(model)
        self.inits = {t.name: t for t in model.graph.initializer}
        self.constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}


def _stage(context: _Context, piece: list[Any], end: int) -> Stage:
    """A standalone model of ``piece`` (nodes before index ``end``): its inputs are what it reads
    but does not make (initializers and Constant nodes are copied in), its outputs what it
    makes and a later node or the graph output reads."""
    from onnx import TensorProto, helper

    model, last_use, types = context.model, context.last_use, context.types
    inits, constants = context.inits, context.constants
    outputs = [o for o in dict.fromkeys(o for n in piece for o in n.output) if last_use.get(o, -1) >= end]
    piece = _needed(piece, outputs)
    made = {o for n in piece for o in n.output}
    read = [i for n in piece for i in n.input if i]
    outside = list(dict.fromkeys(i for i in read if i not in made))
    feeds = [i for i in outside if i not in inits and i not in constants]
    graph = helper.make_graph(
        [constants[i] for i in outside if i in constants] + piece, f"stage_{end}",
        [helper.make_tensor_value_info(i, types.get(i, TensorProto.FLOAT), None) for i in feeds],
        [helper.make_tensor_value_info(o, types.get(o, TensorProto.FLOAT), None) for o in outputs],
        [inits[i] for i in outside if i in inits])
    stage_model = helper.make_model(graph, opset_imports=list(model.opset_import))
    stage_model.ir_version = model.ir_version
    return Stage(stage_model, tuple(feeds), tuple(outputs))


def _needed(piece: list[Any], outputs: Sequence[str]) -> list[Any]:
    """The nodes of ``piece`` that ``outputs`` depend on (what only removed nodes read, e.g.
    the fused demons' pooling of its inputs, would make a stage read feeds it does not need)."""
    wanted, kept = set(outputs), []
    for node in reversed(piece):
        if wanted.intersection(node.output):
            kept.append(node)
            wanted.update(i for i in node.input if i)
    return kept[::-1]


def _elem_types(model: Any) -> dict[str, int]:
    """Element type of every tensor (ONNX shape inference; graph inputs and outputs)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # types are a hint; float32 is assumed for what inference cannot type
        inferred = model
    g = inferred.graph
    return {v.name: v.type.tensor_type.elem_type
            for v in list(g.value_info) + list(g.input) + list(g.output)
            if v.type.tensor_type.elem_type}


def _inputs_of(part: Stage | Sample | Native) -> tuple[str, ...]:
    return (part.volume, part.grid) if isinstance(part, Sample) else tuple(part.inputs)


def _outputs_of(part: Stage | Sample | Native) -> tuple[str, ...]:
    return (part.output,) if isinstance(part, Sample) else tuple(part.outputs)


def single_feed_parts(parts: Sequence[Stage | Sample | Native]) -> dict[int, str]:
    """Index of every part whose inputs all derive from one and the same graph feed -> that
    feed's name (the target's normalisation and pooling, in a graph fed source and target)."""
    made: dict[str, frozenset[str]] = {}  # tensor -> the feeds it derives from
    single = {}
    for i, part in enumerate(parts):
        feeds = frozenset().union(*(made.get(n, frozenset({n})) for n in _inputs_of(part)))
        made.update((o, feeds) for o in _outputs_of(part))
        if len(feeds) == 1:
            single[i] = next(iter(feeds))
    return single


class _SameFeed:
    """The outputs of the parts that depend on one feed only, kept for the last value of that
    feed: every pass of an estimate has the same target, so its share of the graph (the default
    network's normalisation and pooling of the target) runs once per estimate. A hit compares the
    whole feed (a few sampled values first, so that a changing feed costs almost nothing)."""

    def __init__(self, parts: Sequence[Stage | Sample | Native]) -> None:
        self.feed_of = single_feed_parts(parts)
        self._kept: dict[int, tuple[np.ndarray, list[Array]]] = {}
        self._lock = threading.Lock()

    def get(self, i: int, feeds: Mapping[str, Array]) -> list[Array] | None:
        name = self.feed_of.get(i)
        kept = self._kept.get(i) if name is not None else None
        if kept is None:
            return None
        value, outputs = kept
        now = feeds.get(name)
        if not isinstance(now, np.ndarray) or now.shape != value.shape or now.dtype != value.dtype:
            return None
        probe = slice(None, None, max(1, value.size // 64))
        same = (np.array_equal(now.reshape(-1)[probe], value.reshape(-1)[probe])
                and np.array_equal(now, value))
        return outputs if same else None

    def put(self, i: int, feeds: Mapping[str, Array], outputs: list[Array]) -> None:
        name = self.feed_of.get(i)
        if name is not None and isinstance(feeds.get(name), np.ndarray):
            with self._lock:  # a copy: the caller's feed array may be reused for other values
                self._kept[i] = (np.array(feeds[name]), outputs)


class StagedGraph:
    """Runs ``parts`` in order: stages through ``compile_stage`` (compiled once per shape of
    their feeds, given the graph with those shapes declared), samples through
    :func:`regrisk.kernels.warp`. A compiled stage may be called from several threads at once
    (the backend keeps a request per thread), so several images can run concurrently. Parts
    that depend on one feed only are not run again while that feed keeps its value (_SameFeed)."""

    def __init__(self, parts: list[Stage | Sample | Native], compile_stage: StageCompiler,
                 threads: int | None = None) -> None:
        self.parts = parts
        self.compile_stage = compile_stage
        self.threads = threads
        self._compiled: dict[tuple[int, tuple], Callable[..., dict[str, Array]]] = {}
        self._lock = threading.Lock()  # one compilation per stage and shape
        self._same_feed = _SameFeed(parts)

    @property
    def compiled(self) -> list[Any]:
        """The compiled stages so far (every shape)."""
        return list(self._compiled.values())

    @property
    def counts(self) -> dict[str, int]:
        return {"stages": sum(isinstance(p, Stage) for p in self.parts),
                "samples": sum(isinstance(p, Sample) for p in self.parts),
                "native": sum(isinstance(p, Native) for p in self.parts)}

    def stage_shapes(self) -> dict[int, dict[str, tuple[int, ...]]]:
        """Each compiled stage's input shapes (one set per stage: the first compiled)."""
        shapes: dict[int, dict[str, tuple[int, ...]]] = {}
        for i, key in self._compiled:
            shapes.setdefault(i, {n: tuple(s) for n, s in key})
        return shapes

    def precompile(self, shapes: Mapping[int, Mapping[str, tuple[int, ...]]]) -> None:
        """Compiles the stages for known input shapes (a saved plan's) without running them."""
        for i, stage_shapes in shapes.items():
            part = self.parts[i]
            key = (i, tuple((n, tuple(stage_shapes[n])) for n in part.inputs))
            self._compiled[key] = self.compile_stage(part.with_shapes(stage_shapes))

    def run(self, feeds: Mapping[str, Array], outputs: Sequence[str],
            threads: int | None = None) -> dict[str, Array]:
        """The graph's ``outputs`` for ``feeds``; ``threads``: the CPU team of this call's native
        parts and samples (None: the graph's own)."""
        from ..kernels import Bound

        threads = self.threads if threads is None else threads
        sample = Bound(threads).warp_grid
        values: dict[str, Array] = dict(feeds)
        for i, part in enumerate(self.parts):
            kept = self._same_feed.get(i, feeds)
            if kept is not None:
                values.update(zip(_outputs_of(part), kept))
                continue
            if isinstance(part, Sample):
                values[part.output] = sample(
                    np.ascontiguousarray(values[part.volume], dtype=np.float32),
                    np.ascontiguousarray(values[part.grid], dtype=np.float32),
                    align_corners=part.align_corners, mode="border" if part.border else "fill")
            elif isinstance(part, Native):
                values.update(zip(part.outputs, part.run([values[n] for n in part.inputs],
                                                         threads)))
            else:
                values.update(self._stage(i, part, {n: values[n] for n in part.inputs}))
            self._same_feed.put(i, feeds, [values[n] for n in _outputs_of(part)])
        return {n: values[n] for n in outputs}

    def _stage(self, i: int, part: Stage, feeds: dict[str, Array]) -> dict[str, Array]:
        key = (i, tuple((n, a.shape) for n, a in feeds.items()))
        runner = self._compiled.get(key)
        if runner is None:
            with self._lock:
                runner = self._compiled.get(key)
                if runner is None:
                    shapes = {n: tuple(a.shape) for n, a in feeds.items()}
                    runner = self._compiled[key] = self.compile_stage(part.with_shapes(shapes))
        return runner(feeds)
