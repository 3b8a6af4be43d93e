"""PSNR against the reference's own peak and block-bootstrap intervals: the statistics every number of an
evaluation table is one of (:mod:`training.evaluation`).

* **PSNR** of a band = ``10 log10(peak^2 / MSE)`` with ``peak`` = the maximum of the *reference* band over
  the evaluated window (stated in every row as ``peak``). The customary peak of 1.0 would add
  ``-20 log10(peak)`` to every PSNR (4.4 dB at a peak of 0.6, 10.5 dB at 0.3); the gain over a baseline
  does not depend on the peak. The model and its baselines are scored against the same peak. No border is cut.
* **SSIM**: :func:`training.metrics.ssim` (Gaussian window 11, sigma 1.5) with
  ``data_range = max - min`` of the reference band over the window.
* **Intervals** (95 %): block bootstrap. The window is cut into non-overlapping ``block x block``
  pixels of the reference grid (32; edge blocks may be smaller and count by their pixels); one draw
  resamples as many blocks with replacement (multinomial counts, seeded per scene by
  ``(seed, crc32(scene name))``; 1000 draws); PSNR is recomputed from the drawn blocks' sums of squared
  errors over their pixel count, with the peak held at the window's. The gain over a baseline is paired:
  the same drawn blocks for the model and the baseline. A mean over scene-bands (summary, robustness
  rows) is resampled stratified: each scene draws its own blocks, shared by its bands, and the mean
  of the per-row values of a draw is one sample. Intervals are percentile intervals of the draws.
  They describe the pixels of *these* scenes (blocks spatially correlated within 32 px are kept
  together); they say nothing about places outside the split.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: how every PSNR here is computed (written into reports)
PEAK_CONVENTION = ("PSNR = 10 log10(peak^2 / MSE), peak = max of the reference band over the evaluated window "
                   "(the same peak for the model and its baselines); not 1.0")

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class Bootstrap:
    """Block-bootstrap settings: block side (reference pixels), number of draws, seed, level."""

    block: int = 32
    resamples: int = 1000
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.block < 1 or self.resamples < 10:
            raise ValueError(f"block must be >= 1 and resamples >= 10, got {self.block} and {self.resamples}")
        if not 0.5 <= self.level < 1.0:
            raise ValueError(f"level must be in [0.5, 1), got {self.level}")

    def to_json(self) -> dict[str, Any]:
        return {"block": self.block, "resamples": self.resamples, "seed": self.seed, "level": self.level,
                "method": "block bootstrap: non-overlapping blocks resampled with replacement, percentile "
                          "interval; paired for gains; stratified by scene for means"}


#: the default settings (frozen: one instance serves as every function's default)
BOOTSTRAP = Bootstrap()


def _t(x: ArrayLike) -> torch.Tensor:
    return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))).detach().cpu().to(torch.float64)


def _3d(x: torch.Tensor) -> torch.Tensor:
    return x[None] if x.ndim == 2 else x


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _scene_seed(seed: int, name: str) -> list[int]:
    return [int(seed), zlib.crc32(name.encode())]


def own_peak(reference: ArrayLike) -> float:
    """The peak of a reference band: its maximum over the evaluated window."""
    return float(_t(reference).max())


def psnr_own_peak(x: ArrayLike, reference: ArrayLike) -> tuple[float, float]:
    """(PSNR in dB against the reference's own peak, that peak) for one band (H, W)."""
    a, r = _t(x), _t(reference)
    peak = own_peak(r)
    mse = float(((a - r) ** 2).mean())
    return (float("inf") if mse == 0 else 10.0 * math.log10(peak**2 / mse)), peak


def block_sse(x: ArrayLike, reference: ArrayLike, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of squared errors per non-overlapping block: ((bands, n_blocks), pixels per block (n_blocks,)).

    Blocks tile the window from its top-left corner; those at the right and bottom edges may be smaller.
    """
    err = (_3d(_t(x)) - _3d(_t(reference))) ** 2
    c, h, w = err.shape
    ny, nx = -(-h // block), -(-w // block)
    pad = torch.zeros(c, ny * block, nx * block, dtype=err.dtype)
    pad[:, :h, :w] = err
    ones = torch.zeros(ny * block, nx * block, dtype=err.dtype)
    ones[:h, :w] = 1.0
    sse = pad.reshape(c, ny, block, nx, block).sum((2, 4)).reshape(c, -1)
    n = ones.reshape(ny, block, nx, block).sum((1, 3)).reshape(-1)
    return sse.numpy(), n.numpy()


def resample_counts(n_blocks: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n_blocks) how often each block is drawn in each bootstrap draw (n_blocks draws)."""
    return rng.multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=resamples).astype(np.float64)


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap draws."""
    lo, hi = np.percentile(np.asarray(samples, np.float64), [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _boot_psnr(sse: np.ndarray, n: np.ndarray, counts: np.ndarray, peak: float) -> np.ndarray:
    """PSNR of every draw from per-block sums (sse (n_blocks,), n (n_blocks,), counts (draws, n_blocks))."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(peak**2 * (counts @ n) / (counts @ sse))


def _boot_gain(sse_model: np.ndarray, sse_base: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Paired gain (dB) of the model over a baseline in every draw: the same blocks for both."""
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = 10.0 * np.log10((counts @ sse_base) / (counts @ sse_model))
    return np.where(np.isnan(gain), 0.0, gain)  # 0/0: both exact on the drawn blocks

def _mean(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean([float(v) for v in values if v is not None]))
