"""Resolve what the user passed as a model: ``"default"``, an ONNX path, or a Python callable.

ONNX models come with a card (``card.read_card``); the card is checked against the graph here
(input names, ranks, channels, grid, batch axis, output name and shape), so a contradiction is
reported before any image is touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends import ModelSource
from .card import ModelCard, read_card
from .errors import CardError, ModelError

# Packaged models, by name (files under python/regrisk/models/).
PACKAGED = {"default": "default.onnx", "default-stochastic": "default_stochastic.onnx",
            "default_stochastic": "default_stochastic.onnx"}


@dataclass
class ResolvedModel:
    source: ModelSource
    card: ModelCard | None        # None for callables until the grid is known
    kind: str                     # "onnx" | "callable"
    label: str


def packaged_model_path(name: str) -> Path:
    from importlib import resources

    ref = resources.files("regrisk") / "models" / PACKAGED[name]
    path = Path(str(ref))
    if not path.is_file():
        raise ModelError(f"model {name!r}: the packaged file models/{PACKAGED[name]} is not "
                         "installed with regrisk")
    return path


def resolve(model: Any, card: ModelCard | None = None,
            budget: int | None = None) -> ResolvedModel:
    """Turn ``model`` into a loadable source and its (validated) card. The graph file and its
    external data are sized from the file system before anything is read (limits: at most
    2 GiB of graph, everything within ``budget`` bytes, default the engine's budget)."""
    if callable(model) and not isinstance(model, (str, os.PathLike)):
        label = getattr(model, "__name__", type(model).__name__)
        return ResolvedModel(ModelSource(function=model, label=label), card, "callable", label)
    if isinstance(model, str) and model in PACKAGED:
        path = packaged_model_path(model)
        label = model
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        label = str(path)
        if not path.exists():
            raise ModelError(f"model {path}: no such file")
        if not path.is_file():
            raise ModelError(f"model {path}: not a file")
    else:
        raise ModelError(f"model: expected 'default', an ONNX path or a callable, got "
                         f"{type(model).__name__}")
    check_file_size(path, budget)
    graph = load_graph(path)
    check_external_data(graph, path, budget)
    if card is None:
        card = card_of(path, graph)
    check_card(card, graph, label)
    return ResolvedModel(ModelSource(path=path, label=label), card, "onnx", label)


def check_file_size(path: Path, budget: int | None = None) -> None:
    """ModelError for a graph file over protobuf's 2 GiB or over the memory budget, from its
    size on disk (before it is read)."""
    from .limits import MAX_GRAPH_BYTES
    from .memory import default_budget, gib

    size = path.stat().st_size
    if size > MAX_GRAPH_BYTES:
        raise ModelError(f"model {path}: {gib(size)}; an ONNX file holds at most {gib(MAX_GRAPH_BYTES)} "
                         "(larger weights belong in external data)")
    limit = default_budget() if budget is None else budget
    if size > limit:
        raise ModelError(f"model {path}: {gib(size)}, over the memory budget of {gib(limit)}")


def check_external_data(graph: Any, path: Path, budget: int | None = None) -> None:
    """ModelError unless every external-data file of ``graph`` lies inside the model's folder
    and the graph plus its external data fit in the memory budget (sizes from the file system
    and the graph's declared lengths; nothing is read)."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    from .memory import default_budget, gib

    folder = path.absolute().parent.resolve()
    total, seen = path.stat().st_size, set()
    for tensor in _tensors(graph.graph):
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        where = (folder / str(info.location)).resolve()
        if folder not in where.parents:
            raise ModelError(f"model {path}: external data {info.location!r} lies outside the "
                             "model's folder")
        if not where.is_file():
            raise ModelError(f"model {path}: external data file {info.location!r} is missing")
        size = where.stat().st_size
        length = int(info.length) if info.length else size - int(info.offset or 0)
        if int(info.offset or 0) + length > size:
            raise ModelError(f"model {path}: external data {info.location!r} is shorter than "
                             "the graph declares")
        if (where, info.offset) not in seen:
            seen.add((where, info.offset))
            total += length
    limit = default_budget() if budget is None else budget
    if total > limit:
        raise ModelError(f"model {path}: graph and external data take {gib(total)}, over the "
                         f"memory budget of {gib(limit)}")


def _tensors(graph: Any) -> Any:
    """Every tensor a graph holds: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def card_of(path: Path, graph: Any) -> ModelCard:
    """The card of an ONNX file: its sidecar if present, else the metadata of the graph already
    read (the file is not read a second time); at most 1 MiB of JSON."""
    from .card import METADATA_KEY, sidecar_path
    from .limits import MAX_CARD_BYTES

    side = sidecar_path(path)
    if side.is_file():
        if side.stat().st_size > MAX_CARD_BYTES:
            raise CardError(f"{side}: a model card of more than {MAX_CARD_BYTES} bytes")
        return read_card(path)
    for prop in graph.metadata_props:
        if prop.key == METADATA_KEY:
            if len(prop.value) > MAX_CARD_BYTES:
                raise CardError(f"{path}: a model card of more than {MAX_CARD_BYTES} bytes")
            return ModelCard.from_json(prop.value)
    return read_card(path)  # raises the "no model card" error


def load_graph(path: Path) -> Any:
    """The ONNX ModelProto (weights left on disk); ModelError if it is not ONNX."""
    import onnx

    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
        if not head:
            raise ModelError(f"model {path}: empty file, not an ONNX model")
        model = onnx.load(str(path), load_external_data=False)
    except ModelError:
        raise
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"model {path}: not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.output or not model.graph.input:
        raise ModelError(f"model {path}: not an ONNX model (no graph inputs/outputs)")
    return model


def _dims(value_info: Any) -> list[int | str | None]:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    out: list[int | str | None] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def graph_io(model: Any) -> tuple[dict[str, list], dict[str, list], dict[str, int]]:
    """(inputs name->dims, outputs name->dims, input name->elem type), initializers excluded."""
    inits = {i.name for i in model.graph.initializer}
    ins = {v.name: _dims(v) for v in model.graph.input if v.name not in inits}
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.input if v.name not in inits}
    outs = {v.name: _dims(v) for v in model.graph.output}
    return ins, outs, types


def check_card(card: ModelCard, model: Any, label: str) -> None:
    """CardError naming the first way ``card`` contradicts the graph."""
    import onnx

    ins, outs, types = graph_io(model)
    where = f"model {label}: card contradicts the graph:"
    expected = {name: card.inputs.channels for name in card.inputs.names()}
    missing = [n for n in expected if n not in ins]
    if missing:
        raise CardError(f"{where} input {missing[0]!r} not in graph inputs {sorted(ins)}")
    extra = [n for n in ins if n not in expected]
    if extra:
        raise CardError(f"{where} graph input {extra[0]!r} is not declared by the card")
    batch_dims = set()
    for name, channels in expected.items():
        dims = ins[name]
        if types.get(name) != onnx.TensorProto.FLOAT:
            raise CardError(f"{where} input {name!r} is not float32")
        if dims and len(dims) != 5:
            raise CardError(f"{where} input {name!r} has rank {len(dims)}, expected 5 (B, C, D, H, W)")
        if not dims:
            continue
        if isinstance(dims[1], int) and dims[1] != channels:
            raise CardError(f"{where} input {name!r} has {dims[1]} channel(s), expected {channels}")
        _check_spatial(dims[2:], card.grid, f"{where} input {name!r}")
        batch_dims.add(dims[0] if isinstance(dims[0], int) else None)
    static = {d for d in batch_dims if d is not None}
    if static:
        if card.batch != "fixed" or card.batch_size not in static:
            raise CardError(f"{where} graph batch axis is fixed at {sorted(static)[0]} but the card "
                            f"says batch={card.batch!r}, batch_size={card.batch_size}")
    if card.output.name not in outs:
        raise CardError(f"{where} output {card.output.name!r} not in graph outputs {sorted(outs)}")
    dims = outs[card.output.name]
    if dims:
        if len(dims) != 5:
            raise CardError(f"{where} output {card.output.name!r} has rank {len(dims)}, expected 5")
        ch, spatial = (dims[1], dims[2:]) if card.output.channel_axis == "first" else (dims[4], dims[1:4])
        if isinstance(ch, int) and ch != 3:
            raise CardError(f"{where} output {card.output.name!r} has {ch} channels on the "
                            f"{card.output.channel_axis} axis, expected 3")
        _check_spatial(spatial, card.grid, f"{where} output {card.output.name!r}")


def _check_spatial(dims: list, grid: tuple[int, int, int], where: str) -> None:
    for d, g in zip(dims, grid):
        if isinstance(d, int) and d != g:
            raise CardError(f"{where} has spatial shape {tuple(dims)}, card grid is {tuple(grid)}")


def callable_card(grid: tuple[int, int, int], name: str, preprocess: str = "none") -> ModelCard:
    """The card a callable implies: canonical output on ``grid``, images stretched to it."""
    from .card import Output, Preprocess

    return ModelCard(name=name, grid=tuple(int(g) for g in grid),
                     output=Output(name="displacement", kind="displacement", units="voxel",
                                   channel_order="ijk", channel_axis="first"),
                     preprocess=Preprocess(method=preprocess),
                     description="Python callable f(source, target) -> canonical displacement")


