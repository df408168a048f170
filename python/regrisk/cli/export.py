"""``regrisk export``: PyTorch registration networks to ONNX with a model card and a parity check
(``unigradicon``, ``voxelmorph``, ``torch`` for any module), and ONNX to TensorRT (``trt``).

Every ONNX export checks the graph (onnx.checker), loads it in ONNX Runtime and compares it with
the PyTorch module on random inputs; over the tolerance it fails and writes nothing.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .options import parse_bool


def _common(p: argparse.ArgumentParser, grid_default: tuple[int, int, int] | None) -> None:
    p.add_argument("--out", required=True, help="output .onnx file")
    w = p.add_mutually_exclusive_group(required=True)
    w.add_argument("--weights", help="PyTorch checkpoint (loaded with weights_only=True)")
    w.add_argument("--random-init", action="store_true",
                   help="random weights (tests; trying the pipeline before weights arrive)")
    if grid_default is None:
        p.add_argument("--shape", "--grid", dest="grid", type=int, nargs=3, required=True,
                       metavar=("D", "H", "W"), help="model grid")
    else:
        p.add_argument("--grid", type=int, nargs=3, default=list(grid_default),
                       metavar=("D", "H", "W"), help=f"model grid (default {grid_default})")
    p.add_argument("--seed", type=int, default=0, help="random-init and parity-input seed")
    p.add_argument("--opset", type=int, default=20, help="ONNX opset (>= 20 for 5-D GridSample)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="parity: max relative error vs PyTorch (default 1e-4)")
    p.add_argument("--parity-batch", type=int, nargs="+", default=[1, 2], metavar="B",
                   help="batch sizes of the parity check (default 1 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export a PyTorch registration network to ONNX (or ONNX to TensorRT)",
        description="Export a registration network with its model card; the result is checked "
        "against PyTorch in ONNX Runtime before it is written.")
    sub = p.add_subparsers(dest="exporter", metavar="EXPORTER", required=True)
    _add_unigradicon(sub)
    _add_voxelmorph(sub)
    _add_torch(sub)
    _add_trt(sub)


def _add_unigradicon(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("unigradicon", help="uniGradICON (unigradicon / icon_registration packages)",
                       description="uniGradICON: absolute map on the target grid in [0, 1].")
    _common(u, (175, 175, 175))
    u.add_argument("--modality", choices=("mri", "ct"), default="mri",
                   help="intensity preprocessing: mri (min..99th percentile, in the card) or ct "
                   "(HU window -1000..1000, in the graph)")
    u.set_defaults(func=_unigradicon)


def _add_voxelmorph(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("voxelmorph", help="VoxelMorph VxmPairwise (voxelmorph 0.3.4, PyTorch)",
                       description="VoxelMorph: monolithic (displacement) or staged (velocity "
                       "head alone; integration by regrisk's compose kernel).")
    _common(v, (160, 192, 224))
    v.add_argument("--form", choices=("monolithic", "staged"), default="monolithic")
    v.add_argument("--features", type=int, nargs="+", default=[16, 16, 16, 16, 16],
                   help="U-Net features per level (VxmPairwise nb_features)")
    v.add_argument("--int-steps", type=int, default=5, help="integration steps (default 5)")
    v.add_argument("--checkpoint-key", help="entry of the checkpoint holding the state dict")
    v.add_argument("--resample", choices=("stretch", "reslice"), default="stretch")
    v.add_argument("--spacing", type=float, nargs=3, metavar=("SD", "SH", "SW"),
                   help="reslice spacing in mm")
    v.set_defaults(func=_voxelmorph)


def _add_torch(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("torch", help="any PyTorch module: --module package.module:factory",
                       description="Any PyTorch registration module; the card's conventions "
                       "are given as options.")
    _common(t, None)
    t.add_argument("--module", required=True,
                   help="package.module:factory or path/file.py:factory returning an nn.Module")
    t.add_argument("--kwargs", default="{}", help="factory keyword arguments as JSON")
    t.add_argument("--output", type=int, dest="output_index", metavar="N",
                   help="index of the output to export when the module returns a tuple")
    t.add_argument("--checkpoint-key", help="entry of the checkpoint holding the state dict")
    t.add_argument("--strip-prefix", default="", help="prefix to drop from state-dict keys")
    t.add_argument("--name", default="torch-module")
    _add_card_options(t)
    t.set_defaults(func=_torch)


def _add_card_options(t: argparse.ArgumentParser) -> None:
    """The card of an arbitrary module: its conventions, as the user states them."""
    t.add_argument("--layout", choices=("pair", "concat"), default="pair")
    t.add_argument("--order", choices=("source,target", "target,source"), default="source,target",
                   help="channel order of a concatenated input")
    t.add_argument("--kind", choices=("displacement", "map", "velocity"), default="displacement")
    t.add_argument("--units", choices=("voxel", "unit", "normalized"), default="voxel")
    t.add_argument("--align-corners", type=parse_bool, default=True, metavar="BOOL")
    t.add_argument("--channel-order", choices=("ijk", "xyz"), default="ijk")
    t.add_argument("--channel-axis", choices=("first", "last"), default="first")
    t.add_argument("--steps", type=int, default=7, help="scaling-and-squaring steps (velocity)")
    t.add_argument("--batch", choices=("dynamic", "fixed"), default="dynamic")
    t.add_argument("--batch-size", type=int, default=1, help="batch of a fixed-batch graph")
    t.add_argument("--preprocess", choices=("none", "minmax", "percentile"), default="minmax")
    t.add_argument("--low", type=float, default=0.0)
    t.add_argument("--high", type=float, default=100.0)
    t.add_argument("--resample", choices=("stretch", "reslice"), default="stretch")
    t.add_argument("--spacing", type=float, nargs=3, metavar=("SD", "SH", "SW"))
    t.add_argument("--description", default="")


def _add_trt(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("trt", help="TensorRT engine from an exported ONNX graph",
                       description="Build a TensorRT engine (tensorrt Python API) with a batch "
                       "optimisation profile; the card goes beside it as <engine>.card.json.")
    r.add_argument("--onnx", required=True, help="exported ONNX graph (with its card)")
    r.add_argument("--out", required=True, help="output engine file")
    r.add_argument("--fp16", action="store_true", help="allow FP16 kernels")
    r.add_argument("--batch", help="batch profile MIN:OPT:MAX (default 1:card:8)")
    r.add_argument("--workspace", type=float, default=4.0, help="workspace GiB (default 4)")
    r.add_argument("--overwrite", action="store_true")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_trt)


def _unigradicon(args: argparse.Namespace) -> int:
    from ..exporters.unigradicon import export_unigradicon

    export_unigradicon(args.out, args.weights, grid=args.grid, modality=args.modality,
                       random_init=args.random_init, seed=args.seed, opset=args.opset,
                       tolerance=args.tolerance, batch_sizes=args.parity_batch,
                       overwrite=args.overwrite, verbose=not args.quiet)
    return 0


def _voxelmorph(args: argparse.Namespace) -> int:
    from ..exporters.voxelmorph import export_voxelmorph

    export_voxelmorph(args.out, args.weights, form=args.form, grid=args.grid,
                      features=args.features, steps=args.int_steps, resample=args.resample,
                      spacing=args.spacing, checkpoint_key=args.checkpoint_key,
                      random_init=args.random_init, seed=args.seed, opset=args.opset,
                      tolerance=args.tolerance, batch_sizes=args.parity_batch,
                      overwrite=args.overwrite, verbose=not args.quiet)
    return 0


def _torch(args: argparse.Namespace) -> int:
    from ..card import Inputs, ModelCard, Output, Preprocess, Resample
    from ..exporters.common import ExportError
    from ..exporters.torch_module import export_torch_module

    try:
        kwargs: Any = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise ExportError(f"--kwargs: not valid JSON ({exc.msg})") from None
    if not isinstance(kwargs, dict):
        raise ExportError("--kwargs: expected a JSON object")
    card = ModelCard(
        name=args.name, grid=tuple(args.grid),
        inputs=Inputs(layout=args.layout, order=tuple(args.order.split(","))),  # type: ignore[arg-type]
        output=Output(name="displacement" if args.kind != "map" else "map", kind=args.kind,
                      units=args.units, align_corners=args.align_corners,
                      channel_order=args.channel_order, channel_axis=args.channel_axis,
                      steps=args.steps),
        batch=args.batch, batch_size=args.batch_size,
        preprocess=Preprocess(method=args.preprocess, low=args.low, high=args.high),
        resample=Resample(method=args.resample,
                          spacing=tuple(args.spacing) if args.spacing else None),
        description=args.description or f"PyTorch module {args.module} exported by regrisk",
    )
    if args.kind == "velocity":
        card.output.name = "velocity"
    export_torch_module(args.out, args.module, card, args.weights, factory_kwargs=kwargs,
                        output_index=args.output_index, checkpoint_key=args.checkpoint_key,
                        strip_prefix=args.strip_prefix, random_init=args.random_init,
                        seed=args.seed, opset=args.opset, tolerance=args.tolerance,
                        batch_sizes=args.parity_batch, overwrite=args.overwrite,
                        verbose=not args.quiet)
    return 0


def _trt(args: argparse.Namespace) -> int:
    from ..exporters.tensorrt import build_engine

    build_engine(args.onnx, args.out, fp16=args.fp16, batch=args.batch,
                 workspace_gib=args.workspace, overwrite=args.overwrite, verbose=not args.quiet)
    return 0

