"""Consistency by construction: super-resolved tiles projected so that the sensor's degradation gives back the input.

With ``D`` a sensor degradation of :mod:`models.psf` (Gaussian PSF, then sampling on the input grid: a
linear map from the output grid to the input grid), ``x`` the input and ``sr`` the model's output, the
projection is

    sr' = sr + B c,   (D B) c = r,   r = x - D(sr)  (0 on invalid input pixels),

with ``B = gaussian_blur . decimate_adjoint`` (``D`` transposed, except where the blur reflects at the
array edge). Then ``D(sr') = x`` on every valid pixel up to the small residual of the local solve, and
the correction ``B c`` is the PSF-blurred zero insertion of an input-grid field: low-pass (its spectrum
is the PSF's, about 0.3 at the input's Nyquist frequency and below 1 % beyond twice that), so the
detail the model added above the input's resolution stays as it was (the SEN2SR low-frequency
correction, done here by the sensor's own operator instead of a fixed low-pass filter).

The PSF is the one :data:`models.psf.PROJECTION_PSF` assumes for the sensor (:meth:`Projection.for_sensor`):
narrower than the nominal PSF on purpose, as a projection with a PSF wider than the data's overshoots and
amplifies noise, while a narrower one only restores less (``bench/projection_psf.py`` measures both).

``D B`` is separable, ``A_y (x) A_x``: on each axis a symmetric band matrix (the PSF's autocorrelation at
the input spacing, reaching 3 input pixels) whose first and last rows differ where the blur reflects
at the edge. Its inverse decays by a factor of about 0.39 per input pixel (condition number about 6.8
per axis for sigma = 0.494 x scale, less for narrower PSFs), so ``c`` is solved directly with a banded
approximate inverse: the interior rows are the inverse's kernel cut at ``order`` pixels each side, the
``order`` rows at each end are the rows of the inverse of the edge operator. Both come from the operator
itself (the functions of :mod:`models.psf` applied to unit impulses), once per scale and PSF. With
``order = 6`` the residual is about 0.5 % of ``r``.

Everything is local, so tiles stay exact: an output pixel reads at most :attr:`Projection.margin`
input pixels beyond the model's own receptive field (that is the extra margin the tiles borrow), and
a tile treats each of its sides as the scene edge, which it is for the sides kept after cropping.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from srcube.models.psf import PROJECTION_PSF, SENSOR_PSF, Degradation, blur_decimate, spread_blur

if TYPE_CHECKING:
    from srcube.models.base import SRModel

#: banded inverse: kernel taps each side of the diagonal (and rows treated as edge rows at each end)
DEFAULT_ORDER = 6

#: a banded inverse along one axis: (interior kernel, top rows, bottom rows), as arrays or as tensors
BandOperator = tuple[np.ndarray, np.ndarray, np.ndarray]
BandTensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Projection:
    """The consistency projection for one scale and sensor degradation (see the module docstring)."""

    scale: int
    degradation: Degradation = field(default_factory=lambda: Degradation(PROJECTION_PSF["sentinel-2"], "point"))
    order: int = DEFAULT_ORDER
    sensor: str = "sentinel-2"

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, int) or self.scale < 2:
            raise ValueError(f"scale must be an integer >= 2, got {self.scale!r}")
        if self.order < 1:
            raise ValueError(f"order must be >= 1, got {self.order}")
        if self.degradation.noise:
            raise ValueError("the projection uses the deterministic part of a degradation; give one without noise")
        if self.degradation.sigma <= 0:
            raise ValueError("the projection needs a PSF (sigma > 0)")

    @classmethod
    def for_sensor(cls, sensor: str, scale: int, order: int = DEFAULT_ORDER, sigma: float | None = None) -> Projection:
        """The projection srcube runs for the sensor: point sampling at the pixel centres and the PSF
        :data:`models.psf.PROJECTION_PSF` assumes for it (narrower than the nominal PSF the Wald protocol
        degrades with, so that it does not overshoot data whose PSF is sharper), or ``sigma`` (x scale)."""
        if sensor not in SENSOR_PSF:
            raise ValueError(f"no PSF known for sensor {sensor!r}; known: {', '.join(sorted(SENSOR_PSF))}")
        if sigma is None:
            sigma = PROJECTION_PSF[sensor]
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma <= 2:
            raise ValueError(f"the projection's PSF sigma must be a number in (0, 2] (x scale), got {sigma!r}")
        return cls(scale, Degradation(float(sigma), "point"), order, sensor)

    # --- the operators ---------------------------------------------------------------------------

    @property
    def sigma(self) -> float:
        """PSF standard deviation in output pixels."""
        return self.degradation.sigma * self.scale

    def degrade(self, hr: torch.Tensor) -> torch.Tensor:
        """``D``: (..., sH, sW) -> (..., H, W), the sensor's blur then sampling on the input grid."""
        d = self.degradation
        return blur_decimate(hr, self.sigma, self.scale, d.decimation, d.phase)

    def spread(self, lr: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """``B``: (..., H, W) -> (..., sH, sW) = ``shape``, zero insertion (or block spreading) then the blur."""
        d = self.degradation
        return spread_blur(lr, self.sigma, self.scale, shape, d.decimation, d.phase)

    # --- reach -----------------------------------------------------------------------------------

    @property
    def reach(self) -> int:
        """Input pixels each side that one value of ``D`` (or of ``B``) reads."""
        s, d = self.scale, self.degradation
        radius = max(1, math.ceil(3 * self.sigma))  # gaussian_blur's radius
        out = 0
        for p in d.phase:
            if d.decimation == "area":
                lo, hi = 0, s - 1
            else:
                offset = (s - 1) / 2 + p
                lo = math.floor(offset)
                hi = lo + (1 if offset - lo >= 1e-9 else 0)
            out = max(out, -math.floor((lo - radius) / s), math.floor((hi + radius) / s))
        return out

    @property
    def correction_reach(self) -> int:
        """Input pixels each side the projected output reads beyond the unprojected one: ``D`` on the
        output, the banded solve, ``B``."""
        return 2 * self.reach + self.order

    @property
    def margin(self) -> int:
        """Input pixels a tile must borrow beyond the model's receptive field: ``D`` on the model output,
        the banded solve, ``B``, and ``D`` once more for the consistency layer."""
        return 3 * self.reach + self.order

    # --- the solve -------------------------------------------------------------------------------

    def _key(self) -> tuple[Any, ...]:
        d = self.degradation
        return (self.scale, float(d.sigma), d.decimation, (float(d.phase[0]), float(d.phase[1])), self.order)

    def band(self, axis: int) -> BandOperator:
        """The banded inverse of ``D B`` along ``axis`` (0: y, 1: x) for every axis longer than ``2 order``
        input pixels: (interior kernel, top rows, bottom rows), float64. It does not depend on the axis'
        length, so a graph can hold it as constants (:class:`ProjectionLayer`)."""
        return _axis_band(*self._key(), axis)

    def solve(self, r: torch.Tensor, bands: Sequence[BandOperator | BandTensors] | None = None) -> torch.Tensor:
        """``c`` with ``(D B) c ~= r`` for (..., H, W) input-grid residuals (banded approximate inverse).

        ``bands``: :meth:`band` of each axis, given (as tensors: the buffers of a :class:`ProjectionLayer`)
        so that nothing is computed from the array's size on axes longer than ``2 order``; shorter axes take
        the exact dense inverse of their length either way."""
        for axis in (0, 1):
            dim = r.ndim - 2 + axis
            n = r.shape[dim]
            op = bands[axis] if bands is not None and n > 2 * self.order else _axis_inverse(*self._key(), axis, n)
            r = _apply_axis(r, op, dim)
        return r

    def apply(self, lr: torch.Tensor, sr: torch.Tensor, valid: torch.Tensor | None = None,
              bands: Sequence[BandOperator | BandTensors] | None = None) -> torch.Tensor:
        """The projected ``sr`` alone (:meth:`project` without its consistency error: what a model's
        forward pass needs); ``bands``: as :meth:`solve`."""
        if sr.shape[-2:] != (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale):
            raise ValueError(f"sr {tuple(sr.shape)} is not {self.scale} x lr {tuple(lr.shape)}")
        lr = lr.to(sr.dtype)
        r = lr - self.degrade(sr)
        if valid is not None:
            r = torch.where(valid.unsqueeze(-3), r, torch.zeros_like(r))
        return sr + self.spread(self.solve(r, bands), (sr.shape[-2], sr.shape[-1]))

    def project(self, lr: torch.Tensor, sr: torch.Tensor,
                valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected ``sr``, consistency error) for ``lr`` (..., C, H, W) and ``sr`` (..., C, sH, sW).

        ``valid`` (..., H, W) marks the input pixels to be consistent with (others get no target: their
        residual is zero). The error is the mean over bands of ``|D(sr') - lr|`` per input pixel
        (..., H, W), NaN where not valid. ``lr`` must hold finite values (fill invalid pixels first).
        """
        out = self.apply(lr, sr, valid)
        lr = lr.to(sr.dtype)
        err = (self.degrade(out) - lr).abs().mean(dim=-3)
        if valid is not None:
            err = torch.where(valid, err, torch.full_like(err, math.nan))
        return out, err

    def error(self, lr: torch.Tensor, sr: torch.Tensor) -> torch.Tensor:
        """Mean over bands of ``|D(sr) - lr|`` per input pixel: the consistency error of any ``sr``."""
        return (self.degrade(sr.to(torch.float64)) - lr.to(torch.float64)).abs().mean(dim=-3)

    def describe(self) -> dict[str, Any]:
        """What the cube's attributes say about the projection."""
        d = self.degradation
        return {"consistency_psf": f"{self.sensor}: Gaussian PSF sigma = {d.sigma:.3f} x scale "
                                   f"({self.sigma:.3f} output pixels), {d.decimation} sampling at the input "
                                   "pixel centres" + (f", phase {d.phase}" if any(d.phase) else ""),
                "consistency_psf_sigma": round(float(d.sigma), 6),
                "consistency_order": self.order}


def own_projection(model: nn.Module) -> Projection | None:
    """The consistency projection a model ends in (``lrnet`` with ``project``; through a normalisation
    wrapper's ``inner``), None for any other model."""
    inner = getattr(model, "inner", model)
    proj = getattr(inner, "projection", None)
    return proj if getattr(inner, "consistent", False) and isinstance(proj, Projection) else None


def projection_for(model: SRModel, sensor: str) -> Projection:
    """The projection to run after ``model`` (the pipeline's, the evaluation's): the model's own, the one it was
    trained through (a second pass with another PSF would undo what the first chose), else the sensor's
    (:meth:`Projection.for_sensor`) at the model's scale."""
    own = own_projection(model)
    return own if own is not None else Projection.for_sensor(sensor, int(model.scale))


class ProjectionLayer(nn.Module):
    """:meth:`Projection.apply` as a module whose banded inverses (:meth:`Projection.band`, one per axis) are
    constant buffers made when it is built: a model that ends with it exports (ONNX) with them as constants,
    nothing inverted at trace time, for any size whose axes are longer than ``2 order`` input pixels (the
    graph asks for that; shorter axes, eager only, take the exact dense inverse of their length). The
    buffers are not persistent: weights files hold no trace of them, and results are those of
    :meth:`Projection.apply`."""

    def __init__(self, projection: Projection) -> None:
        super().__init__()
        self.projection = projection
        for axis, name in enumerate("yx"):
            for part, values in zip(("kernel", "top", "bottom"), projection.band(axis), strict=True):
                self.register_buffer(f"{part}_{name}", torch.as_tensor(values), persistent=False)

    def bands(self) -> tuple[BandTensors, BandTensors]:
        """The buffers as (kernel, top rows, bottom rows) of the y axis, then of the x axis."""
        y, x = ((getattr(self, f"kernel_{n}"), getattr(self, f"top_{n}"), getattr(self, f"bottom_{n}")) for n in "yx")
        return y, x

    def forward(self, lr: torch.Tensor, sr: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.projection.apply(lr, sr, valid, bands=self.bands())


def _apply_axis(r: torch.Tensor, op: BandOperator | BandTensors | np.ndarray, dim: int) -> torch.Tensor:
    """Apply a banded operator (interior kernel, top rows, bottom rows) or a dense matrix along ``dim``."""
    r = r.movedim(dim, -1)
    if isinstance(op, np.ndarray):
        out = r @ torch.as_tensor(op.T, dtype=r.dtype, device=r.device)
        return out.movedim(-1, dim)
    kernel, top, bottom = (torch.as_tensor(a, dtype=r.dtype, device=r.device) for a in op)
    k, e, n = (kernel.shape[0] - 1) // 2, top.shape[0], r.shape[-1]
    lead = r.shape[:-1]
    flat = r.reshape(-1, 1, n)
    inner = F.conv1d(flat, kernel[None, None]).reshape(*lead, n - 2 * k)  # rows k .. n-k-1
    out = torch.cat([r[..., : top.shape[1]] @ top.T, inner[..., e - k : n - e - k],
                     r[..., n - bottom.shape[1] :] @ bottom.T], dim=-1)
    return out.movedim(-1, dim)


def _impulse_response(proj: Projection, axis: int, n: int) -> np.ndarray:
    """(n, n) response of ``D B`` along ``axis`` to unit impulses on an axis of ``n`` input pixels, read on
    the middle of an interior other axis (so it is ``A_axis`` times that axis' central value)."""
    w = 2 * (2 * proj.reach + 1) + 1
    mid = w // 2
    shape = (n, w) if axis == 0 else (w, n)
    d = torch.zeros((n, *shape), dtype=torch.float64)
    j = torch.arange(n)
    if axis == 0:
        d[j, j, mid] = 1.0
    else:
        d[j, mid, j] = 1.0
    out = proj.degrade(proj.spread(d, (shape[0] * proj.scale, shape[1] * proj.scale)))
    resp = out[:, :, mid] if axis == 0 else out[:, mid, :]  # (impulse j, pixel i)
    return np.ascontiguousarray(resp.T.numpy())


@functools.lru_cache(maxsize=64)
def _axis_inverse(scale: int, sigma: float, decimation: str, phase: tuple[float, float], order: int, axis: int,
                  n: int) -> BandOperator | np.ndarray:
    """The approximate inverse of ``D B`` along ``axis`` for an axis of ``n`` input pixels: banded
    (kernel, top rows, bottom rows; :func:`_axis_band`) when ``n > 2 order``, else the exact dense inverse."""
    if n > 2 * order:
        return _axis_band(scale, sigma, decimation, phase, order, axis)
    proj = Projection(scale, Degradation(sigma, decimation, 0.0, phase), order)
    with torch.device("cpu"):  # computed in numpy, whatever the default device (a model built on "meta")
        return _central(proj, axis) * np.linalg.inv(_impulse_response(proj, axis, n))


def _central(proj: Projection, axis: int) -> float:
    """``A_y (x) A_x = resp_y (x) resp_x / P``, P = the product of the two axes' central values: the factor
    that turns the inverse of the ``axis`` response into that of ``A_axis`` (P on axis 0, 1 on axis 1)."""
    if axis != 0:
        return 1.0
    w = 2 * (2 * proj.reach + 1) + 1
    impulse = torch.zeros((1, w, w), dtype=torch.float64)
    impulse[0, w // 2, w // 2] = 1.0
    return float(proj.degrade(proj.spread(impulse, (w * proj.scale, w * proj.scale)))[0, w // 2, w // 2])


@functools.lru_cache(maxsize=64)
def _axis_band(scale: int, sigma: float, decimation: str, phase: tuple[float, float], order: int, axis: int
               ) -> BandOperator:
    """The banded approximate inverse of ``D B`` along ``axis`` for any axis longer than ``2 order``: the
    interior rows' kernel and the ``order`` rows at each end, cut from the inverse on a long axis."""
    proj = Projection(scale, Degradation(sigma, decimation, 0.0, phase), order)
    size = max(64, 8 * order)
    with torch.device("cpu"):  # computed in numpy, whatever the default device (a model built on "meta")
        inv = _central(proj, axis) * np.linalg.inv(_impulse_response(proj, axis, size))
    mid = size // 2
    kernel = inv[mid, mid - order : mid + order + 1].copy()
    top = inv[:order, : 2 * order].copy()
    bottom = inv[size - order :, size - 2 * order :].copy()
    for i in range(order):  # keep the band: row i reads columns up to i + order (bottom: mirrored)
        top[i, i + order + 1 :] = 0.0
        bottom[i, : i] = 0.0
    return kernel, top, bottom
