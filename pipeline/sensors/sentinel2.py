"""Sentinel-2 L2A: band vocabulary of Earth Search, Planetary Computer and CDSE, SCL clearance,
and reflectance harmonised across processing baselines and distributors.

From processing baseline 04.00 (25 January 2022) ESA adds ``BOA_ADD_OFFSET = -1000`` to L2A DNs:
reflectance = (DN - 1000) / 10000, while older products are DN / 10000. Whether those 1000 DN are still
in the pixels a catalog serves depends on the distributor and the collection, not on the date, and
item metadata is not reliable about it. :data:`OFFSET_TABLE` says, per distributor, collection and
baseline range, what the pixels hold; ``harmonize="auto"`` (the default, :mod:`pipeline.assemble.harmonize`)
applies it and then checks it against each item's own pixels. ``"baseline"`` applies ESA's rule from
``s2:processing_baseline`` alone, ``"raster"`` trusts ``raster:bands`` offsets, ``"none"`` applies the
scale only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import pystac

from srcube.pipeline.sensors.bands import BandInfo, BandVocabulary
from srcube.pipeline.sensors.base import SensorProfile

if TYPE_CHECKING:  # for annotations: the profile itself does not import xarray
    import xarray as xr

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


@dataclass(frozen=True)
class OffsetRule:
    """What the pixels of a distributor's collection hold, for a processing-baseline range ``[low, high)``.

    ``pixels``: ``"offset"`` (the +1000 DN are in the pixels), ``"no-offset"`` (plain DN = reflectance x
    10000) or ``"unknown"`` (it differs between items: the pixels decide, see :mod:`pipeline.assemble.harmonize`).
    """

    provider: str  # "earth-search", "planetary-computer", "cdse" or "*"
    collection: str  # a collection id or "*"
    low: float | None  # baseline range [low, high); None = open
    high: float | None
    pixels: str
    source: str

    def matches(self, provider: str, collection: str, baseline: float) -> bool:
        return (self.provider in ("*", provider) and self.collection in ("*", collection)
                and (self.low is None or baseline >= self.low) and (self.high is None or baseline < self.high))


#: first match wins (sources: see each row; summarised in the README's catalog table)
OFFSET_TABLE: tuple[OffsetRule, ...] = (
    # ESA introduced BOA_ADD_OFFSET with processing baseline 04.00 (S2 MPC, "Sentinel-2: Harmonized
    # Product" note, Jan 2022); products of older baselines have no offset anywhere.
    OffsetRule("*", "*", None, 4.0, "no-offset",
               "ESA: no BOA_ADD_OFFSET before processing baseline 04.00"),
    # Earth Search v1 `sentinel-2-l2a` (converted from the AWS L2A COGs): for many items of baseline >= 04.00
    # the offset was already removed from the pixels while `earthsearch:boa_offset_applied` says false
    # (Element84/earth-search#66, #71); #41 says it was applied to some items only; allenai/rslearn#501
    # stopped harmonising these COGs for that reason. Item by item, the pixels decide.
    OffsetRule("earth-search", "sentinel-2-l2a", 4.0, None, "unknown",
               "Element84/earth-search#41, #66, #71; allenai/rslearn#501: offset removed from some items' "
               "pixels, metadata unreliable"),
    # Earth Search `sentinel-2-c1-l2a` (Collection-1 reprocessing, the replacement): ESA's DN, offset kept and
    # declared in raster:bands (offset -0.1).
    OffsetRule("earth-search", "sentinel-2-c1-l2a", 4.0, None, "offset",
               "Earth Search sentinel-2-c1-l2a keeps ESA's DN and declares offset -0.1 in raster:bands"),
    # Planetary Computer serves the ESA L2A COGs as produced (its docs harmonise with `harmonize_to_old`).
    OffsetRule("planetary-computer", "*", 4.0, None, "offset",
               "Planetary Computer: ESA L2A values unchanged (PC examples subtract the offset themselves)"),
    # CDSE serves the ESA SAFE products (JPEG 2000) unchanged.
    OffsetRule("cdse", "*", 4.0, None, "offset", "CDSE: ESA SAFE products unchanged"),
    # anyone else: ESA's product definition
    OffsetRule("*", "*", 4.0, None, "offset", "ESA product definition: BOA_ADD_OFFSET = -1000 from 04.00"),
)


def provider_of(item: pystac.Item, catalog: str | None = None) -> str:
    """Who distributes ``item``: a known catalog profile's name, else told from the item itself
    (Earth Search's ``earthsearch:`` properties, Planetary Computer's blob hrefs, CDSE's ``eodata``)."""
    if catalog in ("earth-search", "planetary-computer", "cdse"):
        return catalog
    if any(k.startswith("earthsearch:") for k in item.properties):
        return "earth-search"
    hrefs = [a.href for a in item.assets.values()]
    if any(".blob.core.windows.net" in h for h in hrefs):
        return "planetary-computer"
    if any(h.startswith(("s3://eodata", "/eodata/")) or "dataspace.copernicus.eu" in h for h in hrefs):
        return "cdse"
    return "*"


def offset_rule(item: pystac.Item, catalog: str | None = None) -> tuple[OffsetRule | None, float | None]:
    """The table's rule for an item (None when its baseline cannot be told) and its baseline."""
    baseline = processing_baseline(item)
    if baseline is None:
        return None, None
    provider = provider_of(item, catalog)
    collection = item.collection_id or ""
    for rule in OFFSET_TABLE:
        if rule.matches(provider, collection, baseline):
            return rule, baseline
    return None, baseline


class Sentinel2(SensorProfile):
    name = "sentinel-2"
    vocabulary = VOCABULARY
    grid = "utm"
    collection_markers = ("sentinel-2", "sentinel2", "s2-", "s2_")
    platform_markers = ("sentinel-2a", "sentinel-2b", "sentinel-2c", "sentinel-2")
    default_clear = (4, 5, 6)
    qa_classes: ClassVar[dict[int, str]] = SCL_CLASSES
    harmonize_modes = ("auto", "baseline", "raster", "none")
    #: bands read to verify the offset: blue (dark vegetation, shadows) and NIR (water), plus the run's own
    offset_probe_bands = ("B02", "B08")
    #: the 10 m bands guide the sharpening of the 20 m bands onto the 10 m grid (60 m bands stay bilinear)
    guide_bands = ("B02", "B03", "B04", "B08")

    def scaling(self, item: pystac.Item, key: str, harmonize: str) -> tuple[float, float, float | None]:
        rb = item.assets[key].extra_fields.get("raster:bands") or [{}]
        b0 = rb[0] if isinstance(rb, list) and rb else {}
        scale = float(b0.get("scale", 1e-4))
        nodata = float(b0["nodata"]) if b0.get("nodata") is not None else 0.0
        if harmonize == "none":
            return scale, 0.0, nodata
        if harmonize == "auto":
            from srcube.pipeline.assemble.harmonize import decision_of

            decision = decision_of(item)
            return scale, (-1000.0 * scale if decision["offset_in_pixels"] else 0.0), nodata
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
