"""What every export shares: safe checkpoint loading, ONNX export with a bounded constant folder,
the checker, an ONNX Runtime parity check against the PyTorch module, and the model card.

An export either leaves a checked, parity-tested model with its card at ``out`` or leaves
nothing there: everything is written in a temporary folder beside ``out`` and renamed into place
only after every check passed.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from regrisk.card import Inputs, ModelCard, Output, Preprocess, Resample, embed_card
from regrisk.errors import ModelError, OutputError, first_line

# float32 graphs must agree with PyTorch to this relative error (max |onnx - torch| / max |torch|).
DEFAULT_TOLERANCE = 1e-4
# Opset 20 is the first with 5-D GridSample.
DEFAULT_OPSET = 20
# Past this size the protobuf limit (2 GiB) is near: weights go to a ``<model>.data`` file.
EXTERNAL_DATA_BYTES = 1_800_000_000
# The constant folder may materialise tensors up to this many elements. Anything larger (identity
# grids, coordinate meshes) stays a computation in the graph instead of a stored constant.
FOLD_LIMIT = 16_384

_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network",
                    "weights")


class ExportError(ModelError):
    """The export failed a check (checker, ONNX Runtime load, parity); nothing was written."""


class CheckpointError(ModelError):
    """A checkpoint is missing, unreadable, carries pickled code, or does not fit the network."""


@dataclass(frozen=True)
class ExportOptions:
    """How every export is run and checked: the keyword options each exporter accepts besides
    its own (``export_voxelmorph(..., random_init=True, seed=3)``)."""

    random_init: bool = False
    seed: int = 0
    opset: int = DEFAULT_OPSET
    tolerance: float = DEFAULT_TOLERANCE
    batch_sizes: Sequence[int] = (1, 2)
    overwrite: bool = False
    verbose: bool = True

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> "ExportOptions":
        """From an exporter's ``**options``; ExportError names an option that does not exist."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise ExportError(f"unknown export option(s): {', '.join(unknown)}")
        return cls(**options)


# -- checkpoints ------------------------------------------------------------------------------

def load_checkpoint(path: str | os.PathLike[str], key: str | None = None) -> dict[str, Any]:
    """Tensors of a checkpoint, loaded with ``torch.load(weights_only=True)``.

    A checkpoint whose pickle names a Python global (a class, a function: code that unpickling
    would run) is refused. ``key`` picks a nested state dict; without it the usual wrappers
    (``state_dict``, ``model_state_dict``, ...) are unwrapped when the top level is not already
    a flat mapping of tensors.
    """
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it names {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{p}: refused: the checkpoint carries pickled code or objects{what}; only tensors "
            "and plain containers are loaded (torch.load weights_only=True)"
        ) from None
    except Exception as exc:  # zip / EOF / magic-number errors come in several types
        raise CheckpointError(f"{p}: not a readable PyTorch checkpoint ({first_line(exc)})") from None
    return _state_dict_of(obj, key, p)


def _state_dict_of(obj: Any, key: str | None, path: Path) -> dict[str, Any]:
    import torch

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (a mapping of tensors), "
                              f"found {type(obj).__name__}")
    if key is not None:
        for part in key.split("."):
            if not isinstance(obj, Mapping) or part not in obj:
                raise CheckpointError(f"{path}: no entry {key!r} in the checkpoint")
            obj = obj[part]
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{path}: entry {key!r} is not a state dict")
        return dict(obj)
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    for k in _CHECKPOINT_KEYS:
        inner = obj.get(k)
        if isinstance(inner, Mapping) and inner and all(
                isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner)
    raise CheckpointError(f"{path}: no state dict found (top-level keys: "
                          f"{', '.join(map(str, list(obj)[:8]))}); pass the entry's key")


def load_weights(module: Any, state: Mapping[str, Any], path: str | os.PathLike[str],
                 strip_prefix: str = "") -> None:
    """``module.load_state_dict(state, strict=True)`` with a one-line error on mismatch."""
    if strip_prefix:
        state = {k[len(strip_prefix):] if k.startswith(strip_prefix) else k: v
                 for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        text = str(exc)
        missing = re.search(r"Missing key\(s\) in state_dict: (.*?)\.?\s*(?:Unexpected|$)", text,
                            re.S)
        unexpected = re.search(r"Unexpected key\(s\) in state_dict: (.*?)\.?\s*$", text, re.S)
        size = re.search(r"size mismatch for ([^:]+)", text)
        parts = []
        if missing:
            parts.append("missing " + _first_keys(missing.group(1)))
        if unexpected:
            parts.append("unexpected " + _first_keys(unexpected.group(1)))
        if size:
            parts.append(f"shape mismatch for {size.group(1)}")
        detail = "; ".join(parts) or text.splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the network ({detail})") from None


def check_weight_source(weights: str | os.PathLike[str] | None, random_init: bool) -> None:
    """Exactly one of a checkpoint and random weights; checked before any network is built."""
    if (weights is None) == (not random_init):
        raise ExportError("give --weights or --random-init (exactly one)")


def init_weights(net: Any, weights: str | os.PathLike[str] | None, options: ExportOptions, *,
                 randomize: Callable[[Any, int], None] | None = None,
                 checkpoint_key: str | None = None, strip_prefix: str = "") -> None:
    """Give ``net`` its weights: the checkpoint at ``weights`` (loaded safely and strictly) or,
    with ``options.random_init``, ``randomize(net, options.seed)`` (the module's own
    initialisation when None); then eval mode."""
    if options.random_init:
        if randomize is not None:
            randomize(net, options.seed)
    else:
        load_weights(net, load_checkpoint(weights, checkpoint_key), weights,
                     strip_prefix=strip_prefix)
    net.eval()


def _first_keys(listing: str, n: int = 3) -> str:
    keys = re.findall(r'"([^"]+)"', listing)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` plus the export toolchain (absent ones are skipped)."""
    out: dict[str, str] = {}
    for name in ("regrisk", "torch", "onnx", "onnxscript", "onnxruntime", *names):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


# -- export -----------------------------------------------------------------------------------

@dataclass
class Parity:
    """ONNX Runtime against PyTorch on the same random inputs."""

    max_abs: float
    rel: float
    reference_max: float
    tolerance: float
    batch_sizes: tuple[int, ...]
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "rel": self.rel, "reference_max": self.reference_max,
                "tolerance": self.tolerance, "batch_sizes": list(self.batch_sizes),
                "seed": self.seed, "inputs": "uniform [0, 1) float32",
                "rel_definition": "max|onnx - torch| / max|torch|"}


@dataclass
class ExportResult:
    path: Path
    card: ModelCard
    parity: Parity
    seconds: float
    external_data: bool
    op_counts: dict[str, int] = field(default_factory=dict)


def export_module(
    module: Any,
    *,
    out: str | os.PathLike[str],
    card: ModelCard,
    input_names: Sequence[str],
    input_channels: Sequence[int],
    options: ExportOptions,
    reference: Callable[..., Any] | None = None,
    trace_context: Callable[[Any], Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    fold_limit: int = FOLD_LIMIT,
) -> ExportResult:
    """Export ``module`` (inputs ``(B, c, *card.grid)`` each) to ``out`` with ``card`` stored.

    ``reference`` computes what the graph must reproduce (default: ``module`` itself); exporters
    that rewrite a network into a graph-friendly form pass the untouched original here, so the
    parity check covers the rewrite too; ``trace_context(traced)`` (a context manager factory)
    is entered only while tracing, for such rewrites. A deep copy is traced, so that state a
    module caches while tracing (fake tensors) never reaches the reference. The batch axis is
    dynamic when ``card.batch`` says so.
    """
    out = Path(out)
    data_file = _check_destination(out, options.overwrite)
    if len(input_names) != len(input_channels):
        raise ExportError("input_names and input_channels differ in length")
    if card.batch != "dynamic":
        options = replace(options, batch_sizes=(card.batch_size,))
    module.eval()
    started = time.perf_counter()
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp = tmpdir / out.name
        external = _trace_and_save(module, tmp, card, input_names, input_channels, options,
                                   trace_context, fold_limit)
        _check_graph(tmp, input_names, card.output.name, out)
        parity = _parity(tmp, reference or module, input_names, input_channels, card.grid,
                         options)
        _report_parity(parity, options, out)
        ops = _store_card(tmp, card, provenance, options.opset, parity, external)
        if external:
            os.replace(tmpdir / data_file.name, data_file)
        elif data_file.exists() and options.overwrite:
            data_file.unlink()  # a stale .data from an earlier large export
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    seconds = time.perf_counter() - started
    if options.verbose:
        print(f"wrote {out} ({_size(out, data_file if external else None)}, "
              f"{sum(ops.values())} nodes, {seconds:.1f} s)", file=sys.stdout)
    return ExportResult(out, card, parity, seconds, external, ops)


def _check_destination(out: Path, overwrite: bool) -> Path:
    """OutputError unless ``out`` (and its ``.data`` sibling) may be written; returns the
    sibling's path."""
    if out.suffix != ".onnx":
        raise OutputError(f"{out}: the output must end in .onnx")
    data_file = out.with_name(out.name + ".data")
    if (out.exists() or data_file.exists()) and not overwrite:
        raise OutputError(f"{out}: exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise OutputError(f"{out.parent}: output folder does not exist")
    return data_file


def _trace_and_save(module: Any, tmp: Path, card: ModelCard, input_names: Sequence[str],
                    input_channels: Sequence[int], options: ExportOptions,
                    trace_context: Callable[[Any], Any] | None, fold_limit: int) -> bool:
    """Trace a copy of ``module`` to ONNX at ``tmp``, constants folded; True when the weights
    went to an external ``.data`` file."""
    dynamic = card.batch == "dynamic"
    # Example batch 2: torch.export specialises a dimension whose example size is 0 or 1.
    example_batch = 2 if dynamic else card.batch_size
    example = _random_inputs(example_batch, input_channels, card.grid, options.seed + 1000)
    traced = copy.deepcopy(module)
    with (trace_context(traced) if trace_context is not None else contextlib.nullcontext()):
        program = _torch_to_onnx(traced, example, input_names, card.output.name, options.opset,
                                 dynamic, options.verbose)
    _fold_constants(program, fold_limit)
    weight_bytes = sum(int(v.const_value.nbytes) for v in program.model.graph.initializers
                       .values() if v.const_value is not None)
    external = weight_bytes > EXTERNAL_DATA_BYTES
    program.save(str(tmp), external_data=external)
    # The traced copy and the in-memory graph are no longer needed: free them before the
    # parity run holds PyTorch's and ONNX Runtime's activations (GBs at 175^3).
    del program, traced
    gc.collect()
    return external


def _report_parity(parity: Parity, options: ExportOptions, out: Path) -> None:
    """Print the parity figures (verbose) and refuse a graph over the tolerance."""
    tolerance = options.tolerance
    if options.verbose:
        print(f"parity: max_abs={parity.max_abs:.3e} rel={parity.rel:.3e} "
              f"(|torch| max {parity.reference_max:.3g}; tolerance {tolerance:g} relative; "
              f"batch {','.join(map(str, parity.batch_sizes))})", file=sys.stdout)
    if not parity.rel <= tolerance:  # NaN fails too
        raise ExportError(
            f"{out}: ONNX Runtime differs from PyTorch: max abs {parity.max_abs:.3e}, "
            f"relative {parity.rel:.3e} > tolerance {tolerance:g}; nothing written")


def _store_card(tmp: Path, card: ModelCard, provenance: Mapping[str, Any] | None, opset: int,
                parity: Parity, external: bool) -> dict[str, int]:
    """Complete the card's provenance, embed it in the graph at ``tmp``; returns op counts."""
    import onnx

    model = onnx.load(str(tmp), load_external_data=False)
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    prov = dict(provenance or {})
    prov.setdefault("versions", package_versions())
    prov["opset"] = opset
    prov["parity"] = parity.as_dict()
    prov["exported_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    prov["external_data"] = external
    card.provenance = prov
    card.validate()
    embed_card(model, card)
    model.producer_name = "regrisk.exporters"
    onnx.save(model, str(tmp))  # external tensors keep pointing at tmp's .data file
    return ops


def _torch_to_onnx(module: Any, example: list[Any], input_names: Sequence[str], output_name: str,
                   opset: int, dynamic: bool, verbose: bool) -> Any:
    import torch

    dynamic_shapes = None
    if dynamic:
        batch = torch.export.Dim("batch", min=1, max=4096)
        dynamic_shapes = tuple({0: batch} for _ in example)
    try:
        with torch.no_grad():
            return torch.onnx.export(
                module, tuple(example), None, dynamo=True, optimize=False,
                opset_version=opset, input_names=list(input_names), output_names=[output_name],
                dynamic_shapes=dynamic_shapes, verbose=False, report=False,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {_one_line(exc)}") from None


def _fold_constants(program: Any, limit: int) -> None:
    """onnxscript's optimizer, told never to fold a node whose output is larger than ``limit``
    elements and larger than its inputs: identity grids and coordinate meshes (a few ``arange``
    vectors expanded to the whole grid) stay computations in the graph instead of megabytes of
    stored constants. Folding that shrinks or reshapes weights is left alone."""
    import onnxscript.optimizer

    def should_fold(node: Any) -> bool | None:
        out = sum(_static_numel(v) or 0 for v in node.outputs)
        if out <= limit:
            return None
        inputs = sum(_static_numel(v) or 0 for v in node.inputs if v is not None)
        return False if out > inputs else None

    onnxscript.optimizer.optimize_ir(program.model, input_size_limit=max(limit, 8192),
                                     output_size_limit=limit, should_fold=should_fold)


def _static_numel(value: Any) -> int | None:
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    n = 1
    for d in shape:
        if not isinstance(d, int):
            return None
        n *= d
    return n


def _check_graph(path: Path, input_names: Sequence[str], output_name: str, out: Path) -> None:
    """onnx.checker, then the graph's inputs and output are the ones the card names."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ExportError(f"{out}: onnx.checker rejected the graph ({_one_line(exc)})") from None
    model = onnx.load(str(path), load_external_data=False)
    graph_inputs = [i.name for i in model.graph.input]
    graph_outputs = [o.name for o in model.graph.output]
    if graph_inputs != list(input_names) or graph_outputs != [output_name]:
        raise ExportError(f"{out}: graph has inputs {graph_inputs} and outputs {graph_outputs}, "
                          f"expected {list(input_names)} and [{output_name!r}]")


def _random_inputs(batch: int, channels: Sequence[int], grid: Sequence[int], seed: int) -> list[Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [torch.rand((batch, c, *grid), generator=gen, dtype=torch.float32) for c in channels]


def _parity(path: Path, reference: Callable[..., Any], input_names: Sequence[str],
            channels: Sequence[int], grid: Sequence[int], options: ExportOptions) -> Parity:
    """ONNX Runtime against ``reference`` on uniform random inputs, one run per batch size."""
    import numpy as np
    import onnxruntime as ort
    import torch

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{path.name}: ONNX Runtime cannot load the graph ({_one_line(exc)})") from None
    max_abs, ref_max = 0.0, 0.0
    for i, b in enumerate(options.batch_sizes):
        inputs = _random_inputs(b, channels, grid, options.seed + i)
        with torch.no_grad():
            expected = reference(*inputs)
        expected = expected.detach().cpu().numpy().astype(np.float32)
        got = session.run(None, {n: t.numpy() for n, t in zip(input_names, inputs)})[0]
        if got.shape != expected.shape:
            raise ExportError(f"{path.name}: ONNX output shape {got.shape} != PyTorch {expected.shape}")
        diff = np.abs(got.astype(np.float64) - expected)
        max_abs = max(max_abs, float(np.max(diff)) if np.all(np.isfinite(diff)) else float("nan"))
        ref_max = max(ref_max, float(np.max(np.abs(expected))))
    rel = max_abs / ref_max if ref_max > 0 else (0.0 if max_abs == 0 else float("inf"))
    return Parity(max_abs, rel, ref_max, options.tolerance, tuple(options.batch_sizes),
                  options.seed)


def _one_line(exc: BaseException) -> str:
    while exc.__cause__ is not None:  # torch.onnx wraps the real error in a long banner
        exc = exc.__cause__
    return first_line(exc)


def _size(path: Path, data: Path | None) -> str:
    n = path.stat().st_size + (data.stat().st_size if data is not None else 0)
    return f"{n / 2**20:.1f} MiB" + (" with external data" if data is not None else "")


def pair_card(name: str, grid: Sequence[int], output: Output, preprocess: Preprocess,
              resample: Resample, description: str) -> ModelCard:
    """The card of an exported (source, target) network: inputs named ``source`` and ``target``
    (what ``export_module`` traces), a dynamic batch axis, deterministic (parity-checked)."""
    return ModelCard(name=name, grid=tuple(int(n) for n in grid),  # type: ignore[arg-type]
                     inputs=Inputs(layout="pair", source="source", target="target"),
                     output=output, batch="dynamic", preprocess=preprocess, resample=resample,
                     stochastic=False, description=description)


def version_provenance(exporter: str, packages: Sequence[str],
                       weights: str | os.PathLike[str] | None, options: ExportOptions,
                       **extra: Any) -> dict[str, Any]:
    """The provenance block every exporter writes: versions, weights (file + sha256) or the
    random-init seed, and exporter-specific settings."""
    prov: dict[str, Any] = {"exporter": exporter, "versions": package_versions(*packages)}
    if options.random_init:
        prov["weights"] = {"random_init": True, "seed": options.seed}
    else:
        prov["weights"] = {"file": Path(weights).name, "sha256": file_sha256(weights)}
    prov.update(extra)
    return prov
