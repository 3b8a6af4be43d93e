"""SRCNN (Dong et al., arXiv 1501.00092): bicubic upsampling, then patch extraction, non-linear
mapping and reconstruction convolutions (9-1-5 with 64 and 32 filters in the paper's base model).

``residual=True`` (default) adds the bicubic input to the reconstruction, so the network learns
the missing detail; ``residual=False`` is the paper's plain mapping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srcube.models.base import SRModel, bicubic_then_hr_reach


class SRCNN(SRModel):
    def __init__(self, scale: int = 4, channels: int = 1, bands: tuple[str, ...] | None = None,
                 features: tuple[int, int] = (64, 32), kernels: tuple[int, int, int] = (9, 1, 5),
                 residual: bool = True) -> None:
        super().__init__(scale=scale, channels=channels, bands=bands)
        self.name = "srcnn"
        f1, f2 = features
        k1, k2, k3 = kernels
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"SRCNN kernels must be odd, got {kernels}")
        self.kernels = tuple(kernels)
        self.residual = residual
        self.body = nn.Sequential(
            nn.Conv2d(channels, f1, k1, padding=k1 // 2), nn.ReLU(inplace=True),
            nn.Conv2d(f1, f2, k2, padding=k2 // 2), nn.ReLU(inplace=True),
            nn.Conv2d(f2, channels, k3, padding=k3 // 2),
        )

    @property
    def receptive_field(self) -> int:
        # bicubic, then convolutions reaching sum((k - 1) / 2) output pixels
        return bicubic_then_hr_reach(sum((k - 1) // 2 for k in self.kernels), self.scale)

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        out = self.body(up)
        return up + out if self.residual else out
