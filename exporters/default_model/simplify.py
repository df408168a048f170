"""Simplify the packaged default graphs: fold the shape arithmetic that the tracing export
left in them, keep the network's computation as it is.

    python exporters/default_model/simplify.py [--models python/regrisk/models]

The export (``export.py``, dynamic batch, ``do_constant_folding=False`` so that identity grids
stay computations) leaves about 15,000 nodes, most of them shape bookkeeping around every
replicate ``Pad`` (Shape, ConstantOfShape, Concat, Reshape, Slice, Cast) that is the same at
every run. onnxscript's optimizer folds those (it keeps large tensors as computations, so the
identity grids are not stored), which shortens ONNX Runtime's session start and leaves
OpenVINO far fewer nodes to convert per stage. The trained checkpoint is not in the repository,
so this works on the exported graphs themselves.

Checks before a file is replaced (written beside it, then renamed):
- deterministic graph: ONNX Runtime outputs equal the original's within 1e-5 relative at batch
  1 and 2 on random inputs;
- stochastic graph: as many RandomUniformLike nodes as before (one per dropout layer), equal
  outputs within 1e-5 with every draw pinned to the same value in both, and two runs differ;
- both: at most 5 MiB, the model card kept (its provenance records the check: "simplified").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_MODELS = HERE.parents[1] / "python" / "regrisk" / "models"
TOLERANCE = 1e-5
PINNED_DRAW = 0.5
GRID = (80, 96, 80)


def simplify(model: Any) -> Any:
    """The graph with its constant shape arithmetic folded (metadata, card included, kept)."""
    import onnxscript.optimizer

    out = onnxscript.optimizer.optimize(model)
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    return out


def _session(model: Any) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _feeds(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.random((batch, 1, *GRID), dtype=np.float32) for n in ("source", "target")}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


def pinned(model: Any) -> Any:
    """A copy whose RandomUniformLike nodes all draw ``PINNED_DRAW``."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if node.op_type == "RandomUniformLike":
            kept = [a for a in node.attribute if a.name not in ("low", "high")]
            del node.attribute[:]
            node.attribute.extend(kept)
            node.attribute.extend([onnx.helper.make_attribute("low", PINNED_DRAW),
                                   onnx.helper.make_attribute("high", PINNED_DRAW)])
    return out


def check(original: Any, simple: Any) -> dict[str, Any]:
    """The checks of the module docstring; RuntimeError naming the first that fails."""
    randoms = [sum(n.op_type == "RandomUniformLike" for n in m.graph.node) for m in (original, simple)]
    if randoms[0] != randoms[1]:
        raise RuntimeError(f"RandomUniformLike nodes {randoms[0]} -> {randoms[1]}")
    a, b = (_session(pinned(original)), _session(pinned(simple))) if randoms[0] else \
        (_session(original), _session(simple))
    worst = 0.0
    for batch in (1, 2):
        feeds = _feeds(batch, seed=batch)
        worst = max(worst, _rel(b.run(None, feeds)[0], a.run(None, feeds)[0]))
    if worst > TOLERANCE:
        raise RuntimeError(f"outputs differ from the original graph's (rel {worst:.2e})")
    result: dict[str, Any] = {"rel_max_error": worst, "nodes": [len(original.graph.node),
                                                                len(simple.graph.node)]}
    if randoms[0]:
        sess, feeds = _session(simple), _feeds(1, seed=3)
        if np.array_equal(sess.run(None, feeds)[0], sess.run(None, feeds)[0]):
            raise RuntimeError("two runs of the simplified stochastic graph are identical")
        result["random_nodes"] = randoms[1]
    return result


def stamp(model: Any, result: dict[str, Any]) -> None:
    """Record the simplification and its check in the model card's provenance."""
    from regrisk.card import METADATA_KEY, ModelCard, embed_card

    card = ModelCard.from_json(next(p.value for p in model.metadata_props if p.key == METADATA_KEY))
    card.provenance["simplified"] = {
        "script": "exporters/default_model/simplify.py (onnxscript optimizer)",
        "checked_against": "the exported graph, ONNX Runtime, random inputs at batch 1 and 2",
        **{k: v for k, v in result.items() if k != "bytes"}}
    embed_card(model, card)


def simplify_file(path: Path) -> dict[str, Any]:
    import onnx

    original = onnx.load(str(path))
    simple = simplify(original)
    result = check(original, simple)
    stamp(simple, result)
    tmp = path.with_name(f".{path.name}.simplified")
    onnx.save(simple, str(tmp))
    size = tmp.stat().st_size
    if size > 5 * 2 ** 20:
        tmp.unlink()
        raise RuntimeError(f"{path.name}: {size} bytes > 5 MiB")
    os.replace(tmp, path)
    return result | {"bytes": size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    ap.add_argument("names", nargs="*", default=["default.onnx", "default_stochastic.onnx"])
    args = ap.parse_args(argv)
    for name in args.names:
        print(f"{name}: {simplify_file(args.models / name)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
