"""TensorRT engines from exported ONNX graphs, through the ``tensorrt`` Python API (optional
extra ``regrisk[trt]``; its libraries are not installable from the registries these machines
reach, so this module is written against TensorRT 10's documented API and its tests skip).

TensorRT has no 5-D grid sampling: a graph with GridSample on 5-D tensors is refused before
TensorRT is loaded; export the staged form instead (``regrisk export voxelmorph --form staged``:
the velocity head alone, integration done by regrisk's compose kernel). The engine gets an
optimisation profile for the batch axis, and the ONNX card is written beside it as a sidecar
(``<engine stem>.card.json``) with the TensorRT settings added to its provenance.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regrisk.card import ModelCard, read_card, write_card
from regrisk.errors import OutputError
from regrisk.io import atomic_file

from .common import ExportError, package_versions


@dataclass(frozen=True)
class BatchProfile:
    """min <= opt <= max batch sizes of the optimisation profile."""

    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: str) -> "BatchProfile":
        parts = text.split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) == 1:
            values = values * 3
        if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
            raise ExportError(f"--batch {text!r}: expected MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX")
        return cls(*values)


def check_graph(onnx_path: Path) -> ModelCard:
    """The card of ``onnx_path``; refuses graphs TensorRT cannot build (5-D GridSample)."""
    import onnx

    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path}: ONNX model not found")
    card = read_card(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    grid_samples = [n for n in model.graph.node if n.op_type == "GridSample"]
    if grid_samples:
        raise ExportError(
            f"{onnx_path}: {len(grid_samples)} GridSample node(s) on 5-D tensors; TensorRT has "
            "no 5-D grid sampling: export the staged form (velocity head alone) instead")
    return card


def build_engine(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fp16: bool = False,
    batch: BatchProfile | str | None = None,
    workspace_gib: float = 4.0,
    overwrite: bool = False,
    verbose: bool = True,
) -> Path:
    """Build and serialise a TensorRT engine for ``onnx_path`` at ``out``, card as a sidecar."""
    onnx_path, out = Path(onnx_path), Path(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise OutputError(f"{out.parent}: output folder does not exist")
    card = check_graph(onnx_path)
    batch = _batch_profile(batch, card)
    trt = _import_tensorrt()
    serialized = _serialize(trt, onnx_path, batch, fp16, workspace_gib, verbose)
    card.provenance = dict(card.provenance)
    card.provenance["tensorrt"] = {
        "source_onnx": onnx_path.name, "fp16": fp16,
        "batch_profile": [batch.min, batch.opt, batch.max],
        "versions": {**package_versions("tensorrt"), "tensorrt_runtime": trt.__version__},
    }
    with atomic_file(out) as tmp:
        tmp.write_bytes(memoryview(serialized))
        write_card(out, card, sidecar=True)
    if verbose:
        print(f"wrote {out} (TensorRT {trt.__version__}, fp16={fp16}, "
              f"batch {batch.min}:{batch.opt}:{batch.max})")
    return out


def _batch_profile(batch: BatchProfile | str | None, card: ModelCard) -> BatchProfile:
    """The requested profile, checked against a fixed-batch graph; default 1:card:max(8, card)."""
    if isinstance(batch, str):
        batch = BatchProfile.parse(batch)
    if card.batch == "fixed":
        if batch is not None and (batch.min, batch.max) != (card.batch_size, card.batch_size):
            raise ExportError(f"--batch: the graph has a fixed batch of {card.batch_size}")
        return BatchProfile(card.batch_size, card.batch_size, card.batch_size)
    if batch is None:
        return BatchProfile(1, max(1, card.batch_size), max(8, card.batch_size))
    return batch


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise ExportError("TensorRT is not installed (pip install 'regrisk[trt]' on a machine "
                          "with NVIDIA's TensorRT libraries)") from None
    return trt


def _serialize(trt: Any, onnx_path: Path, batch: BatchProfile, fp16: bool, workspace_gib: float,
               verbose: bool) -> Any:
    """TensorRT's serialized engine for the graph, with one optimisation profile over batch."""
    logger = trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external data (<model>.onnx.data) relative to the model.
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        raise ExportError(f"{onnx_path}: TensorRT's ONNX parser failed: "
                          f"{errors[0] if errors else 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if fp16:
        if not builder.platform_has_fast_fp16:
            raise ExportError("--fp16: this GPU has no fast FP16")
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(int(d) for d in tensor.shape)[1:]
        if any(d < 0 for d in rest):
            raise ExportError(f"{onnx_path}: input {tensor.name!r} has dynamic non-batch axes "
                              f"{tuple(tensor.shape)}; only the batch axis may be dynamic")
        profile.set_shape(tensor.name, (batch.min, *rest), (batch.opt, *rest), (batch.max, *rest))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    return serialized
