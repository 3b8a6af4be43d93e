"""Sensor point spread functions and the degradations made from them: blur, then decimation.

One implementation for everything that degrades: Wald-protocol training pairs (with randomised
degradations, so a model learns super-resolution rather than the inverse of one synthetic PSF), the
evaluation's robustness table, and the pipeline's consistency projection (degrading the SR output
with the sensor's PSF must give back the input).

Conventions (pixels of the high-resolution grid):

* the PSF is a Gaussian of standard deviation ``sigma = factor x scale``; Sentinel-2's MTF of about
  0.3 at the low-resolution Nyquist frequency is ``factor = sqrt(-2 ln 0.3) / pi = 0.494``;
* ``decimation="point"`` samples the blurred image at the centre of each low-resolution pixel, at
  ``(scale - 1) / 2 + phase`` within its ``scale x scale`` block (between two pixels for even scales,
  linearly interpolated); ``phase`` shifts the sampling grid by a fraction of a pixel, as the
  registration of a real sensor does;
* ``decimation="area"`` averages each ``scale x scale`` block (a box detector on top of the PSF);
* ``noise`` adds white Gaussian noise of that standard deviation (reflectance) to the result.

Every low-resolution pixel covers exactly ``scale x scale`` high-resolution pixels, as in srcube's grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Sentinel-2 MSI: modulation transfer at the Nyquist frequency of the 10 m bands (0.15-0.35 required)
S2_MTF_AT_NYQUIST = 0.3


def factor_for_mtf(mtf: float) -> float:
    """PSF sigma as a fraction of the scale whose MTF at the low-resolution Nyquist frequency is ``mtf``."""
    if not 0.0 < mtf < 1.0:
        raise ValueError(f"mtf must be in (0, 1), got {mtf}")
    return math.sqrt(-2.0 * math.log(mtf)) / math.pi


#: the sensor PSFs srcube assumes, as sigma / scale: what Wald-protocol training and evaluation degrade with
SENSOR_PSF = {"sentinel-2": factor_for_mtf(S2_MTF_AT_NYQUIST), "proba-v": factor_for_mtf(S2_MTF_AT_NYQUIST)}

#: the PSF the consistency projection (:mod:`models.consistency`) assumes, as sigma / scale: narrower than the
#: nominal one on purpose. A projection whose PSF is wider than the data's own overshoots (it restores contrast the
#: data never lost) and amplifies noise; one that is narrower only restores less. Chosen on the validation and
#: training places over the robustness rows (sigma 0.35-0.65 x scale, point/area, noise, sampling phase) for x2
#: and x4 (``bench/projection_psf.py``): 0.40 keeps every row above bicubic there, the nominal PSF loses dBs where
#: the data's PSF is 0.35 x scale and noisy. A per-scene estimate of the PSF (spectral self-similarity across
#: scales) was measured there too and rejected: its spread between places and bands at one true PSF is wider than
#: the differences between the PSFs it must tell apart.
PROJECTION_PSF = {"sentinel-2": 0.40, "proba-v": SENSOR_PSF["proba-v"]}


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (..., H, W), reflect padding (radius 3 sigma, clamped to the image)."""
    if sigma <= 0:
        return x
    h, w = x.shape[-2:]
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    shape = x.shape
    y = x.reshape(-1, 1, h, w)
    ry, rx = min(radius, h - 1), min(radius, w - 1)
    if ry < radius or rx < radius:  # a tiny image: reflect as far as it goes, then repeat the edge
        # (a side of one pixel reflects nothing: the other side still reflects, so as not to lose its padding)
        y = F.pad(y, (rx, rx, ry, ry), mode="reflect") if max(rx, ry) > 0 else y
        y = F.pad(y, (radius - rx, radius - rx, radius - ry, radius - ry), mode="replicate")
    else:
        y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    # separable, as sums of shifted slices: several times faster than conv2d with a 1-channel kernel on CPUs
    n = 2 * radius + 1
    rows = k[0] * y[..., :, 0:w]
    for i in range(1, n):
        rows = rows + k[i] * y[..., :, i : i + w]
    out = k[0] * rows[..., 0:h, :]
    for i in range(1, n):
        out = out + k[i] * rows[..., i : i + h, :]
    return out.reshape(shape)


def _sample_axis(x: torch.Tensor, scale: int, offset: float, dim: int) -> torch.Tensor:
    """Every ``scale``-th value along ``dim`` starting at fractional position ``offset`` (linear
    interpolation between neighbours, the last value repeated past the end)."""
    n = x.shape[dim] // scale
    base = math.floor(offset)
    frac = offset - base
    idx = torch.arange(n, device=x.device) * scale + base
    size = x.shape[dim]
    lo = x.index_select(dim, idx.clamp(0, size - 1))
    if frac < 1e-9:
        return lo
    hi = x.index_select(dim, (idx + 1).clamp(0, size - 1))
    return lo * (1 - frac) + hi * frac


def decimate(x: torch.Tensor, scale: int, how: str = "point", phase: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """(..., H, W) -> (..., H // scale, W // scale) by point sampling at the LR pixel centres or block means."""
    h, w = (x.shape[-2] // scale) * scale, (x.shape[-1] // scale) * scale
    x = x[..., :h, :w]
    if how == "area":
        shape = x.shape
        return F.avg_pool2d(x.reshape(-1, 1, h, w), scale).reshape(*shape[:-2], h // scale, w // scale)
    if how != "point":
        raise ValueError(f"decimation must be 'point' or 'area', got {how!r}")
    centre = (scale - 1) / 2
    y = _sample_axis(x, scale, centre + phase[0], x.ndim - 2)
    return _sample_axis(y, scale, centre + phase[1], x.ndim - 1)


def _sample_axis_adjoint(y: torch.Tensor, scale: int, offset: float, dim: int, size: int) -> torch.Tensor:
    """The adjoint of :func:`_sample_axis`: each value goes back to the position(s) it was read from
    (split linearly between two neighbours at a fractional offset), zeros elsewhere; ``size`` values."""
    n = y.shape[dim]
    base = math.floor(offset)
    frac = offset - base
    idx = torch.arange(n, device=y.device) * scale + base
    shape = list(y.shape)
    shape[dim] = size
    out = torch.zeros(shape, dtype=y.dtype, device=y.device)
    if frac < 1e-9:
        return out.index_add_(dim, idx.clamp(0, size - 1), y)
    out.index_add_(dim, idx.clamp(0, size - 1), y * (1 - frac))
    return out.index_add_(dim, (idx + 1).clamp(0, size - 1), y * frac)


def decimate_adjoint(y: torch.Tensor, scale: int, shape: tuple[int, int], how: str = "point",
                     phase: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """The adjoint (transpose) of :func:`decimate` onto a (..., H, W) = ``shape`` grid: zero insertion at
    the sampling positions (``"point"``) or each value spread evenly over its block (``"area"``), so that
    ``<decimate(x), y> == <x, decimate_adjoint(y)>`` for every x of that shape."""
    h, w = shape
    if how == "area":
        up = y.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1) / scale**2
        return F.pad(up, (0, w - up.shape[-1], 0, h - up.shape[-2]))
    if how != "point":
        raise ValueError(f"decimation must be 'point' or 'area', got {how!r}")
    centre = (scale - 1) / 2
    hc, wc = (h // scale) * scale, (w // scale) * scale  # decimate reads only these rows and columns
    z = _sample_axis_adjoint(y, scale, centre + phase[0], y.ndim - 2, hc)
    z = _sample_axis_adjoint(z, scale, centre + phase[1], y.ndim - 1, wc)
    return F.pad(z, (0, w - wc, 0, h - hc))


def _gauss_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, int]:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum(), radius


def _blur_sample_axis(x: torch.Tensor, sigma: float, scale: int, offset: float, dim: int) -> torch.Tensor | None:
    """``_sample_axis(gaussian_blur along dim only)``, computed only at the sampled positions (strided
    slices of the reflect-padded axis with the PSF shifted by the sampling offset); None where the axis
    is too short for reflect padding or the last sample would need the clamped neighbour."""
    size = x.shape[dim]
    n = size // scale
    k, radius = _gauss_kernel(sigma, x.dtype, x.device)
    base = math.floor(offset)
    frac = offset - base
    if radius + 1 > size - 1 or n < 1 or base < 0 or base + 1 + (n - 1) * scale > n * scale - 1:
        return None
    if frac >= 1e-9:  # linear interpolation between two blurred neighbours = one kernel one tap longer
        k = torch.cat([k * (1 - frac), k.new_zeros(1)]) + torch.cat([k.new_zeros(1), k * frac])
    x = x.movedim(dim, -1)
    shape = x.shape
    y = F.pad(x.reshape(-1, 1, size), (radius, radius + 1), mode="reflect").squeeze(1)
    out = _taps(y, k, base, scale, n)  # out[j] = sum_u k[u] * y[base + j*scale + u]
    return out.reshape(*shape[:-1], n).movedim(-1, dim)


def _taps(y: torch.Tensor, k: torch.Tensor, start: int, step: int, n: int) -> torch.Tensor:
    """``out[:, j] = sum_u k[u] * y[:, start + j * step + u]`` for ``j < n``, ``y`` (rows, length).

    Sums of shifted slices when running (faster than a one-channel convolution on CPUs); one strided
    convolution while a graph is exported (ONNX): a graph of a few nodes instead of three per tap, which
    exports several times faster, the same values to float32 rounding."""
    if torch.compiler.is_exporting():
        return F.conv1d(y[:, None, start:], k[None, None], stride=step)[:, 0, :n]
    stop = start + (n - 1) * step + 1
    out = k[0] * y[:, start:stop:step]
    for u in range(1, k.numel()):
        out = out + k[u] * y[:, start + u : stop + u : step]
    return out


def _blur_axis(x: torch.Tensor, sigma: float, dim: int) -> torch.Tensor:
    """The Gaussian blur of :func:`gaussian_blur` along ``dim`` only (reflect padding; axis > radius)."""
    k, radius = _gauss_kernel(sigma, x.dtype, x.device)
    x = x.movedim(dim, -1)
    shape, size = x.shape, x.shape[-1]
    y = F.pad(x.reshape(-1, 1, size), (radius, radius), mode="reflect").squeeze(1)
    return _taps(y, k, 0, 1, size).reshape(shape).movedim(-1, dim)


def blur_decimate(x: torch.Tensor, sigma: float, scale: int, how: str = "point",
                  phase: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """``decimate(gaussian_blur(x, sigma), scale, how, phase)``, the same values computed only where they
    are sampled (point decimation: each axis blurred at its sampled positions; several times faster)."""
    if how == "point" and sigma > 0 and x.ndim >= 2:
        centre = (scale - 1) / 2
        h, w = x.shape[-2:]
        if math.ceil(3 * sigma) <= min(h, w) - 1:
            y = _blur_sample_axis(x, sigma, scale, centre + phase[1], x.ndim - 1)
            if y is not None:
                # rows: decimate crops to whole blocks before sampling, the blur runs on the full axis
                z = _blur_sample_axis(y, sigma, scale, centre + phase[0], x.ndim - 2)
                if z is not None:
                    return z
    return decimate(gaussian_blur(x, sigma), scale, how, phase)


def spread_blur(y: torch.Tensor, sigma: float, scale: int, shape: tuple[int, int], how: str = "point",
                phase: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """``gaussian_blur(decimate_adjoint(y, scale, shape, how, phase), sigma)``, one axis at a time (the
    column pass runs on the input-height array before the rows are spread)."""
    h, w = shape
    if how != "point" or sigma <= 0 or math.ceil(3 * sigma) > min(h, w) - 1 or y.shape[-2] < 2:
        return gaussian_blur(decimate_adjoint(y, scale, shape, how, phase), sigma)
    centre = (scale - 1) / 2
    wc, hc = (w // scale) * scale, (h // scale) * scale
    z = _sample_axis_adjoint(y, scale, centre + phase[1], y.ndim - 1, wc)
    z = _blur_axis(F.pad(z, (0, w - wc)), sigma, z.ndim - 1)
    z = _sample_axis_adjoint(z, scale, centre + phase[0], z.ndim - 2, hc)
    return _blur_axis(F.pad(z, (0, 0, 0, h - hc)), sigma, z.ndim - 2)


@dataclass(frozen=True)
class Degradation:
    """A sensor-like degradation: Gaussian PSF (``sigma`` as a fraction of the scale), decimation,
    sampling phase (high-resolution pixels) and additive noise (reflectance standard deviation)."""

    sigma: float = SENSOR_PSF["sentinel-2"]
    decimation: str = "point"
    noise: float = 0.0
    phase: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.sigma < 0 or self.noise < 0:
            raise ValueError(f"sigma and noise must be >= 0, got {self.sigma} and {self.noise}")
        if self.decimation not in ("point", "area"):
            raise ValueError(f"decimation must be 'point' or 'area', got {self.decimation!r}")

    def __call__(self, hr: torch.Tensor, scale: int, generator: torch.Generator | None = None) -> torch.Tensor:
        lr = decimate(gaussian_blur(hr, self.sigma * scale), scale, self.decimation, self.phase)
        if self.noise > 0:
            lr = lr + torch.randn(lr.shape, generator=generator, dtype=lr.dtype).to(lr.device) * self.noise
        return lr

    @property
    def label(self) -> str:
        text = f"gauss {self.sigma:.2f}s + {self.decimation}"
        if any(self.phase):
            text += f" @ ({self.phase[0]:+.2f}, {self.phase[1]:+.2f})"
        return text + (f" + noise {self.noise:g}" if self.noise else "")


def sensor_degradation(sensor: str = "sentinel-2") -> Degradation:
    """The sensor's own degradation: its PSF and point sampling at the pixel centres, no noise."""
    return Degradation(SENSOR_PSF.get(sensor, SENSOR_PSF["sentinel-2"]), "point")


#: noise of the robustness table's noisy rows: about Sentinel-2's radiometric noise at 0.1 reflectance
ROBUSTNESS_NOISE = 0.001

#: the robustness table's sampling phases: the LR grid shifted by half an HR pixel each way on both axes
ROBUSTNESS_PHASES: tuple[tuple[float, float], ...] = ((0.5, 0.5), (-0.5, -0.5))

#: the evaluation's robustness table: Gaussian sigma in {0.35, 0.5, 0.65} x scale, point and area
#: decimation, with and without noise (12 rows), then point sampling at sigma 0.5 x scale with the sampling
#: grid shifted by +-0.5 HR pixel (2 rows: a sensor's registration is never exact)
ROBUSTNESS: tuple[Degradation, ...] = (
    *(Degradation(s, d, n) for s in (0.35, 0.5, 0.65) for d in ("point", "area") for n in (0.0, ROBUSTNESS_NOISE)),
    *(Degradation(0.5, "point", 0.0, p) for p in ROBUSTNESS_PHASES))


def random_degradation(generator: torch.Generator, *, sigma: tuple[float, float] = (0.3, 0.7),
                       p_area: float = 0.3, max_noise: float = 0.002, p_noise: float = 0.5,
                       max_phase: float = 0.5) -> Degradation:
    """A degradation drawn for one training sample: blur width, point or area decimation, noise and a
    sub-pixel sampling phase, so the model learns super-resolution, not the inverse of one PSF."""
    u = torch.rand(6, generator=generator).tolist()
    area = u[1] < p_area
    return Degradation(sigma=sigma[0] + (sigma[1] - sigma[0]) * u[0], decimation="area" if area else "point",
                       noise=max_noise * u[3] if u[2] < p_noise else 0.0,
                       phase=(0.0, 0.0) if area else ((2 * u[4] - 1) * max_phase, (2 * u[5] - 1) * max_phase))
