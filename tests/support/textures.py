"""Synthetic images with the texture of reflectance, for the evaluation's tests: seeded, periodic, float64."""

from __future__ import annotations

import torch


def texture(bands: int, h: int, w: int, seed: int = 0, cutoff: float = 0.08) -> torch.Tensor:
    """Periodic low-pass noise around 0.15 reflectance (std 0.05), float64, (bands, h, w)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(bands, h, w, generator=g, dtype=torch.float64)
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64)[:, None], torch.fft.fftfreq(w, dtype=torch.float64)[None]
    t = torch.fft.ifft2(torch.fft.fft2(noise) * torch.exp(-(fy**2 + fx**2) / (2 * cutoff**2))).real
    return 0.15 + 0.05 * t / t.std(dim=(-2, -1), keepdim=True)


def noisy(x: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    """x plus seeded white noise of standard deviation ``std``."""
    return x + std * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
