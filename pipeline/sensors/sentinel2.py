"""Sentinel-2 L2A: band vocabulary of Earth Search, Planetary Computer and CDSE, SCL clearance,
and reflectance harmonised across processing baselines.

From processing baseline 04.00 (January 2022) ESA adds ``BOA_ADD_OFFSET = -1000`` to L2A DNs:
reflectance = (DN - 1000) / 10000, while older products are DN / 10000. srcube decides per item from
``s2:processing_baseline`` (or the ``N0400`` part of the product id), not from the date: the
Collection-1 reprocessing gives old acquisitions new baselines, and Earth Search's
``earthsearch:boa_offset_applied`` flags and ``raster:bands`` offsets are known to be wrong on some
items (Element84/earth-search#66, #71). ``harmonize="raster"`` trusts ``raster:bands`` instead;
``"none"`` applies the scale only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

import pystac
import xarray as xr

from pipeline.bands import BandInfo, BandVocabulary
from pipeline.sensors.base import SensorProfile

VOCABULARY = BandVocabulary(
    sensor="sentinel-2",
    bands=(
        BandInfo("B01", 60, ("coastal",)),
        BandInfo("B02", 10, ("blue",)),
        BandInfo("B03", 10, ("green",)),
        BandInfo("B04", 10, ("red",)),
        BandInfo("B05", 20, ("rededge1",)),
        BandInfo("B06", 20, ("rededge2",)),
        BandInfo("B07", 20, ("rededge3",)),
        BandInfo("B08", 10, ("nir",)),
        BandInfo("B8A", 20, ("nir08",)),
        BandInfo("B09", 60, ("nir09",)),
        BandInfo("B11", 20, ("swir16",)),
        BandInfo("B12", 20, ("swir22",)),
        BandInfo("SCL", 20, ("scl",), kind="qa"),
    ),
    qa_band="SCL",
    default_bands=("B02", "B03", "B04", "B08"),
)

#: Sen2Cor scene classification (SCL) classes
SCL_CLASSES: dict[int, str] = {
    0: "no data", 1: "saturated or defective", 2: "dark area / topographic shadow", 3: "cloud shadow",
    4: "vegetation", 5: "not vegetated", 6: "water", 7: "unclassified", 8: "cloud medium probability",
    9: "cloud high probability", 10: "thin cirrus", 11: "snow or ice",
}
#: partial clearance of doubtful classes in the frame score (clear classes count 1)
_PARTIAL = {7: 0.5, 10: 0.25, 2: 0.25}

_BASELINE_IN_ID = re.compile(r"_N(\d{2})(\d{2})_")


def processing_baseline(item: pystac.Item) -> float | None:
    """The processing baseline of an item (4.0 for "04.00"), or None if it cannot be told."""
    props = item.properties
    for key in ("s2:processing_baseline", "sentinel:processing_baseline", "processing:version"):
        value = props.get(key)
        if value is not None:
            try:
                return float(str(value))
            except ValueError:
                continue
    for key in ("s2:product_uri", "sentinel:product_id", "s2:datatake_id"):
        match = _BASELINE_IN_ID.search(str(props.get(key, "")) + "_")
        if match:
            return float(f"{match.group(1)}.{match.group(2)}")
    match = _BASELINE_IN_ID.search(item.id + "_")
    return float(f"{match.group(1)}.{match.group(2)}") if match else None


class Sentinel2(SensorProfile):
    name = "sentinel-2"
    vocabulary = VOCABULARY
    grid = "utm"
    collection_markers = ("sentinel-2", "sentinel2", "s2-", "s2_")
    platform_markers = ("sentinel-2a", "sentinel-2b", "sentinel-2c", "sentinel-2")
    default_clear = (4, 5, 6)
    qa_classes: ClassVar[dict[int, str]] = SCL_CLASSES
    harmonize_modes = ("baseline", "raster", "none")

    def scaling(self, item: pystac.Item, key: str, harmonize: str) -> tuple[float, float, float | None]:
        rb = item.assets[key].extra_fields.get("raster:bands") or [{}]
        b0 = rb[0] if isinstance(rb, list) and rb else {}
        scale = float(b0.get("scale", 1e-4))
        nodata = float(b0["nodata"]) if b0.get("nodata") is not None else 0.0
        if harmonize == "none":
            return scale, 0.0, nodata
        if harmonize == "raster":
            return scale, float(b0.get("offset", 0.0)), nodata
        baseline = processing_baseline(item)
        if baseline is None:  # cannot tell: fall back to what the item declares
            return scale, float(b0.get("offset", 0.0)), nodata
        return scale, (-1000.0 * scale if baseline >= 4.0 else 0.0), nodata

    def clearance_weight(self, qa: xr.DataArray, classes: Sequence[int]) -> xr.DataArray:
        weight = qa.isin(list(classes)).astype("float32")
        for cls, w in _PARTIAL.items():
            if cls not in classes:
                weight = weight + (qa == cls).astype("float32") * w
        return weight


SENTINEL2 = Sentinel2()
