"""The Wald protocol's degradation: a sensor-like Gaussian PSF, then s x s block averaging.

The Gaussian is matched to the Sentinel-2 MTF: its transfer at the low-resolution Nyquist
frequency 1 / (2 s) cycles per pixel equals ``mtf`` (0.3, within the 0.15-0.35 range of the
Sentinel-2 MSI requirements at Nyquist). For a Gaussian, MTF(f) = exp(-2 pi^2 sigma^2 f^2), so
sigma = (s / pi) sqrt(-2 ln mtf). Block averaging keeps the grids aligned: each LR pixel is exactly
the s x s HR pixels it covers.

The blur and the block mean are :mod:`models.psf`'s (one implementation for everything that degrades:
its Gaussian also blurs images smaller than the kernel, reflecting as far as they go, then repeating the
edge); this module keeps the Wald pairs' own choice of PSF (by MTF) and decimation (block mean).
"""

from __future__ import annotations

import torch

from srcube.models.psf import S2_MTF_AT_NYQUIST, decimate, factor_for_mtf, gaussian_blur

__all__ = ["S2_MTF_AT_NYQUIST", "degrade", "psf_sigma"]


def psf_sigma(scale: int, mtf: float = S2_MTF_AT_NYQUIST) -> float:
    """Gaussian PSF sigma (HR pixels) whose MTF at the LR Nyquist frequency is ``mtf``."""
    return scale * factor_for_mtf(mtf)


def degrade(hr: torch.Tensor, scale: int, mtf: float = S2_MTF_AT_NYQUIST) -> torch.Tensor:
    """(..., H, W) -> (..., H // s, W // s): PSF blur then s x s block mean (H, W cropped to multiples of s
    before the blur)."""
    h, w = (hr.shape[-2] // scale) * scale, (hr.shape[-1] // scale) * scale
    return decimate(gaussian_blur(hr[..., :h, :w], psf_sigma(scale, mtf)), scale, "area")
