"""Band vocabularies and mapping of canonical band names to the asset keys of each catalog.

Catalogs name the same band differently: for Sentinel-2, Planetary Computer ``B04``, Earth Search
v1 ``red``, CDSE ``B04_10m``. srcube speaks one vocabulary per sensor (see ``pipeline.sensors``)
and finds the asset of each band in an item by key, alias, resolution suffix or ``eo:bands`` name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pystac

from srcube.pipeline.errors import UnknownBandError


@dataclass(frozen=True)
class BandInfo:
    """One band of a sensor: canonical name, aliases used by catalogs, native resolution in metres."""

    name: str
    resolution: float
    aliases: tuple[str, ...] = ()
    kind: str = "reflectance"  # or "qa"

    def __post_init__(self) -> None:
        if self.kind not in ("reflectance", "qa"):
            raise ValueError(f"band kind must be 'reflectance' or 'qa', got {self.kind!r}")
        if self.resolution <= 0:
            raise ValueError(f"band resolution must be positive, got {self.resolution}")

    def candidate_keys(self) -> list[str]:
        res = int(self.resolution)
        keys = [self.name, *self.aliases]
        keys += [f"{self.name}_{r}m" for r in dict.fromkeys((res, 10, 20, 60))]
        return keys


@dataclass(frozen=True)
class BandVocabulary:
    """The bands of one sensor, the QA band that carries its clearance classes, and defaults."""

    sensor: str
    bands: tuple[BandInfo, ...]
    qa_band: str
    default_bands: tuple[str, ...]
    _by_name: Mapping[str, BandInfo] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {b.name: b for b in self.bands})
        if self.qa_band not in self._by_name:
            raise ValueError(f"qa_band {self.qa_band!r} is not among the bands")
        for b in self.default_bands:
            if b not in self._by_name:
                raise ValueError(f"default band {b!r} is not among the bands")

    @property
    def reflectance_bands(self) -> list[str]:
        return [b.name for b in self.bands if b.kind == "reflectance"]

    def info(self, name: str) -> BandInfo:
        return self._by_name[name]

    def canonical(self, name: str) -> str:
        """Canonical name of a band given by its name or an alias (case-insensitive)."""
        low = name.strip().lower()
        for b in self.bands:
            if low == b.name.lower() or low in (a.lower() for a in b.aliases):
                return b.name
        raise UnknownBandError(
            f"unknown {self.sensor} band {name!r}; known bands: {', '.join(self.reflectance_bands)}")

    def validate(self, bands: Iterable[str] | None) -> tuple[str, ...]:
        """Canonical reflectance band names for a user's request (default bands when None)."""
        if bands is None:
            return self.default_bands
        if isinstance(bands, str):
            bands = [bands]
        out: list[str] = []
        for name in bands:
            canon = self.canonical(name)
            if self._by_name[canon].kind != "reflectance":
                raise UnknownBandError(
                    f"{canon} is a quality band; srcube loads it for the clear mask by itself. "
                    f"Ask for reflectance bands: {', '.join(self.reflectance_bands)}")
            if canon not in out:
                out.append(canon)
        if not out:
            raise UnknownBandError("no bands requested; give at least one band name")
        return tuple(out)


def _eo_names(asset: pystac.Asset) -> list[str]:
    bands: Sequence[Mapping[str, Any]] = asset.extra_fields.get("eo:bands") or asset.extra_fields.get(
        "bands") or []
    return [str(b.get("name", "")).lower() for b in bands if isinstance(b, Mapping)]


def asset_key(item: pystac.Item, band: BandInfo) -> str:
    """The key of the asset holding ``band`` in ``item``.

    Tried in order: exact key/aliases/resolution-suffixed keys (case-insensitive), then a
    single-band asset whose ``eo:bands`` name is the canonical name or an alias. JPEG2000 twins
    (``*-jp2``) are never chosen over COGs.
    """
    keys = {k.lower(): k for k in item.assets}
    for cand in band.candidate_keys():
        if cand.lower() in keys:
            return keys[cand.lower()]
    wanted = {band.name.lower(), *(a.lower() for a in band.aliases)}
    for key, asset in item.assets.items():
        if key.endswith("-jp2"):
            continue
        names = _eo_names(asset)
        if len(names) == 1 and names[0] in wanted:
            return key
    raise UnknownBandError(
        f"item {item.id} has no asset for band {band.name} (tried {band.candidate_keys()} and "
        f"eo:bands names); its assets are: {', '.join(sorted(item.assets))}")
