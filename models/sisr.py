"""Single-image generators of the SRGAN/ESRGAN family, and their discriminator.

* ``srgan``: SRResNet-style generator (Ledig et al. 2017): residual blocks (conv, PReLU, conv;
  batch norm removed as in EDSR/ESRGAN, which also makes inference tile-exact), a long skip,
  pixel-shuffle upsampling (x2 and x3 steps), output convolution.
* ``esrgan``: the same trunk with Residual-in-Residual Dense Blocks (Wang et al. 2018): three dense
  blocks of five 3x3 convolutions with growth channels, LeakyReLU(0.2), residual scaling 0.2.

Both take any band count (``channels``; 1 = band-agnostic) and add the bicubic upsampling of the
input to their output (``residual=True``), as the SR4RS / torchsisr generators for Sentinel-2 do:
the network only has to learn the detail bicubic misses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from srcube.models.base import SRModel


def upsampling_steps(scale: int) -> list[int]:
    """Pixel-shuffle factors whose product is ``scale`` (x4 = 2 x 2, x8 = 2 x 2 x 2, x6 = 2 x 3)."""
    steps, rest = [], scale
    for f in (2, 3):
        while rest % f == 0:
            steps.append(f)
            rest //= f
    if rest > 1:
        steps.append(rest)
    return steps


class ResidualBlock(nn.Module):
    def __init__(self, features: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.PReLU(features),
                                  nn.Conv2d(features, features, 3, padding=1))
        self.res_scale = res_scale

    reach = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class DenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing all previous outputs (growth ``growth`` channels)."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(features + i * growth, growth if i < 4 else features, 3, padding=1) for i in range(5))
        self.act = nn.LeakyReLU(0.2, inplace=True)

    reach = 5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, 1))
            if i < 4:
                feats.append(self.act(out))
        return x + 0.2 * out


class RRDB(nn.Module):
    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(features, growth) for _ in range(3)))

    reach = 15

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.blocks(x)


class SISRGenerator(SRModel):
    """SRGAN (``block="residual"``) or ESRGAN (``block="rrdb"``) generator."""

    def __init__(self, scale: int = 4, channels: int = 1, bands: tuple[str, ...] | None = None,
                 features: int = 64, blocks: int = 16, block: str = "residual", growth: int = 32,
                 residual: bool = True) -> None:
        super().__init__(scale=scale, channels=channels, bands=bands)
        if block not in ("residual", "rrdb"):
            raise ValueError(f"block must be 'residual' or 'rrdb', got {block!r}")
        if blocks < 1 or features < 1:
            raise ValueError("blocks and features must be positive")
        self.name = "esrgan" if block == "rrdb" else "srgan"
        self.block_kind, self.n_blocks, self.residual = block, blocks, residual
        self.head = nn.Conv2d(channels, features, 3, padding=1)
        make = (lambda: RRDB(features, growth)) if block == "rrdb" else (lambda: ResidualBlock(features))
        self.body = nn.Sequential(*(make() for _ in range(blocks)))
        self.body_tail = nn.Conv2d(features, features, 3, padding=1)
        ups: list[nn.Module] = []
        for f in upsampling_steps(scale):
            ups += [nn.Conv2d(features, features * f * f, 3, padding=1), nn.PixelShuffle(f), nn.PReLU(features)]
        self.upsample = nn.Sequential(*ups)
        last = nn.Conv2d(features, channels, 3, padding=1)
        if residual:  # start as bicubic: the last layer begins at zero
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)
        self.tail = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.PReLU(features), last)

    @property
    def receptive_field(self) -> int:
        per_block = RRDB.reach if self.block_kind == "rrdb" else ResidualBlock.reach
        lr = 1 + per_block * self.n_blocks + 1  # head, body, body tail: at the input resolution
        hr = 0.0  # upsampling convolutions, then the two tail convolutions, in output pixels
        current = 1
        for f in upsampling_steps(self.scale):
            hr += self.scale / current  # one 3x3 conv at the current resolution
            current *= f
        hr += 2
        reach = lr + math.ceil(hr / self.scale)
        return max(reach, 2 if self.residual else 0)

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        feat = feat + self.body_tail(self.body(feat))
        out = self.tail(self.upsample(feat))
        if self.residual:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


class Discriminator(nn.Module):
    """VGG-style discriminator (SRGAN): strided conv blocks, LeakyReLU(0.2), a dense head.

    Takes any patch size (global average pooling before the head) and any band count.
    """

    def __init__(self, channels: int = 1, features: int = 64) -> None:
        super().__init__()
        widths = [features, features, 2 * features, 2 * features, 4 * features, 4 * features,
                  8 * features, 8 * features]
        layers: list[nn.Module] = []
        cin = channels
        for i, w in enumerate(widths):
            layers.append(nn.Conv2d(cin, w, 3, stride=1 + (i % 2), padding=1))
            if i > 0:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 2 * cin),
                                  nn.LeakyReLU(0.2, inplace=True), nn.Linear(2 * cin, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real/fake logits, one per image: (B, C, H, W) -> (B,)."""
        return self.head(self.features(x)).squeeze(1)
