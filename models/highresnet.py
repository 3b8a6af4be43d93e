"""HighRes-net (Deudon et al., arXiv 2002.06460): multi-frame super-resolution by recursive fusion.

1. Reference: the per-pixel median of the clear views (a view's pixel counts where its clear mask
   is set; pixels clear in no view fall back to the median of all real views).
2. Shared encoder on each (view, reference) pair: 3x3 conv + PReLU, residual blocks, 3x3 conv.
3. Recursive pairwise fusion over ``n_views`` = 2^k hidden states: view ``i`` is fused with view
   ``n - 1 - i`` by a shared residual block + conv + PReLU, and added to view ``i`` weighted by
   whether the partner is a real view (padded views are skipped), until one state is left.
4. Decoder: transposed convolution with kernel = stride = scale (+ PReLU), then a 1x1 conv to the
   bands. With ``residual=True`` (default, not in the paper) the bicubic upsampling of the
   reference is added, so an untrained or early model starts from the clear-median composite.

Input: views ``(B, T, C, H, W)`` and clear masks ``(B, T, H, W)``; T <= ``n_views`` (missing views
are padded and masked). A view whose mask is all zero counts as missing unless ``present`` says
otherwise. Any band count: ``channels`` bands fused jointly, or ``channels=1`` (default), each
band of the input fused on its own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from srcube.models.base import SRModel


class _Residual(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.PReLU(),
                                  nn.Conv2d(features, features, 3, padding=1), nn.PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _lower_median(views: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower median over dim 1 of ``views`` (B, T, C, H, W) where ``valid`` (B, T, 1, H, W); and the
    count of valid entries (B, 1, H, W). Sort-based (ONNX-exportable, unlike nanmedian)."""
    big = torch.finfo(views.dtype).max
    ordered = torch.sort(torch.where(valid, views, torch.full_like(views, big)), dim=1).values
    count = valid.sum(1, keepdim=True)  # (B, 1, 1, H, W)
    index = ((count - 1).clamp(min=0) // 2).expand(-1, 1, views.shape[2], -1, -1)
    return torch.gather(ordered, 1, index).squeeze(1), count.squeeze(1)


def masked_median(views: torch.Tensor, masks: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Per-pixel (lower) median over the views that are clear there: (B, T, C, H, W) -> (B, C, H, W).

    Pixels clear in no view use the median over the present (non-padded) views, else zero.
    """
    real = present[:, :, None, None, None]
    clear = (masks > 0.5).unsqueeze(2) & real
    med_clear, n_clear = _lower_median(views, clear)
    med_all, n_all = _lower_median(views, real.expand(-1, -1, 1, views.shape[3], views.shape[4]))
    out = torch.where(n_clear > 0, med_clear, med_all)
    return torch.where(n_all > 0, out, torch.zeros_like(out))


class HighResNet(SRModel):
    multi_frame = True

    def __init__(self, scale: int = 3, channels: int = 1, bands: tuple[str, ...] | None = None,
                 features: int = 64, encoder_blocks: int = 2, n_views: int = 16, residual: bool = True) -> None:
        super().__init__(scale=scale, channels=channels, bands=bands)
        if n_views < 1 or n_views & (n_views - 1):
            raise ValueError(f"n_views must be a power of two, got {n_views}")
        self.name = "highresnet"
        self.n_views, self.encoder_blocks, self.residual = n_views, encoder_blocks, residual
        self.encoder = nn.Sequential(
            nn.Conv2d(2 * channels, features, 3, padding=1), nn.PReLU(),
            *(_Residual(features) for _ in range(encoder_blocks)),
            nn.Conv2d(features, features, 3, padding=1))
        self.fuse = nn.Sequential(_Residual(2 * features), nn.Conv2d(2 * features, features, 3, padding=1), nn.PReLU())
        last = nn.Conv2d(features, channels, 1)
        if residual:  # start from the bicubic clear-median composite
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)
        self.decoder = nn.Sequential(nn.ConvTranspose2d(features, features, kernel_size=scale, stride=scale),
                                     nn.PReLU(), last)

    @property
    def receptive_field(self) -> int:
        encoder = 2 + 2 * self.encoder_blocks
        fusion = 3 * int(math.log2(self.n_views))
        return max(encoder + fusion, 2 if self.residual else 0)

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("HighResNet is multi-frame: call it with (views, masks)")

    def forward(self, views: torch.Tensor, masks: torch.Tensor | None = None,
                present: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse ``views`` (B, T, C, H, W) with clear ``masks`` (B, T, H, W) into (B, C, sH, sW).

        ``present`` (B, T) says which views are real; by default a view is real when its mask has
        any clear pixel. Tiled inference passes it explicitly so every tile agrees.
        """
        if views.ndim != 5:
            raise ValueError(f"highresnet expects views (B, T, C, H, W), got {tuple(views.shape)}")
        b, t, c, h, w = views.shape
        if self.channels == 1 and c > 1:  # band-agnostic: each band is fused on its own
            fold = views.permute(0, 2, 1, 3, 4).reshape(b * c, t, 1, h, w)
            m = None if masks is None else masks.repeat_interleave(c, 0)
            p = None if present is None else present.repeat_interleave(c, 0)
            return self(fold, m, p).reshape(b, c, h * self.scale, w * self.scale)
        if c != self.channels:
            raise ValueError(f"highresnet was built for {self.channels} band(s), got {c}")
        if t > self.n_views:
            raise ValueError(f"{t} views given, the model fuses at most {self.n_views}; select the clearest")
        if masks is None:
            masks = torch.ones(b, t, h, w, dtype=views.dtype, device=views.device)
        if masks.shape != (b, t, h, w):
            raise ValueError(f"masks must be (B, T, H, W) = {(b, t, h, w)}, got {tuple(masks.shape)}")
        masks = masks.to(views.dtype)
        if present is None:
            present = masks.flatten(2).amax(2) > 0.5  # (B, T): a view with no clear pixel counts as missing
        present = present.to(torch.bool)
        ref = masked_median(views, masks, present)
        if t < self.n_views:  # pad to n_views: zero views, masked out
            pad = self.n_views - t
            views = torch.cat([views, views.new_zeros(b, pad, c, h, w)], 1)
            present = torch.cat([present, present.new_zeros(b, pad)], 1)
        pairs = torch.cat([views, ref[:, None].expand_as(views)], 2).reshape(b * self.n_views, 2 * c, h, w)
        hidden = self.encoder(pairs).reshape(b, self.n_views, -1, h, w)
        alphas = present.to(views.dtype)[:, :, None, None, None]
        n = self.n_views
        while n > 1:
            half = n // 2
            alice, bob = hidden[:, :half], hidden[:, half:n].flip(1)
            fused = self.fuse(torch.cat([alice, bob], 2).reshape(b * half, -1, h, w)).reshape(b, half, -1, h, w)
            a_alice, a_bob = alphas[:, :half], alphas[:, half:n].flip(1)
            # a padded alice takes bob's fused state; a padded bob leaves alice unchanged
            hidden = a_alice * (alice + a_bob * fused) + (1 - a_alice) * bob
            alphas = torch.maximum(a_alice, a_bob)
            n = half
        out = self.decoder(hidden[:, 0])
        if self.residual:
            out = out + F.interpolate(ref, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out
