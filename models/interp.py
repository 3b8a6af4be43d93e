"""Interpolation baselines exposed as models: nearest, bilinear, bicubic and Lanczos upsampling.

Output pixel ``i`` samples the input at ``(i + 0.5) / scale - 0.5`` (half-pixel centres), so each
input pixel maps to exactly ``scale x scale`` output pixels with no shift. Borders are clamped
(edge replication), as a whole-image pass does. They take any number of bands.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from srcube.models.base import SRModel

#: input pixels each side an output pixel depends on (kernel half-width, rounded up)
_REACH = {"nearest": 0, "bilinear": 1, "bicubic": 2}


class Interpolation(SRModel):
    """Parameter-free upsampling baseline (torch ``interpolate``, ``align_corners=False``)."""

    def __init__(self, mode: str = "bicubic", scale: int = 4) -> None:
        if mode not in _REACH:
            raise ValueError(f"interpolation mode must be one of {sorted(_REACH)}, got {mode!r}")
        super().__init__(scale=scale)
        self.mode = mode
        self.name = mode

    @property
    def receptive_field(self) -> int:
        return _REACH[self.mode]

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            return x.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1)
        return F.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=False)


def lanczos_kernel(x: np.ndarray, a: int) -> np.ndarray:
    """The Lanczos window ``sinc(x) sinc(x / a)`` on ``|x| < a``, zero elsewhere."""
    return np.where(np.abs(x) < a, np.sinc(x) * np.sinc(x / a), 0.0)


def lanczos_phase_weights(scale: int, a: int) -> np.ndarray:
    """(scale, 2a+1) normalised weights of input offsets -a..a for each output phase."""
    offsets = np.arange(-a, a + 1)
    rows = []
    for p in range(scale):
        u = (p + 0.5) / scale - 0.5  # sample position relative to the input pixel centre
        w = lanczos_kernel(u - offsets, a)
        rows.append(w / w.sum())
    return np.asarray(rows, dtype=np.float64)


class Lanczos(SRModel):
    """Separable Lanczos-``a`` upsampling (a = 3 by default), borders clamped."""

    def __init__(self, scale: int = 4, a: int = 3) -> None:
        if a < 1:
            raise ValueError(f"Lanczos a must be >= 1, got {a}")
        super().__init__(scale=scale)
        self.name = "lanczos"
        self.a = a
        w = torch.from_numpy(lanczos_phase_weights(scale, a)).float()  # (s, 2a+1)
        self.wx: torch.Tensor
        self.wy: torch.Tensor
        self.register_buffer("wx", w[:, None, None, :].clone(), persistent=False)  # (s, 1, 1, k)
        self.register_buffer("wy", w[:, None, :, None].clone(), persistent=False)  # (s, 1, k, 1)

    @property
    def receptive_field(self) -> int:
        return self.a

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        s, a = self.scale, self.a
        xp = F.pad(x, (a, a, a, a), mode="replicate")
        # along x: s phases as channels, then interleave them
        cols = F.conv2d(xp, self.wx)  # (n, s, h + 2a, w)
        cols = cols.permute(0, 2, 3, 1).reshape(n, 1, h + 2 * a, w * s)
        rows = F.conv2d(cols, self.wy)  # (n, s, h, w*s)
        return rows.permute(0, 2, 1, 3).reshape(n, 1, h * s, w * s)


def lanczos_shift(img: torch.Tensor, shift: torch.Tensor, a: int = 3) -> torch.Tensor:
    """Shift each image of ``img`` (N, C, H, W) by ``shift`` (N, 2) = (dy, dx) pixels, sub-pixel,
    with a separable Lanczos kernel (borders clamped). Differentiable in ``img`` and ``shift``."""
    n, c, h, w = img.shape
    taps = torch.arange(-a, a + 1, dtype=img.dtype, device=img.device)  # (k,)

    def kernel(d: torch.Tensor) -> torch.Tensor:  # d: (N,) -> (N, k) normalised
        x = taps[None, :] + d[:, None]
        k = torch.where(x.abs() < a, torch.special.sinc(x) * torch.special.sinc(x / a), torch.zeros_like(x))
        return k / k.sum(dim=1, keepdim=True)

    ky, kx = kernel(shift[:, 0]), kernel(shift[:, 1])
    xp = F.pad(img, (a, a, a, a), mode="replicate").reshape(1, n * c, h + 2 * a, w + 2 * a)
    kx_w = kx.repeat_interleave(c, 0)[:, None, None, :]
    ky_w = ky.repeat_interleave(c, 0)[:, None, :, None]
    out = F.conv2d(F.conv2d(xp, kx_w, groups=n * c), ky_w, groups=n * c)
    return out.reshape(n, c, h, w)
