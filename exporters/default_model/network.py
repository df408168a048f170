"""The default registration network: unrolled demons and a small VoxelMorph-style 3-D U-Net.

Input: source and target, each (B, 1, D, H, W) in [0, 1], D, H, W divisible by 16.
Output: displacement u (B, 3, D, H, W) in voxels of the target grid, channel c along array
axis c (ijk), with S(x + u(x)) ~= T(x).

Design (sized for a 2-core CPU: one pass on 80x96x80 well under a second in ONNX Runtime):
- both images are first brought to a local contrast, (I - G*I) / sqrt(G*(I - G*I)^2 + eps)
  with a fixed Gaussian G (``LocalNormalize``): this removes the smooth bias fields and most
  of the gamma / contrast differences between the two scans, which otherwise break any
  intensity-difference (SSD) force (``evaluate.py --ablation`` measures the demons stage with
  and without it);
- ``DemonsRefine``: unrolled diffeomorphic-demons-like iterations (warp, ESM force, Gaussian
  smoothing of the field) at 1/8, 1/4 and 1/2 resolution from the identity, with learned step
  sizes and force normalisation per level;
- then the U-Net (one full-resolution layer, an encoder to 1/16, a decoder back to 1/2) sees
  the normalised source warped by that field and the normalised target, plus fixed per-voxel
  "demons" features of their pyramid (``demons_features``), and predicts a residual field r at
  half resolution (initialised near zero); the output is the composition r + u(x + r), so the
  U-Net learns what the demons stage gets wrong instead of the whole deformation;
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


NF = 12  # channels of ``demons_features``


def _grad(x: torch.Tensor) -> torch.Tensor:
    """Central differences of (B, 1, D, H, W) along i, j, k (zero at the faces)."""
    gi = F.pad(x[:, :, 2:] - x[:, :, :-2], (0, 0, 0, 0, 1, 1))
    gj = F.pad(x[:, :, :, 2:] - x[:, :, :, :-2], (0, 0, 1, 1, 0, 0))
    gk = F.pad(x[:, :, :, :, 2:] - x[:, :, :, :, :-2], (1, 1, 0, 0, 0, 0))
    return 0.5 * torch.cat([gi, gj, gk], dim=1)


def demons_features(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, NF, ...) per-voxel features of one scale: S, T, d = S - T, the mean gradient g,
    the optical-flow force d * g and its demons normalisation d * g / (|g|^2 + d^2 + eps).

    A plain U-Net must learn these products from (S, T) before it can move anything, which
    costs many thousands of iterations; given explicitly, the network starts from the classical
    demons step and learns how to combine and regularise it across scales.
    """
    d = s - t
    g = _grad(0.5 * (s + t))
    force = d * g
    norm = (g * g).sum(dim=1, keepdim=True) + d * d + 1e-3
    return torch.cat([s, t, d, g, force, force / norm], dim=1)


def _gauss_kernel(sigma: float) -> torch.Tensor:
    r = max(1, int(round(2.0 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _register_gauss(module: nn.Module, sigma: float, channels: int) -> None:
    """Fixed-shape depthwise Gaussian kernels along i, j, k as buffers ``k_i``, ``k_j``, ``k_k``
    of shape (channels, 1, ...): not weights, so not in the state dict."""
    k = _gauss_kernel(sigma)
    n = k.numel()
    for name, shape in (("k_i", (1, 1, n, 1, 1)), ("k_j", (1, 1, 1, n, 1)), ("k_k", (1, 1, 1, 1, n))):
        module.register_buffer(name, k.view(shape).repeat(channels, 1, 1, 1, 1), persistent=False)


def _smooth(u: torch.Tensor, kernels: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Separable Gaussian of a (B, C, D, H, W) volume, replicate borders; ``kernels`` are the
    three (C, 1, ...) depthwise kernels along i, j, k (``_register_gauss``)."""
    r = (kernels[0].shape[2] - 1) // 2
    c = kernels[0].shape[0]
    u = F.conv3d(F.pad(u, (0, 0, 0, 0, r, r), mode="replicate"), kernels[0], groups=c)
    u = F.conv3d(F.pad(u, (0, 0, r, r, 0, 0), mode="replicate"), kernels[1], groups=c)
    return F.conv3d(F.pad(u, (r, r, 0, 0, 0, 0), mode="replicate"), kernels[2], groups=c)


class LocalNormalize(nn.Module):
    """Local contrast (I - G*I) / sqrt(G*(I - G*I)^2 + eps), scaled by 1/4 to about [-1, 1].

    Fixed arithmetic, no weights: a smooth multiplicative bias or a monotone intensity change
    is close to affine within the Gaussian's reach, and this removes a local affine change.
    """

    def __init__(self, sigma: float = 3.0, eps: float = 1e-2) -> None:
        super().__init__()
        self.eps = float(eps)
        _register_gauss(self, sigma, channels=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (self.k_i, self.k_j, self.k_k)
        c = x - _smooth(x, k)
        return 0.25 * c * torch.rsqrt(_smooth(c * c, k) + self.eps)


def _base_grid(like: torch.Tensor) -> torch.Tensor:
    """(1, D, H, W, 3) identity in grid_sample's normalised (x, y, z) order, align-corners, for
    the grid of ``like`` (B, C, D, H, W).

    Built from the input by cumulative sums, not ``linspace``: the ONNX export then computes it
    at run time instead of storing a constant of 3 floats per voxel (7 MB at 80x96x80), and the
    graph runs on any grid.
    """
    ones = torch.ones_like(like[:1, :1])
    axes = [ones.cumsum(d) - 1.0 for d in (4, 3, 2)]  # k, j, i: torch's x, y, z
    axes = [2.0 * a / a.amax().clamp_min(1.0) - 1.0 for a in axes]
    return torch.cat(axes, dim=1).permute(0, 2, 3, 4, 1)


def _warp(vol: torch.Tensor, u: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """vol(x + u(x)) for (B, C, D, H, W) and a voxel displacement (B, 3, D, H, W) on the same
    grid, border padding."""
    shape = u.shape[2:]
    scale = torch.tensor([2.0 / (int(n) - 1) for n in shape][::-1], device=u.device)
    grid = base + u.flip(1).permute(0, 2, 3, 4, 1) * scale
    return F.grid_sample(vol, grid, mode="bilinear", padding_mode="border", align_corners=True)


class DemonsRefine(nn.Module):
    """Unrolled diffeomorphic-demons-like refinement with learned step sizes.

    At each pyramid level (default 1/8, 1/4, then 1/2 resolution) ``steps`` iterations of: warp the source
    by the current field, demons update d * g / (|g|^2 + alpha d^2 + eps) with g the mean of
    both gradients (ESM), scaled by a learned step ``tau``, then Gaussian smoothing of the
    field (diffusion regularisation). tau and alpha are learned per level (softplus).
    """

    def __init__(self, levels: tuple[int, ...] = (8, 4, 2), steps: int = 20,
                 sigma: float = 2.0) -> None:
        super().__init__()
        self.levels = tuple(levels)
        self.steps = int(steps)
        _register_gauss(self, sigma, channels=3)
        n = len(self.levels)
        self.tau = nn.Parameter(torch.full((n,), 0.5413))    # softplus -> 1.0
        self.alpha = nn.Parameter(torch.full((n,), 0.5413))  # softplus -> 1.0

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """From the identity; returns the field at the last level's resolution in
        full-resolution voxels."""
        u = None
        for li, f in enumerate(self.levels):
            s = F.avg_pool3d(source, f) if f > 1 else source
            t = F.avg_pool3d(target, f) if f > 1 else target
            if u is None:  # zeros shaped by the input (dynamic batch)
                u = torch.cat([0.0 * t] * 3, dim=1)
            else:          # from the coarser level
                u = 2.0 * F.interpolate(u, scale_factor=2.0, mode="trilinear", align_corners=False)
            tau = F.softplus(self.tau[li])
            alpha = F.softplus(self.alpha[li])
            gt = _grad(t)
            base = _base_grid(t)
            for _ in range(self.steps):
                sw = _warp(s, u, base)
                d = sw - t
                g = 0.5 * (gt + _grad(sw))
                denom = (g * g).sum(dim=1, keepdim=True) + alpha * d * d + 1e-4
                u = _smooth(u - tau * d * g / denom, (self.k_i, self.k_j, self.k_k))
        return u * float(self.levels[-1])


class RegNet(nn.Module):
    """U-Net registration network; see the module docstring for the contract."""

    def __init__(self, full: int = 8, enc: tuple[int, ...] = (16, 32, 32, 32),
                 dec: tuple[int, ...] = (32, 32, 32), head: int = 16,
                 dropout: float = 0.1, flow_init: float = 1e-5, refine_steps: int = 20,
                 refine_levels: tuple[int, ...] = (8, 4, 2), refine_sigma: float = 2.0,
                 norm_sigma: float = 3.0, norm_eps: float = 1e-2) -> None:
        super().__init__()
        self.config = {"full": full, "enc": list(enc), "dec": list(dec), "head": head,
                       "dropout": dropout, "flow_init": flow_init, "refine_steps": refine_steps,
                       "refine_levels": list(refine_levels), "refine_sigma": refine_sigma,
                       "norm_sigma": norm_sigma, "norm_eps": norm_eps}
        self.normalize = LocalNormalize(norm_sigma, norm_eps)
        self.refine = (DemonsRefine(tuple(refine_levels), refine_steps, refine_sigma)
                       if refine_steps > 0 else None)
        # Encoder: full resolution, then 1/2 ... 1/16. Levels 1/2, 1/4 and 1/8 also receive
        # the demons features of the images average-pooled to that level.
        self.stem = ConvBlock(NF, full)
        self.down = nn.ModuleList()
        cin = full
        for i, c in enumerate(enc):
            self.down.append(ConvBlock(cin + (NF if i > 0 else 0), c, stride=2))
            cin = c
        # decoder: from 1/16 back to 1/2, each step upsample x2 and merge the skip
        skips = [c + NF for c in enc[:-1]][::-1]  # channels at 1/8, 1/4, 1/2
        self.up = nn.ModuleList()
        self.drop = nn.ModuleList([McDropout(dropout)])  # bottleneck
        for c, s in zip(dec, skips):
            self.up.append(ConvBlock(cin + s, c))
            self.drop.append(McDropout(dropout))
            cin = c
        self.head = ConvBlock(cin, head)
        self.flow = nn.Conv3d(head, 3, 3, padding=1)
        # He initialisation for the LeakyReLU layers: PyTorch's default halves the activations
        # at every layer, which leaves the bottleneck near zero and the training on a long
        # plateau at the identity map
        for m in self.modules():
            if isinstance(m, nn.Conv3d) and m is not self.flow:
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        # start near the identity map: small flow weights, zero bias
        nn.init.normal_(self.flow.weight, 0.0, flow_init)
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
        s, t = self.normalize(source), self.normalize(target)
        u = None
        if self.refine is not None:
            u = self.refine(s, t)
            if self.refine.levels[-1] != 2:  # bring the demons field to half resolution
                u = F.interpolate(u, size=[n // 2 for n in t.shape[2:]], mode="trilinear",
                                  align_corners=False)
            full = F.interpolate(u, scale_factor=2.0, mode="trilinear", align_corners=False)
            s = _warp(s, full, _base_grid(t))
        r = self.unet(s, t)
        if u is None:
            return r
        # composition: x -> x + r(x) -> + u(x + r(x)); r / 2 in half-resolution voxels
        return r + _warp(u, r / 2.0, _base_grid(r))

    def unet(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Residual field at half resolution (full-resolution voxels) for normalised images."""
        x = self.stem(demons_features(s, t))
        skips = []
        for i, layer in enumerate(self.down):
            if i > 0:
                s, t = F.avg_pool3d(s, 2), F.avg_pool3d(t, 2)
                x = torch.cat([x, demons_features(s, t)], dim=1)
                skips.append(x)
            x = layer(x)
        x = self.drop[0](x)
        for i, layer in enumerate(self.up):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = layer(torch.cat([x, skips[-1 - i]], dim=1))
            x = self.drop[i + 1](x)
        return self.flow(self.head(x))


def build(config: dict | None = None) -> RegNet:
    return RegNet(**(config or {}))
