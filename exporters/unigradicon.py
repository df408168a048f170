"""uniGradICON to ONNX: the network returns the absolute map phi on the target grid, in unit
coordinates ([0, 1] per axis, align-corners, channel c along array axis c).

The network is built by the ``unigradicon`` package (``make_network``, the same recipe as its
``get_unigradicon``). That package imports ``itk`` at import time (hundreds of MB, used only for
its file I/O), so when ``itk`` is absent the same four-stage network is assembled from
``icon_registration``'s own modules (``FunctionFromVectorField``, ``TwoStepRegistration``,
``DownsampleRegistration``, ``networks.tallUNet2``) exactly as ``unigradicon.make_network`` does;
the checkpoint ``Step_2_final.trch`` loads into either with ``strict=True``.

Two rewrites make the graph small and fast, and the parity check compares the exported graph
with the untouched network, so both are covered:
- identity grids (registered buffers, one per resolution level: 3 x 175^3 floats each) are
  computed in the graph from separable ``arange`` vectors instead of being stored as constants;
- icon_registration's warp (``mermaidlite.compute_warped_image_multiNC``) fills a zeros tensor
  channel by channel before ``grid_sample``, which exports as ScatterElements over whole fields;
  while tracing, it is replaced by the same arithmetic written as one Concat + Transpose.

The graph keeps its 11 5-D GridSamples (the cascade's warps and map compositions). ONNX Runtime
runs it whole; OpenVINO, which has no 5-D GridSample, runs it staged: the U-Nets and the map
arithmetic between warps as OpenVINO stages, every GridSample by regrisk's warp kernel
(``regrisk.backends.staged``; tests/test_export_unigradicon.py checks it against the eager
network).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

from regrisk.card import ModelCard, Output, Preprocess, Resample

from .common import (ExportError, ExportOptions, ExportResult, check_weight_source, export_module,
                     init_weights, pair_card, version_provenance)

GRID = (175, 175, 175)
# Two DownsampleRegistration levels, then tallUNet2's five stride-2 stages with ceil-mode pooling:
# every side must be at least 65 voxels.
MIN_SIDE = 65
CT_WINDOW = (-1000.0, 1000.0)  # unigradicon.preprocess: CT is clamped to this HU window


def build_network(grid: Sequence[int] = GRID) -> Any:
    """uniGradICON's registration network (``regis_net``) with identity maps for ``grid``."""
    grid = _check_grid(grid)
    try:
        import unigradicon  # needs itk at import time
    except ImportError:
        return _assemble_from_icon_registration(grid)
    net = unigradicon.make_network([1, 1, *grid], include_last_step=True)
    return net.regis_net


def _assemble_from_icon_registration(grid: tuple[int, int, int]) -> Any:
    try:
        import icon_registration as icon
        from icon_registration import networks
    except ImportError as exc:
        raise ExportError(f"uniGradICON export needs icon_registration ({exc}); install it with "
                          "'pip install --no-deps icon_registration unigradicon'") from None
    inner = icon.FunctionFromVectorField(networks.tallUNet2(dimension=3))
    for _ in range(2):
        inner = icon.TwoStepRegistration(
            icon.DownsampleRegistration(inner, dimension=3),
            icon.FunctionFromVectorField(networks.tallUNet2(dimension=3)))
    inner = icon.TwoStepRegistration(inner, icon.FunctionFromVectorField(networks.tallUNet2(dimension=3)))
    inner.assign_identity_map([1, 1, *grid])
    return inner


def _check_grid(grid: Sequence[int]) -> tuple[int, int, int]:
    g = tuple(int(n) for n in grid)
    if len(g) != 3 or min(g) < MIN_SIDE:
        raise ExportError(f"uniGradICON grid {list(g)}: needs three sides of at least {MIN_SIDE} "
                          "voxels (two half-resolution levels feed a five-stage U-Net)")
    return g  # type: ignore[return-value]


def randomize(net: Any, seed: int, scale: float = 1e-2) -> None:
    """Random weights. Every U-Net's last convolution is zero-initialised by icon_registration
    (the identity map); it gets small random weights so that the maps are non-trivial."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("lastConv.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


def _wrapper_class() -> type:
    import torch

    class UniGradICONMap(torch.nn.Module):
        """(source, target) (B, 1, D, H, W) -> phi (B, 3, D, H, W) in unit coordinates, with
        ``source o phi ~= target``. ``window`` (CT) clamps and rescales intensities in-graph."""

        def __init__(self, regis_net: Any, window: tuple[float, float] | None = None) -> None:
            super().__init__()
            self.net = regis_net
            self.window = window
            self.graph_mode = False
            self.levels = [m for m in regis_net.modules() if hasattr(m, "input_shape")]

        def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            if self.window is not None:
                lo, hi = self.window
                source = (source.clamp(lo, hi) - lo) * (1.0 / (hi - lo))
                target = (target.clamp(lo, hi) - lo) * (1.0 / (hi - lo))
            if self.graph_mode:
                batch = source.shape[0]
                for m in self.levels:
                    # a plain attribute (the buffer was lifted off) computed from the input
                    m.identity_map = _identity_grid(tuple(int(n) for n in m.input_shape[2:]), batch)
            phi = self.net(source, target)
            return phi(self.net.identity_map)

    return UniGradICONMap


def _identity_grid(shape: tuple[int, ...], batch: Any) -> Any:
    """icon_registration's identity map (mgrid * 1/(n-1)) from three small ``arange`` vectors,
    expanded to the batch so that its shortcut (identity + displacement) applies at any batch."""
    import torch

    axes = [torch.arange(n, dtype=torch.float32) * (1.0 / (n - 1)) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    return grid.unsqueeze(0).expand(batch, -1, -1, -1, -1)


def _warp_unit(image: Any, phi: Any, spacing: Any, spline_order: int, zero_boundary: bool = False,
               use_01_input: bool = True) -> Any:
    """``compute_warped_image_multiNC`` for 3-D linear warps, written without in-place channel
    writes: the same per-channel scale ``2 / (n - 1) / spacing`` and shift -1, axes reversed
    for ``grid_sample``, same padding and align-corners."""
    import torch
    import torch.nn.functional as F

    if image.dim() != 5 or spline_order != 1 or not use_01_input:
        return _ORIGINAL_WARP[0](image, phi, spacing, spline_order, zero_boundary, use_01_input)
    sz = image.shape
    chans = [phi[:, d:d + 1] * (2.0 / (sz[d + 2] - 1.0) / spacing[d]) - 1.0 for d in (2, 1, 0)]
    grid = torch.cat(chans, dim=1).permute(0, 2, 3, 4, 1)
    if grid.shape[0] == 1 and image.shape[0] != 1:
        grid = grid.expand(image.shape[0], -1, -1, -1, -1)
    return F.grid_sample(image, grid, mode="bilinear",
                         padding_mode="zeros" if zero_boundary else "border", align_corners=True)


_ORIGINAL_WARP: list[Any] = []


@contextlib.contextmanager
def graph_friendly(wrapper: Any) -> Iterator[None]:
    """While tracing: identity grids computed in-graph, ScatterElements-free warps."""
    import icon_registration.network_wrappers as nw

    original = nw.compute_warped_image_multiNC
    _ORIGINAL_WARP[:] = [original]
    lifted = []
    for m in wrapper.levels:
        lifted.append((m, m._buffers.pop("identity_map")))
    nw.compute_warped_image_multiNC = _warp_unit
    wrapper.graph_mode = True
    try:
        yield
    finally:
        wrapper.graph_mode = False
        nw.compute_warped_image_multiNC = original
        for m, buf in lifted:
            m.__dict__.pop("identity_map", None)
            m.register_buffer("identity_map", buf, persistent=False)


def make_card(grid: Sequence[int], modality: str) -> ModelCard:
    if modality == "ct":
        pre = Preprocess(method="none")
        note = (f"CT: intensities in HU, clamped to {list(CT_WINDOW)} and scaled to [0, 1] "
                "inside the graph")
    else:
        pre = Preprocess(method="percentile", low=0.0, high=99.0)
        note = "MRI: clamp to [min, 99th percentile], scale to [0, 1] (unigradicon.preprocess)"
    return pair_card(
        "unigradicon", grid,
        Output(name="phi", kind="map", units="unit", align_corners=True, channel_order="ijk",
               channel_axis="first"),
        pre, Resample(method="stretch"),
        f"uniGradICON (Tian et al. 2024) exported by regrisk: absolute map on the target grid "
        f"in [0, 1] coordinates. {note}.")


def export_unigradicon(
    out: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    *,
    grid: Sequence[int] = GRID,
    modality: str = "mri",
    **options: Any,
) -> ExportResult:
    """Export uniGradICON (``weights``: its ``Step_2_final.trch``, or ``random_init``);
    ``options`` are the fields of :class:`ExportOptions`."""
    import torch

    opts = ExportOptions.of(options)
    if modality not in ("mri", "ct"):
        raise ExportError(f"modality {modality!r}: expected 'mri' or 'ct'")
    check_weight_source(weights, opts.random_init)
    if opts.opset < 20:
        raise ExportError(f"opset {opts.opset}: 5-D GridSample needs opset 20 or later")
    grid = _check_grid(grid)
    torch.manual_seed(opts.seed)
    net = build_network(grid)
    init_weights(net, weights, opts, randomize=randomize)
    wrapper = _wrapper_class()(net, CT_WINDOW if modality == "ct" else None).eval()
    card = make_card(grid, modality)
    try:
        import unigradicon  # noqa: F401
        builder = "unigradicon.make_network"
    except ImportError:
        builder = "icon_registration modules (unigradicon recipe; itk absent)"
    prov = version_provenance("regrisk.exporters.unigradicon", ["unigradicon", "icon_registration"],
                              weights, opts, modality=modality, builder=builder)
    return export_module(
        wrapper, out=out, card=card, input_names=card.inputs.names(), input_channels=(1, 1),
        options=opts, trace_context=graph_friendly, provenance=prov)
