"""Clearance: which pixels of a frame see the ground, and which frames are clear enough to use."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

#: Sentinel-2 L2A scene classification (SCL) classes
SCL_CLASSES: dict[int, str] = {
    0: "no data",
    1: "saturated or defective",
    2: "dark area / topographic shadow",
    3: "cloud shadow",
    4: "vegetation",
    5: "not vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud medium probability",
    9: "cloud high probability",
    10: "thin cirrus",
    11: "snow or ice",
}
#: clear by default: vegetation, bare, water (add 11 to count snow as clear)
DEFAULT_CLEAR_CLASSES: tuple[int, ...] = (4, 5, 6)


def validate_classes(classes: Iterable[int]) -> tuple[int, ...]:
    out = tuple(sorted({int(c) for c in classes}))
    bad = [c for c in out if c not in SCL_CLASSES]
    if bad or not out:
        raise ValueError(f"clear classes must be SCL classes {sorted(SCL_CLASSES)}, got {list(classes)}")
    return out


def clear_mask(scl: xr.DataArray, classes: Sequence[int] = DEFAULT_CLEAR_CLASSES) -> xr.DataArray:
    """True where the SCL class is one of ``classes`` (lazy if ``scl`` is)."""
    return scl.isin(list(classes)).rename("clear")


def clear_fraction(clear: xr.DataArray) -> xr.DataArray:
    """Per-frame fraction of clear pixels over the whole region (no data counts as not clear)."""
    return clear.mean(("y", "x"), dtype=np.float64).rename("clear_fraction")


@dataclass(frozen=True)
class FrameDecision:
    """Whether a frame is kept, with its clear fraction and the reason."""

    time: str
    clear_fraction: float
    kept: bool
    reason: str


def select_frames(times: Sequence[Any], fractions: Sequence[float] | np.ndarray,
                  min_clear: float) -> list[FrameDecision]:
    """Keep frames whose clear fraction is at least ``min_clear``."""
    if not 0.0 <= min_clear <= 1.0:
        raise ValueError(f"min_clear must be in [0, 1], got {min_clear}")
    out = []
    for t, f in zip(times, fractions, strict=True):
        stamp = str(np.datetime64(t, "s")) if t is not None else "?"
        f = float(f)
        if f >= min_clear:
            out.append(FrameDecision(stamp, f, True, f"clear {f:.1%} >= min_clear {min_clear:.0%}"))
        else:
            out.append(FrameDecision(stamp, f, False, f"too cloudy: clear {f:.1%} < min_clear {min_clear:.0%}"))
    return out
