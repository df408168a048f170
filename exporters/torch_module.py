"""Any PyTorch registration module to ONNX: ``package.module:factory`` (or ``path/file.py:factory``)
builds the network, a state-dict checkpoint fills it, and the card's conventions come from the
caller (the network's code is the only place that knows them).

The factory is called with keyword arguments (``factory_kwargs``) and must return a
``torch.nn.Module`` whose forward takes ``(source, target)`` (layout ``pair``) or one tensor with
both images on channels (layout ``concat``), each ``(B, 1, D, H, W)``; ``output_index`` picks
one output when it returns a tuple (TransMorph returns ``(warped, flow)``: index 1).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from regrisk.card import ModelCard
from regrisk.errors import first_line

from .common import (ExportError, ExportOptions, ExportResult, check_weight_source, export_module,
                     init_weights, version_provenance)


def resolve_factory(spec: str) -> Any:
    """``package.module:factory`` or ``path/to/file.py:factory`` -> the callable."""
    if ":" not in spec:
        raise ExportError(f"--module {spec!r}: expected 'package.module:factory'")
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise ExportError(f"--module {spec!r}: expected 'package.module:factory'")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise ExportError(f"--module: {path} not found")
            name = f"_regrisk_user_{path.stem}"
            loader_spec = importlib.util.spec_from_file_location(name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ExportError(f"--module: cannot import {path}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            # The file's own folder first, so that sibling modules of a repository import.
            sys.path.insert(0, str(path.resolve().parent))
            try:
                loader_spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(path.resolve().parent))
        else:
            module = importlib.import_module(mod_name)
    except ExportError:
        raise
    except ImportError as exc:
        raise ExportError(f"--module {spec!r}: cannot import {mod_name} ({exc})") from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ExportError(f"--module {spec!r}: {mod_name} has no attribute {attr!r}")
    if not callable(factory):
        raise ExportError(f"--module {spec!r}: {attr!r} is not callable")
    return factory


def _wrapper_class(layout: str) -> type:
    import torch

    class _Graph(torch.nn.Module):
        def __init__(self, net: Any, output_index: int | None) -> None:
            super().__init__()
            self.net = net
            self.output_index = output_index

        def _pick(self, out: Any) -> torch.Tensor:
            if isinstance(out, (tuple, list)):
                if self.output_index is None:
                    raise ExportError(f"the module returns {len(out)} outputs; pick one with "
                                      "--output N")
                if not -len(out) <= self.output_index < len(out):
                    raise ExportError(f"--output {self.output_index}: the module returns "
                                      f"{len(out)} outputs")
                out = out[self.output_index]
            if not isinstance(out, torch.Tensor):
                raise ExportError(f"the module returns {type(out).__name__}, not a tensor; "
                                  "wrap it to return the field")
            return out

    class PairGraph(_Graph):
        """(source, target) -> the picked output."""

        def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return self._pick(self.net(source, target))

    class ConcatGraph(_Graph):
        """(B, 2, D, H, W) -> the picked output."""

        def forward(self, pair: torch.Tensor) -> torch.Tensor:
            return self._pick(self.net(pair))

    return PairGraph if layout == "pair" else ConcatGraph


def export_torch_module(
    out: str | os.PathLike[str],
    module: str,
    card: ModelCard,
    weights: str | os.PathLike[str] | None = None,
    *,
    factory_kwargs: Mapping[str, Any] | None = None,
    output_index: int | None = None,
    checkpoint_key: str | None = None,
    strip_prefix: str = "",
    **options: Any,
) -> ExportResult:
    """Export the module built by ``module`` (``package.module:factory``) with ``card``;
    ``options`` are the fields of :class:`ExportOptions`."""
    opts = ExportOptions.of(options)
    check_weight_source(weights, opts.random_init)
    if card.stochastic:
        raise ExportError("a stochastic card cannot be parity-checked; export the deterministic "
                          "network and mark the card with 'regrisk card'")
    net = _build(module, factory_kwargs, opts.seed)
    init_weights(net, weights, opts, checkpoint_key=checkpoint_key, strip_prefix=strip_prefix)
    wrapper = _wrapper_class(card.inputs.layout)(net, output_index).eval()
    top = module.rpartition(":")[0].split(".")[0]
    prov = version_provenance("regrisk.exporters.torch_module", [top] if top else [], weights,
                              opts, module=module, factory_kwargs=dict(factory_kwargs or {}),
                              output_index=output_index)
    return export_module(
        wrapper, out=out, card=card, input_names=card.inputs.names(),
        input_channels=(card.inputs.channels,) * len(card.inputs.names()), options=opts,
        provenance=prov)


def _build(module: str, factory_kwargs: Mapping[str, Any] | None, seed: int) -> Any:
    """The factory's network, built under ``seed``; ExportError when it fails or is no module."""
    import torch

    factory = resolve_factory(module)
    torch.manual_seed(seed)
    try:
        net = factory(**dict(factory_kwargs or {}))
    except Exception as exc:
        raise ExportError(f"--module {module!r}: the factory failed "
                          f"({first_line(exc, typed=True)})") from None
    if not isinstance(net, torch.nn.Module):
        raise ExportError(f"--module {module!r}: the factory returned {type(net).__name__}, "
                          "not a torch.nn.Module")
    return net
