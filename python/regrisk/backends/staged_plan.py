"""A staged graph's plan kept between processes: the stages as ONNX files, the native parts'
specs and every stage's input shapes, in the compiled-model cache folder.

Cutting the default model into stages (finding its native regions, shape inference, the 5-D
GridSample analysis) and the pass over zeros that learns each stage's input shapes took 1.5-2 s
of every process's start-up; OpenVINO's own cache only covers the compilation that follows. A
plan is keyed by the ONNX file's sha256, the grid, the staging options and the source of the
modules that make plans, so a change to any of them makes a new plan rather than reading a stale
one. Plans are JSON and ONNX (no pickle); one that cannot be read is ignored and rebuilt.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import native_demons, native_head, native_normalize, native_resize
from .staged import Native, Sample, Stage

FORMAT = 2  # 2: the folded upsamplings' count
NATIVE_MODULES = {m.OP: m for m in (native_normalize, native_demons, native_resize, native_head)}


@functools.cache
def _code_hash() -> str:
    """The source of every module whose output a plan holds (read once per process)."""
    from . import gridsample, native_regions, openvino, staged, upsample_fold

    digest = hashlib.sha256()
    for module in (staged, gridsample, openvino, native_regions, native_normalize, native_demons,
                   native_resize, native_head, upsample_fold):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def plan_key(model_sha256: str, grid: tuple[int, ...], options: dict[str, Any]) -> str:
    text = json.dumps([FORMAT, model_sha256, list(grid), options, _code_hash()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def save(folder: str, key: str, parts: list[Any], natives: dict[int, tuple[str, Any]],
         shapes: dict[int, dict[str, tuple[int, ...]]], fused: list[str], folded: int = 0) -> None:
    """Writes the plan as ``folder/plan-<key>/`` (built aside, then renamed into place whole;
    a damaged plan of the same key is replaced).
    ``natives``: part index -> (op, spec); ``shapes``: stage index -> its inputs' shapes;
    ``folded``: upsamplings folded into convolutions (``backends.upsample_fold``)."""
    root = Path(folder)
    final = root / f"plan-{key}"
    tmp = Path(tempfile.mkdtemp(prefix=".plan-", dir=root))
    try:
        _write(tmp, parts, natives, shapes, fused, folded)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # one that load() could not read: replaced, not kept
        stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=root))
        os.replace(final, stale / "plan")
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:  # another process put the same plan in place first
        shutil.rmtree(tmp, ignore_errors=True)


def _write(tmp: Path, parts: list[Any], natives: dict[int, tuple[str, Any]],
           shapes: dict[int, dict[str, tuple[int, ...]]], fused: list[str], folded: int) -> None:
    entries = []
    for i, part in enumerate(parts):
        if isinstance(part, Stage):
            (tmp / f"stage{i}.onnx").write_bytes(part.graph.SerializeToString())
            entries.append({"kind": "stage", "inputs": part.inputs, "outputs": part.outputs,
                            "shapes": {n: list(s) for n, s in shapes.get(i, {}).items()}})
        elif isinstance(part, Sample):
            entries.append({"kind": "sample", **dataclasses.asdict(part)})
        else:
            op, spec = natives[i]
            value = dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else spec
            entries.append({"kind": "native", "inputs": part.inputs, "outputs": part.outputs,
                            "op": op, "spec": value})
    (tmp / "plan.json").write_text(json.dumps({"format": FORMAT, "parts": entries,
                                               "fused": fused, "folded": folded}))


def load(folder: str, key: str, threads: int | None
         ) -> tuple[list[Any], dict[int, dict[str, tuple[int, ...]]], list[str], int] | None:
    """(parts, stage shapes, fused ops, folded upsamplings) of a saved plan; None if there is none or it cannot be
    read."""
    import onnx

    final = Path(folder) / f"plan-{key}"
    try:
        plan = json.loads((final / "plan.json").read_text())
        if plan.get("format") != FORMAT:
            return None
        parts: list[Any] = []
        shapes: dict[int, dict[str, tuple[int, ...]]] = {}
        for i, e in enumerate(plan["parts"]):
            if e["kind"] == "stage":
                if set(e["shapes"]) != set(e["inputs"]):  # a stage the first run never reached
                    return None
                graph = onnx.load_from_string((final / f"stage{i}.onnx").read_bytes())
                parts.append(Stage(graph, tuple(e["inputs"]), tuple(e["outputs"])))
                shapes[i] = {n: tuple(s) for n, s in e["shapes"].items()}
            elif e["kind"] == "sample":
                parts.append(Sample(**{k: v for k, v in e.items() if k != "kind"}))
            else:
                module = NATIVE_MODULES[e["op"]]
                parts.append(Native(tuple(e["inputs"]), tuple(e["outputs"]),
                                    module.runner(_spec(module, e["spec"]), threads)))
        return parts, shapes, list(plan["fused"]), int(plan["folded"])
    except Exception:  # absent, partial, damaged (protobuf's DecodeError too): cut again
        return None


def _spec(module: Any, value: Any) -> Any:
    """A native part's spec from its JSON form (dataclass fields: lists back to tuples)."""
    kind = getattr(module, "SPEC", None)
    if kind is None:
        return value
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
