"""The one interface every srcube model implements, and the picklable spec that names one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


class SRModel(nn.Module):
    """Base class of srcube super-resolution models.

    Attributes every model sets:

    * ``scale``: integer upscaling factor;
    * ``bands``: the band names it was built for, or ``None`` when it takes any number of bands;
    * ``multi_frame``: ``False`` for ``(B, C, H, W) -> (B, C, sH, sW)``; ``True`` for
      ``(B, T, C, H, W)`` + clear masks ``(B, T, H, W)`` -> ``(B, C, sH, sW)``;
    * ``receptive_field``: how many input pixels on each side an output pixel depends on; tiled
      inference pads each tile by at least this margin so tiles join without seams.
    """

    scale: int
    bands: tuple[str, ...] | None = None
    multi_frame: bool = False
    receptive_field: int = 0
    name: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scale": self.scale,
            "bands": list(self.bands) if self.bands else None,
            "multi_frame": self.multi_frame,
            "receptive_field": self.receptive_field,
            "parameters": sum(p.numel() for p in self.parameters()),
        }


@dataclass(frozen=True)
class ModelSpec:
    """What to build on a worker: registered name, its config, and (later) a weights file.

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
        return cls(name, tuple(sorted(config.items())), weights, weights_sha256)

    @property
    def kwargs(self) -> Mapping[str, Any]:
        return self._config_dict

    def build(self) -> SRModel:
        from models.registry import build

        model = build(self.name, **dict(self.config))
        model.eval()
        return model

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("srcube.ModelSpec", self.name, self.config, self.weights, self.weights_sha256)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_input(model: SRModel, x: torch.Tensor) -> None:
    """Shape check shared by single-image models: (B, C, H, W) with C matching ``bands``."""
    if x.ndim != 4:
        raise ValueError(f"{model.name} expects (B, C, H, W), got shape {tuple(x.shape)}")
    if model.bands is not None and x.shape[1] != len(model.bands):
        raise ValueError(f"{model.name} expects {len(model.bands)} bands {model.bands}, got {x.shape[1]}")
