"""The model card: what the engine needs to drive a registration network without its code.

A card is JSON, stored in the ONNX ``metadata_props`` under ``regrisk.card`` or in a sidecar
``<model>.card.json`` (the sidecar wins when both exist, so users can correct a shipped card).
Conversions between a card's conventions and the canonical ones live in ``conventions``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import CardError

METADATA_KEY = "regrisk.card"
SCHEMA = "regrisk.card/1"

_LAYOUTS = ("pair", "concat")
_KINDS = ("displacement", "map", "velocity")
_UNITS = ("voxel", "unit", "normalized")
_ORDERS = ("ijk", "xyz")
_CHANNEL_AXES = ("first", "last")
_BATCH = ("dynamic", "fixed")
_PREPROCESS = ("none", "minmax", "percentile")
_RESAMPLE = ("stretch", "reslice")


@dataclass
class Inputs:
    """How the two images enter the graph.

    ``pair``: two inputs named ``source`` and ``target``, each (B, 1, D, H, W).
    ``concat``: one input named ``concat`` of shape (B, 2, D, H, W), channels in ``order``.
    """

    layout: str = "pair"
    source: str = "source"
    target: str = "target"
    concat: str = "input"
    order: tuple[str, str] = ("source", "target")

    def names(self) -> tuple[str, ...]:
        """The graph input names this layout feeds, in feeding order."""
        return (self.source, self.target) if self.layout == "pair" else (self.concat,)

    @property
    def channels(self) -> int:
        """Channels of each input: one image per input, or both images on one input."""
        return 1 if self.layout == "pair" else 2


@dataclass
class Output:
    """What the graph returns and in which convention.

    kind: ``displacement`` u with phi(x) = x + u(x), ``map`` phi(x) itself, or ``velocity`` a
    stationary velocity field v that the engine integrates by scaling and squaring
    (u = exp(v), ``steps`` squarings, done by regrisk's compose kernel, not in the graph);
    ``padding`` is how that integration samples outside the grid: ``zeros`` as VoxelMorph's
    integration layer (torch grid_sample's default) or ``border``.
    units: ``voxel`` (array indices), ``unit`` ([0, 1] per axis, align-corners: uniGradICON),
    ``normalized`` ([-1, 1] as torch ``grid_sample``, with ``align_corners``).
    channel_order: ``ijk`` (channel c along array axis c) or ``xyz`` (reversed, torch grids).
    channel_axis: ``first`` (B, 3, D, H, W) or ``last`` (B, D, H, W, 3).
    """

    name: str = "displacement"
    kind: str = "displacement"
    units: str = "voxel"
    align_corners: bool = True
    channel_order: str = "ijk"
    channel_axis: str = "first"
    steps: int = 7
    padding: str = "zeros"


@dataclass
class Preprocess:
    """Intensity preprocessing applied to each image before the network sees it.

    ``minmax``: (x - min) / (max - min). ``percentile``: clip to the [low, high] percentiles,
    then scale to [0, 1]. ``none``: as stored.
    """

    method: str = "minmax"
    low: float = 0.0
    high: float = 100.0


@dataclass
class Resample:
    """How images reach the model grid.

    ``stretch``: resize the whole image to the grid shape (align-corners), as uniGradICON does.
    ``reslice``: resample at ``spacing`` mm about the image centre, padding or cropping to the
    grid shape.
    """

    method: str = "stretch"
    spacing: tuple[float, float, float] | None = None


@dataclass
class ModelCard:
    name: str
    grid: tuple[int, int, int]
    inputs: Inputs = field(default_factory=Inputs)
    output: Output = field(default_factory=Output)
    batch: str = "dynamic"
    batch_size: int = 1
    preprocess: Preprocess = field(default_factory=Preprocess)
    resample: Resample = field(default_factory=Resample)
    stochastic: bool = False
    description: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    def __post_init__(self) -> None:
        self.validate()

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        _check(isinstance(self.name, str) and self.name, "name", "a non-empty string")
        grid = tuple(self.grid) if isinstance(self.grid, (list, tuple)) else ()
        _check(len(grid) == 3 and all(isinstance(n, int) and n >= 2 for n in grid),
               "grid", "three integers >= 2 (D, H, W)")
        self.grid = grid  # type: ignore[assignment]
        _choice(self.inputs.layout, _LAYOUTS, "inputs.layout")
        order = tuple(self.inputs.order)
        _check(sorted(order) == ["source", "target"], "inputs.order",
               '["source", "target"] in some order')
        self.inputs.order = order  # type: ignore[assignment]
        _choice(self.output.kind, _KINDS, "output.kind")
        _choice(self.output.units, _UNITS, "output.units")
        _choice(self.output.channel_order, _ORDERS, "output.channel_order")
        _choice(self.output.channel_axis, _CHANNEL_AXES, "output.channel_axis")
        _check(isinstance(self.output.steps, int) and 0 <= self.output.steps <= 16,
               "output.steps", "an integer in [0, 16] (scaling-and-squaring steps)")
        _choice(self.output.padding, ("zeros", "border"), "output.padding")
        _check(isinstance(self.output.align_corners, bool), "output.align_corners", "true or false")
        _choice(self.batch, _BATCH, "batch")
        _check(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        _choice(self.preprocess.method, _PREPROCESS, "preprocess.method")
        low, high = _real(self.preprocess.low), _real(self.preprocess.high)
        _check(low is not None and high is not None and 0.0 <= low < high <= 100.0,
               "preprocess", "0 <= low < high <= 100 (percentiles)")
        _choice(self.resample.method, _RESAMPLE, "resample.method")
        if self.resample.method == "reslice":
            sp = self.resample.spacing
            _check(isinstance(sp, (list, tuple)) and len(sp) == 3
                   and all((_real(s) or 0.0) > 0 for s in sp),
                   "resample.spacing", "three positive spacings in mm for reslice")
            self.resample.spacing = tuple(float(s) for s in sp)  # type: ignore[assignment,union-attr]
        _check(isinstance(self.stochastic, bool), "stochastic", "true or false")
        _check(self.schema == SCHEMA, "schema", f"{SCHEMA!r}")

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["grid"] = list(self.grid)
        d["inputs"]["order"] = list(self.inputs.order)
        if self.resample.spacing is not None:
            d["resample"]["spacing"] = list(self.resample.spacing)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        if not isinstance(data, dict):
            raise CardError("model card: expected a JSON object")
        data = dict(data)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CardError(f"model card: unknown field(s) {', '.join(unknown)}")
        if "name" not in data or "grid" not in data:
            raise CardError("model card: 'name' and 'grid' are required")
        try:
            parts = {
                "inputs": Inputs, "output": Output, "preprocess": Preprocess, "resample": Resample,
            }
            for key, kind in parts.items():
                if key in data:
                    sub = data[key]
                    if not isinstance(sub, dict):
                        raise CardError(f"model card: '{key}' must be an object")
                    extra = sorted(set(sub) - set(kind.__dataclass_fields__))
                    if extra:
                        raise CardError(f"model card: unknown field(s) {key}.{', '.join(extra)}")
                    data[key] = kind(**sub)
            if "grid" in data and isinstance(data["grid"], list):
                data["grid"] = tuple(data["grid"])
            return cls(**data)
        except TypeError as exc:  # wrong value types surface here
            raise CardError(f"model card: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CardError(f"model card: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data)


def _real(x: Any) -> float | None:
    """``x`` as a finite float when it is a real number (not a bool or a string), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _check(ok: bool, name: str, expected: str) -> None:
    if not ok:
        raise CardError(f"model card: '{name}' must be {expected}")


def _choice(value: object, allowed: tuple[str, ...], name: str) -> None:
    _check(value in allowed, name, "one of " + ", ".join(allowed))


# -- storage --------------------------------------------------------------------------------

def sidecar_path(model_path: str | os.PathLike[str]) -> Path:
    p = Path(model_path)
    return p.with_name(p.stem + ".card.json")


def read_card(model_path: str | os.PathLike[str]) -> ModelCard:
    """The card of an ONNX file: its sidecar if present, else its ``regrisk.card`` metadata."""
    path = Path(model_path)
    side = sidecar_path(path)
    if side.is_file():
        return ModelCard.from_json(side.read_text())
    import onnx

    try:
        # Weights are not needed to read metadata; external data stays on disk.
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises several unrelated types for a bad file
        from .errors import ModelError

        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return ModelCard.from_json(prop.value)
    raise CardError(
        f"{path}: no model card (no '{METADATA_KEY}' metadata and no {side.name}); "
        "write one with 'regrisk card'"
    )


def write_card(model_path: str | os.PathLike[str], card: ModelCard, sidecar: bool = False) -> Path:
    """Store ``card`` with the model: in its metadata (rewritten atomically) or as a sidecar."""
    from .io import atomic_file, write_text_atomic

    path = Path(model_path)
    if sidecar:
        target = sidecar_path(path)
        write_text_atomic(target, card.to_json() + "\n")
        return target
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    embed_card(model, card)
    with atomic_file(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def embed_card(model: Any, card: ModelCard) -> None:
    """Put ``card`` into an in-memory ONNX ``model``'s metadata, replacing any card there."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, card.to_json()
