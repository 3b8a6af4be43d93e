"""Losses of the field, on (B, C, H, W) tensors in reflectance units.

* ``l1``, ``mse``, ``ssim_loss`` (1 - SSIM, differentiable Gaussian-window SSIM);
* ``cmse_loss``: HighRes-net's clearance-aware MSE: SR cropped by ``border``, the HR crop at every
  integer shift, brightness bias removed over clear pixels, the best shift per sample;
* ``registered_loss``: WorldStrat's loss after sub-pixel registration: SR shifted by each
  candidate sub-pixel offset with a Lanczos kernel, the best shift per sample;
* ``gan_losses``: non-saturating adversarial losses for generator and discriminator, and a feature
  loss that matches the discriminator's intermediate features of SR and HR (a perceptual loss that
  needs no downloaded VGG weights).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from srcube.models.interp import lanczos_shift


def l1(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(sr, hr)


def mse(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(sr, hr)


def _gaussian(size: int = 11, sigma: float = 1.5, device: torch.device | None = None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_loss(sr: torch.Tensor, hr: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """1 - mean SSIM (valid region of the 11 x 11 Gaussian window)."""
    c = sr.shape[1]
    w = _gaussian(device=sr.device).to(sr.dtype)[None, None].repeat(c, 1, 1, 1)

    def f(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, groups=c)

    mu_x, mu_y = f(sr), f(hr)
    sxx = f(sr * sr) - mu_x**2
    syy = f(hr * hr) - mu_y**2
    sxy = f(sr * hr) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return 1.0 - s.mean()


def cmse_loss(sr: torch.Tensor, hr: torch.Tensor, clear: torch.Tensor | None = None, border: int = 3) -> torch.Tensor:
    """Clearance-aware, brightness-bias-corrected MSE at the best integer shift (per sample)."""
    if clear is None:
        clear = torch.ones_like(hr[:, :1])
    clear = clear.to(sr.dtype)
    if clear.ndim == 3:
        clear = clear[:, None]
    h, w = sr.shape[-2:]
    crop = sr[..., border : h - border, border : w - border]
    ch, cw = crop.shape[-2:]
    losses = []
    for u, v in itertools.product(range(2 * border + 1), repeat=2):
        hh = hr[..., u : u + ch, v : v + cw]
        cc = clear[..., u : u + ch, v : v + cw]
        n = cc.sum(dim=(1, 2, 3)).clamp(min=1.0) * sr.shape[1]
        diff = (hh - crop) * cc
        bias = diff.sum(dim=(2, 3), keepdim=True) / cc.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)
        losses.append((((hh - crop - bias) * cc) ** 2).sum(dim=(1, 2, 3)) / n)
    return torch.stack(losses, 1).min(1).values.mean()


def registered_loss(sr: torch.Tensor, hr: torch.Tensor, shifts: Sequence[float] = (-1.0, -0.5, 0.0, 0.5, 1.0),
                    border: int = 2, base: str = "l1") -> torch.Tensor:
    """Loss at the best sub-pixel registration of SR onto HR (Lanczos shifts over a grid)."""
    fn = F.l1_loss if base == "l1" else F.mse_loss
    h, w = sr.shape[-2:]
    inner = (..., slice(border, h - border), slice(border, w - border))
    per_shift = []
    for dy, dx in itertools.product(shifts, repeat=2):
        shift = torch.tensor([[dy, dx]], dtype=sr.dtype, device=sr.device).expand(sr.shape[0], 2)
        moved = lanczos_shift(sr, shift)
        per_shift.append(fn(moved[inner], hr[inner], reduction="none").flatten(1).mean(1))
    return torch.stack(per_shift, 1).min(1).values.mean()


class FeatureTap:
    """Collects the outputs of a discriminator's LeakyReLU layers during a forward pass."""

    def __init__(self, discriminator: nn.Module) -> None:
        self.features: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(lambda _m, _i, o: self.features.append(o))
                        for m in discriminator.modules() if isinstance(m, nn.LeakyReLU)]

    def take(self) -> list[torch.Tensor]:
        out, self.features = self.features, []
        return out


def gan_losses(discriminator: nn.Module, tap: FeatureTap, sr: torch.Tensor,
               hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(generator adversarial loss, feature-matching loss, discriminator loss).

    Non-saturating GAN: the generator maximises log D(SR); the discriminator minimises the BCE of
    real HR vs detached SR. The feature loss is the L1 distance between the discriminator's
    intermediate features of SR and of HR.
    """
    tap.take()
    real_logits = discriminator(hr)
    real_feats = [f.detach() for f in tap.take()]
    fake_logits = discriminator(sr)
    fake_feats = tap.take()
    g_adv = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    feat = torch.stack([F.l1_loss(a, b) for a, b in zip(fake_feats, real_feats, strict=True)]).mean()
    d_real = F.binary_cross_entropy_with_logits(discriminator(hr), torch.ones_like(real_logits))
    d_fake = F.binary_cross_entropy_with_logits(discriminator(sr.detach()), torch.zeros_like(fake_logits))
    tap.take()
    return g_adv, feat, 0.5 * (d_real + d_fake)
