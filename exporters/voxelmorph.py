"""VoxelMorph (the ``voxelmorph`` PyPI package's PyTorch ``VxmPairwise``) to ONNX.

Two forms:
- ``monolithic``: the whole network, scaling-and-squaring included; the graph returns the
  displacement in voxels (channel c along array axis c), as ``VxmPairwise.forward`` does.
- ``staged``: the velocity head alone (U-Net + flow layer). The graph has no GridSample; the
  card says ``kind: velocity`` with the network's ``integration_steps``, and the engine integrates
  with regrisk's compose kernel (u = v / 2^N, then N times u <- u + u(x + u), zeros outside the
  grid, as VoxelMorph's ``integrate_vec``). TensorRT, which lacks 5-D grid sampling, takes this one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from regrisk.card import ModelCard, Output, Preprocess, Resample

from .common import (ExportError, ExportOptions, ExportResult, check_weight_source, export_module,
                     init_weights, pair_card, version_provenance)

GRID = (160, 192, 224)  # VoxelMorph's brain MRI grid (1 mm, affinely aligned)
FEATURES = (16, 16, 16, 16, 16)
STEPS = 5
FORMS = ("monolithic", "staged")


def build_network(features: Sequence[int] = FEATURES, steps: int = STEPS) -> Any:
    """``voxelmorph.nn.models.VxmPairwise`` for 3-D single-channel pairs."""
    try:
        import voxelmorph as vxm
    except ImportError as exc:
        raise ExportError(f"VoxelMorph export needs voxelmorph 0.3.4 ({exc}); see the README for "
                          "the install line") from None
    if not hasattr(vxm, "nn") or not hasattr(vxm.nn.models, "VxmPairwise"):
        raise ExportError("installed voxelmorph has no PyTorch VxmPairwise; install voxelmorph==0.3.4")
    return vxm.nn.models.VxmPairwise(ndim=3, source_channels=1, target_channels=1,
                                     nb_features=list(features), integration_steps=int(steps))


def _check_grid(grid: Sequence[int], features: Sequence[int]) -> tuple[int, int, int]:
    g = tuple(int(n) for n in grid)
    levels = len(features)  # neurite's BasicUNet pools once per feature level
    mult = 2 ** levels
    if len(g) != 3 or any(n < mult or n % mult for n in g):
        raise ExportError(f"VoxelMorph grid {list(g)}: each side must be a positive multiple of "
                          f"{mult} ({levels} pooling levels)")
    return g  # type: ignore[return-value]


def randomize(net: Any, seed: int, std: float = 3.0) -> None:
    """Random weights; VoxelMorph initialises the flow layer at std 1e-5 (near-zero fields), so
    it gets a wider init here to give parity and tests fields of a few voxels."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        conv = net.flow_layer.conv0
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * std)


def _wrapper_class() -> type:
    import torch

    class VxmGraph(torch.nn.Module):
        """(source, target) -> displacement (monolithic) or velocity (staged), (B, 3, D, H, W)."""

        def __init__(self, net: Any, form: str) -> None:
            super().__init__()
            self.net = net
            self.field = "displacement" if form == "monolithic" else "velocity"

        def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return self.net(source, target, return_field_type=self.field)

    return VxmGraph


def make_card(grid: Sequence[int], form: str, steps: int, resample: str = "stretch",
              spacing: Sequence[float] | None = None) -> ModelCard:
    if form == "monolithic":
        output = Output(name="displacement", kind="displacement", units="voxel",
                        channel_order="ijk", channel_axis="first")
        what = "displacement in voxels on the target grid (integration in the graph)"
    else:
        output = Output(name="velocity", kind="velocity", units="voxel", channel_order="ijk", padding="zeros",
                        channel_axis="first", steps=int(steps))
        what = (f"stationary velocity in voxels; the engine integrates it ({steps} squarings, "
                "zeros outside the grid)")
    return pair_card(
        f"voxelmorph-{form}", grid, output, Preprocess(method="minmax"),
        Resample(method=resample, spacing=tuple(float(s) for s in spacing) if spacing else None),
        f"VoxelMorph VxmPairwise (Balakrishnan et al. 2019) exported by regrisk, {form}: {what}.")


def export_voxelmorph(
    out: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    *,
    form: str = "monolithic",
    grid: Sequence[int] = GRID,
    features: Sequence[int] = FEATURES,
    steps: int = STEPS,
    resample: str = "stretch",
    spacing: Sequence[float] | None = None,
    checkpoint_key: str | None = None,
    **options: Any,
) -> ExportResult:
    """Export ``VxmPairwise`` (``weights``: a state-dict checkpoint, or ``random_init``);
    ``options`` are the fields of :class:`ExportOptions`."""
    import torch

    opts = ExportOptions.of(options)
    if form not in FORMS:
        raise ExportError(f"form {form!r}: expected one of {', '.join(FORMS)}")
    check_weight_source(weights, opts.random_init)
    if form == "monolithic" and opts.opset < 20:
        raise ExportError(f"opset {opts.opset}: the monolithic form has 5-D GridSample (opset 20+)")
    if form == "staged" and int(steps) < 1:
        raise ExportError("the staged form needs integration steps >= 1 (a velocity to integrate)")
    grid = _check_grid(grid, features)
    torch.manual_seed(opts.seed)
    net = build_network(features, steps)
    init_weights(net, weights, opts, randomize=randomize, checkpoint_key=checkpoint_key)
    wrapper = _wrapper_class()(net, form).eval()
    card = make_card(grid, form, steps, resample, spacing)
    prov = version_provenance("regrisk.exporters.voxelmorph", ["voxelmorph", "neurite"], weights,
                              opts, form=form, features=list(features), integration_steps=int(steps))
    return export_module(
        wrapper, out=out, card=card, input_names=card.inputs.names(), input_channels=(1, 1),
        options=opts, provenance=prov)
