"""ShiftNet: the registration network HighRes-net trains with (a HomographyNet for translations).

Given a super-resolved image and its reference, it predicts the sub-pixel shift (dy, dx) that
aligns them; :func:`register` applies it with a Lanczos kernel so the loss compares aligned
images. Eight 3x3 conv layers with batch norm and three 2x2 max-pools, global average pooling
(any patch size, unlike the original's fixed 16x16 flatten), dropout, two dense layers; the last
starts at zero, i.e. at the identity shift.
"""

from __future__ import annotations

import torch
from torch import nn

from models.interp import lanczos_shift


class ShiftNet(nn.Module):
    def __init__(self, channels: int = 1, features: int = 64) -> None:
        super().__init__()
        w = [features, features, features, features, 2 * features, 2 * features, 2 * features, 2 * features]
        layers: list[nn.Module] = []
        cin = 2 * channels
        for i, cout in enumerate(w):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            if i in (1, 3, 5):
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        last = nn.Linear(16 * features, 2, bias=False)
        nn.init.zeros_(last.weight)  # start at the identity shift
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5),
                                  nn.Linear(cin, 16 * features), nn.ReLU(inplace=True), last)

    def forward(self, sr: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Shifts (B, 2) = (dy, dx) in pixels that move ``sr`` onto ``reference`` (both (B, C, H, W))."""
        pair = torch.cat([sr - sr.mean((2, 3), keepdim=True), reference - reference.mean((2, 3), keepdim=True)], 1)
        return self.head(self.features(pair))


def register(shiftnet: ShiftNet, sr: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sr`` shifted onto ``reference`` with Lanczos interpolation, and the shifts used."""
    shifts = shiftnet(sr, reference)
    return lanczos_shift(sr, shifts), shifts
