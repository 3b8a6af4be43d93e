"""ELSR (arXiv 2208.14600): an extremely small network for low-power devices.

One 3x3 convolution to 6 features, one residual block (conv, PReLU, conv) at 6 features, one 3x3
convolution to ``channels * scale^2`` and a pixel shuffle: 1.6k parameters for one band at x4, all
computed at the input resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from srcube.models.base import SRModel


class ELSR(SRModel):
    def __init__(self, scale: int = 4, channels: int = 1, bands: tuple[str, ...] | None = None,
                 features: int = 6) -> None:
        super().__init__(scale=scale, channels=channels, bands=bands)
        self.name = "elsr"
        self.head = nn.Conv2d(channels, features, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.PReLU(features),
                                   nn.Conv2d(features, features, 3, padding=1))
        self.tail = nn.Conv2d(features, channels * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    @property
    def receptive_field(self) -> int:
        return 4  # four 3x3 convolutions at the input resolution

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        h = h + self.block(h)
        return self.shuffle(self.tail(h))
