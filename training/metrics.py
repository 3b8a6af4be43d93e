"""Quality metrics of the field, on arrays scaled to [0, 1].

* ``psnr``, ``ssim`` (torchmetrics; Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03);
* ``cpsnr``, ``cssim``: the PROBA-V Kelvins competition's corrected metrics. The SR image is cropped
  by ``border`` (3) pixels; for every shift (u, v) in 0..2*border the HR image and its clear mask are
  cropped at (u, v); the brightness bias b = mean over clear pixels of (HR - SR) is removed; cPSNR =
  -10 log10(mean over clear pixels of (HR - SR - b)^2); the best shift counts. cSSIM is the
  clear-pixel mean of the SSIM map of the bias-corrected SR, best shift.
* ``kelvins_score``: norm / cPSNR (lower is better; 1.0 is the competition's baseline).
* ``sam`` (spectral angle, degrees, mean over pixels), ``ergas`` (relative global error, scale-aware);
* ``hf_energy_ratio``: energy of the SR spectrum above the input's Nyquist frequency over the same
  for the reference: 1 = as much fine detail as the reference, < 1 blurrier, > 1 noisier.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

ArrayLike = np.ndarray | torch.Tensor


def _t(x: ArrayLike) -> torch.Tensor:
    return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))).to(torch.float64)


def _4d(x: torch.Tensor) -> torch.Tensor:
    while x.ndim < 4:
        x = x.unsqueeze(0)
    return x


def psnr(sr: ArrayLike, hr: ArrayLike, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB."""
    mse = float(torch.mean((_t(sr) - _t(hr)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def ssim_map(sr: ArrayLike, hr: ArrayLike, data_range: float = 1.0) -> torch.Tensor:
    """The SSIM map (same size as the inputs; Gaussian window 11, sigma 1.5)."""
    a, b = _4d(_t(sr)), _4d(_t(hr))
    _, full = structural_similarity_index_measure(a, b, data_range=data_range, gaussian_kernel=True, sigma=1.5,
                                                  kernel_size=11, return_full_image=True)
    return full


def ssim(sr: ArrayLike, hr: ArrayLike, data_range: float = 1.0) -> float:
    """Mean structural similarity (Wang et al. 2004)."""
    a, b = _4d(_t(sr)), _4d(_t(hr))
    value = structural_similarity_index_measure(a, b, data_range=data_range, gaussian_kernel=True, sigma=1.5,
                                                kernel_size=11)
    assert isinstance(value, torch.Tensor)
    return float(value)


def _shifted(sr: torch.Tensor, hr: torch.Tensor, clear: torch.Tensor,
             border: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(sr cropped, [(hr crop, clear crop) for every shift])."""
    h, w = sr.shape[-2:]
    crop = sr[..., border : h - border, border : w - border]
    ch, cw = crop.shape[-2:]
    for u in range(2 * border + 1):
        for v in range(2 * border + 1):
            yield crop, hr[..., u : u + ch, v : v + cw], clear[..., u : u + ch, v : v + cw]


def cpsnr(sr: ArrayLike, hr: ArrayLike, hr_clear: ArrayLike | None = None, border: int = 3) -> float:
    """Kelvins cPSNR in dB: best over the (2 border + 1)^2 shifts of bias-corrected PSNR on clear pixels."""
    s, h = _t(sr), _t(hr)
    c = torch.ones_like(h, dtype=torch.bool) if hr_clear is None else _t(hr_clear) > 0
    best = -float("inf")
    for crop, hh, cc in _shifted(s, h, c, border):
        n = cc.sum()
        if n == 0:
            continue
        diff = (hh - crop)[cc]
        bias = diff.mean()
        cmse = float(((diff - bias) ** 2).mean())
        best = max(best, float("inf") if cmse == 0 else -10.0 * np.log10(cmse))
    return best


def cssim(sr: ArrayLike, hr: ArrayLike, hr_clear: ArrayLike | None = None, border: int = 3) -> float:
    """cSSIM: best over shifts of the clear-pixel mean SSIM of the bias-corrected SR."""
    s, h = _t(sr), _t(hr)
    c = torch.ones_like(h, dtype=torch.bool) if hr_clear is None else _t(hr_clear) > 0
    best = -float("inf")
    for crop, hh, cc in _shifted(s, h, c, border):
        if cc.sum() == 0:
            continue
        bias = (hh - crop)[cc].mean()
        smap = ssim_map(crop + bias, hh)
        best = max(best, float(smap.reshape(cc.shape)[cc].mean()))
    return best


def kelvins_score(sr: ArrayLike, hr: ArrayLike, hr_clear: ArrayLike | None, norm: float) -> float:
    """The competition's per-scene score: baseline cPSNR (norm.csv) / cPSNR(SR). Lower is better."""
    return float(norm / cpsnr(sr, hr, hr_clear))


def sam(sr: ArrayLike, hr: ArrayLike, eps: float = 1e-12) -> float:
    """Mean spectral angle in degrees between (bands, H, W) images."""
    a, b = _t(sr).reshape(_t(sr).shape[-3], -1), _t(hr).reshape(_t(hr).shape[-3], -1)
    cos = (a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0) + eps)
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0))).mean())


def ergas(sr: ArrayLike, hr: ArrayLike, scale: int) -> float:
    """ERGAS = 100 / scale * sqrt(mean over bands of (RMSE_b / mean_b)^2), for (bands, H, W) images."""
    a, b = _t(sr), _t(hr)
    if a.ndim == 2:
        a, b = a[None], b[None]
    rmse = torch.sqrt(((a - b) ** 2).flatten(1).mean(1))
    mean = b.flatten(1).mean(1)
    return float(100.0 / scale * torch.sqrt(((rmse / mean) ** 2).mean()))


def hf_energy_ratio(sr: ArrayLike, hr: ArrayLike, scale: int) -> float:
    """Spectral energy above the low-resolution Nyquist frequency, SR over reference."""
    a, b = _t(sr), _t(hr)
    h, w = b.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    high = torch.maximum(fy.abs(), fx.abs()) > 0.5 / scale
    ea = (torch.fft.fft2(a - a.mean()).abs() ** 2)[..., high].sum()
    eb = (torch.fft.fft2(b - b.mean()).abs() ** 2)[..., high].sum()
    return float(ea / eb) if eb > 0 else float("nan")


def metric_table(sr: ArrayLike, hr: ArrayLike, scale: int, hr_clear: ArrayLike | None = None,
                 border: int | None = None, corrected: bool = True) -> dict[str, float]:
    """PSNR, SSIM, cPSNR, cSSIM, SAM (multi-band only), ERGAS and HF ratio for one (bands, H, W) pair.

    ``corrected=False`` leaves out cPSNR/cSSIM (shift search and bias removal are for real pairs
    that are not perfectly aligned; Wald pairs are aligned by construction).
    """
    s, h = _t(sr), _t(hr)
    if s.ndim == 2:
        s, h = s[None], h[None]
    b = scale if border is None else border
    out: dict[str, float] = {"psnr": psnr(s, h), "ssim": ssim(s, h)}
    if corrected:
        out["cpsnr"] = float(np.mean([cpsnr(s[i], h[i], hr_clear, b) for i in range(s.shape[0])]))
        out["cssim"] = float(np.mean([cssim(s[i], h[i], hr_clear, b) for i in range(s.shape[0])]))
    out["ergas"] = ergas(s, h, scale)
    out["hf_ratio"] = hf_energy_ratio(s, h, scale)
    if s.shape[0] > 1:
        out["sam"] = sam(s, h)
    return out


def summarize(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over rows."""
    keys = rows[0].keys() if rows else []
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}
