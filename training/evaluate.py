"""Evaluate a model against the interpolation baseline on a training config's data, and quicklook PNGs.

* :func:`evaluate_dataset`: a model on a dataset's samples (the validation split of a training
  config), with the bicubic baseline (multi-frame: bicubic of the clear-median composite). Its
  PSNR is against a peak of 1.0, as the training logs and the weights' metadata record it.

The evaluation that selects and reports models (PSNR against the reference's own peak, intervals,
splits by place, robustness, the Wald protocol on any raster) is :mod:`training.evaluation`.

Quicklooks: one PNG per sample, four panels (input upsampled by nearest neighbour, bicubic, SR,
reference), stretched to the reference's 2-98 % range.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import torch.nn.functional as F

from srcube import models
from srcube.models.highresnet import masked_median
from srcube.training.metrics import metric_table, summarize


def _stretch(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((img - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)


def quicklook(path: Path, lr: torch.Tensor, bicubic: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor) -> Path:
    """Write a 4-panel PNG (input, bicubic, SR, reference) of band 0, or RGB of bands 0-2."""
    s = hr.shape[-1] // lr.shape[-1]
    up = lr.repeat_interleave(s, -2).repeat_interleave(s, -1)
    bands = [0, 1, 2] if hr.shape[0] >= 3 else [0]
    ref = hr[bands].numpy()
    lo, hi = np.percentile(ref, 2), np.percentile(ref, 98)
    panels = [_stretch(x[bands].numpy(), lo, hi) for x in (up, bicubic, sr, hr)]
    sep = np.full((len(bands), hr.shape[-2], 4), 255, np.uint8)
    mosaic = np.concatenate([p for x in panels for p in (x, sep)][:-1], axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # a picture: no georeferencing intended
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=mosaic.shape[-1], height=mosaic.shape[-2],
                           count=mosaic.shape[0], dtype="uint8") as dst:
            dst.write(mosaic)
    return path


def _rows(sr: torch.Tensor, base: torch.Tensor, hr: torch.Tensor, scale: int, clear: torch.Tensor | None,
          corrected: bool) -> tuple[dict[str, float], dict[str, float]]:
    return (metric_table(sr.clamp(0, 1), hr, scale, clear, corrected=corrected),
            metric_table(base.clamp(0, 1), hr, scale, clear, corrected=corrected))


@torch.no_grad()
def evaluate_dataset(model: models.SRModel, samples: Iterable[Any], *, quicklooks: Path | None = None,
                     n_quicklooks: int = 4, limit: int | None = None) -> dict[str, dict[str, float]]:
    """{"model": mean metrics, "bicubic": mean metrics} over the samples."""
    model.eval()
    s = model.scale
    model_rows, base_rows = [], []
    for k, sample in enumerate(samples):
        if limit is not None and k >= limit:
            break
        if model.multi_frame:
            views, masks, present = sample["views"][None], sample["masks"][None], sample["present"][None]
            sr = model(views, masks, present)[0]
            ref = masked_median(views, masks, present)
            base = F.interpolate(ref, scale_factor=s, mode="bicubic", align_corners=False)[0]
            lr, hr, clear = ref[0], sample["hr"], sample.get("hr_clear")
            clear = None if clear is None else clear[0]
        else:
            lr, hr = sample
            sr = model(lr[None])[0]
            base = F.interpolate(lr[None], scale_factor=s, mode="bicubic", align_corners=False)[0]
            clear = None
        m, b = _rows(sr, base, hr, s, clear, corrected=model.multi_frame)
        model_rows.append(m)
        base_rows.append(b)
        if quicklooks is not None and k < n_quicklooks:
            quicklook(quicklooks / f"sample-{k:03d}.png", lr, base.clamp(0, 1), sr.clamp(0, 1), hr)
    return {"model": summarize(model_rows), "bicubic": summarize(base_rows), "samples": {"n": float(len(model_rows))}}
