"""SynthMorph-style synthetic training pairs with known ground-truth deformation (torch, CPU/GPU).

One pair:
1. a source label map: either random smooth shapes (argmax of J upsampled noise fields), or a
   real template's tissue map (MNI152 / Colin27, ``templates``) randomly deformed, with its
   tissues randomly split into smooth sub-parcels so that the interior carries structure;
2. a ground-truth displacement u_gt on the target grid: a small random affine plus a smooth
   stationary velocity field integrated by scaling and squaring (diffeomorphic);
3. target labels = source labels pulled back through u_gt: T_lab(x) = S_lab(x + u_gt(x));
4. each image rendered from its labels: random mean and noise per label (shared by both images
   with probability ``p_same_contrast``, else drawn independently, as SynthMorph does, so the
   network learns to ignore contrast), then blur, multiplicative bias field, gamma and min-max
   to [0, 1], each drawn per image;
   with probability ``p_real`` the template's real T1 is used as the source image instead (and
   warped into the target), so the network also sees real MRI texture.

So the network should predict u with S(x + u(x)) ~= T(x), and u_gt is the exact answer.
All fields: (B, 3, D, H, W) in voxels, channel c along array axis c (ijk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


# -- sampling helpers ---------------------------------------------------------------------------

def identity_grid(shape: tuple[int, int, int], device=None) -> torch.Tensor:
    """(3, D, H, W) voxel coordinates (ijk)."""
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


_BASE: dict = {}


def _base_grid(shape: tuple[int, ...], device) -> torch.Tensor:
    """(1, D, H, W, 3) identity in torch's normalised (x, y, z) order, align-corners; cached."""
    key = (tuple(shape), str(device))
    if key not in _BASE:
        axes = [torch.linspace(-1.0, 1.0, n, device=device) for n in shape]
        _BASE[key] = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)[None]
    return _BASE[key]


def warp(vol: torch.Tensor, disp: torch.Tensor, padding: str = "border",
         mode: str = "bilinear") -> torch.Tensor:
    """Pull back ``vol`` (B, C, D, H, W) through voxel displacement ``disp`` (B, 3, D, H, W).

    out(x) = vol(x + disp(x)), trilinear, align-corners voxel centres; ``vol`` and ``disp``
    share the grid.
    """
    shape = disp.shape[2:]
    scale = torch.tensor([2.0 / (n - 1) for n in shape][::-1], device=disp.device, dtype=disp.dtype)
    grid = _base_grid(shape, disp.device) + disp.flip(1).permute(0, 2, 3, 4, 1) * scale
    return F.grid_sample(vol, grid, mode=mode, padding_mode=padding, align_corners=True)


def smooth_noise(g: torch.Generator, channels: int, shape: tuple[int, int, int],
                 coarse: tuple[int, int, int], device=None) -> torch.Tensor:
    """(1, C, *shape) smooth random field: Gaussian noise on a coarse grid, upsampled."""
    n = torch.randn((1, channels, *coarse), generator=g).to(device)
    return F.interpolate(n, size=shape, mode="trilinear", align_corners=True)


def _uniform(g: torch.Generator, lo: float, hi: float, size=()) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(size, generator=g)


def integrate(velocity: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Scaling and squaring: u = exp(v), all in voxels."""
    u = velocity / (2 ** steps)
    for _ in range(steps):
        u = u + warp(u, u)
    return u


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, D, H, W) (sigma in voxels, per axis)."""
    if sigma < 0.2:
        return x
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        w = k.view(shape).repeat(c, 1, 1, 1, 1)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        x = F.conv3d(F.pad(x, pad, mode="replicate"), w, groups=c)
    return x


# -- the generator -------------------------------------------------------------------------------

@dataclass
class SynthConfig:
    grid: tuple[int, int, int] = (80, 96, 80)
    p_template: float = 0.7        # label map from a real template (else random shapes)
    p_real: float = 0.5           # of template maps: use the real T1 as source image
    p_same_contrast: float = 1.0   # render both images with the same intensity per label
    max_labels: int = 24
    velocity_std: float = 2.0      # voxels, before integration
    affine_scale: float = 0.06     # |log scale| bound per axis
    affine_rot: float = 3.0        # degrees per axis
    affine_shear: float = 0.04
    affine_shift: float = 2.0      # voxels
    centre_jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)  # voxels, see random_affine_disp
    noise_max: float = 0.08
    blur_max: float = 1.2          # voxels
    bias_max: float = 0.35


@dataclass
class Pair:
    source: torch.Tensor         # (1, 1, D, H, W) in [0, 1]
    target: torch.Tensor         # (1, 1, D, H, W) in [0, 1]
    source_labels: torch.Tensor  # (1, D, H, W) int64
    target_labels: torch.Tensor  # (1, D, H, W) int64
    displacement: torch.Tensor   # (1, 3, D, H, W) ground truth, voxels ijk


class Synth:
    """Draws pairs from a seeded generator: the same seed gives the same pairs."""

    def __init__(self, seed: int, config: SynthConfig | None = None, templates=None,
                 device: str | torch.device = "cpu") -> None:
        self.cfg = config or SynthConfig()
        self.g = torch.Generator().manual_seed(int(seed))
        self.device = torch.device(device)
        if templates is None and self.cfg.p_template > 0:
            from .templates import load_all

            templates = load_all(self.cfg.grid)
        self.templates = [
            (torch.from_numpy(t.image).to(self.device), torch.from_numpy(t.labels.astype("int64")).to(self.device))
            for t in (templates or ())
        ]

    # random pieces ---------------------------------------------------------------------
    def _coarse(self, lo: int, hi: int) -> tuple[int, int, int]:
        f = int(torch.randint(lo, hi + 1, (), generator=self.g))
        return tuple(max(2, n // f) for n in self.cfg.grid)  # type: ignore[return-value]

    def random_affine_disp(self) -> torch.Tensor:
        """(1, 3, D, H, W) displacement of a random affine about the grid centre."""
        c = self.cfg
        ang = torch.deg2rad(_uniform(self.g, -c.affine_rot, c.affine_rot, (3,)))
        rot = torch.eye(3)
        for ax in range(3):
            a, b = [i for i in range(3) if i != ax]
            r = torch.eye(3)
            r[a, a] = r[b, b] = torch.cos(ang[ax])
            r[a, b], r[b, a] = -torch.sin(ang[ax]), torch.sin(ang[ax])
            rot = rot @ r
        scale = torch.diag(torch.exp(_uniform(self.g, -c.affine_scale, c.affine_scale, (3,))))
        shear = torch.eye(3) + torch.triu(_uniform(self.g, -c.affine_shear, c.affine_shear, (3, 3)), 1)
        a = rot @ scale @ shear
        shift = _uniform(self.g, -c.affine_shift, c.affine_shift, (3,))
        x = identity_grid(self.cfg.grid).reshape(3, -1)
        # about a random centre within +- centre_jitter voxels of the grid centre: a crop of a
        # larger grid then sees the displacements the full grid would have there
        jit = _uniform(self.g, -1.0, 1.0, (3,)) * torch.tensor(c.centre_jitter, dtype=torch.float32)
        ctr = (torch.tensor([(n - 1) / 2 for n in self.cfg.grid]) + jit).view(3, 1)
        y = a @ (x - ctr) + ctr + shift.view(3, 1)
        return (y - x).reshape(1, 3, *self.cfg.grid).to(self.device)

    def random_deformation(self, std: float, affine: bool = True) -> torch.Tensor:
        # the velocity is smooth, so integrate it at half resolution and upsample
        half = tuple(n // 2 for n in self.cfg.grid)
        v = smooth_noise(self.g, 3, half, self._coarse(8, 16), self.device)
        v = v * float(_uniform(self.g, 0.0, std)) / 2.0  # half-resolution voxels
        u = 2.0 * F.interpolate(integrate(v), size=self.cfg.grid, mode="trilinear", align_corners=True)
        if affine:
            a = self.random_affine_disp()
            u = u + warp(a, u)  # x -> x + u(x) then the affine: composed pull-back
        return u

    def random_labels(self) -> torch.Tensor:
        j = int(torch.randint(8, self.cfg.max_labels + 1, (), generator=self.g))
        noise = smooth_noise(self.g, j, self.cfg.grid, self._coarse(4, 10), self.device)
        return noise.argmax(1)  # (1, D, H, W)

    def template_labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        k = int(torch.randint(len(self.templates), (), generator=self.g))
        img, lab = self.templates[k]
        # a random crop when training on a grid smaller than the templates'
        corner = [int(torch.randint(0, n - m + 1, (), generator=self.g)) if n > m else 0
                  for n, m in zip(lab.shape, self.cfg.grid)]
        sl = tuple(slice(c0, c0 + m) for c0, m in zip(corner, self.cfg.grid))
        img, lab = img[sl], lab[sl]
        if tuple(lab.shape) != tuple(self.cfg.grid):
            raise ValueError(f"templates {tuple(lab.shape)} smaller than the grid {self.cfg.grid}")
        # random sub-parcels per tissue: label = tissue * P + parcel
        parts = int(torch.randint(1, 5, (), generator=self.g))
        if parts > 1:
            noise = smooth_noise(self.g, parts, self.cfg.grid, self._coarse(4, 10), self.device)
            lab = torch.where(lab > 0, (lab - 1) * parts + noise.argmax(1)[0] + 1, lab)
        # a random deformation of the template itself (more anatomies)
        u = self.random_deformation(2.0 * self.cfg.velocity_std, affine=True)
        lab = warp(lab[None, None].float(), u, padding="zeros", mode="nearest")[:, 0].long()
        img = warp(img[None, None], u, padding="zeros")
        return lab, img

    def contrast(self, n: int, dark_background: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Random mean and noise level per label."""
        means = torch.rand(n, generator=self.g).to(self.device)
        stds = (_uniform(self.g, 0.0, self.cfg.noise_max, (n,))).to(self.device)
        if dark_background:
            means[0] = 0.0
        return means, stds

    def render(self, labels: torch.Tensor, contrast: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        means, stds = contrast
        img = means[labels] + stds[labels] * torch.randn(labels.shape, generator=self.g).to(self.device)
        return self.corrupt(img[:, None])

    def corrupt(self, img: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        img = gaussian_blur(img, float(_uniform(self.g, 0.0, c.blur_max)))
        bias = smooth_noise(self.g, 1, self.cfg.grid, self._coarse(12, 20), self.device)
        img = img * torch.exp(bias * float(_uniform(self.g, 0.0, c.bias_max)))
        img = img - img.amin()
        img = img / img.amax().clamp_min(1e-6)
        gamma = float(torch.exp(0.25 * torch.randn((), generator=self.g)))
        img = img.clamp_min(0.0) ** gamma
        img = img + 0.01 * float(_uniform(self.g, 0.0, 1.0)) * torch.randn(img.shape, generator=self.g).to(self.device)
        img = img - img.amin()
        return img / img.amax().clamp_min(1e-6)

    # one pair ------------------------------------------------------------------------------
    def pair(self) -> Pair:
        c = self.cfg
        real_img = None
        use_template = bool(self.templates) and float(torch.rand((), generator=self.g)) < c.p_template
        if use_template:
            src_lab, tpl_img = self.template_labels()
            if float(torch.rand((), generator=self.g)) < c.p_real:
                real_img = tpl_img
        else:
            src_lab = self.random_labels()
        u_gt = self.random_deformation(c.velocity_std, affine=True)
        # labels move by nearest neighbour (one channel; linear one-hot warps cost L channels)
        tgt_lab = warp(src_lab[:, None].float(), u_gt, padding="border", mode="nearest")[:, 0].long()
        dark = use_template and float(torch.rand((), generator=self.g)) < 0.8
        if real_img is not None:
            source = self.corrupt(real_img)
            target = self.corrupt(warp(real_img, u_gt, padding="zeros"))
        else:
            # mostly one contrast for both (the T1 -> T1 use); sometimes independent contrasts
            # (SynthMorph's contrast-agnostic training)
            n = int(max(src_lab.max(), tgt_lab.max())) + 1
            look = self.contrast(n, dark)
            same = float(torch.rand((), generator=self.g)) < c.p_same_contrast
            source = self.render(src_lab, look)
            target = self.render(tgt_lab, look if same else self.contrast(n, dark))
        return Pair(source, target, src_lab, tgt_lab, u_gt)


# -- losses (training and evaluation) ----------------------------------------------------------

def soft_dice_loss(warped_onehot: torch.Tensor, target_onehot: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over labels present in either map (B, L, D, H, W)."""
    dims = (2, 3, 4)
    inter = (warped_onehot * target_onehot).sum(dims)
    size = warped_onehot.sum(dims) + target_onehot.sum(dims)
    present = size > 0
    dice = (2 * inter + 1e-5) / (size + 1e-5)
    return 1.0 - dice[present].mean()


def grad_loss(disp: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference of the displacement (voxels)."""
    dz = disp[:, :, 1:] - disp[:, :, :-1]
    dy = disp[:, :, :, 1:] - disp[:, :, :, :-1]
    dx = disp[:, :, :, :, 1:] - disp[:, :, :, :, :-1]
    return (dz.pow(2).mean() + dy.pow(2).mean() + dx.pow(2).mean()) / 3.0


def hard_dice(a, b, labels=None) -> float:
    """Mean Dice over the non-background labels present in both maps (integer arrays)."""
    import numpy as np

    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if labels is None:
        labels = np.intersect1d(np.unique(a), np.unique(b))
        labels = labels[labels != 0]
    scores = []
    for lab in labels:
        x, y = a == lab, b == lab
        s = x.sum() + y.sum()
        if s:
            scores.append(2.0 * np.logical_and(x, y).sum() / s)
    return float(np.mean(scores)) if scores else float("nan")
