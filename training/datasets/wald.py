"""Wald-protocol training pairs from real imagery that has no higher-resolution reference.

The real image is the target; its degradation (:func:`training.degrade.degrade`) is the input; a
model that undoes the degradation learns to add the detail a sensor's PSF and sampling remove.

* :func:`read_image`: any GeoTIFF/COG (rasterio) or srcube zarr cube as (bands, H, W) reflectance,
  with a valid mask (no data, zeros outside the swath);
* :class:`WaldPairs`: random (or, for validation, a fixed grid of) patches from such images within
  a window (so training and validation areas stay apart), band-agnostic (one band per sample) or
  all bands;
* :class:`WaldMultiFrame`: the multi-frame variant from a time series of co-located frames: one
  frame is the target, the others (degraded) are the views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
import xarray as xr
from torch.utils.data import Dataset

from srcube.training.degrade import S2_MTF_AT_NYQUIST, degrade


@dataclass
class Image:
    """Reflectance (bands, H, W) float32, its valid mask (H, W), and where it came from."""

    data: np.ndarray
    valid: np.ndarray
    source: str


def read_image(path: str | Path, *, bands: list[int] | None = None, dn_scale: float | None = None,
               time: int = 0) -> Image:
    """Read a GeoTIFF/COG (1-based ``bands``) or an srcube zarr cube (frame ``time``) as reflectance.

    Integer rasters are divided by ``dn_scale`` (default 10000, the Sentinel-2 convention); float
    rasters are taken as reflectance. Zeros and the raster's nodata are invalid.
    """
    p = str(path)
    if p.rstrip("/").endswith(".zarr"):
        ds = xr.open_zarr(p)
        data = ds.reflectance.isel(time=time).values.astype(np.float32)
        if bands is not None:
            data = data[[b - 1 for b in bands]]
        valid = np.isfinite(data).all(0)
        return Image(np.nan_to_num(data), valid, p)
    with rasterio.open(p) as src:
        idx = bands or list(range(1, src.count + 1))
        raw = src.read(idx)
        nodata = src.nodata
    valid = (raw != 0).all(0)
    if nodata is not None:
        valid &= (raw != nodata).all(0)
    if np.issubdtype(raw.dtype, np.integer):
        data = raw.astype(np.float32) / np.float32(dn_scale or 10000.0)
    else:
        data = raw.astype(np.float32)
    return Image(data, valid & np.isfinite(data).all(0), p)


def _windows(image: Image, window: tuple[float, float, float, float] | None) -> tuple[slice, slice]:
    """Rows/cols of a window given as fractions (row0, row1, col0, col1) of the image."""
    h, w = image.valid.shape
    r0, r1, c0, c1 = window or (0.0, 1.0, 0.0, 1.0)
    return slice(int(r0 * h), int(r1 * h)), slice(int(c0 * w), int(c1 * w))


class WaldPairs(Dataset):
    """(lr, hr) patch pairs: hr a (channels, P, P) crop of a real image, lr its degradation.

    ``window`` restricts patches to a fraction of each image (row0, row1, col0, col1), so that
    training and validation use separate areas. ``band_agnostic`` draws one band per sample.
    ``fixed=True`` lays patches on a regular grid (validation); otherwise they are random.
    Patches with more than ``max_invalid`` invalid pixels are skipped.
    """

    def __init__(self, images: list[Image], scale: int, patch: int, length: int, *, seed: int = 0,
                 window: tuple[float, float, float, float] | None = None, band_agnostic: bool = True,
                 fixed: bool = False, mtf: float = S2_MTF_AT_NYQUIST, max_invalid: float = 0.0) -> None:
        if patch % scale:
            raise ValueError(f"patch {patch} must be a multiple of the scale {scale}")
        self.images, self.scale, self.patch, self.length = images, scale, patch, length
        self.band_agnostic, self.mtf, self.seed = band_agnostic, mtf, seed
        self.slices = [_windows(im, window) for im in images]
        self.candidates = self._candidates(fixed, max_invalid)
        if not self.candidates:
            raise ValueError(f"no valid {patch} x {patch} patch in the window {window} of {len(images)} images")

    def _candidates(self, fixed: bool, max_invalid: float) -> list[tuple[int, int, int, int]]:
        rng = np.random.default_rng(self.seed)
        out: list[tuple[int, int, int, int]] = []
        p = self.patch
        tries = 0
        while len(out) < self.length and tries < 50 * self.length:
            tries += 1
            if fixed:
                grid = [(i, r, c) for i, (rs, cs) in enumerate(self.slices)
                        for r in range(rs.start, rs.stop - p + 1, p) for c in range(cs.start, cs.stop - p + 1, p)]
                for i, r, c in grid:
                    if (~self.images[i].valid[r : r + p, c : c + p]).mean() <= max_invalid:
                        out.append((i, r, c, 0))
                return out[: self.length]
            i = int(rng.integers(len(self.images)))
            rs, cs = self.slices[i]
            if rs.stop - rs.start < p or cs.stop - cs.start < p:
                continue
            r = int(rng.integers(rs.start, rs.stop - p + 1))
            c = int(rng.integers(cs.start, cs.stop - p + 1))
            if (~self.images[i].valid[r : r + p, c : c + p]).mean() <= max_invalid:
                out.append((i, r, c, int(rng.integers(1 << 30))))
        return out

    def __len__(self) -> int:
        return len(self.candidates)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, r, c, salt = self.candidates[k]
        p = self.patch
        hr = torch.from_numpy(self.images[i].data[:, r : r + p, c : c + p].copy())
        if self.band_agnostic:
            band = salt % hr.shape[0] if salt else k % hr.shape[0]
            hr = hr[band : band + 1]
            if salt:  # random flips and 90 degree turns for training samples
                hr = torch.rot90(hr, salt // 7 % 4, dims=(1, 2))
                if salt // 31 % 2:
                    hr = hr.flip(2)
        return degrade(hr, self.scale, self.mtf), hr


class WaldMultiFrame(Dataset):
    """Multi-frame Wald pairs from a time series of co-located frames (T, H, W) per scene.

    For sample k: one frame is the target (at the original resolution, cropped to a multiple of
    the scale); the other frames, degraded, are the views (up to ``n_views``, clearest first,
    padded with masked empty views). Real revisits are not perfectly aligned and differ in
    brightness, which is what the cMSE loss (shift search, bias removal) is for.
    """

    def __init__(self, scenes: list[np.ndarray], masks: list[np.ndarray] | None, scale: int, n_views: int,
                 patch: int | None = None, length: int | None = None, seed: int = 0,
                 mtf: float = S2_MTF_AT_NYQUIST, augment: bool = False) -> None:
        self.scenes = [np.asarray(s, np.float32) for s in scenes]
        self.augment = augment
        self.masks = masks or [np.ones(s.shape, bool) for s in self.scenes]
        self.scale, self.n_views, self.patch, self.mtf = scale, n_views, patch, mtf
        self.index = [(i, t) for i, s in enumerate(self.scenes) for t in range(s.shape[0])]
        self.length = length or len(self.index)
        self.rng = np.random.default_rng(seed)
        self.offsets = [tuple(self.rng.integers(0, 1 << 30, 2)) for _ in range(self.length)]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i, t = self.index[k % len(self.index)]
        frames, masks = self.scenes[i], self.masks[i]
        _, h, w = frames.shape
        s = self.scale
        size = self.patch or (min(h, w) // s) * s
        oy, ox = self.offsets[k]
        r = int(oy % max(1, (h - size) // s + 1)) * s
        c = int(ox % max(1, (w - size) // s + 1)) * s
        target = torch.from_numpy(frames[t, r : r + size, c : c + size].copy())[None]
        clear = torch.from_numpy(masks[t, r : r + size, c : c + size].copy())[None]
        others = [j for j in range(frames.shape[0]) if j != t]
        others.sort(key=lambda j: -float(masks[j].mean()))
        others = others[: self.n_views]
        views = torch.zeros(self.n_views, 1, size // s, size // s)
        vmask = torch.zeros(self.n_views, size // s, size // s)
        for n, j in enumerate(others):
            views[n, 0] = degrade(torch.from_numpy(frames[j, r : r + size, c : c + size].copy()), s, self.mtf)
            m = torch.from_numpy(masks[j, r : r + size, c : c + size].astype(np.float32))
            vmask[n] = (torch.nn.functional.avg_pool2d(m[None, None], s)[0, 0] > 0.999).float()
        present = torch.zeros(self.n_views, dtype=torch.bool)
        present[: len(others)] = True
        if self.augment:  # the same flip / quarter turn for the views, their masks and the target
            turns, flip = int(oy // 7 % 4), bool(ox // 11 % 2)

            def aug(x: torch.Tensor) -> torch.Tensor:
                x = torch.rot90(x, turns, dims=(-2, -1))
                return x.flip(-1) if flip else x

            views, vmask, target, clear = aug(views), aug(vmask), aug(target), aug(clear)
        return {"views": views, "masks": vmask, "present": present, "hr": target, "hr_clear": clear}


def split_windows(fraction: float = 0.75, gap: float = 0.05) -> tuple[tuple[float, float, float, float], ...]:
    """(train, validation) windows: the top ``fraction`` of rows for training, the bottom part for
    validation, ``gap`` apart so no patch of one touches the other."""
    if not 0 < fraction < 1 or not 0 <= gap < 1 - fraction:
        raise ValueError(f"bad split fraction {fraction} / gap {gap}")
    return (0.0, fraction, 0.0, 1.0), (fraction + gap, 1.0, 0.0, 1.0)


def patches_per_image(image: Image, patch: int) -> int:
    h, w = image.valid.shape
    return math.floor(h / patch) * math.floor(w / patch)


class ShiftedViews(Dataset):
    """Multi-frame samples simulated from single real images: each view is the target patch shifted
    by a random sub-pixel offset (Lanczos), degraded (PSF + block mean), with a brightness gain and
    noise, as successive revisits of one place differ. Teaches fusion of sub-pixel shifts on real
    texture; use alongside real time series, not instead of them.
    """

    def __init__(self, images: list[Image], scale: int, n_views: int, patch: int, length: int, *, seed: int = 0,
                 window: tuple[float, float, float, float] | None = None, max_shift: float | None = None,
                 noise: float = 0.002, gain: float = 0.03, mtf: float = S2_MTF_AT_NYQUIST) -> None:
        self.pairs = WaldPairs(images, scale, patch, length, seed=seed, window=window, band_agnostic=True, mtf=mtf)
        self.scale, self.n_views, self.noise, self.gain, self.mtf = scale, n_views, noise, gain, mtf
        self.max_shift = scale / 2 if max_shift is None else max_shift
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        from srcube.models.interp import lanczos_shift

        _, hr = self.pairs[k]
        g = torch.Generator().manual_seed(self.seed * 100003 + k)
        shifts = (torch.rand(self.n_views, 2, generator=g) * 2 - 1) * self.max_shift
        shifts[0] = 0.0  # one view on the target's grid, as the reference revisit
        moved = lanczos_shift(hr[None].expand(self.n_views, -1, -1, -1).contiguous(), shifts)
        views = degrade(moved, self.scale, self.mtf)
        gains = 1 + (torch.rand(self.n_views, 1, 1, 1, generator=g) * 2 - 1) * self.gain
        views = views * gains + torch.randn(views.shape, generator=g) * self.noise
        h = views.shape[-1]
        return {"views": views, "masks": torch.ones(self.n_views, h, h),
                "present": torch.ones(self.n_views, dtype=torch.bool), "hr": hr,
                "hr_clear": torch.ones_like(hr)}
