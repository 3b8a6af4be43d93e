"""The evaluation srcube selects and reports models with: Wald protocol on real scenes split by place,
PSNR against the reference's own peak, block-bootstrap intervals, a robustness table over degradations,
and the opensr-test consistency and correctness metrics.

Conventions (every number a table shows is one of these):

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
* **Wald protocol** (:func:`evaluate_wald`): the reference is degraded with a
  :class:`models.psf.Degradation` (default :data:`WALD`: Gaussian PSF of ``0.494 x scale`` and block
  mean, the degradation srcube's Wald training pairs use, :mod:`training.degrade`), super-resolved back
  by the model and by ``models.build("bicubic")``, compared per band. Band sharpeners (``forward(low,
  guide)``) are scored the same way with the low/guide variant: the 20 m bands degraded by the ratio
  (to 40 m) and the 10 m guide degraded by the ratio (to 20 m), sharpened, compared with the original
  20 m bands; baselines bicubic and ``hpf`` (linear high-pass injection).

The opensr-test metrics (Aybar et al. 2024, package ``opensr-test``, source ``opensr_test/main.py``,
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

Splits (:func:`evaluate_split`) come from :mod:`training.datasets.scenes`: validation is for model
selection; the test split is reported once per weights, next to them (:func:`write_test_report`,
``models/weights/NAME.test.json``), and the model card and the README table are generated from that
file (:mod:`training.card`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from srcube import models
from srcube.models.psf import ROBUSTNESS, Degradation, sensor_degradation
from srcube.models.sharpen import Sharpener
from srcube.training.datasets.scenes import S2_10M, S2_20M, Scene, load_s2
from srcube.training.datasets.scenes import scenes as task_scenes
from srcube.training.metrics import ssim

#: how every PSNR here is computed (written into reports)
PEAK_CONVENTION = ("PSNR = 10 log10(peak^2 / MSE), peak = max of the reference band over the evaluated window "
                   "(the same peak for the model and its baselines); not 1.0")

#: the Wald degradation of evaluations: Sentinel-2 PSF (MTF 0.3 at Nyquist) and block mean, as the
#: Wald training pairs of srcube (training/degrade.py)
#: the headline degradation of reports: the sensor's PSF (MTF 0.3 at the LR Nyquist) and point sampling at
#: the LR pixel centres, as a sensor samples (the robustness table adds the others, block means included)
WALD = sensor_degradation("sentinel-2")

REPORT_FORMAT = "srcube-test-report/1"
OPENSR_LAMBDA = 0.05  # opensr-test Config: im_score, om_score, ha_score
OPENSR_TEMPERATURE = 0.25  # opensr-test Config: correctness_temperature
OPENSR_BORDER = 16  # opensr-test Config: border_mask (high-resolution pixels)
OPENSR_UPSAMPLE = 50  # satalign PCC: upsample_factor

ArrayLike = np.ndarray | torch.Tensor


class IncompatibleSceneError(ValueError):
    """The scene cannot be evaluated with this model (bands, kind, size); the message says why."""


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


def _t(x: ArrayLike) -> torch.Tensor:
    return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))).detach().cpu().to(torch.float64)


def _3d(x: torch.Tensor) -> torch.Tensor:
    return x[None] if x.ndim == 2 else x


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _scene_seed(seed: int, name: str) -> list[int]:
    return [int(seed), zlib.crc32(name.encode())]


# --- PSNR against the reference's own peak, with block-bootstrap intervals ----------------------------


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


# --- opensr-test metrics (definitions in the module docstring) -----------------------------------------


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


# --- one scene: every band, the model against its baselines --------------------------------------------


@dataclass(frozen=True)
class Score:
    """One method on one band: PSNR (own peak) with its interval, SSIM (data range of the reference)."""

    psnr: float
    psnr_ci: tuple[float, float]
    ssim: float | None  # None where it was not asked for (robustness rows)


@dataclass(frozen=True)
class BandRow:
    """The model and its baselines on one band of one scene; gains paired over the same blocks."""

    scene: str
    band: str
    peak: float
    pixels: int
    n_blocks: int
    model: Score
    baselines: Mapping[str, Score]
    gains: Mapping[str, tuple[float, tuple[float, float]]]  # baseline -> (gain dB, interval)
    opensr: Mapping[str, float | None] = field(default_factory=dict)
    boot_gains: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def gain(self) -> float:
        """Gain over bicubic (dB)."""
        return self.gains["bicubic"][0]

    def to_json(self) -> dict[str, Any]:
        return {
            "scene": self.scene, "band": self.band, "peak": self.peak, "pixels": self.pixels,
            "n_blocks": self.n_blocks, "psnr": _finite(self.model.psnr), "psnr_ci": list(self.model.psnr_ci),
            "ssim": self.model.ssim,
            "baselines": {name: {"psnr": _finite(s.psnr), "psnr_ci": list(s.psnr_ci), "ssim": s.ssim,
                                 "gain": _finite(self.gains[name][0]), "gain_ci": list(self.gains[name][1])}
                          for name, s in self.baselines.items()},
            **{k: _finite(v) for k, v in self.opensr.items()},
        }


@dataclass(frozen=True)
class SceneResult:
    """Every band of one scene, and the scene-level opensr-test metrics (all bands together)."""

    scene: str
    rows: tuple[BandRow, ...]
    scale: int
    degradation: str
    window: tuple[int, int, int, int] | None = None  # row0, col0, height, width of the reference grid
    place: str = ""
    opensr: Mapping[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"scene": self.scene, "place": self.place, "scale": self.scale, "degradation": self.degradation,
                "window": list(self.window) if self.window else None,
                **{k: _finite(v) for k, v in self.opensr.items()}, "rows": [r.to_json() for r in self.rows]}


def _score(x: torch.Tensor, ref: torch.Tensor, sse: np.ndarray, n: np.ndarray, counts: np.ndarray,
           level: float, with_ssim: bool) -> Score:
    p, peak = psnr_own_peak(x, ref)
    data_range = max(float(ref.max() - ref.min()), 1e-12)
    return Score(p, interval(_boot_psnr(sse, n, counts, peak), level),
                 ssim(x, ref, data_range=data_range) if with_ssim else None)


def compare(sr: ArrayLike, baselines: Mapping[str, ArrayLike], reference: ArrayLike, lr: ArrayLike, *, scale: int,
            scene: str, bands: Sequence[str] | None = None, bootstrap: Bootstrap = Bootstrap(),
            opensr: bool = True, degradation: str = "", window: tuple[int, int, int, int] | None = None,
            place: str = "", border: int = OPENSR_BORDER, with_ssim: bool = True) -> SceneResult:
    """Score an SR image and its baselines against the reference, per band (all (bands, H, W) on the
    reference grid; ``lr`` the input on the low grid). ``baselines`` must contain ``"bicubic"``.
    ``opensr=False`` / ``with_ssim=False`` leave those metrics out (faster: robustness rows)."""
    ref = _3d(_t(reference))
    x = _3d(_t(sr))
    base = {k: _3d(_t(v)) for k, v in baselines.items()}
    if "bicubic" not in base:
        raise ValueError("the baselines must include 'bicubic'")
    for name, arr in [("sr", x), *base.items()]:
        if arr.shape != ref.shape:
            raise ValueError(f"{name} is {tuple(arr.shape)}, the reference {tuple(ref.shape)}")
    names = list(bands) if bands is not None else [f"band{i + 1}" for i in range(ref.shape[0])]
    if len(names) != ref.shape[0]:
        raise ValueError(f"{len(names)} band names for {ref.shape[0]} bands")
    sse, n = block_sse(x, ref, bootstrap.block)
    base_sse = {k: block_sse(v, ref, bootstrap.block)[0] for k, v in base.items()}
    counts = resample_counts(n.size, bootstrap.resamples, np.random.default_rng(_scene_seed(bootstrap.seed, scene)))
    low = _3d(_t(lr))
    cons = consistency(low, x, scale, border=border) if opensr else None
    rows = []
    for c, band in enumerate(names):
        model_score = _score(x[c], ref[c], sse[c], n, counts, bootstrap.level, with_ssim)
        scores, gains, boots = {}, {}, {}
        for k, v in base.items():
            scores[k] = _score(v[c], ref[c], base_sse[k][c], n, counts, bootstrap.level, with_ssim)
            boots[k] = _boot_gain(sse[c], base_sse[k][c], counts)
            gain = 0.0 if model_score.psnr == scores[k].psnr else model_score.psnr - scores[k].psnr
            gains[k] = (gain, interval(boots[k], bootstrap.level))
        extra: dict[str, float | None] = {}
        if cons is not None:
            corr = correctness(low[c], x[c], ref[c], scale, border=border)
            extra = {"consistency_l1": cons["reflectance_l1"][c], "spatial_px": cons["spatial_px"][c],
                     "improvement_pct": corr["improvement_pct"], "omission_pct": corr["omission_pct"],
                     "hallucination_pct": corr["hallucination_pct"]}
        rows.append(BandRow(scene, band, own_peak(ref[c]), int(n.sum()), int(n.size), model_score, scores, gains,
                            extra, boots))
    scene_metrics: dict[str, float | None] = {}
    if cons is not None:
        corr = correctness(low, x, ref, scale, border=border)
        scene_metrics = {"consistency_l1": cons["reflectance_l1_all"], "spectral_deg": cons["spectral_deg"],
                         "spatial_px": cons["spatial_px_all"], "improvement_pct": corr["improvement_pct"],
                         "omission_pct": corr["omission_pct"], "hallucination_pct": corr["hallucination_pct"]}
    return SceneResult(scene, tuple(rows), scale, degradation, window, place, scene_metrics)


# --- the Wald protocol on real scenes --------------------------------------------------------------------


@dataclass(frozen=True)
class SceneData:
    """A reference to evaluate on: (bands, H, W) reflectance, and for sharpeners the finer guide bands
    (G, ratio H, ratio W) of the same acquisition on the aligned grid."""

    name: str
    reference: np.ndarray
    bands: tuple[str, ...]
    guide: np.ndarray | None = None
    guide_bands: tuple[str, ...] = ()
    window: tuple[int, int, int, int] | None = None
    place: str = ""

    def __post_init__(self) -> None:
        if self.reference.ndim != 3 or len(self.bands) != self.reference.shape[0]:
            raise ValueError(f"{self.name}: reference {self.reference.shape} with band names {self.bands}")
        if self.guide is not None and (self.guide.ndim != 3 or len(self.guide_bands) != self.guide.shape[0]):
            raise ValueError(f"{self.name}: guide {self.guide.shape} with band names {self.guide_bands}")


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """(start, stop) of the longest run of True in a 1-D boolean array ((0, 0) when none)."""
    best, start = (0, 0), None
    for i, f in enumerate([*flags.tolist(), False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            best = max(best, (start, i), key=lambda r: r[1] - r[0])
            start = None
    return best


def valid_window(valid: np.ndarray, multiple: int, max_side: int | None = None) -> tuple[int, int, int, int]:
    """(row0, col0, height, width): a fully valid window (the longest run of fully valid columns over the
    valid rows, then of fully valid rows in it), sides multiples of ``multiple``, at most ``max_side``
    from that run's top-left corner."""
    rows = np.flatnonzero(valid.any(1))
    if rows.size == 0:
        raise IncompatibleSceneError("no valid pixels")
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    c0, c1 = _longest_run(np.asarray(valid[r0:r1].all(0)))
    r0, r1 = (r0 + a for a in _longest_run(np.asarray(valid[r0:r1, c0:c1].all(1))))
    cap = max_side if max_side is not None else max(r1 - r0, c1 - c0)
    h = min(r1 - r0, cap) // multiple * multiple
    w = min(c1 - c0, cap) // multiple * multiple
    if h < 8 * multiple or w < 8 * multiple:
        raise IncompatibleSceneError(f"no fully valid window of at least {8 * multiple} px (x{multiple})")
    return r0, c0, h, w


def scene_data(scene: Scene, *, multiple: int, crop: tuple[int, int, int] | None = None,
               max_side: int | None = None) -> SceneData:
    """A real scene as a Wald reference: ``s2-10m`` the 10 m bands; ``s2-20m`` the 20 m bands with the
    10 m bands as guide. ``crop=(row0, col0, side)`` on the reference grid, else the largest fully valid
    window (at most ``max_side``); sides multiples of ``multiple``."""
    if scene.task not in ("s2-10m", "s2-20m"):
        raise IncompatibleSceneError(f"{scene.name} ({scene.task}): only Sentinel-2 scenes have a single-image "
                                     "Wald evaluation here (PROBA-V multi-frame evaluation is not implemented)")
    if not scene.available():
        raise FileNotFoundError(f"data absent: {scene.path}")
    d = load_s2(scene)
    valid: np.ndarray = d["valid10"]
    guide: np.ndarray | None = None
    guide_names: tuple[str, ...] = ()
    ratio = 1
    if scene.task == "s2-10m":
        ref = d["b10"]
        names: tuple[str, ...] = S2_10M if ref.shape[0] == 4 else ("vis",)  # T33UUU: one unnamed visible band
    else:
        if "b20" not in d:
            raise IncompatibleSceneError(f"{scene.name} has no 20 m bands")
        ref, names, guide, guide_names, ratio = d["b20"], S2_20M, d["b10"], S2_10M, 2
        h20, w20 = ref.shape[-2:]
        valid = np.asarray(valid[: 2 * h20, : 2 * w20].reshape(h20, 2, w20, 2).all((1, 3)))
    if crop is not None:
        r0, c0, side = crop
        side = side // multiple * multiple
        if r0 + side > ref.shape[-2] or c0 + side > ref.shape[-1] or not valid[r0 : r0 + side, c0 : c0 + side].all():
            raise IncompatibleSceneError(f"{scene.name}: crop {crop} is not a fully valid window of "
                                         f"{tuple(ref.shape[-2:])}")
        window = (r0, c0, side, side)
    else:
        window = valid_window(valid, multiple, max_side)
    r0, c0, h, w = window
    reference = np.ascontiguousarray(ref[:, r0 : r0 + h, c0 : c0 + w], np.float32)
    g = None if guide is None else np.ascontiguousarray(
        guide[:, ratio * r0 : ratio * (r0 + h), ratio * c0 : ratio * (c0 + w)], np.float32)
    return SceneData(scene.name, reference, tuple(names), g, tuple(guide_names), window, scene.place)


def _sharpener(model: torch.nn.Module) -> Sharpener | None:
    if isinstance(model, Sharpener):
        return model
    inner = getattr(model, "inner", None)
    return inner if isinstance(inner, Sharpener) else None


def _select(names: Sequence[str], wanted: Sequence[str] | None, what: str) -> list[int]:
    if wanted is None:
        return list(range(len(names)))
    missing = [b for b in wanted if b not in names]
    if missing:
        raise IncompatibleSceneError(f"the model takes {what} {list(wanted)}; the scene has {list(names)}")
    return [list(names).index(b) for b in wanted]


def _device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.inference_mode()
def evaluate_wald(model: models.SRModel, scene: Scene | SceneData, scale: int | None = None,
                  degradation: Degradation = WALD, *, crop: tuple[int, int, int] | None = None,
                  max_side: int | None = None, bootstrap: Bootstrap = Bootstrap(), opensr: bool = True,
                  with_ssim: bool = True, quicklook: Path | None = None, project: bool = False) -> SceneResult:
    """The Wald protocol on one real scene, per band (see the module docstring); raises
    IncompatibleSceneError when the scene does not fit the model (bands, kind, size). ``quicklook``: a
    PNG path for the four panels of :func:`training.evaluate.quicklook`. ``project``: the model's output
    goes through the sensor's consistency projection (:mod:`models.consistency`, with the sensor's
    nominal PSF whatever ``degradation`` made the input), as the pipeline runs learned models by default;
    the baseline ``bicubic+projection`` is added for context."""
    s = scale or model.scale
    if s != model.scale:
        raise ValueError(f"model {model.name} is x{model.scale}, not x{s}")
    if model.multi_frame:
        raise IncompatibleSceneError(f"{model.name} is multi-frame: PROBA-V multi-frame evaluation is not "
                                     "implemented here")
    sharp = _sharpener(model)
    data = scene if isinstance(scene, SceneData) else scene_data(scene, multiple=s, crop=crop, max_side=max_side)
    if sharp is not None and data.guide is None:
        raise IncompatibleSceneError(f"{model.name} sharpens with guide bands; {data.name} has none "
                                     "(evaluate sharpeners on the s2-20m task)")
    if data.reference.shape[-2] % s or data.reference.shape[-1] % s:
        raise IncompatibleSceneError(f"{data.name}: window {data.reference.shape[-2:]} is not a multiple of x{s}")
    model.eval()
    dev = _device(model)
    gen = torch.Generator().manual_seed(zlib.crc32(f"{bootstrap.seed}/{data.name}".encode()))
    idx = _select(data.bands, model.bands, "bands")
    if model.bands is None and model.channels > 1 and len(idx) != model.channels:
        raise IncompatibleSceneError(f"{model.name} takes {model.channels} bands, {data.name} has {len(idx)}")
    ref = torch.from_numpy(data.reference[idx])
    names = [data.bands[i] for i in idx]
    bicubic = models.build("bicubic", scale=s)
    if sharp is not None and data.guide is not None:
        gidx = _select(data.guide_bands, sharp.guide_bands, "guide bands")
        guide = torch.from_numpy(data.guide[gidx])
        low = degradation(ref, s, gen)
        guide_low = degradation(guide, s, gen)
        sr = model(low[None].to(dev), guide_low[None].to(dev))[0]
        hpf = models.build("hpf", scale=s, bands=names, guide_bands=[data.guide_bands[i] for i in gidx])
        baselines = {"bicubic": bicubic(low[None])[0], "hpf": hpf(low[None], guide_low[None])[0]}
    else:
        low = degradation(ref, s, gen)
        sr = model(low[None].to(dev))[0]
        baselines = {"bicubic": bicubic(low[None])[0]}
        if project:
            from srcube.models.consistency import Projection

            proj = Projection.for_sensor("sentinel-2", s)
            if not getattr(getattr(model, "inner", model), "consistent", False):  # else it is built in
                sr = proj.project(low.to(dev), sr)[0]
            baselines["bicubic+projection"] = proj.project(low, baselines["bicubic"])[0]
    sr = sr.float().cpu()
    if quicklook is not None:
        from srcube.training.evaluate import quicklook as write_quicklook

        write_quicklook(quicklook, low, baselines["bicubic"].clamp(0, 1), sr.clamp(0, 1), ref)
    return compare(sr, baselines, ref, low, scale=s, scene=data.name, bands=names, bootstrap=bootstrap,
                   opensr=opensr, degradation=degradation.label, window=data.window, place=data.place,
                   with_ssim=with_ssim)


def image_data(image: str | Path, *, multiple: int, bands: list[int] | None = None,
               max_side: int = 1024) -> SceneData:
    """Any raster (GeoTIFF/COG/srcube zarr) as a Wald reference: its largest fully valid window."""
    from srcube.training.datasets.wald import read_image

    im = read_image(image, bands=bands)
    try:
        window = valid_window(np.asarray(im.valid), multiple, max_side)
    except IncompatibleSceneError as exc:
        raise IncompatibleSceneError(f"{image}: {exc} for the Wald protocol") from None
    r0, c0, h, w = window
    names = tuple(f"band{b}" for b in (bands or range(1, im.data.shape[0] + 1)))
    return SceneData(Path(str(image)).stem, np.ascontiguousarray(im.data[:, r0 : r0 + h, c0 : c0 + w]), names,
                     window=window)


# --- aggregation: summary, robustness table -------------------------------------------------------------


def _mean(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean([float(v) for v in values if v is not None]))


def summarize(results: Sequence[SceneResult], baseline: str = "bicubic", level: float = 0.95) -> dict[str, Any]:
    """Mean gain over ``baseline`` across scene-bands with its stratified bootstrap interval, mean PSNR and
    SSIM, and the worst scene-band (lowest gain, with its interval)."""
    rows = [r for res in results for r in res.rows if baseline in r.gains]
    if not rows:
        return {"baseline": baseline, "n": 0, "mean_gain": None, "mean_gain_ci": None, "worst": None}
    gains = np.array([r.gains[baseline][0] for r in rows])
    boot = np.stack([r.boot_gains[baseline] for r in rows]).mean(0)
    worst = min(rows, key=lambda r: r.gains[baseline][0])
    return {"baseline": baseline, "n": len(rows), "mean_gain": _finite(float(gains.mean())),
            "mean_gain_ci": list(interval(boot, level)),
            "mean_psnr": _finite(float(np.mean([r.model.psnr for r in rows]))),
            "mean_psnr_baseline": _finite(float(np.mean([r.baselines[baseline].psnr for r in rows]))),
            "mean_ssim": _mean([r.model.ssim for r in rows]),
            "mean_ssim_baseline": _mean([r.baselines[baseline].ssim for r in rows]),
            "worst": {"scene": worst.scene, "band": worst.band, "gain": _finite(worst.gains[baseline][0]),
                      "gain_ci": list(worst.gains[baseline][1])}}


def _degradation_json(d: Degradation) -> dict[str, Any]:
    return {"label": d.label, "sigma": d.sigma, "decimation": d.decimation, "noise": d.noise, "phase": list(d.phase)}


def robustness_table(model: models.SRModel, scenes: Sequence[Scene | SceneData], scale: int | None = None, *,
                     degradations: Sequence[Degradation] = ROBUSTNESS, bootstrap: Bootstrap = Bootstrap(),
                     crop: tuple[int, int, int] | None = None, max_side: int | None = None,
                     project: bool = False) -> list[dict[str, Any]]:
    """One row per degradation (default :data:`models.psf.ROBUSTNESS`, 12): the mean gain over bicubic
    across the scenes' bands with its stratified bootstrap interval, and the worst scene-band
    (``project``: through the consistency projection with the sensor's nominal PSF, see :func:`evaluate_wald`)."""
    s = scale or model.scale
    data = [sc if isinstance(sc, SceneData) else scene_data(sc, multiple=s, crop=crop, max_side=max_side)
            for sc in scenes]
    table = []
    for d in degradations:
        results = [evaluate_wald(model, sd, s, d, bootstrap=bootstrap, opensr=False, with_ssim=False, project=project)
                   for sd in data]
        summary = summarize(results, "bicubic", bootstrap.level)
        table.append({**_degradation_json(d), "n": summary["n"], "mean_gain": summary["mean_gain"],
                      "mean_gain_ci": summary["mean_gain_ci"], "worst": summary["worst"]})
    return table


# --- splits by place -------------------------------------------------------------------------------------


def split_scenes(task: str, split: str) -> list[Scene]:
    """The scenes of one split of a task (``s2-10m``, ``s2-20m``, ``probav``); raises for unknown names."""
    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be train, validation or test, got {split!r}")
    return task_scenes(task, split)


@dataclass(frozen=True)
class SplitResult:
    """A model over every scene of one split: rows, summary, skipped scenes with the reason, robustness."""

    model: str
    task: str
    split: str
    scale: int
    degradation: Degradation
    bootstrap: Bootstrap
    results: tuple[SceneResult, ...]
    skipped: tuple[tuple[str, str], ...]
    summary: Mapping[str, Any]
    summary_hpf: Mapping[str, Any] | None = None
    robustness: Sequence[Mapping[str, Any]] | None = None
    summary_projection: Mapping[str, Any] | None = None  # against bicubic + the consistency projection

    @property
    def rows(self) -> list[BandRow]:
        return [r for res in self.results for r in res.rows]

    def to_json(self) -> dict[str, Any]:
        from srcube.pipeline import __version__

        return {
            "model": self.model, "task": self.task, "split": self.split, "scale": self.scale,
            "scenes": [{"name": r.scene, "place": r.place, "window": list(r.window) if r.window else None,
                        **{k: _finite(v) for k, v in r.opensr.items()}} for r in self.results],
            "skipped": [{"scene": n, "reason": why} for n, why in self.skipped],
            "degradation": _degradation_json(self.degradation),
            "peak_convention": PEAK_CONVENTION,
            "bootstrap": self.bootstrap.to_json(),
            "rows": [r.to_json() for r in self.rows],
            "summary": dict(self.summary),
            **({"summary_hpf": dict(self.summary_hpf)} if self.summary_hpf else {}),
            **({"summary_projection": dict(self.summary_projection)} if self.summary_projection else {}),
            "robustness": [dict(r) for r in self.robustness] if self.robustness is not None else None,
            "srcube_version": __version__,
        }


def evaluate_split(model: models.SRModel, task: str, split: str, *, degradation: Degradation = WALD,
                   robustness: bool = True, max_side: int | None = None, crop: tuple[int, int, int] | None = None,
                   bootstrap: Bootstrap = Bootstrap(), name: str | None = None, project: bool = False) -> SplitResult:
    """The Wald evaluation of ``model`` over every scene of a split (validation: model selection; test:
    reported once, :func:`write_test_report`). Scenes whose data is absent or that do not fit the model
    are skipped with the reason. ``robustness`` adds :func:`robustness_table` over the evaluated scenes."""
    chosen = split_scenes(task, split)
    results, skipped, used = [], [], []
    for sc in chosen:
        try:
            data = scene_data(sc, multiple=model.scale, crop=crop, max_side=max_side)
            results.append(evaluate_wald(model, data, model.scale, degradation, bootstrap=bootstrap,
                                         project=project))
            used.append(data)
        except (FileNotFoundError, IncompatibleSceneError) as exc:
            skipped.append((sc.name, str(exc)))
    summary = summarize(results, "bicubic", bootstrap.level)
    hpf = summarize(results, "hpf", bootstrap.level) if _sharpener(model) is not None else None
    # the projection's own share, for context: the model against bicubic made consistent the same way
    projected = summarize(results, "bicubic+projection", bootstrap.level) if project else None
    table = (robustness_table(model, used, model.scale, bootstrap=bootstrap, project=project)
             if robustness and used else None)
    return SplitResult(name or model.name, task, split, model.scale, degradation, bootstrap, tuple(results),
                       tuple(skipped), summary, hpf, table, projected)


# --- the test report next to the weights -----------------------------------------------------------------


def report_path(weights: str | Path) -> Path:
    """``NAME.test.json`` next to ``NAME.safetensors`` / ``NAME.json``."""
    p = Path(weights)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".test.json")


def write_test_report(weights: str | Path, task: str, *, degradation: Degradation = WALD,
                      max_side: int | None = None, bootstrap: Bootstrap = Bootstrap(), overwrite: bool = False,
                      allow_untrained: bool = False) -> Path:
    """Evaluate weights on the test split of ``task`` once and write ``NAME.test.json`` next to them: the
    rows, the summary, the robustness table, the scenes, the degradation, the peak convention, the
    srcube version and the weights' sha256. Refuses to report the same weights twice unless ``overwrite``."""
    from srcube.models.weights import load_weights, read_meta

    meta = read_meta(weights)
    path = report_path(weights)
    if path.exists() and not overwrite:
        old = json.loads(path.read_text())
        if old.get("weights_sha256") == meta.sha256:
            raise FileExistsError(f"{path} already reports these weights (sha256 {meta.sha256[:16]}...); the test "
                                  "split is reported once: pass overwrite=True only to correct the report itself")
    model, _ = load_weights(weights, allow_untrained=allow_untrained)
    if model.multi_frame:  # PROBA-V: the Kelvins metric on the multi-frame Wald protocol
        doc = {"format": REPORT_FORMAT, "weights": meta.name, "weights_sha256": meta.sha256,
               "architecture": meta.architecture, **evaluate_probav_split(model, "test", bootstrap=bootstrap,
                                                                          name=meta.name),
               "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return path
    # evaluated as deployed: through the consistency projection when the weights were trained for it
    project = bool(meta.training.get("consistency_projection"))
    result = evaluate_split(model, task, "test", degradation=degradation, robustness=True, max_side=max_side,
                            bootstrap=bootstrap, name=meta.name, project=project)
    if not result.results:
        raise FileNotFoundError(f"no test scene of {task} could be evaluated: {result.skipped}")
    doc = {"format": REPORT_FORMAT, "weights": meta.name, "weights_sha256": meta.sha256,
           "architecture": meta.architecture, "consistency_projection": project, **result.to_json(),
           "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


# --- markdown ------------------------------------------------------------------------------------------


def _ci(ci: Sequence[float] | None, fmt: str = "{:.2f}") -> str:
    if not ci:
        return "n/a"
    return "[" + ", ".join(fmt.format(v) for v in ci) + "]"


def _num(v: Any, fmt: str) -> str:
    return "n/a" if v is None else fmt.format(v)


def rows_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per scene and band (the JSON rows): own-peak PSNR and gains with 95 % intervals, SSIM, opensr-test."""
    extra = [k for k in ("hpf",) if any(k in r["baselines"] for r in rows)]
    head = ["scene", "band", "peak", "PSNR dB [95% CI]", "bicubic PSNR dB", "gain vs bicubic dB [95% CI]",
            *(f"gain vs {k} dB [95% CI]" for k in extra), "SSIM (bicubic)", "L1 to LR", "shift LR px",
            "improv. / omis. / halluc. %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        b = r["baselines"]["bicubic"]
        cells = [r["scene"], r["band"], f"{r['peak']:.4f}", f"{_num(r['psnr'], '{:.2f}')} {_ci(r['psnr_ci'])}",
                 _num(b["psnr"], "{:.2f}"), f"{_num(b['gain'], '{:+.2f}')} {_ci(b['gain_ci'], '{:+.2f}')}",
                 *(f"{_num(r['baselines'][k]['gain'], '{:+.2f}')} {_ci(r['baselines'][k]['gain_ci'], '{:+.2f}')}"
                   if k in r["baselines"] else "n/a" for k in extra),
                 f"{_num(r['ssim'], '{:.4f}')} ({_num(b['ssim'], '{:.4f}')})", _num(r.get("consistency_l1"), "{:.5f}"),
                 _num(r.get("spatial_px"), "{:.3f}"),
                 " / ".join(_num(r.get(k), "{:.1f}") for k in ("improvement_pct", "omission_pct", "hallucination_pct"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scenes_markdown(scene_rows: Sequence[Mapping[str, Any]]) -> str:
    """Per scene (the JSON ``scenes``): place, window and the scene-level opensr-test metrics."""
    head = ["scene", "place", "window (row, col, h, w)", "L1 to LR", "spectral angle deg", "shift LR px",
            "improv. / omis. / halluc. %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in scene_rows:
        cells = [s["name"], s.get("place", ""), ", ".join(map(str, s["window"])) if s.get("window") else "n/a",
                 _num(s.get("consistency_l1"), "{:.5f}"), _num(s.get("spectral_deg"), "{:.3f}"),
                 _num(s.get("spatial_px"), "{:.3f}"),
                 " / ".join(_num(s.get(k), "{:.1f}") for k in ("improvement_pct", "omission_pct", "hallucination_pct"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """One line: mean gain with its interval over n scene-bands, and the worst scene-band."""
    if not summary.get("n"):
        return f"No scene-band was evaluated against {summary.get('baseline', 'bicubic')}."
    w = summary["worst"]
    return (f"Mean gain over {summary['baseline']}: {_num(summary['mean_gain'], '{:+.2f}')} dB "
            f"{_ci(summary['mean_gain_ci'], '{:+.2f}')} (95 % block-bootstrap interval) over {summary['n']} "
            f"scene-bands; worst: {w['scene']} {w['band']} {_num(w['gain'], '{:+.2f}')} dB "
            f"{_ci(w['gain_ci'], '{:+.2f}')}.")


def robustness_markdown(table: Sequence[Mapping[str, Any]]) -> str:
    """One row per degradation: mean gain over bicubic with its interval, worst scene-band."""
    head = ["degradation", "mean gain vs bicubic dB [95% CI]", "worst scene-band dB", "scene-bands"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        w = r.get("worst") or {}
        worst = f"{_num(w.get('gain'), '{:+.2f}')} ({w.get('scene')} {w.get('band')})" if w else "n/a"
        lines.append(f"| {r['label']} | {_num(r['mean_gain'], '{:+.2f}')} {_ci(r['mean_gain_ci'], '{:+.2f}')} | "
                     f"{worst} | {r['n']} |")
    return "\n".join(lines)


def split_markdown(doc: Mapping[str, Any]) -> str:
    """A whole split evaluation (its JSON) as markdown: scenes, rows, summary, robustness, skipped."""
    d = doc["degradation"]
    parts = [f"**{doc['model']}** x{doc['scale']} on the {doc['split']} split of {doc['task']}; Wald degradation "
             f"{d['label']}. {doc['peak_convention']}.", "", scenes_markdown(doc["scenes"]), "",
             rows_markdown(doc["rows"]), "", summary_markdown(doc["summary"])]
    for key in ("summary_hpf", "summary_projection"):
        if doc.get(key):
            parts += ["", summary_markdown(doc[key])]
    if doc.get("robustness"):
        parts += ["", "Robustness (the same scenes under other degradations):", "",
                  robustness_markdown(doc["robustness"])]
    if doc.get("skipped"):
        parts += ["", "Skipped: " + "; ".join(f"{s['scene']} ({s['reason']})" for s in doc["skipped"])]
    return "\n".join(parts)


# --- PROBA-V multi-frame: the Kelvins metric on the multi-frame Wald protocol ------------------------------


@torch.inference_mode()
def evaluate_probav(model: models.SRModel, scene: Scene, *, n_views: int | None = None,
                    degradation: Degradation | None = None, bootstrap: Bootstrap = Bootstrap(),
                    max_targets: int | None = None) -> dict[str, Any]:
    """Multi-frame Wald protocol on a real PROBA-V scene: every frame in turn is the target (cropped to a
    multiple of the scale), its ``n_views`` clearest other frames (another date each), degraded with
    ``degradation`` (default: the sensor's), are the views. Kelvins metric: cPSNR (bias removed, best of
    the 49 shifts, border 3) of the model and of the Kelvins baseline (bicubic of the mean of the views),
    and of bicubic of the clear median (srcube's multi-frame reference). The scene's "Wald Kelvins score" is
    the mean over targets of cPSNR(baseline) / cPSNR(model) (lower is better, 1.0 = the baseline): the
    competition's score with its baseline, on Wald pairs, since the scenes' real HR images were not released.
    The interval of the mean cPSNR gain resamples targets."""
    from srcube.models.highresnet import masked_median
    from srcube.training.datasets.scenes import load_probav
    from srcube.training.metrics import cpsnr

    s = model.scale
    deg = degradation or sensor_degradation("proba-v")
    d = load_probav(scene)
    frames, valid = torch.from_numpy(d["frames"]), torch.from_numpy(d["valid"])
    t_all, h, w = frames.shape
    n = n_views or int(getattr(model, "n_views", getattr(getattr(model, "inner", None), "n_views", 8)))
    size = (min(h, w) // s) * s
    r0, c0 = (h - size) // 2, (w - size) // 2
    bicubic = models.build("bicubic", scale=s)
    rows = []
    gen = torch.Generator().manual_seed(zlib.crc32(f"{bootstrap.seed}/{scene.name}".encode()))
    for t in range(t_all if max_targets is None else min(t_all, max_targets)):
        others = sorted((j for j in range(t_all) if j != t), key=lambda j: -float(valid[j].float().mean()))[:n]
        hr = frames[t, r0 : r0 + size, c0 : c0 + size]
        clear = valid[t, r0 : r0 + size, c0 : c0 + size]
        views = deg(frames[others, r0 : r0 + size, c0 : c0 + size], s, gen)[None, :, None]  # (1, T, 1, h, w)
        vmask = F.avg_pool2d(valid[others, r0 : r0 + size, c0 : c0 + size].float()[:, None], s)[:, 0] > 0.999
        masks = vmask.float()[None]
        present = torch.ones(1, len(others), dtype=torch.bool)
        sr = model(views, masks, present)[0, 0].float()
        mean_base = bicubic(views.mean(1))[0, 0]
        median_base = bicubic(masked_median(views, masks, present))[0, 0]
        scores = {k: cpsnr(x, hr, clear, border=3) for k, x in
                  (("model", sr), ("kelvins-baseline", mean_base), ("median", median_base))}
        rows.append({"target": str(d["ids"][t]), "views": len(others), **{f"cpsnr_{k}": v for k, v in scores.items()}})
    model_c = np.array([r["cpsnr_model"] for r in rows])
    base_c = np.array([r["cpsnr_kelvins-baseline"] for r in rows])
    med_c = np.array([r["cpsnr_median"] for r in rows])
    rng = np.random.default_rng(zlib.crc32(f"{bootstrap.seed}/{scene.name}/boot".encode()))
    idx = rng.integers(0, len(rows), size=(bootstrap.resamples, len(rows)))
    gain, gain_med = model_c - base_c, model_c - med_c
    return {"scene": scene.name, "place": scene.place, "targets": len(rows), "size": size,
            "degradation": _degradation_json(deg), "rows": rows,
            "cpsnr_model": float(model_c.mean()), "cpsnr_kelvins_baseline": float(base_c.mean()),
            "cpsnr_median": float(med_c.mean()),
            "gain": float(gain.mean()), "gain_ci": list(interval(gain[idx].mean(1), bootstrap.level)),
            "gain_over_median": float(gain_med.mean()),
            "gain_over_median_ci": list(interval(gain_med[idx].mean(1), bootstrap.level)),
            "wald_kelvins_score": float(np.mean(base_c / model_c)),
            "wald_kelvins_score_ci": list(interval((base_c / model_c)[idx].mean(1), bootstrap.level))}


def evaluate_probav_split(model: models.SRModel, split: str, *, bootstrap: Bootstrap = Bootstrap(),
                          max_targets: int | None = None, name: str | None = None) -> dict[str, Any]:
    """:func:`evaluate_probav` over the scenes of a ``probav`` split, and a summary pooled over all targets
    (mean cPSNR gain over the Kelvins baseline with its interval, mean Wald Kelvins score, worst scene)."""
    from srcube.pipeline import __version__

    scenes_out, skipped = [], []
    for sc in split_scenes("probav", split):
        if not sc.available():
            skipped.append({"scene": sc.name, "reason": f"data absent: {sc.path}"})
            continue
        scenes_out.append(evaluate_probav(model, sc, bootstrap=bootstrap, max_targets=max_targets))
    if not scenes_out:
        raise FileNotFoundError(f"no probav {split} scene could be evaluated: {skipped}")
    gains = np.concatenate([[r["cpsnr_model"] - r["cpsnr_kelvins-baseline"] for r in s["rows"]] for s in scenes_out])
    scores = np.concatenate([[r["cpsnr_kelvins-baseline"] / r["cpsnr_model"] for r in s["rows"]]
                             for s in scenes_out])
    rng = np.random.default_rng(bootstrap.seed)
    idx = rng.integers(0, len(gains), size=(bootstrap.resamples, len(gains)))
    worst = min(scenes_out, key=lambda s: s["gain"])
    summary = {"baseline": "kelvins-baseline", "metric": "cPSNR", "n": len(gains),
               "mean_gain": float(gains.mean()), "mean_gain_ci": list(interval(gains[idx].mean(1), bootstrap.level)),
               "wald_kelvins_score": float(scores.mean()),
               "wald_kelvins_score_ci": list(interval(scores[idx].mean(1), bootstrap.level)),
               "worst": {"scene": worst["scene"], "gain": worst["gain"], "gain_ci": worst["gain_ci"]}}
    return {"model": name or model.name, "task": "probav", "split": split, "scale": model.scale,
            "scenes": scenes_out, "skipped": skipped, "summary": summary, "bootstrap": bootstrap.to_json(),
            "srcube_version": __version__}


def probav_markdown(doc: Mapping[str, Any]) -> str:
    """Per-scene table of a PROBA-V multi-frame evaluation."""
    lines = ["| scene | place | targets | cPSNR model | cPSNR Kelvins baseline | gain (95 % CI) | Wald Kelvins score |",
             "|---|---|---|---|---|---|---|"]
    for s in doc["scenes"]:
        lines.append(f"| {s['scene']} | {s['place']} | {s['targets']} | {s['cpsnr_model']:.2f} | "
                     f"{s['cpsnr_kelvins_baseline']:.2f} | {s['gain']:+.2f} ({_ci(s['gain_ci'])}) | "
                     f"{s['wald_kelvins_score']:.4f} |")
    m = doc["summary"]
    lines.append(f"| all | | {m['n']} | | | {m['mean_gain']:+.2f} ({_ci(m['mean_gain_ci'])}) | "
                 f"{m['wald_kelvins_score']:.4f} ({_ci(m['wald_kelvins_score_ci'], '{:.4f}')}) |")
    return "\n".join(lines)
