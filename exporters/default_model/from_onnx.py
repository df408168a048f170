"""The default network as a PyTorch module again, from the packaged ONNX file.

The trained checkpoint is not in the repository, but the export keeps every parameter as a
graph initializer under its state-dict name, and the card keeps the network's configuration
(``provenance.network_config``). That is enough to rebuild the eager network, for the benchmarks
(torch eager and the research script on the same weights) and for a re-export.
"""

from __future__ import annotations

import os
from typing import Any

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from default_model import network  # type: ignore[no-redef]
else:
    from . import network


def module_from_onnx(path: str | os.PathLike[str]) -> Any:
    """The eval-mode ``RegNet`` whose weights are the initializers of the ONNX file at
    ``path``; ValueError when the file lacks a parameter or its card lacks the configuration."""
    import onnx
    import torch
    from onnx import numpy_helper

    from regrisk.card import read_card

    config = read_card(path).provenance.get("network_config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the card has no provenance.network_config")
    net = network.build(config).eval()
    inits = {t.name: t for t in onnx.load(str(path)).graph.initializer}
    state = net.state_dict()
    missing = sorted(set(state) - set(inits))
    if missing:
        raise ValueError(f"{path}: no initializer for {', '.join(missing[:3])}")
    net.load_state_dict({k: torch.from_numpy(numpy_helper.to_array(inits[k]).copy())
                         for k in state})
    return net
