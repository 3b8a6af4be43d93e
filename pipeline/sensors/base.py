"""What srcube needs to know about a sensor: bands, QA decoding, reflectance scaling, grid policy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import pystac

from srcube.pipeline.sensors.bands import BandVocabulary

if TYPE_CHECKING:  # for annotations: the profile itself does not import xarray
    import xarray as xr


class SensorProfile:
    """Base class of sensor profiles (one module per sensor, registered by name).

    ``grid`` is ``"utm"`` (the UTM zone of the bbox centre, as for Sentinel-2 tiles) or ``"native"``
    (the items' own CRS, e.g. PROBA-V's lat/lon plate carree).
    """

    name: str = ""
    vocabulary: BandVocabulary
    grid: str = "utm"
    #: substrings of collection ids that belong to this sensor (lower case)
    collection_markers: tuple[str, ...] = ()
    #: values of the ``platform``/``constellation`` property that belong to this sensor (lower case)
    platform_markers: tuple[str, ...] = ()
    default_clear: tuple[int, ...] = ()
    #: the QA classes a user may call clear, with their names
    qa_classes: ClassVar[dict[int, str]] = {}
    harmonize_modes: tuple[str, ...] = ("raster", "none")
    #: the finer bands that guide band sharpening (:mod:`pipeline.sr.sharpening`): bands whose pixels are
    #: ``sharpen_ratio`` x those of the guide are sharpened onto the guide's grid; empty: never sharpened
    guide_bands: tuple[str, ...] = ()
    sharpen_ratio: int = 2

    def validate_clear_classes(self, classes: Sequence[int] | None) -> tuple[int, ...]:
        if classes is None:
            return self.default_clear
        out = tuple(sorted({int(c) for c in classes}))
        bad = [c for c in out if c not in self.qa_classes]
        if bad or not out:
            raise ValueError(f"{self.name} clear classes must be among {sorted(self.qa_classes)} "
                             f"({', '.join(f'{k} {v}' for k, v in self.qa_classes.items())}), got {list(classes)}")
        return out

    def scaling(self, item: pystac.Item, key: str, harmonize: str) -> tuple[float, float, float | None]:
        """(scale, offset, nodata) turning the asset's DN into reflectance."""
        raise NotImplementedError

    def qa_class(self, qa: xr.DataArray) -> xr.DataArray:
        """The QA band decoded to the class codes of ``qa_classes`` (lazy)."""
        return qa

    def clear_mask(self, qa: xr.DataArray, classes: Sequence[int], bands: Sequence[str]) -> xr.DataArray:
        """True where the pixel is clear for ``bands`` (lazy)."""
        return self.qa_class(qa).isin(list(classes))

    def clearance_weight(self, qa: xr.DataArray, classes: Sequence[int]) -> xr.DataArray:
        """Per-pixel clearance in [0, 1] for the frame score: 1 clear, partial for doubtful classes."""
        return self.clear_mask(qa, classes, ()).astype("float32")

    def describe_qa(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.qa_classes.items())
