"""The opensr-test metrics of an SR image (Aybar et al. 2024, package ``opensr-test``, source ``opensr_test/main.py``,
``correctness.py``, ``distance.py``, ``config.py``, ``utils.py``, ``spatial.py``; the package does not
install here, so they are implemented again from those definitions):

* operators: ``lr_up`` = the LR input upsampled bilinearly by the scale (torch ``interpolate``,
  ``align_corners=False``; opensr's ``lr_to_hr``); ``sr_down`` = the SR image downsampled by the scale
  with antialiased bilinear interpolation (opensr's ``sr_to_lr``). Metrics leave out a border of
  ``border`` high-resolution pixels (opensr's ``border_mask``, 16) and ``border // scale`` LR pixels.
  *Differences*: the HR border is rounded down to a multiple of the scale so that the LR crop covers
  exactly the HR crop (opensr's ``16 // 3`` misaligns them by a third of a pixel at x3); ``sr_down`` is
  computed on the whole SR image and cropped after (opensr crops first, so the resampler's own edge
  handling enters the outer LR pixels: on a linear ramp, where the round trip ``lr_up`` -> ``sr_down``
  is exact, cropping first leaves an L1 of 2e-5 reflectance, cropping after 1e-17).
* **consistency, reflectance** = mean ``|lr - sr_down|`` (opensr ``reflectance_distance="l1"``), per band
  and over all bands; **spectral** = mean over pixels of the spectral angle in degrees between the
  band vectors of ``lr`` and ``sr_down`` (opensr ``"sad"``; only with two or more bands, else ``None``);
  **spatial** = the length ``sqrt(dy^2 + dx^2)`` in LR pixels of the translation between ``lr`` and
  ``sr_down`` by phase correlation (opensr default ``spatial_method="pcc"``: satalign ``PCC`` =
  scikit-image ``phase_cross_correlation`` with upsample factor 50). *Differences*: an own
  implementation with the same upsampled-DFT refinement (factor 50), on the mean-removed band times a
  Hann window and without whitening the cross-power spectrum (plain cross-correlation): on 64 x 64
  crops of a textured image, the whitened, unwindowed correlation (scikit-image's default) returned
  (0, 0) for a (0.3, -0.45) px shift, the windowed cross-correlation was within 0.06 px. Per band, and on
  the band mean for the scene (opensr: bands 0-2 as RGB); opensr returns NaN when the shift exceeds 5
  pixels, here the shift is reported as measured.
* **correctness**: ``nd(x, y)`` = mean over bands of ``|x - y| / |x + y + 1e-8|`` (opensr
  ``correctness_distance="nd"``); ``d_ref = nd(lr_up, hr)``, ``d_im = nd(sr, hr)``, ``d_om = nd(sr, lr_up)``.
  High-gradient pixels: ``d_ref``, ``d_im`` or ``d_om`` above the 75th percentile of ``d_ref`` (opensr
  ``gradient_threshold="auto"`` of ``compute()``). With ``a = d_im / d_ref``, ``b = d_om / d_ref`` and
  ``H = a + b - 1``: improvement ``= a + b (1 - exp(-0.05 H))``, omission ``= b + a (1 - exp(-0.05 H))``,
  hallucination ``= exp(-0.05 a b)`` (lambda 0.05 each, opensr's ``Config``). Each pixel goes to the
  class with the smallest score; the three **percentages** are the shares of the high-gradient
  pixels (opensr ``correctness_norm="percent"``; ``norm="softmin"`` gives opensr's default, the mean
  softmin probability with temperature 0.25, also in percent). *Differences*: by default the SR image
  is not harmonised before correctness (opensr histogram-matches it to HR and aligns it by phase
  correlation): a Wald pair shares the reference's radiometry and grid by construction, so a bias or
  a shift is the model's error and stays in the score; ``harmonize=True`` applies histogram matching
  (no alignment). Pixels with ``d_ref == 0`` are left out (opensr would divide by zero).
  Percentages are computed per band (``nd`` of that band) and per scene (``nd`` over its bands).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from srcube.training.evaluation.stats import ArrayLike, _3d, _t

OPENSR_LAMBDA = 0.05  # opensr-test Config: im_score, om_score, ha_score
OPENSR_TEMPERATURE = 0.25  # opensr-test Config: correctness_temperature
OPENSR_BORDER = 16  # opensr-test Config: border_mask (high-resolution pixels)
OPENSR_UPSAMPLE = 50  # satalign PCC: upsample_factor


def upsample_bilinear(lr: ArrayLike, scale: int) -> torch.Tensor:
    """opensr-test's ``lr_to_hr``: bilinear upsampling by the scale, (C, h, w) -> (C, s h, s w)."""
    x = _3d(_t(lr))
    return F.interpolate(x[None], scale_factor=scale, mode="bilinear", align_corners=False)[0]


def downsample_antialias(sr: ArrayLike, scale: int) -> torch.Tensor:
    """opensr-test's ``sr_to_lr``: antialiased bilinear downsampling by the scale."""
    x = _3d(_t(sr))
    size = (x.shape[-2] // scale, x.shape[-1] // scale)
    return F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def _dft_around(spectrum: torch.Tensor, size: int, up: int, offset: tuple[float, float]) -> torch.Tensor:
    """Inverse DFT of ``spectrum`` sampled on a ``size x size`` grid of step 1/up starting at -offset/up
    (matrix-multiply DFT of Guizar-Sicairos et al. 2008, Opt. Lett. 33: 156)."""
    h, w = spectrum.shape
    pos_y = (torch.arange(size, dtype=torch.float64) - offset[0])[:, None]
    pos_x = (torch.arange(size, dtype=torch.float64) - offset[1])[:, None]
    ky = torch.exp(2j * math.pi * pos_y * torch.fft.fftfreq(h, d=float(up), dtype=torch.float64)[None, :])
    kx = torch.exp(2j * math.pi * pos_x * torch.fft.fftfreq(w, d=float(up), dtype=torch.float64)[None, :])
    return ky @ spectrum @ kx.T


def phase_shift(reference: ArrayLike, moving: ArrayLike, upsample: int = OPENSR_UPSAMPLE, window: bool = True,
                normalize: bool = False) -> tuple[float, float]:
    """(dy, dx) pixels by which ``moving`` is displaced relative to ``reference`` (``moving(p) ~
    reference(p - d)``): the peak of the cross-correlation, refined to 1/upsample pixel by an upsampled
    DFT. ``window``: Hann apodisation of both images (non-periodic crops); ``normalize``: whiten the
    cross-power spectrum (classic phase correlation, scikit-image's default; biased to 0 on crops)."""
    a, b = _t(reference), _t(moving)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"phase_shift takes two (H, W) images of one size, got {tuple(a.shape)}, {tuple(b.shape)}")
    h, w = a.shape
    win = torch.hann_window(h, periodic=False, dtype=torch.float64)[:, None] * \
        torch.hann_window(w, periodic=False, dtype=torch.float64)[None, :] if window else \
        torch.ones(h, w, dtype=torch.float64)
    cross = torch.fft.fft2((a - a.mean()) * win) * torch.fft.fft2((b - b.mean()) * win).conj()
    if normalize:
        mag = cross.abs()
        cross = cross / mag.clamp_min(max(float(mag.max()), 1e-300) * 1e-12)
    corr = torch.fft.ifft2(cross).abs()
    iy, ix = divmod(int(corr.argmax()), w)
    peak = [float(iy - h if iy > h // 2 else iy), float(ix - w if ix > w // 2 else ix)]
    if upsample > 1:
        size = math.ceil(1.5 * upsample)
        centre = size // 2
        peak = [round(p * upsample) / upsample for p in peak]
        fine = _dft_around(cross, size, upsample, (centre - peak[0] * upsample, centre - peak[1] * upsample)).abs()
        fy, fx = divmod(int(fine.argmax()), size)
        peak = [peak[0] + (fy - centre) / upsample, peak[1] + (fx - centre) / upsample]
    return -peak[0], -peak[1]


def _crop(lr: torch.Tensor, hr_like: Sequence[torch.Tensor], scale: int,
          border: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    b = (border // scale) * scale
    if b == 0:
        return lr, list(hr_like)
    lb = b // scale
    if 2 * lb >= min(lr.shape[-2:]) - 1:
        raise ValueError(f"the border of {b} px leaves nothing of a {tuple(lr.shape[-2:])} LR window at x{scale}")
    return lr[..., lb:-lb, lb:-lb], [x[..., b:-b, b:-b] for x in hr_like]


def spectral_angle(x: ArrayLike, y: ArrayLike, eps: float = 1e-12) -> torch.Tensor:
    """Per-pixel angle in degrees between the band vectors of (C, H, W) images."""
    a, b = _t(x), _t(y)
    cos = (a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0) + eps)
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def consistency(lr: ArrayLike, sr: ArrayLike, scale: int, *, border: int = OPENSR_BORDER) -> dict[str, Any]:
    """opensr-test consistency of an SR image with its LR input (see the module docstring).

    ``{"reflectance_l1": [per band], "reflectance_l1_all": all bands, "spectral_deg": float | None,
    "spatial_px": [per band], "spatial_px_all": on the band mean}``.
    """
    full_low, high = _3d(_t(lr)), _3d(_t(sr))
    full_down = downsample_antialias(high, scale)
    if full_down.shape != full_low.shape:
        raise ValueError(f"SR {tuple(high.shape)} is not x{scale} of LR {tuple(full_low.shape)}")
    b = border // scale
    low, down = (x[..., b : x.shape[-2] - b, b : x.shape[-1] - b] for x in (full_low, full_down))
    diff = (low - down).abs()
    shifts = [phase_shift(low[c], down[c]) for c in range(low.shape[0])]
    mean_shift = phase_shift(low.mean(0), down.mean(0))
    return {
        "reflectance_l1": [float(diff[c].mean()) for c in range(low.shape[0])],
        "reflectance_l1_all": float(diff.mean()),
        "spectral_deg": float(spectral_angle(low, down).mean()) if low.shape[0] > 1 else None,
        "spatial_px": [math.hypot(*s) for s in shifts],
        "spatial_px_all": math.hypot(*mean_shift),
    }


def match_histogram(source: ArrayLike, reference: ArrayLike) -> torch.Tensor:
    """Each band of ``source`` given the values of the same band of ``reference``, in the source's rank order."""
    s, r = _3d(_t(source)), _3d(_t(reference))
    out = torch.empty_like(s)
    for c in range(s.shape[0]):
        flat = torch.empty(s[c].numel(), dtype=s.dtype)
        flat[s[c].flatten().argsort()] = r[c].flatten().sort().values
        out[c] = flat.reshape(s[c].shape)
    return out


def _nd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x - y).abs() / (x + y + 1e-8).abs()).mean(0)


def correctness(lr: ArrayLike, sr: ArrayLike, hr: ArrayLike, scale: int, *, border: int = OPENSR_BORDER,
                quantile: float = 0.75, harmonize: bool = False, norm: str = "percent",
                lam: float = OPENSR_LAMBDA, temperature: float = OPENSR_TEMPERATURE) -> dict[str, float]:
    """opensr-test correctness of an SR image (see the module docstring): ``{"improvement_pct",
    "omission_pct", "hallucination_pct", "pixels"}`` over the high-gradient pixels, all bands together."""
    if norm not in ("percent", "softmin"):
        raise ValueError(f"norm must be 'percent' or 'softmin', got {norm!r}")
    low = _3d(_t(lr))
    high_sr, high_hr = _3d(_t(sr)), _3d(_t(hr))
    if harmonize:
        high_sr = match_histogram(high_sr, high_hr)
    up = upsample_bilinear(low, scale)
    _, (s, h, u) = _crop(low, [high_sr, high_hr, up], scale, border)
    d_ref, d_im, d_om = _nd(u, h), _nd(s, h), _nd(s, u)
    flat = d_ref.flatten()
    threshold = float(flat.kthvalue(max(1, int(quantile * flat.numel()))).values)
    mask = ((d_ref > threshold) | (d_im > threshold) | (d_om > threshold)) & (d_ref > 0)
    n = int(mask.sum())
    if n == 0:
        return {"improvement_pct": float("nan"), "omission_pct": float("nan"), "hallucination_pct": float("nan"),
                "pixels": 0}
    a, b = d_im[mask] / d_ref[mask], d_om[mask] / d_ref[mask]
    hh = a + b - 1
    scores = torch.stack([a + b * (1 - torch.exp(-hh * lam)), b + a * (1 - torch.exp(-hh * lam)),
                          torch.exp(-a * b * lam)])
    if norm == "percent":
        share = torch.bincount(scores.argmin(0), minlength=3).to(torch.float64) / n
    else:
        share = torch.softmax(-scores / temperature, 0).mean(1)
    return {"improvement_pct": 100 * float(share[0]), "omission_pct": 100 * float(share[1]),
            "hallucination_pct": 100 * float(share[2]), "pixels": n}
