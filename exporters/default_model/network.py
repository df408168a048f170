"""The default registration network: a small VoxelMorph-style 3-D U-Net.

Input: source and target, each (B, 1, D, H, W) in [0, 1], D, H, W divisible by 16.
Output: displacement u (B, 3, D, H, W) in voxels of the target grid, channel c along array
axis c (ijk), with S(x + u(x)) ~= T(x).

Design choices, sized for a 2-core CPU (one pass on 80x96x80 well under a second in ONNX
Runtime):
- one cheap full-resolution layer, then a four-level encoder (1/2 ... 1/16) and a decoder back
  to 1/2; the field is predicted at half resolution and upsampled (the field is smooth, so this
  loses little and removes the costliest layers);
- channel dropout in the bottleneck and decoder: inactive in the deterministic graph, sampled
  in the stochastic one (``McDropout`` draws its mask with ``torch.rand_like`` so that the ONNX
  export carries a RandomUniformLike node that samples at every run).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class McDropout(nn.Module):
    """Channel (spatial) dropout whose mask is drawn by ``rand_like``.

    Active when the module is training or when ``always`` is set (the stochastic export).
    Inverted scaling, so the inactive graph is the identity.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.always = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0.0 or not (self.training or self.always):
            return x
        probe = x[:, :, :1, :1, :1]  # (B, C, 1, 1, 1): one draw per channel
        keep = (torch.rand_like(probe) >= self.p).to(x.dtype)
        return x * keep * (1.0 / (1.0 - self.p))


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, stride=stride, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class RegNet(nn.Module):
    """U-Net registration network; see the module docstring for the contract."""

    def __init__(self, full: int = 8, enc: tuple[int, ...] = (16, 32, 32, 32),
                 dec: tuple[int, ...] = (32, 32, 32), head: int = 16,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.config = {"full": full, "enc": list(enc), "dec": list(dec), "head": head,
                       "dropout": dropout}
        self.stem = ConvBlock(2, full)
        self.down = nn.ModuleList()
        cin = full
        for c in enc:
            self.down.append(ConvBlock(cin, c, stride=2))
            cin = c
        # decoder: from 1/16 back to 1/2, each step upsample x2 and merge the skip
        skips = list(enc[:-1])[::-1]  # channels at 1/8, 1/4, 1/2
        self.up = nn.ModuleList()
        self.drop = nn.ModuleList([McDropout(dropout)])  # bottleneck
        for c, s in zip(dec, skips):
            self.up.append(ConvBlock(cin + s, c))
            self.drop.append(McDropout(dropout))
            cin = c
        self.head = ConvBlock(cin, head)
        self.flow = nn.Conv3d(head, 3, 3, padding=1)
        # start near the identity map: small flow weights, zero bias
        nn.init.normal_(self.flow.weight, 0.0, 1e-5)
        nn.init.zeros_(self.flow.bias)

    def set_stochastic(self, on: bool) -> None:
        """Keep dropout sampling even in eval mode (for the stochastic export)."""
        for m in self.modules():
            if isinstance(m, McDropout):
                m.always = on

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        half = self.forward_half(source, target)
        return F.interpolate(half, scale_factor=2.0, mode="trilinear", align_corners=False)

    def forward_half(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The displacement at half resolution (in full-resolution voxels); training uses it
        directly because its loss is computed at half resolution."""
        x = self.stem(torch.cat([source, target], dim=1))
        feats = []
        for layer in self.down:
            x = layer(x)
            feats.append(x)
        x = self.drop[0](x)
        for i, layer in enumerate(self.up):
            skip = feats[-2 - i]
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = layer(torch.cat([x, skip], dim=1))
            x = self.drop[i + 1](x)
        x = self.head(x)
        return self.flow(x)


def build(config: dict | None = None) -> RegNet:
    return RegNet(**(config or {}))
