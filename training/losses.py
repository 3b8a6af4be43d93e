"""Losses of the field, on (B, C, H, W) tensors in reflectance units.

* ``l1``, ``mse``, ``ssim_loss`` (1 - SSIM, differentiable Gaussian-window SSIM);
* ``cmse_loss``: HighRes-net's clearance-aware MSE: SR cropped by ``border``, the HR crop at every
  integer shift, brightness bias removed over clear pixels, the best shift per sample;
* ``selfsup_loss``: the self-supervised loss of multi-frame fusion on real frames: the fused HR image through
  the sensor (PSF, point sampling on a held-out frame's own shifted grid) against that frame, bias removed;
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
from srcube.models.psf import decimate, gaussian_blur


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


def predict_frame(sr: torch.Tensor, shift: tuple[float, float], scale: int, sigma: float) -> torch.Tensor:
    """A frame of the sensor predicted from the HR image ``sr`` (..., H, W): blurred by its PSF (``sigma`` x
    ``scale`` HR pixels) and point-sampled every ``scale`` pixels on a grid shifted by ``shift`` (dy, dx) LR pixels
    (the frame's shift against the grid of ``sr``, as :func:`models.registration.phase_shift` measures it)."""
    return decimate(gaussian_blur(sr, sigma * scale), scale, "point", (scale * shift[0], scale * shift[1]))


def frame_errors(sr: torch.Tensor, target: torch.Tensor, clear: torch.Tensor, shift: torch.Tensor, scale: int,
                 sigma: float, border: int = 3, trim: float | None = None) -> torch.Tensor:
    """(B,) brightness-bias-corrected mean squared error of each held-out frame ``target`` (B, 1, h, w) against
    its prediction from ``sr`` (B, 1, scale h, scale w) (:func:`predict_frame` at its ``shift`` (B, 2)), over its
    ``clear`` (B, 1, h, w) pixels ``border`` pixels in from the edges (the PSF and the shift read past them).
    ``trim``: pixels whose error is over ``trim`` robust standard deviations (1.4826 x the median absolute error)
    do not count either: what no fusion of other dates can predict (a cloud the frame's mask missed, a change)."""
    out = []
    for k in range(sr.shape[0]):
        pred = predict_frame(sr[k], (float(shift[k, 0]), float(shift[k, 1])), scale, sigma)
        inner = (..., slice(border, pred.shape[-2] - border), slice(border, pred.shape[-1] - border))
        cc = clear[k][inner].to(pred.dtype)
        diff = (target[k][inner] - pred[inner]) * cc
        n = cc.sum().clamp(min=1.0)
        bias = diff.sum() / n
        if trim is not None and bool(cc.any()):
            err = (diff - bias).detach().abs()
            spread = 1.4826 * err[cc > 0].median()
            cc = cc * (err <= trim * spread.clamp(min=1e-6)).to(cc.dtype)
            n = cc.sum().clamp(min=1.0)
            bias = (diff * cc).sum() / n
        out.append((((diff - bias) * cc) ** 2).sum() / n)
    return torch.stack(out)


#: the self-supervised loss leaves out pixels over this many robust standard deviations of the error (clouds and
#: changes that the frames' masks missed: the Kelvins frames read here carry no cloud masks)
SELFSUP_TRIM = 3.0


def selfsup_loss(sr: torch.Tensor, target: torch.Tensor, clear: torch.Tensor, shift: torch.Tensor, scale: int,
                 sigma: float, border: int = 3, trim: float | None = SELFSUP_TRIM) -> torch.Tensor:
    """Mean of :func:`frame_errors` (trimmed): a fusion of real frames must predict a real frame it did not see."""
    return frame_errors(sr, target, clear, shift, scale, sigma, border, trim).mean()


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
