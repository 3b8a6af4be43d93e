"""Sub-pixel registration of multi-frame views: phase correlation refined by an upsampled DFT.

PROBA-V revisits of one site are shifted against each other by a fraction of a pixel to about one pixel
(``bench/probav_shifts.py`` measures it on the real Kelvins frames). :func:`phase_shift` estimates the
translation of one image against another: the peak of the phase correlation (the normalised cross-power
spectrum, Hann-windowed), refined to ``1 / upsample`` pixel with the matrix-multiply DFT of Guizar-Sicairos,
Thurman & Fienup (2008, "Efficient subpixel image registration algorithms") in a 1.5-pixel neighbourhood.
Pixels that are not clear are filled with the clear mean first (they then carry no structure to match).
:func:`register_views` measures every view against a reference view; :func:`shift_views` moves views by such
shifts (separable Lanczos-3, local: tiles stay exact) so that they line up with the reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: phase-correlation weighting (cycles per pixel): the phases near the Nyquist frequency are those of aliasing,
#: noise and the interpolation that resampled a view, not of its shift; with it, shifts of real PROBA-V frames
#: moved by a known amount come back within 0.05 px (tests/models/test_registration.py)
BAND = 0.15


def _upsampled_dft(spectrum: torch.Tensor, size: int, upsample: int, offset: tuple[float, float]) -> torch.Tensor:
    """The inverse DFT of ``spectrum`` (H, W) on a ``size`` x ``size`` grid of spacing ``1 / upsample`` pixel
    starting at ``-offset`` (upsampled pixels), by two matrix products."""
    h, w = spectrum.shape
    dt = torch.float64
    fy = torch.fft.ifftshift(torch.arange(h, dtype=dt)) - math.floor(h / 2)
    fx = torch.fft.ifftshift(torch.arange(w, dtype=dt)) - math.floor(w / 2)
    ky = torch.exp((-2j * math.pi / (h * upsample)) * (torch.arange(size, dtype=dt) - offset[0])[:, None] * fy[None])
    kx = torch.exp((-2j * math.pi / (w * upsample)) * fx[:, None] * (torch.arange(size, dtype=dt) - offset[1])[None])
    return ky @ spectrum.to(torch.complex128) @ kx


def _filled(img: torch.Tensor, clear: torch.Tensor | None) -> torch.Tensor:
    img = img.to(torch.float64)
    if clear is None:
        return img
    clear = clear.to(torch.bool)
    fill = img[clear].mean() if bool(clear.any()) else img.mean()
    return torch.where(clear, img, fill)


def phase_shift(reference: torch.Tensor, moving: torch.Tensor, clear_reference: torch.Tensor | None = None,
                clear_moving: torch.Tensor | None = None, upsample: int = 20,
                band: float | None = BAND) -> tuple[float, float]:
    """(dy, dx) in pixels such that ``moving`` shifted by (dy, dx) lines up with ``reference`` (both (H, W));
    precision ``1 / upsample`` pixel; shifts up to half the image each way. ``band``: the phases are weighed by
    a Gaussian of that many cycles per pixel (None: all frequencies alike, as textbook phase correlation)."""
    if reference.shape != moving.shape or reference.ndim != 2:
        raise ValueError(f"two images of one (H, W) shape are needed, got {tuple(reference.shape)} and "
                         f"{tuple(moving.shape)}")
    if upsample < 1:
        raise ValueError(f"upsample must be >= 1, got {upsample}")
    h, w = reference.shape
    win = torch.outer(torch.hann_window(h, periodic=False, dtype=torch.float64),
                      torch.hann_window(w, periodic=False, dtype=torch.float64))
    a, b = (_filled(x, c) for x, c in ((reference, clear_reference), (moving, clear_moving)))
    fa, fb = torch.fft.fft2((a - a.mean()) * win), torch.fft.fft2((b - b.mean()) * win)
    cross = fa * fb.conj()
    cross = cross / (cross.abs() + 1e-12)
    if band is not None:  # weigh the phases by frequency: a Gaussian of ``band`` cycles per pixel
        fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
        fx = torch.fft.fftfreq(w, dtype=torch.float64)[None]
        cross = cross * torch.exp(-(fy**2 + fx**2) / (2 * band**2))
    corr = torch.fft.ifft2(cross).abs()
    peak = divmod(int(corr.argmax()), w)
    coarse = [float(p - n if p > n // 2 else p) for p, n in zip(peak, (h, w), strict=True)]
    if upsample == 1:
        return coarse[0], coarse[1]
    coarse = [round(c * upsample) / upsample for c in coarse]
    size = math.ceil(1.5 * upsample)
    centre = float(size // 2)
    fine = _upsampled_dft(cross.conj(), size, upsample,
                          (centre - coarse[0] * upsample, centre - coarse[1] * upsample)).conj().abs()
    iy, ix = divmod(int(fine.argmax()), size)
    return coarse[0] + (iy - centre) / upsample, coarse[1] + (ix - centre) / upsample


def register_views(views: torch.Tensor, masks: torch.Tensor | None = None, reference: int | None = None,
                   upsample: int = 20, band: float | None = BAND) -> torch.Tensor:
    """(T, 2) shifts (dy, dx) that line each of ``views`` (T, H, W) up with the reference view (default: the
    clearest; its own shift is 0). ``masks`` (T, H, W): clear pixels."""
    if views.ndim != 3:
        raise ValueError(f"views must be (T, H, W), got {tuple(views.shape)}")
    t = views.shape[0]
    if reference is None:
        reference = 0 if masks is None else int(masks.to(torch.float64).flatten(1).mean(1).argmax())
    ref_clear = None if masks is None else masks[reference]
    out = torch.zeros(t, 2, dtype=torch.float64)
    for i in range(t):
        if i != reference:
            out[i] = torch.tensor(phase_shift(views[reference], views[i], ref_clear,
                                              None if masks is None else masks[i], upsample, band))
    return out


#: Lanczos taps each side: the resampling of :func:`shift_views` reads ``ceil(|shift|) + LANCZOS_A`` pixels away
LANCZOS_A = 3

#: largest shift (pixels, either axis) the pipeline applies; a larger measured one is a mismatch (clouds, a
#: changed landscape), not a georeferencing error, and that view is left as it is
MAX_SHIFT = 3.0


def reach(max_shift: float = MAX_SHIFT) -> int:
    """Pixels each side that :func:`shift_views` reads for shifts up to ``max_shift`` (tiles borrow that many)."""
    return math.ceil(abs(max_shift)) + LANCZOS_A if max_shift else 0


def _lanczos_axis(x: torch.Tensor, d: float, dim: int) -> torch.Tensor:
    """``out[i] = x[i - d]`` along ``dim`` by Lanczos-3 interpolation (edge values repeated beyond the ends)."""
    if d == 0:
        return x
    n = math.floor(-d)  # position i - d = i + n + frac
    frac = -d - n
    taps = torch.arange(-LANCZOS_A + 1, LANCZOS_A + 1, dtype=torch.float64)  # offsets from floor(i - d)
    t = taps - frac
    w = torch.sinc(t) * torch.sinc(t / LANCZOS_A)
    w = (w / w.sum()).to(x.dtype)
    x = x.movedim(dim, -1)
    size = x.shape[-1]
    lo, hi = max(0, -(n - LANCZOS_A + 1)), max(0, n + LANCZOS_A)
    flat = x.reshape(-1, 1, size)
    padded = F.pad(flat, (lo, hi), mode="replicate").squeeze(1)
    out = torch.zeros_like(flat.squeeze(1))
    for k, o in enumerate(taps.long().tolist()):
        start = lo + n + o
        out = out + w[k] * padded[:, start : start + size]
    return out.reshape(x.shape).movedim(-1, dim)


def shift_views(views: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """``views`` (T, ..., H, W) each moved by its (dy, dx) of ``shifts`` (T, 2): ``out(y, x) = view(y - dy, x - dx)``
    by separable Lanczos-3 interpolation (edge values repeated), local: an output pixel reads
    :func:`reach` of the largest shift at most, so tiles that borrow that margin give the whole image's values."""
    if shifts.shape != (views.shape[0], 2):
        raise ValueError(f"shifts must be (T, 2) = ({views.shape[0]}, 2), got {tuple(shifts.shape)}")
    out = []
    for i in range(views.shape[0]):
        dy, dx = (float(v) for v in shifts[i])
        out.append(_lanczos_axis(_lanczos_axis(views[i], dy, views.ndim - 3), dx, views.ndim - 2))
    return torch.stack(out)


def apply_shifts(views: torch.Tensor, masks: torch.Tensor, shifts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``views`` (T, C, H, W) and their clear ``masks`` (T, H, W) moved by ``shifts`` (T, 2) (:func:`shift_views`):
    the views resampled, the masks resampled and kept where above one half (as 0 / 1 in the masks' dtype)."""
    moved = shift_views(views, shifts)
    clear = shift_views(masks.to(torch.float64)[:, None], shifts)[:, 0] > 0.5
    return moved, clear.to(masks.dtype)
