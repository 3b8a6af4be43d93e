"""Cost of a model: multiply-accumulates per output pixel, counted with forward hooks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from srcube.models.base import SRModel
from srcube.models.interp import Interpolation, Lanczos

#: multiply-accumulates per output pixel and band of the interpolation baselines
_INTERP_MACS = {"nearest": 0, "bilinear": 4, "bicubic": 16}


def macs_per_output_pixel(model: SRModel, height: int = 32, width: int = 32) -> float:
    """MACs of one forward pass per output pixel (and band), from conv/linear layer shapes.

    Multi-frame models are measured with ``n_views`` views. Interpolation inside a network
    (bicubic skips) is counted at 16 MACs per output pixel.
    """
    total = 0

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output.numel() * k
        elif isinstance(module, nn.ConvTranspose2d):
            x = inputs[0]
            total += x.numel() * module.out_channels * module.kernel_size[0] * module.kernel_size[1] // module.groups
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        c = model.channels
        with torch.inference_mode():
            if model.multi_frame:
                t = int(getattr(model, "n_views", 1))
                y = model(torch.rand(1, t, c, height, width), torch.ones(1, t, height, width))
            else:
                y = model(torch.rand(1, c, height, width))
    finally:
        for h in handles:
            h.remove()
    out_pixels = y.shape[-1] * y.shape[-2] * y.shape[1]
    if isinstance(model, Interpolation):
        return float(_INTERP_MACS[model.mode])
    if isinstance(model, Lanczos):
        return float(2 * (2 * model.a + 1))
    bicubic_skip = 16 if getattr(model, "residual", False) else 0
    return total / out_pixels + bicubic_skip
