"""Band sharpening: the 20 m bands of an acquisition on its 10 m grid, guided by its 10 m bands.

A sharpener is an :class:`~models.base.SRModel` whose ``forward`` takes two tensors of one acquisition:
``low`` ``(N, L, h, w)``, the bands to sharpen, and ``guide`` ``(N, G, h * ratio, w * ratio)``, the
finer bands on the target grid (every low pixel covers ``ratio x ratio`` guide pixels). It returns
``(N, L, h * ratio, w * ratio)``. ``scale`` is the ratio, ``bands`` the low bands, ``guide_bands``
the guide's; ``receptive_field`` counts low-resolution pixels.

* ``hpf`` (:class:`HighPassInjection`): no learning. Each low band is regressed on the guide bands
  degraded to the low grid (least squares with an intercept), and the guide's high frequencies (guide
  minus its degraded-and-upsampled self) are injected with those weights into the bicubic upsampling of
  the band. A classical pan-sharpening baseline. ``window=None`` fits one regression per tile (the
  plain baseline: tiled results differ slightly from one pass); ``window=w`` fits it in every w x w
  neighbourhood of the low grid (box-filtered moments, a ridge), so the weights follow the landscape and
  the result is local: tiled == whole image with a margin of the declared receptive field.
  It takes NaN as no data (``nodata_aware``): holes are filled with the band's mean for the filters,
  left out of the regression (the per-tile one), and NaN again in the output.
* ``dsen2`` (:class:`DSen2Lite`): learned, DSen2-style (Lanaras et al. 2018) but computed on the low
  grid for speed: the guide is folded space-to-depth next to the low bands, residual blocks, then a
  pixel shuffle back to the guide grid. The network adds detail to the local high-pass injection
  (``window`` > 0; ``base="bicubic"`` adds it to the bicubic upsampling instead), so it starts as a
  classical sharpener and learns what linear injection misses. Trained with the Wald protocol on real
  multi-resolution scenes (20 -> 40 m with the 10 -> 20 m guide).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from srcube.models.base import SRModel
from srcube.models.psf import SENSOR_PSF, decimate, gaussian_blur

#: Sentinel-2 bands: the 10 m guide and the 20 m bands a sharpener returns on the 10 m grid
S2_GUIDE_BANDS = ("B02", "B03", "B04", "B08")
S2_LOW_BANDS = ("B05", "B06", "B07", "B8A", "B11", "B12")


class Sharpener(SRModel):
    """Base class: ``forward(low, guide)`` (see the module docstring)."""

    kind = "sharpen"
    guide_bands: tuple[str, ...] | None = None
    #: True when ``forward`` takes NaN as no data itself; otherwise callers fill holes before the call
    nodata_aware: bool = False

    def __init__(self, *, ratio: int = 2, bands: Sequence[str] | None = S2_LOW_BANDS,
                 guide_bands: Sequence[str] | None = S2_GUIDE_BANDS, channels: int | None = None,
                 guide_channels: int | None = None) -> None:
        low = tuple(bands) if bands is not None else None
        n_low = channels or (len(low) if low else 1)
        super().__init__(scale=ratio, channels=n_low, bands=low)
        self.guide_bands = tuple(guide_bands) if guide_bands is not None else None
        self.guide_channels = guide_channels or (len(self.guide_bands) if self.guide_bands else 1)

    def check(self, low: torch.Tensor, guide: torch.Tensor) -> None:
        if low.ndim != 4 or guide.ndim != 4 or low.shape[0] != guide.shape[0]:
            raise ValueError(f"{self.name} takes low (N, L, h, w) and guide (N, G, H, W), got {tuple(low.shape)} "
                             f"and {tuple(guide.shape)}")
        if low.shape[1] != self.channels or guide.shape[1] != self.guide_channels:
            raise ValueError(f"{self.name} sharpens {self.channels} band(s) with {self.guide_channels} guide band(s), "
                             f"got {low.shape[1]} and {guide.shape[1]}")
        r = self.scale
        if guide.shape[-2] != low.shape[-2] * r or guide.shape[-1] != low.shape[-1] * r:
            raise ValueError(f"the guide must be {r} x the low grid: low {tuple(low.shape[-2:])}, guide "
                             f"{tuple(guide.shape[-2:])}")

    def sharpen(self, low: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, low: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        if guide is None:
            raise ValueError(f"{self.name} needs the guide bands: model(low, guide)")
        self.check(low, guide)
        return self.sharpen(low, guide)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "kind": self.kind, "guide_bands": list(self.guide_bands or [])}


def _up(x: torch.Tensor, r: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=r, mode="bicubic", align_corners=False)


def degrade_guide(guide: torch.Tensor, ratio: int, sensor: str = "sentinel-2") -> torch.Tensor:
    """The guide as the low grid would see it: the sensor's PSF, then point sampling."""
    return decimate(gaussian_blur(guide, SENSOR_PSF[sensor] * ratio), ratio, "point")


def _box(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over the ``window x window`` neighbourhood of each pixel, over what lies inside the image.

    While a graph is exported (ONNX), as differences of cumulative sums divided by the count of pixels inside:
    the moments are float64, and onnxruntime has no float64 average pooling."""
    if not torch.compiler.is_exporting():
        return F.avg_pool2d(x, window, stride=1, padding=window // 2, count_include_pad=False)
    r = window // 2
    h, w = x.shape[-2:]
    # a zero before the first pixel: the sum over pixels j - r .. j + r is prefix[j + window] - prefix[j]
    prefix = F.pad(x, (r + 1, r, r + 1, r)).cumsum(-1)
    prefix = (prefix[..., :, window : window + w] - prefix[..., :, 0:w]).cumsum(-2)
    total = prefix[..., window : window + h, :] - prefix[..., 0:h, :]

    def inside(n: int) -> torch.Tensor:  # pixels of the window inside an axis of n, at each position
        at = torch.arange(n, device=x.device)
        return ((at + r).clamp(max=n - 1) - (at - r).clamp(min=0) + 1).to(x.dtype)

    return total / (inside(h)[:, None] * inside(w)[None, :])


def _fill(x: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) with the pixels outside ``ok`` (N, 1, H, W) set to each band's mean over ``ok``."""
    n = ok.to(x.dtype).sum((-2, -1), keepdim=True).clamp_min(1.0)
    mean = torch.where(ok, x, 0.0).sum((-2, -1), keepdim=True) / n
    return torch.where(ok, x, mean)


def _solve_spd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x`` with ``a x = b`` for batches of small symmetric positive definite ``a`` (..., g, g) and ``b`` (..., g, k).

    ``torch.linalg.solve`` (LAPACK, batched) when running; while a graph is exported (ONNX has no linear
    solve) a Cholesky factorisation and the two triangular substitutions unrolled into plain elementwise
    ops, the same solution to float64 rounding (``tests/models/test_model_zoo.py`` compares them). The
    unrolled form is kept out of the eager path: it measured 6x slower there than LAPACK's batched solve.
    """
    if not torch.compiler.is_exporting():
        return torch.linalg.solve(a, b)
    g = a.shape[-1]
    low: list[list[torch.Tensor]] = [[] for _ in range(g)]  # low[i][j] = L[i, j], j <= i
    for j in range(g):
        for i in range(j, g):
            v = a[..., i, j]
            for k in range(j):
                v = v - low[i][k] * low[j][k]
            low[i].append(torch.sqrt(v) if i == j else v / low[j][j])
    y: list[torch.Tensor] = []
    for i in range(g):  # L y = b
        v = b[..., i, :]
        for k in range(i):
            v = v - low[i][k][..., None] * y[k]
        y.append(v / low[i][i][..., None])
    x: list[torch.Tensor] = [y[0]] * g
    for i in reversed(range(g)):  # L^T x = y
        v = y[i]
        for k in range(i + 1, g):
            v = v - low[k][i][..., None] * x[k]
        x[i] = v / low[i][i][..., None]
    return torch.stack(x, -2)


class HighPassInjection(Sharpener):
    """Linear high-pass injection (see the module docstring); parameter-free."""

    name = "hpf"
    nodata_aware = True

    def __init__(self, ratio: int = 2, bands: Sequence[str] | None = S2_LOW_BANDS,
                 guide_bands: Sequence[str] | None = S2_GUIDE_BANDS, ridge: float = 1e-6, window: int | None = None,
                 scale: int | None = None, channels: int | None = None, guide_channels: int | None = None) -> None:
        super().__init__(ratio=scale or ratio, bands=bands, guide_bands=guide_bands, channels=channels,
                         guide_channels=guide_channels)
        if window is not None and (window < 3 or window % 2 == 0):
            raise ValueError(f"window must be an odd number of low pixels >= 3, got {window}")
        self.ridge, self.window = ridge, window

    @property
    def tile_local(self) -> bool:  # type: ignore[override]
        return self.window is not None  # without a window, the weights are fitted to the whole tile

    @property
    def receptive_field(self) -> int:
        # the guide's blur (3 sigma at the low grid), the window's half, bicubic of the weights and bands
        blur = int(3 * SENSOR_PSF["sentinel-2"] * self.scale / self.scale + 1.5)
        return 2 if self.window is None else blur + self.window // 2 + 4

    def weights(self, low: torch.Tensor, guide_low: torch.Tensor) -> torch.Tensor:
        """(N, L, G + 1) least-squares weights (last: intercept) of each low band on the degraded guide."""
        n, g = guide_low.shape[:2]
        x = torch.cat([guide_low.reshape(n, g, -1), torch.ones_like(guide_low[:, :1]).reshape(n, 1, -1)], 1)
        y = low.reshape(n, low.shape[1], -1)
        ok = torch.isfinite(x).all(1, keepdim=True) & torch.isfinite(y).all(1, keepdim=True)
        x = torch.where(ok, x, 0.0).to(torch.float64)
        y = torch.where(ok, y, 0.0).to(torch.float64)
        xtx = x @ x.transpose(1, 2) + self.ridge * torch.eye(g + 1, dtype=x.dtype, device=x.device)
        return _solve_spd(xtx, x @ y.transpose(1, 2)).transpose(1, 2).to(low.dtype)

    def local_weights(self, low: torch.Tensor, guide_low: torch.Tensor) -> torch.Tensor:
        """(N, L, G, h, w) weights of each low band on the degraded guide, fitted in every window (centred
        moments, so the intercept drops out; ridge relative to the local guide variance)."""
        w = int(self.window or 3)
        n, g, h, wd = guide_low.shape
        x, y = guide_low.to(torch.float64), low.to(torch.float64)
        mx, my = _box(x, w), _box(y, w)
        cxx = _box((x[:, :, None] * x[:, None]).reshape(n, g * g, h, wd), w).reshape(n, g, g, h, wd)
        cxx = cxx - mx[:, :, None] * mx[:, None]
        cxy = _box((x[:, :, None] * y[:, None]).reshape(n, g * y.shape[1], h, wd), w).reshape(n, g, -1, h, wd)
        cxy = cxy - mx[:, :, None] * my[:, None]
        a = cxx.permute(0, 3, 4, 1, 2)  # (n, h, w, g, g)
        trace = a.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] / g
        eye = torch.eye(g, dtype=a.dtype, device=a.device)
        a = a + (self.ridge + 1e-3 * trace) * eye
        beta = _solve_spd(a, cxy.permute(0, 3, 4, 1, 2))  # (n, h, w, g, L)
        return beta.permute(0, 4, 3, 1, 2).to(low.dtype)

    def sharpen(self, low: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        r = self.scale
        low_ok = torch.isfinite(low).all(1, keepdim=True)
        guide_ok = torch.isfinite(guide).all(1, keepdim=True)
        # an exported graph (ONNX) cannot branch on the data: it takes the no-data path, which gives the same
        # values where everything is finite (nothing filled, nothing masked)
        complete = not torch.compiler.is_exporting() and bool(low_ok.all()) and bool(guide_ok.all())
        if not complete:
            low, guide = _fill(low, low_ok), _fill(guide, guide_ok)
        guide_low = degrade_guide(guide, r)
        if self.window is None:
            if complete:
                w = self.weights(low, guide_low)[..., :-1]  # (N, L, G)
            else:  # fit on the low pixels whose degraded guide saw no filled pixel
                seen = degrade_guide(guide_ok.to(guide.dtype), r) > 0.999
                nan = torch.tensor(float("nan"), dtype=low.dtype, device=low.device)
                w = self.weights(torch.where(low_ok, low, nan), torch.where(seen, guide_low, nan))[..., :-1]
            detail = guide - _up(guide_low, r)
            out = _up(low, r) + torch.einsum("nlg,nghw->nlhw", w, detail)
        else:
            detail = guide - _up(guide_low, r)
            beta = self.local_weights(low, guide_low)  # (N, L, G, h, w)
            n, nl, g = beta.shape[:3]
            up_beta = _up(beta.reshape(n, nl * g, *beta.shape[-2:]), r).reshape(n, nl, g, *detail.shape[-2:])
            out = _up(low, r) + (up_beta * detail[:, None]).sum(2)
        if not complete:
            valid = guide_ok & low_ok.repeat_interleave(r, -2).repeat_interleave(r, -1)
            out = torch.where(valid, out, float("nan"))
        return out


class _Block(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(features, features, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * self.body(x)


class DSen2Lite(Sharpener):
    """The learned sharpener (see the module docstring). ``offset``/``norm`` normalise reflectance."""

    name = "dsen2"

    def __init__(self, ratio: int = 2, bands: Sequence[str] | None = S2_LOW_BANDS,
                 guide_bands: Sequence[str] | None = S2_GUIDE_BANDS, features: int = 48, blocks: int = 6,
                 offset: float = 0.15, norm: float = 0.1, window: int = 0, scale: int | None = None,
                 channels: int | None = None, guide_channels: int | None = None) -> None:
        super().__init__(ratio=scale or ratio, bands=bands, guide_bands=guide_bands, channels=channels,
                         guide_channels=guide_channels)
        r, n_low, n_guide = self.scale, self.channels, self.guide_channels
        self.features, self.n_blocks, self.offset, self.norm, self.window = features, blocks, offset, norm, window
        self.base = (HighPassInjection(r, bands, guide_bands, window=window, channels=n_low,
                                       guide_channels=n_guide) if window else None)
        self.head = nn.Conv2d(n_low + n_guide * r * r, features, 3, padding=1)
        self.body = nn.Sequential(*(_Block(features) for _ in range(blocks)))
        self.tail = nn.Conv2d(features, n_low * r * r, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # starts as the base (local high-pass injection or bicubic)
        nn.init.zeros_(self.tail.bias)  # type: ignore[arg-type]

    @property
    def receptive_field(self) -> int:
        net = 2 + 2 * self.n_blocks  # head + blocks + tail on the low grid
        return max(net, self.base.receptive_field if self.base is not None else 2)

    def sharpen(self, low: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        r = self.scale
        lo = (low - self.offset) / self.norm
        gd = F.pixel_unshuffle((guide - self.offset) / self.norm, r)
        feat = self.head(torch.cat([lo, gd], 1))
        detail = F.pixel_shuffle(self.tail(self.body(feat)), r)
        base = self.base.sharpen(low, guide) if self.base is not None else _up(low, r)
        return base + detail * self.norm
