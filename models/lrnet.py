"""``lrnet``: a residual network that computes only at the input resolution (ESPCN/EDSR-style).

Every convolution sees the low-resolution grid; the last one emits ``channels x scale^2`` maps that a
pixel shuffle turns into the output grid, added to the bicubic upsampling of the input (the network
only learns what bicubic misses). That keeps it cheap enough for CPUs (MACs per output pixel are
those per input pixel divided by ``scale^2``) while ``channels > 1`` lets bands guide each other:
srcube's cross-band Sentinel-2 models take the four 10 m bands together (B02 B03 B04 B08).

``project="sentinel-2"`` (a sensor name) ends the network with the sensor's consistency projection
(:mod:`models.consistency`, with the PSF :data:`models.psf.PROJECTION_PSF` assumes for the sensor, or
``project_sigma`` x scale): the output, degraded with that PSF, gives back the input, and the
network learns what that projection cannot restore (detail above the input's resolution). The model is
then consistent by construction wherever it runs; its receptive field includes the projection's reach.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from srcube.models.base import SRModel


class _Block(nn.Module):
    def __init__(self, features: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(features, features, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class LRNet(SRModel):
    """Head conv, ``blocks`` residual blocks and a tail conv at the input resolution, pixel shuffle,
    bicubic skip (see the module docstring)."""

    name = "lrnet"

    def __init__(self, scale: int = 4, channels: int = 1, bands: Sequence[str] | None = None, features: int = 32,
                 blocks: int = 6, res_scale: float = 0.1, project: str | None = None,
                 project_sigma: float | None = None) -> None:
        super().__init__(scale=scale, channels=channels, bands=bands)
        from srcube.models.consistency import Projection, ProjectionLayer

        if project_sigma is not None and not project:
            raise ValueError("project_sigma is the PSF of the consistency projection: give project (a sensor) too")
        self.project, self.project_sigma = project, project_sigma
        self.projection = Projection.for_sensor(project, scale, sigma=project_sigma) if project else None
        # its banded inverses as constant buffers (not in the weights): the model exports with them (ONNX)
        self.projector = ProjectionLayer(self.projection) if self.projection is not None else None
        if features < 1 or blocks < 0:
            raise ValueError(f"features must be >= 1 and blocks >= 0, got {features} and {blocks}")
        self.features, self.n_blocks = features, blocks
        self.head = nn.Conv2d(channels, features, 3, padding=1)
        self.body = nn.Sequential(*(_Block(features, res_scale) for _ in range(blocks)))
        self.tail = nn.Conv2d(features, channels * scale * scale, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # starts as bicubic
        nn.init.zeros_(self.tail.bias)  # type: ignore[arg-type]

    @property
    def consistent(self) -> bool:
        """Whether the output is consistent with the input by construction (the projection is built in)."""
        return self.projection is not None

    @property
    def receptive_field(self) -> int:
        net = max(2 + 2 * self.n_blocks, 2)  # head + 2 per block + tail (3x3 each); bicubic reaches 2
        return net + (self.projection.correction_reach if self.projection is not None else 0)

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        out = F.pixel_shuffle(self.tail(feat + self.body(feat)), self.scale)
        out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        if self.projector is not None:
            out = self.projector(x, out)
        return out
