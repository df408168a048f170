"""OpenVINO: the ONNX file read directly, compiled once per batch size for the card's grid.

On x86 CPUs OpenVINO's convolutions are the fastest we measured (its own kernels, bf16 and AMX
where the CPU has them); Intel GPUs and NPUs are reached through the same API. A graph with 5-D
GridSample (which OpenVINO's ONNX frontend lacks) runs staged (``backends.staged``: network
pieces here, sampling by regrisk's warp kernel) or, with ``gridsample="rewrite"``, as one graph
whose GridSamples are rewritten as gathers (``backends.gridsample``).

options: ``openvino_device`` ("CPU" default; "GPU", "NPU" where OpenVINO finds one; arrays still
cross as NumPy), ``precision`` ("auto" default: bf16 for graphs whose map was measured to keep
it, ``BF16_MEASURED``, on CPUs that compute bf16 natively, else f32; "f32", "bf16" or "f16"
force OpenVINO's inference precision hint), ``gridsample`` ("staged" default, or "rewrite"),
``lanes`` (below), ``fold_upsampling`` (True default: nearest 2x resizes folded into the
convolutions that read them, ``backends.upsample_fold``; the same outputs to float32 rounding),
``native`` (True default: regions regrisk runs natively: ``backends.native_normalize``,
``native_demons``, ``native_resize`` in a staged graph, and on CPUs ``native_head``, a last
3x3x3 convolution to the field, in any graph), ``cache_dir`` (OpenVINO's
compiled-model cache: by default ``$REGRISK_CACHE_DIR/openvino``, else
``$XDG_CACHE_HOME/regrisk/openvino``, else ``~/.cache/regrisk/openvino``; ``""`` turns it off).
The cache shortens compilation (the staged default model: 11 s -> 4.5 s at the second run)
and keeps each staged graph's plan (``backends.staged_plan``: no graph surgery at the next
start); a folder that cannot be made leaves both off.

``lanes`` ("auto" default: 2 for a staged graph on a CPU with an even thread count, else 1;
or a count up to the thread count): how many images of a batch run at once, each on
threads / lanes cores, through OpenVINO's throughput mode (one stream per lane) and, in a staged
graph, native parts with that many threads, with the same outputs bit for bit. On the 2-core
development machine with steal under 1%, two lanes ran the staged default model 1.16-1.27x
faster end to end (its native parts and small stages scale poorly across cores) and the whole
benchmark U-Net 4-7% slower, hence the rule; under contention both gained. A single image runs
on one lane's cores: ``lanes=1`` for single-pass latency (benchmarks/RESULTS.md).

A graph with a free batch runs one image at a time: each batch size would be a compilation of
every stage (63 for the default model, ~6 s), and the engine's micro-batches (4, then the
remainder) would compile two or three times for a per-pass gain of about 10%.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..card import ModelCard
from ..errors import ModelError, first_line
from . import (Array, Backend, ModelSource, native_demons, native_head, native_normalize,
               native_resize, staged_plan)
from .feeds import check_feeds
from .gridsample import five_d_gridsamples, rewrite_gridsample
from .onnxruntime import cpu_cores
from .staged import Native, Sample, StagedGraph, split
from .upsample_fold import fold_upsampling

PRECISIONS = ("auto", "f32", "bf16", "f16")
# Graphs whose map was measured to survive bf16 (benchmarks/precision.py at K = 50, Spearman of
# the sigma maps over the brain >= 0.99, issue 12): sha256 of the ONNX file -> the measurement.
# "auto" runs these at bf16 where the CPU computes bf16 natively, everything else at f32; a
# retrained default model is not in the table, so it runs f32 until it is measured again.
BF16_MEASURED = {
    "6b37dfbbd45f949608d12515ec66dd530d178f56118f37e5393e25babf7a6dfa":
        "default: Spearman 1.0000, largest sigma difference 0.0009 mm (K = 50, bf16 in the "
        "U-Net stage; 0.9999 and 0.038 mm with every stage at bf16), 2026-12-02",
}
GRIDSAMPLE = ("staged", "rewrite")


def _onnx_model(model: ModelSource) -> Any:
    import onnx

    src = model.onnx_bytes_or_path()
    try:
        return onnx.load_from_string(src) if isinstance(src, bytes) else onnx.load(src)
    except Exception as exc:  # protobuf errors
        raise ModelError(f"{model.label or 'model'}: not an ONNX model ({type(exc).__name__})") from None


class _Compiled:
    """One compiled model and its reused infer requests, one per calling thread (a request
    serves one inference at a time; lanes run theirs concurrently)."""

    def __init__(self, compiled: Any, outputs: list[str]) -> None:
        self.compiled = compiled
        self._local = threading.local()
        self.outputs = outputs  # by the graph's names: OpenVINO may merge a tensor's aliases
        self._static = self._static_outputs()
        # what the device runs at: a CPU without bf16 runs f32 whatever the hint asked
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    @property
    def request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def __call__(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        # np.require, not ascontiguousarray: that makes a 0-d array (a scalar feed) 1-d
        request = self.request  # this thread's
        bound = self._bind(request)
        request.infer({k: np.require(v, requirements="C") for k, v in feeds.items()},
                      share_inputs=True)
        # an output without a static shape: a copy (the request reuses its buffer next call)
        return {n: bound[n] if n in bound else np.array(request.get_tensor(n).data)
                for n in self.outputs}

    def _static_outputs(self) -> dict[str, tuple[Any, tuple[int, ...]]]:
        """The f32 outputs of static shape: name -> (port, shape)."""
        import openvino as ov

        out = {}
        for name in self.outputs:
            port = self.compiled.output(name)
            shape = port.get_partial_shape()
            if shape.is_static and port.get_element_type() == ov.Type.f32:
                out[name] = (port, tuple(shape.to_shape()))
        return out

    def _bind(self, request: Any) -> dict[str, np.ndarray]:
        """Fresh arrays the request writes its f32 outputs of static shape into (no copy of
        ~100 MB per call afterwards); each call binds new ones, so an array handed out is never
        written again. Kept here until the next call: the request points into them."""
        import openvino as ov

        bound = {}
        for name, (port, shape) in self._static.items():
            bound[name] = np.empty(shape, np.float32)
            request.set_tensor(port, ov.Tensor(bound[name], shared_memory=True))
        self._local.bound = bound
        return bound


class OpenVinoBackend(Backend):
    name = "openvino"
    device = "cpu"

    def __init__(self, model: ModelSource, card: ModelCard, *, threads: int | None = None,
                 options: dict[str, Any] | None = None) -> None:
        import openvino as ov

        options = dict(options or {})
        self.label = model.label or "model"
        self.threads = int(threads) if threads else cpu_cores()
        self.target = str(options.get("openvino_device", "CPU")).upper()
        self.requested = str(options.get("precision", "auto")).lower()
        self.gridsample_mode = str(options.get("gridsample", "staged")).lower()
        if self.requested not in PRECISIONS:
            raise ModelError(f"openvino: precision {self.requested!r}; use {', '.join(PRECISIONS)}")
        if self.gridsample_mode not in GRIDSAMPLE:
            raise ModelError(f"openvino: gridsample {self.gridsample_mode!r}; use staged or rewrite")
        self.core = ov.Core()
        self.cache_dir = compile_cache(options.get("cache_dir"))
        if self.cache_dir:
            self.core.set_property({"CACHE_DIR": self.cache_dir})
        if self.target not in self.core.available_devices:
            raise ModelError(f"openvino: device {self.target!r} not found; OpenVINO sees "
                             f"{', '.join(self.core.available_devices) or 'none'}")
        self.precision = self._precision(model)
        self.grid = tuple(int(g) for g in card.grid)
        self.input_names = card.inputs.names()
        self.channels = {n: card.inputs.channels for n in self.input_names}
        self.output_name = card.output.name
        self.fixed_batch = card.batch_size if card.batch == "fixed" else None
        self.lanes: int | None = self._lanes(options.get("lanes", "auto"))
        self._pool: ThreadPoolExecutor | None = None
        self._models: dict[int, Any] = {}
        self.native = bool(options.get("native", True))
        self.fold = bool(options.get("fold_upsampling", True))
        self.folded = 0
        self.fused: list[str] = []
        self._specs: dict[str, Any] = {}
        self.staged: StagedGraph | None = None
        self.plan = "none"
        plan_key = self._plan_key(model)
        if plan_key and self._load_plan(plan_key):
            return
        graph = _onnx_model(model)
        if self.fold:
            self.folded = fold_upsampling(graph)
        cuts = five_d_gridsamples(graph)
        self._settle_lanes(bool(cuts) and self.gridsample_mode == "staged")
        self.gridsample = None if not cuts else self.gridsample_mode
        if cuts and self.gridsample_mode == "rewrite":
            rewrite_gridsample(graph)
        head = None if cuts or not self.native or self.target != "CPU" else native_head.fuse(graph)
        if cuts and self.gridsample_mode == "staged":
            self.staged = self._staged(graph, {graph.graph.node[i].output[0] for i in cuts})
        elif head is not None:  # the network, then its last layer here
            self.staged = self._staged(graph, set(), {native_head: head})
        else:
            self.network = self._read(graph.SerializeToString())
        self._model(self.fixed_batch or 1)  # compile now: a graph OpenVINO cannot take fails here
        if plan_key and self.staged is not None:
            self._save_plan(plan_key)

    # -- a staged graph's plan, kept between processes (backends.staged_plan) -------------------
    def _plan_key(self, model: ModelSource) -> str | None:
        if not self.cache_dir or self.gridsample_mode != "staged" or self.fixed_batch is not None:
            return None
        return staged_plan.plan_key(_sha256(model), self.grid,
                                    {"native": self.native, "fold": self.fold})

    def _load_plan(self, key: str) -> bool:
        plan = staged_plan.load(self.cache_dir, key, self.threads)
        if plan is None:
            return False
        parts, shapes, self.fused, self.folded = plan
        samples = any(isinstance(p, Sample) for p in parts)  # else staged for its head alone
        self._settle_lanes(staged=samples)
        self.staged = StagedGraph(parts, self._compile_stage, self.threads)
        self.staged.precompile(shapes)  # a graph OpenVINO cannot take fails here
        self.gridsample, self.plan = ("staged" if samples else None), "cached"
        self._models[1] = self.staged
        return True

    def _save_plan(self, key: str) -> None:
        parts = self.staged.parts  # type: ignore[union-attr]
        natives = {i: (p.op, self._specs[p.op]) for i, p in enumerate(parts)
                   if isinstance(p, Native)}
        try:
            staged_plan.save(self.cache_dir, key, parts, natives, self.staged.stage_shapes(),  # type: ignore[union-attr]
                             self.fused, self.folded)
            self.plan = "saved"
        except OSError:  # a full or read-only cache: the next process cuts the graph again
            pass

    def _staged(self, graph: Any, samplers: set[str], known: dict[Any, Any] | None = None
                ) -> StagedGraph:
        """The graph in stages; with ``native`` (default) the regions regrisk runs natively (the
        default network's normalisation and demons, ``backends.native_normalize`` and
        ``native_demons``) are one part each instead of ~100 backend nodes, field resizes
        (``native_resize``) run by regrisk's upsampling kernel and a last 3x3x3 convolution to
        the field (``native_head``, on CPUs) by its convolution kernel. ``samplers``: the
        outputs of the 5-D GridSample nodes, where the graph is cut; ``known``: modules' fuse
        results on ``graph`` already computed (used while no earlier module changed it)."""
        known = dict(known or {})
        natives = {}
        modules = (native_normalize, native_demons, native_resize)
        if self.target == "CPU":
            modules += (native_head,)
        for module in modules if self.native else ():
            fused = known.pop(module) if module in known else module.fuse(graph)
            if fused is not None:
                graph, spec = fused
                known.clear()  # found on the graph before this change
                natives[module.OP] = module.runner(spec, self.threads)
                self._specs[module.OP] = spec
                self.fused.append(module.OP)
        # the 5-D GridSamples by what they make (the surgery keeps them; no second inference)
        cuts = [i for i, n in enumerate(graph.graph.node)
                if n.op_type in natives or (n.output and n.output[0] in samplers)]
        return StagedGraph(split(graph, cuts, natives), self._compile_stage, self.threads)

    def _precision(self, model: ModelSource) -> str:
        """The requested precision; for "auto", bf16 for a graph in BF16_MEASURED on a device
        that computes bf16 natively, else f32."""
        if self.requested != "auto":
            return self.requested
        if "BF16" not in self.core.get_property(self.target, "OPTIMIZATION_CAPABILITIES"):
            return "f32"
        return "bf16" if _sha256(model) in BF16_MEASURED else "f32"

    def _lanes(self, option: Any) -> int | None:
        """Images run concurrently, each on threads / lanes cores; None for "auto", which
        :func:`auto_lanes` settles once the graph is known to be staged or whole. A fixed-batch
        graph and other devices: one."""
        if self.fixed_batch is not None or self.target != "CPU":
            return 1
        if option == "auto":
            return None
        if isinstance(option, bool) or not isinstance(option, int) or not 1 <= option <= self.threads:
            raise ModelError(f"openvino: lanes {option!r}; use 'auto' or 1-{self.threads} "
                             f"(at most the thread count)")
        return option

    def _settle_lanes(self, staged: bool) -> None:
        if self.lanes is None:
            self.lanes = auto_lanes(self.threads, staged)

    # -- compilation ----------------------------------------------------------------------------
    def _config(self, precision: str | None = None) -> dict[str, Any]:
        # lanes: OpenVINO's throughput mode, one stream (threads / lanes cores) per lane
        lanes = self.lanes or 1
        hint = "THROUGHPUT" if lanes > 1 else "LATENCY"
        return {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": hint,
                "NUM_STREAMS": lanes, "INFERENCE_PRECISION_HINT": precision or self.precision}

    def _read(self, data: bytes) -> Any:
        try:
            return self.core.read_model(data)
        except Exception as exc:  # OpenVINO raises RuntimeError with a long report
            raise ModelError(f"{self.label}: OpenVINO cannot read the graph "
                             f"({_reason(exc)})") from None

    def _compile(self, network: Any, shapes: Mapping[str, tuple[int, ...]]) -> _Compiled:
        try:
            network.reshape({n: list(s) for n, s in shapes.items()})
            return _Compiled(self.core.compile_model(network, self.target, self._config()),
                             [self.output_name])
        except Exception as exc:
            raise ModelError(f"{self.label}: OpenVINO cannot compile the graph for "
                             f"{dict(shapes)} ({_reason(exc)})") from None

    def _compile_stage(self, graph: Any) -> _Compiled:
        """A stage of a staged graph; its inputs already declare their shapes. A reduced
        precision only for stages with a dense convolution: the others (Gaussian smoothing with
        one-channel kernels, resizing, elementwise arithmetic) ran 2-3x slower in bf16 than in
        f32 on an AMX CPU, the U-Net stage 2.4x faster."""
        network = self._read(graph.SerializeToString())
        precision = self.precision if _dense_conv(graph) else "f32"
        try:
            return _Compiled(self.core.compile_model(network, self.target, self._config(precision)),
                             [o.name for o in graph.graph.output])
        except Exception as exc:
            raise ModelError(f"{self.label}: OpenVINO cannot compile a stage of the graph "
                             f"({_reason(exc)})") from None

    def _model(self, batch: int) -> Any:
        """The compiled model (or staged graph) for ``batch``, compiled at its first use."""
        if batch not in self._models:
            if self.staged is not None:
                if not self._models:  # at construction: compile every stage now, so that a
                    zeros = {n: np.zeros((batch, self.channels[n], *self.grid), np.float32)
                             for n in self.input_names}  # graph OpenVINO cannot take fails here
                    self.staged.run(zeros, [self.output_name])
                self._models[batch] = self.staged  # later batches compile at their first run
            else:
                shapes = {n: (batch, self.channels[n], *self.grid) for n in self.input_names}
                self._models[batch] = self._compile(self.network, shapes)
        return self._models[batch]

    # -- running --------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Array]) -> Array:
        check_feeds(self.name, self.input_names, feeds)
        feeds = {n: np.ascontiguousarray(feeds[n], dtype=np.float32) for n in self.input_names}
        batch = int(feeds[self.input_names[0]].shape[0])
        if self.fixed_batch is None and (self.staged is not None or self.lanes > 1):
            # one image at a time (one compilation serves every batch), lanes concurrently
            images = [{n: a[b:b + 1] for n, a in feeds.items()} for b in range(batch)]
            if batch > 1 and self.lanes > 1:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="regrisk-lane")
                out = list(self._pool.map(self._image, images, [self.threads // self.lanes] * batch))
            else:
                out = [self._image(image, None) for image in images]
            return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)
        model = self._model(batch)
        out = (self.staged.run(feeds, [self.output_name]) if model is self.staged
               else model(feeds))[self.output_name]
        return np.ascontiguousarray(out, dtype=np.float32)

    def _image(self, feeds: Mapping[str, Array], threads: int | None) -> Array:
        """One image's output; ``threads``: the native parts' team (None: all the threads)."""
        model = self._model(1)
        if model is self.staged:
            return self.staged.run(feeds, [self.output_name], threads)[self.output_name]
        return model(feeds)[self.output_name]

    def describe(self) -> dict[str, Any]:
        import openvino as ov

        info: dict[str, Any] = {
            "backend": self.name, "device": self.device, "openvino_device": self.target,
            "precision": self.precision, "threads": self.threads, "lanes": self.lanes,
            "openvino": ov.get_version().split("-")[0], "fixed_batch": self.fixed_batch,
            "cache_dir": self.cache_dir or None,
            "compiled_batches": sorted(self._models)}
        pool = list(self._models.values()) + list(self.staged.compiled if self.staged else [])
        runs_at = sorted({m.precision for m in pool if isinstance(m, _Compiled)})
        if runs_at:  # e.g. "bf16+f32": a staged graph's network stages and the others
            info["runs_at"] = "+".join(runs_at)
        info["precision_requested"] = self.requested
        info["folded_upsamplings"] = self.folded
        if self.gridsample is not None:
            info["gridsample"] = self.gridsample
        if self.staged is not None:
            info.update(self.staged.counts)
            info["native_parts"] = list(self.fused)
            info["plan"] = self.plan
        return info

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._models.clear()
        self.staged = None


def auto_lanes(threads: int, staged: bool) -> int:
    """Lanes for "auto": two for a staged graph at an even thread count, else one. Measured on
    2 cores with steal under 1% (benchmarks/RESULTS.md): two lanes ran the staged default model
    1.16-1.27x faster end to end, the whole benchmark U-Net 4-7% slower (OpenVINO's own two
    threads already keep both cores busy in its convolutions)."""
    return 2 if staged and threads >= 2 and threads % 2 == 0 else 1


def compile_cache(option: Any) -> str:
    """The compiled-model cache folder ('' for none): ``option`` if given ('' or False: none),
    else the user's cache folder, made if missing; '' when it cannot be made."""
    if option is not None and not option:
        return ""
    if option:
        folder = Path(option)
    else:
        root = os.environ.get("REGRISK_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "regrisk")
        folder = Path(root) / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: compile every time rather than fail
        return ""
    return str(folder) if os.access(folder, os.W_OK) else ""


def _sha256(model: ModelSource) -> str:
    import hashlib

    from ..cohort.fingerprints import file_sha256  # cached per file in this process

    src = model.onnx_bytes_or_path()
    return hashlib.sha256(src).hexdigest() if isinstance(src, bytes) else file_sha256(src)


def _dense_conv(graph: Any) -> bool:
    """Whether the graph holds a Conv with more than one input channel per group (its weight,
    an initializer, shaped (out, in / group, *kernel))."""
    shapes = {t.name: tuple(t.dims) for t in graph.graph.initializer}
    return any(n.op_type == "Conv" and len(n.input) > 1
               and shapes.get(n.input[1], (0, 0))[1] > 1 for n in graph.graph.node)


def _reason(exc: BaseException) -> str:
    """OpenVINO's reports run to many lines; the line naming the failure is enough."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if ln.startswith("--") or "failed" in ln.lower()]
    return first_line(RuntimeError((useful or lines or [type(exc).__name__])[-1]), limit=200)
