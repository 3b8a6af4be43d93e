"""The one interface every srcube model implements, and the picklable spec that names one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from srcube.models.weights import Normalisation


class SRModel(nn.Module):
    """Base class of srcube super-resolution models.

    Every model declares:

    * ``scale``: integer upscaling factor;
    * ``bands``: the band names it was built for, or ``None`` when it takes any bands;
    * ``channels``: how many bands one pass of the network sees; ``1`` means band-agnostic: the
      bands of the input are folded into the batch and super-resolved one at a time;
    * ``multi_frame``: ``False`` for ``(B, C, H, W) -> (B, C, sH, sW)``; ``True`` for
      ``(B, T, C, H, W)`` + clear masks ``(B, T, H, W)`` -> ``(B, C, sH, sW)``;
    * ``receptive_field``: how many input pixels on each side an output pixel depends on; tiled
      inference pads each tile by at least this margin, so tiles join without seams;
    * ``tile_local``: ``True`` when that is all an output pixel depends on, so a tile may be cut into
      smaller forward passes with the same result; ``False`` for a model that fits something to the
      whole tile it is given (the high-pass sharpener without a window).

    Single-image subclasses implement :meth:`sr` on ``(N, channels, H, W)``; ``forward`` checks the
    input and does the band folding.
    """

    name: str = ""
    scale: int = 1
    channels: int = 1
    bands: tuple[str, ...] | None = None
    multi_frame: bool = False
    tile_local: bool = True

    def __init__(self, *, scale: int, channels: int = 1, bands: Sequence[str] | None = None) -> None:
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int) or not 2 <= scale <= 8:
            raise ValueError(f"scale must be an integer in 2..8, got {scale!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if bands is not None:
            bands = tuple(str(b) for b in bands)
            if len(bands) != channels:
                raise ValueError(f"{len(bands)} band names {bands} for a {channels}-channel model")
        self.scale = scale
        self.channels = channels
        self.bands = bands

    @property
    def receptive_field(self) -> int:
        """Input pixels on each side that an output pixel depends on (architecture-specific)."""
        raise NotImplementedError

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve ``(N, channels, H, W)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"{self.name} expects (B, C, H, W), got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        if self.channels == 1 and c > 1:
            return self.sr(x.reshape(b * c, 1, h, w)).reshape(b, c, h * self.scale, w * self.scale)
        if c != self.channels:
            raise ValueError(f"{self.name} takes {self.channels} band(s){f' {self.bands}' if self.bands else ''}, "
                             f"got {c}")
        return self.sr(x)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scale": self.scale,
            "channels": self.channels,
            "bands": list(self.bands) if self.bands else None,
            "multi_frame": self.multi_frame,
            "receptive_field": self.receptive_field,
            "parameters": count_parameters(self),
        }


class Normalized(SRModel):
    """An SRModel that normalises its input and de-normalises its output (reflectance in and out): weights trained
    on normalised inputs (:class:`srcube.models.weights.Normalisation`) as :func:`srcube.models.weights.load_weights`
    gives them. It lives here, with the torch classes, so that the weights metadata reads without torch."""

    def __init__(self, inner: SRModel, norm: Normalisation) -> None:
        super().__init__(scale=inner.scale, channels=inner.channels, bands=inner.bands)
        self.inner = inner
        self.name = inner.name
        self.multi_frame = inner.multi_frame
        self.norm = norm

    @property
    def receptive_field(self) -> int:
        return self.inner.receptive_field

    @property
    def tile_local(self) -> bool:  # type: ignore[override]
        return self.inner.tile_local

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        from srcube.models.sharpen import Sharpener  # (it builds on this module)

        o, s = self.norm.offset, self.norm.scale
        if isinstance(self.inner, Sharpener):  # a sharpener's guide is reflectance too
            if args:
                args = ((args[0] - o) / s, *args[1:])
            elif kwargs.get("guide") is not None:
                kwargs = {**kwargs, "guide": (kwargs["guide"] - o) / s}
        return self.inner((x - o) / s, *args, **kwargs) * s + o


def bicubic_then_hr_reach(hr_reach: int, scale: int) -> int:
    """Exact input reach of bicubic upsampling followed by layers reaching ``hr_reach`` output pixels.

    Output pixel ``q = n * scale + p`` samples the input at ``u = (q + 0.5) / scale - 0.5`` with taps
    ``floor(u) - 1 .. floor(u) + 2``; the worst phase ``p`` gives the reach.
    """
    reach = 0
    for p in range(scale):
        hi = math.floor((p + hr_reach + 0.5) / scale - 0.5) + 2
        lo = 1 - math.floor((p - hr_reach + 0.5) / scale - 0.5)
        reach = max(reach, hi, lo)
    return reach


@dataclass(frozen=True)
class ModelSpec:
    """What to build on a worker: registered name, its config, and a weights file (checked by hash).

    Specs are small and hashable; they enter Dask graphs instead of model objects so each worker
    builds (or loads) the model once and caches it.
    """

    name: str
    config: tuple[tuple[str, Any], ...] = ()
    weights: str | None = None
    weights_sha256: str | None = None
    _config_dict: Mapping[str, Any] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a ModelSpec needs a model name")
        object.__setattr__(self, "_config_dict", dict(self.config))

    @classmethod
    def of(cls, name: str, weights: str | None = None, weights_sha256: str | None = None,
           **config: Any) -> ModelSpec:
        frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config.items()))
        return cls(name, frozen, weights, weights_sha256)

    @property
    def kwargs(self) -> Mapping[str, Any]:
        return self._config_dict

    def build(self) -> SRModel:
        """The model, with its weights loaded (and their hash checked) when the spec names a file."""
        if self.weights is not None:
            from srcube.models.weights import load_weights

            # the trained/untrained gate is applied where the spec is made (models.resolve);
            # here only the file's identity matters, and the hash checks it
            model, _ = load_weights(self.weights, expected_sha256=self.weights_sha256, allow_untrained=True)
            return model
        from srcube.models.registry import build

        model = build(self.name, **dict(self.config))
        model.eval()
        return model

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("srcube.ModelSpec", self.name, self.config, self.weights, self.weights_sha256)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
