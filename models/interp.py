"""Interpolation baselines exposed as models: nearest, bilinear and bicubic upsampling.

Output pixel ``i`` samples the input at ``(i + 0.5) / scale - 0.5`` (half-pixel centres), so each
input pixel maps to exactly ``scale x scale`` output pixels with no shift. Borders are clamped
(edge replication), as a whole-image pass does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.base import SRModel, check_input

#: input pixels each side an output pixel depends on (kernel half-width, rounded up)
_REACH = {"nearest": 0, "bilinear": 1, "bicubic": 2}


class Interpolation(SRModel):
    """Parameter-free upsampling baseline."""

    def __init__(self, mode: str = "bicubic", scale: int = 4) -> None:
        super().__init__()
        if mode not in _REACH:
            raise ValueError(f"interpolation mode must be one of {sorted(_REACH)}, got {mode!r}")
        if not isinstance(scale, int) or isinstance(scale, bool) or not 2 <= scale <= 8:
            raise ValueError(f"scale must be an integer in 2..8, got {scale!r}")
        self.mode = mode
        self.name = mode
        self.scale = scale
        self.receptive_field = _REACH[mode]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        if self.mode == "nearest":
            return x.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1)
        return F.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=False)
