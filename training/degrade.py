"""The Wald protocol's degradation: a sensor-like Gaussian PSF, then s x s block averaging.

The Gaussian is matched to the Sentinel-2 MTF: its transfer at the low-resolution Nyquist
frequency 1 / (2 s) cycles per pixel equals ``mtf`` (0.3, within the 0.15-0.35 range of the
Sentinel-2 MSI requirements at Nyquist). For a Gaussian, MTF(f) = exp(-2 pi^2 sigma^2 f^2), so
sigma = (s / pi) sqrt(-2 ln mtf). Block averaging keeps the grids aligned: each LR pixel is exactly
the s x s HR pixels it covers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

S2_MTF_AT_NYQUIST = 0.3


def psf_sigma(scale: int, mtf: float = S2_MTF_AT_NYQUIST) -> float:
    """Gaussian PSF sigma (HR pixels) whose MTF at the LR Nyquist frequency is ``mtf``."""
    if not 0.0 < mtf < 1.0:
        raise ValueError(f"mtf must be in (0, 1), got {mtf}")
    return scale / math.pi * math.sqrt(-2.0 * math.log(mtf))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (..., H, W) with reflect padding (radius 3 sigma)."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    shape = x.shape
    y = x.reshape(-1, 1, *shape[-2:])
    y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k[None, None, None, :])
    y = F.conv2d(y, k[None, None, :, None])
    return y.reshape(shape)


def degrade(hr: torch.Tensor, scale: int, mtf: float = S2_MTF_AT_NYQUIST) -> torch.Tensor:
    """(..., H, W) -> (..., H // s, W // s): PSF blur then s x s block mean (H, W cropped to multiples of s)."""
    h, w = (hr.shape[-2] // scale) * scale, (hr.shape[-1] // scale) * scale
    x = gaussian_blur(hr[..., :h, :w], psf_sigma(scale, mtf))
    shape = x.shape
    pooled = F.avg_pool2d(x.reshape(-1, 1, h, w), scale)
    return pooled.reshape(*shape[:-2], h // scale, w // scale)
