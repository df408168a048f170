"""``regrisk card``: write, edit or show the model card of an existing ONNX file.

Starts from the model's current card (sidecar or metadata) when it has one, otherwise from what
the graph itself says (input/output names, grid and batch axis from static shapes); every card
field can then be set by a flag. The result is validated and checked against the graph before
anything is written (metadata rewritten atomically, or a sidecar with --sidecar).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import CardError
from .options import parse_bool


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "card", help="write, edit or show the model card of an ONNX file",
        description="Write or edit the card (conventions) of an ONNX registration network. "
        "Unset fields keep the current card's values, or what the graph implies.")
    p.add_argument("model", help="ONNX file")
    p.add_argument("--show", action="store_true", help="print the resulting card; write nothing")
    p.add_argument("--sidecar", action="store_true", help="write <model>.card.json instead of metadata")
    p.add_argument("--from-json", dest="from_json", help="start from this card JSON file")
    p.add_argument("--name")
    p.add_argument("--grid", type=int, nargs=3, metavar=("D", "H", "W"))
    p.add_argument("--layout", choices=("pair", "concat"))
    p.add_argument("--source-input", help="graph input name of the source (pair layout)")
    p.add_argument("--target-input", help="graph input name of the target (pair layout)")
    p.add_argument("--concat-input", help="graph input name (concat layout)")
    p.add_argument("--order", choices=("source,target", "target,source"),
                   help="channel order of a concatenated input")
    p.add_argument("--output", help="graph output name")
    p.add_argument("--kind", choices=("displacement", "map", "velocity"))
    p.add_argument("--units", choices=("voxel", "unit", "normalized"))
    p.add_argument("--align-corners", type=parse_bool, metavar="BOOL")
    p.add_argument("--channel-order", choices=("ijk", "xyz"))
    p.add_argument("--channel-axis", choices=("first", "last"))
    p.add_argument("--steps", type=int, help="scaling-and-squaring steps (velocity)")
    p.add_argument("--padding", choices=("zeros", "border"),
                   help="how velocity integration samples outside the grid")
    p.add_argument("--batch", choices=("dynamic", "fixed"))
    p.add_argument("--batch-size", type=int)
    p.add_argument("--preprocess", choices=("none", "minmax", "percentile"))
    p.add_argument("--low", type=float, help="low percentile (percentile preprocessing)")
    p.add_argument("--high", type=float, help="high percentile (percentile preprocessing)")
    p.add_argument("--resample", choices=("stretch", "reslice"))
    p.add_argument("--spacing", type=float, nargs=3, metavar=("SD", "SH", "SW"),
                   help="reslice spacing in mm")
    p.add_argument("--stochastic", type=parse_bool, metavar="BOOL")
    p.add_argument("--description")
    p.add_argument("--provenance", action="append", metavar="KEY=VALUE", default=[],
                   help="add or replace one provenance entry (repeatable; empty VALUE removes it)")
    p.set_defaults(func=run)


def infer_card_dict(model: Any, name: str) -> dict[str, Any]:
    """A card skeleton from the graph: names, layout, grid, batch axis, output channel axis."""
    from ..model_loading import graph_io

    ins, outs, _ = graph_io(model)
    d: dict[str, Any] = {"name": name, "inputs": {}, "output": {}}
    names = list(ins)
    dims = next(iter(ins.values()), [])
    if len(names) == 1:
        d["inputs"] = {"layout": "concat", "concat": names[0]}
    elif len(names) == 2:
        def pick(words: tuple[str, ...]) -> str | None:
            return next((n for n in names if any(w in n.lower() for w in words)), None)

        src = pick(("source", "moving", "mov", "src")) or names[0]
        tgt = pick(("target", "fixed", "fix", "tgt")) or next(n for n in names if n != src)
        d["inputs"] = {"layout": "pair", "source": src, "target": tgt}
    if len(dims) == 5 and all(isinstance(x, int) for x in dims[2:]):
        d["grid"] = list(dims[2:])
    if dims and isinstance(dims[0], int):
        d["batch"], d["batch_size"] = "fixed", int(dims[0])
    if outs:
        out_name, odims = next(iter(outs.items()))
        d["output"]["name"] = out_name
        if len(odims) == 5 and odims[1] != 3 and odims[4] == 3:
            d["output"]["channel_axis"] = "last"
    return d


def run(args: argparse.Namespace) -> int:
    from ..card import ModelCard, write_card
    from ..model_loading import check_card, load_graph

    path = Path(args.model)
    if not path.is_file():
        raise CardError(f"model {path}: no such file")
    graph = load_graph(path)
    base = _starting_card(args, path, graph)
    _apply_flags(base, args)
    _apply_provenance(base, args.provenance)
    if args.batch == "dynamic" and args.batch_size is None:
        base["batch_size"] = 1
    if "grid" not in base:
        raise CardError(f"model {path}: the graph has no static spatial shape; pass --grid D H W")
    card = ModelCard.from_dict(base)
    check_card(card, graph, str(path))
    if args.show:
        print(card.to_json())
        return 0
    written = write_card(path, card, sidecar=args.sidecar)
    print(f"regrisk card: wrote the card of {path} to {written}")
    return 0


def _starting_card(args: argparse.Namespace, path: Path, graph: Any) -> dict[str, Any]:
    """The card dict the flags edit: --from-json, else the model's card, else the graph's."""
    import json

    from ..card import read_card

    if args.from_json:
        try:
            base = json.loads(Path(args.from_json).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CardError(f"card {args.from_json}: cannot read ({type(exc).__name__})") from None
    else:
        try:
            base = read_card(path).to_dict()
        except CardError:
            base = infer_card_dict(graph, path.stem)
    if not isinstance(base, dict):
        raise CardError("model card: expected a JSON object")
    for part in ("inputs", "output", "preprocess", "resample"):
        if not isinstance(base.setdefault(part, {}), dict):
            raise CardError(f"model card: '{part}' must be an object")
    return base


def _flag_values(args: argparse.Namespace) -> dict[tuple[str, ...], Any]:
    """Card field path -> the value its flag was given (None when the flag is absent)."""
    return {
        ("name",): args.name, ("grid",): args.grid, ("inputs", "layout"): args.layout,
        ("inputs", "source"): args.source_input, ("inputs", "target"): args.target_input,
        ("inputs", "concat"): args.concat_input,
        ("inputs", "order"): args.order.split(",") if args.order else None,
        ("output", "name"): args.output, ("output", "kind"): args.kind,
        ("output", "units"): args.units, ("output", "align_corners"): args.align_corners,
        ("output", "channel_order"): args.channel_order,
        ("output", "channel_axis"): args.channel_axis, ("output", "steps"): args.steps,
        ("output", "padding"): args.padding,
        ("batch",): args.batch, ("batch_size",): args.batch_size,
        ("preprocess", "method"): args.preprocess, ("preprocess", "low"): args.low,
        ("preprocess", "high"): args.high, ("resample", "method"): args.resample,
        ("resample", "spacing"): args.spacing, ("stochastic",): args.stochastic,
        ("description",): args.description,
    }


def _apply_flags(base: dict[str, Any], args: argparse.Namespace) -> None:
    for keys, value in _flag_values(args).items():
        if value is None:
            continue
        node = base
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = list(value) if isinstance(value, (list, tuple)) else value


def _apply_provenance(base: dict[str, Any], items: list[str]) -> None:
    """KEY=VALUE adds or replaces one provenance entry; KEY= removes it."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CardError(f"--provenance {item!r}: expected KEY=VALUE")
        prov = base.setdefault("provenance", {})
        if value:
            prov[key.strip()] = value
        else:
            prov.pop(key.strip(), None)
