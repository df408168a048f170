"""Export the trained default network to ONNX: a deterministic graph and a stochastic one.

    python exporters/default_model/export.py [--checkpoint exporters/default_model/run/checkpoint.pt]
        [--out python/regrisk/models]

- ``default.onnx``: dropout off (eval mode); checked against PyTorch in ONNX Runtime
  (relative max error <= 1e-4 at batch 1 and 2).
- ``default_stochastic.onnx``: dropout sampled at every run. ``McDropout`` draws its mask with
  ``torch.rand_like``, which the exporter writes as RandomUniformLike nodes, so ONNX Runtime
  draws a new mask per run. Checked by (a) counting those nodes (one per dropout layer),
  (b) parity with PyTorch when every draw is pinned to the same value in both (the nodes'
  low = high), (c) two ONNX Runtime runs differ, while two runs of the deterministic graph are
  identical.
Each file carries its model card (``regrisk.card`` metadata). Both are written to a temporary
name and renamed only after every check passed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from default_model import network, templates  # type: ignore[no-redef]
else:
    from . import network, templates

HERE = Path(__file__).resolve().parent
DEFAULT_CKPT = HERE / "run" / "checkpoint.pt"
DEFAULT_OUT = HERE.parents[1] / "python" / "regrisk" / "models"
OPSET = 20  # the first opset with 5-D GridSample (the demons refinement warps)
TOLERANCE = 1e-4
PINNED_DRAW = 0.5  # >= dropout p: keeps every channel, scaled by 1 / (1 - p)


def make_card(stochastic: bool, provenance: dict):
    from regrisk.card import Inputs, ModelCard, Output, Preprocess, Resample

    sp = float(templates.SPACING)
    what = ("Dropout is sampled at every run (MC dropout): use it with perturbation 'none' for "
            "pure MC dropout, or nested with a perturbation preset."
            if stochastic else "Dropout off: deterministic.")
    return ModelCard(
        name="regrisk-default-stochastic" if stochastic else "regrisk-default",
        grid=tuple(templates.GRID),
        inputs=Inputs(layout="pair", source="source", target="target"),
        output=Output(name="displacement", kind="displacement", units="voxel",
                      align_corners=True, channel_order="ijk", channel_axis="first"),
        batch="dynamic",
        batch_size=1,
        preprocess=Preprocess(method="minmax", low=0.0, high=100.0),
        resample=Resample(method="reslice", spacing=(sp, sp, sp)),
        stochastic=stochastic,
        description=(
            "regrisk's default brain MRI registration network: unrolled demons on locally "
            "normalised images followed by a small VoxelMorph-style 3-D U-Net (residual field), "
            "trained end to end here on SynthMorph-style synthetic pairs for same-contrast, "
            "affinely pre-aligned brain images at 2 mm. Displacement in voxels of the target "
            "grid. " + what),
        provenance=provenance,
    )


def _export_graph(net: torch.nn.Module, path: Path) -> None:
    example = (torch.rand(2, 1, *templates.GRID), torch.rand(2, 1, *templates.GRID))
    axes = {"source": {0: "batch"}, "target": {0: "batch"}, "displacement": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(net, example, str(path), input_names=["source", "target"],
                          output_names=["displacement"], opset_version=OPSET,
                          dynamic_axes=axes, dynamo=False,
                          do_constant_folding=False)  # folding copies the identity grids per use


def _session(path_or_bytes, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


def check_deterministic(net: network.RegNet, path: Path) -> dict:
    sess = _session(str(path))
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for b in (1, 2):
        s, t = torch.rand(b, 1, *templates.GRID, generator=g), torch.rand(b, 1, *templates.GRID, generator=g)
        with torch.no_grad():
            ref = net(s, t).numpy()
        got = sess.run(None, {"source": s.numpy(), "target": t.numpy()})[0]
        worst = max(worst, _rel(got, ref))
        again = sess.run(None, {"source": s.numpy(), "target": t.numpy()})[0]
        if not np.array_equal(got, again):
            raise RuntimeError(f"{path.name}: two runs of the deterministic graph differ")
    if worst > TOLERANCE:
        raise RuntimeError(f"{path.name}: ONNX Runtime differs from PyTorch (rel {worst:.2e})")
    return {"rel_max_error": worst, "batch_sizes": [1, 2], "repeat_identical": True}


def check_stochastic(net: network.RegNet, path: Path) -> dict:
    import onnx

    model = onnx.load(str(path))
    rnd = [n for n in model.graph.node if n.op_type == "RandomUniformLike"]
    n_drop = sum(isinstance(m, network.McDropout) for m in net.modules())
    if len(rnd) != n_drop:
        raise RuntimeError(f"{path.name}: {len(rnd)} RandomUniformLike nodes, expected {n_drop}")
    # (b) parity with every draw pinned to PINNED_DRAW in both graphs
    for node in rnd:
        for attr in node.attribute:
            if attr.name in ("low", "high"):
                attr.f = PINNED_DRAW
        if not any(a.name == "low" for a in node.attribute):
            node.attribute.append(onnx.helper.make_attribute("low", PINNED_DRAW))
        if not any(a.name == "high" for a in node.attribute):
            node.attribute.append(onnx.helper.make_attribute("high", PINNED_DRAW))
    pinned = _session(model.SerializeToString())
    g = torch.Generator().manual_seed(1)
    s, t = torch.rand(1, 1, *templates.GRID, generator=g), torch.rand(1, 1, *templates.GRID, generator=g)
    feeds = {"source": s.numpy(), "target": t.numpy()}
    real_rand = torch.rand_like
    try:
        torch.rand_like = lambda x, **kw: torch.full_like(x, PINNED_DRAW)  # type: ignore[assignment]
        with torch.no_grad():
            ref = net(s, t).numpy()
    finally:
        torch.rand_like = real_rand  # type: ignore[assignment]
    rel = _rel(pinned.run(None, feeds)[0], ref)
    if rel > TOLERANCE:
        raise RuntimeError(f"{path.name}: pinned-draw parity failed (rel {rel:.2e})")
    # (c) the real graph samples: two runs differ
    sess = _session(str(path))
    a = sess.run(None, feeds)[0]
    b = sess.run(None, feeds)[0]
    spread = float(np.abs(a - b).mean())
    if not spread > 0:
        raise RuntimeError(f"{path.name}: two runs of the stochastic graph are identical")
    return {"random_nodes": len(rnd), "pinned_rel_max_error": rel, "two_runs_mean_abs_diff": spread}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    from regrisk.card import write_card

    ck = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    net = network.build(ck["config"])
    net.load_state_dict(ck["model"])
    net.eval()
    train = {
        "iterations": ck["iter"], "wall_s": round(ck["wall_s"], 1), "hardware": ck["hardware"],
        "seed": ck["args"]["seed"], "lr": ck["args"]["lr"], "smoothness_weight": ck["args"]["lam"],
        "training_grid": ck["args"].get("crop"), "last_validation": (ck["val"] or [None])[-1],
    }
    base = {
        "architecture": "local contrast normalisation, unrolled multi-level demons with learned "
                        "steps, then a VoxelMorph-style 3-D U-Net predicting a residual field "
                        "(half resolution, channel dropout)",
        "network_config": ck["config"],
        "training": train,
        "training_data": "SynthMorph-style synthetic pairs: random smooth label maps and tissue "
                         "maps of MNI152 2009a (nilearn) and Colin27 (Debian mricron-data)",
        "checkpoint_sha256": _sha(args.checkpoint),
        "script": "exporters/default_model/train.py, export.py",
        "versions": {"torch": torch.__version__},
        "opset": OPSET,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out, prefix=".export-") as tmp:
        det, sto = Path(tmp) / "default.onnx", Path(tmp) / "default_stochastic.onnx"
        net.set_stochastic(False)
        _export_graph(net, det)
        det_check = check_deterministic(net, det)
        net.set_stochastic(True)
        _export_graph(net, sto)
        sto_check = check_stochastic(net, sto)
        net.set_stochastic(False)
        write_card(det, make_card(False, base | {"checks": det_check}))
        write_card(sto, make_card(True, base | {"checks": sto_check}))
        for f in (det, sto):
            size = f.stat().st_size
            if size > 5 * 2 ** 20:
                raise RuntimeError(f"{f.name}: {size} bytes > 5 MiB")
        os.replace(det, args.out / det.name)
        os.replace(sto, args.out / sto.name)
    for name, check in (("default.onnx", det_check), ("default_stochastic.onnx", sto_check)):
        p = args.out / name
        print(f"wrote {p} ({p.stat().st_size / 1024:.0f} KiB): {json.dumps(check)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
