"""Screen the assets of found items before anything is assembled from them.

A scene whose files cannot be used is left out of the stack, and the cube says which and why
(attribute ``excluded_items``), instead of failing hours into a run or silently filling the
cube with no data. For each asset of each item srcube needs, :func:`probe_asset` checks:

* it opens (a missing file or a 404 href, a file that is not a raster);
* its CRS is the one the item declares (``proj:code``/``proj:epsg``; else the item's first asset);
* its first and last internal blocks decode (a truncated or corrupt COG fails on one of them:
  tiles are stored after the header, full resolution last);
* it holds some data (a decimated read, from the overviews when there are some, is not all no data).

The cost is a header and about three small reads per asset, done in a thread pool. Problems that
only show in the middle of a file still fail the run when its blocks are read.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pystac
import rasterio
from rasterio.windows import Window

from srcube.pipeline.errors import AssetError, AssetsExcludedWarning, UnknownBandError
from srcube.pipeline.redact import redact
from srcube.pipeline.search.access import AssetAccess, ReadSettings, with_access
from srcube.pipeline.sensors.bands import BandInfo, asset_key

log = logging.getLogger(__name__)

#: side of the decimated read that checks for data
_OVERVIEW_SIDE = 64


@dataclass(frozen=True)
class AssetProblem:
    """Why an item was left out: its id, the asset, the (redacted) href and the reason."""

    item: str
    asset: str
    href: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _declared_epsg(item: pystac.Item, key: str) -> int | None:
    for src in (item.assets[key].extra_fields, item.properties):
        code = src.get("proj:code") or src.get("proj:epsg")
        if code is not None:
            try:
                return int(str(code).split(":")[-1])
            except ValueError:
                return None
    return None


def _declared_nodata(item: pystac.Item, key: str) -> float | None:
    bands = item.assets[key].extra_fields.get("raster:bands") or [{}]
    value = bands[0].get("nodata") if isinstance(bands[0], Mapping) else None
    return float(value) if value is not None else None


def probe_asset(href: str, *, epsg: int | None = None, nodata: float | None = None,
                access: AssetAccess | None = None, settings: ReadSettings | None = None
                ) -> tuple[str | None, int | None]:
    """``(reason, file_epsg)``: why the asset cannot be used (None when it can), and its CRS. The href is
    prepared by ``access`` (signed, credentials) right before it is opened."""
    try:
        return with_access(href, access or AssetAccess(), settings or ReadSettings.capture(),
                           lambda target: _probe(target, epsg, nodata))
    except rasterio.errors.RasterioIOError as exc:
        if _network_trouble(href, str(exc)):
            raise  # the network, not the asset: let the caller's retries deal with it
        return f"unreadable: {redact(str(exc))}", None


def _probe(href: str, epsg: int | None, nodata: float | None) -> tuple[str | None, int | None]:
    with rasterio.open(href) as src:
        file_epsg = src.crs.to_epsg() if src.crs else None
        if src.crs is None:
            return "the file has no CRS", None
        if epsg is not None and file_epsg != epsg:
            return f"wrong CRS: the file is {src.crs.to_string()}, the item declares EPSG:{epsg}", file_epsg
        bh, bw = src.block_shapes[0]
        last = Window((src.width - 1) // bw * bw, (src.height - 1) // bh * bh,
                      src.width - (src.width - 1) // bw * bw, src.height - (src.height - 1) // bh * bh)
        for window in (Window(0, 0, min(bw, src.width), min(bh, src.height)), last):
            src.read(1, window=window)
        fill = src.nodata if src.nodata is not None else nodata
        if fill is not None:
            shape = (min(_OVERVIEW_SIDE, src.height), min(_OVERVIEW_SIDE, src.width))
            small = src.read(1, out_shape=shape)
            if np.all((small == fill) | np.isnan(small.astype(np.float64))):
                return f"no data: every sampled pixel is the no-data value {fill:g}", file_epsg
        return None, file_epsg


#: what GDAL says when the network (not the file) failed; 4xx other than 408/429 are the file's
_NETWORK = re.compile(r"timed out|timeout|connection|could not resolve|HTTP response code: (5\d\d|408|429)", re.I)


def _network_trouble(href: str, message: str) -> bool:
    remote = "://" in href and not href.startswith("file:")
    return remote and bool(_NETWORK.search(message))


def band_keys(items: Sequence[pystac.Item], bands: Sequence[BandInfo]) -> list[str]:
    """The asset keys of ``bands`` in ``items``: each band's from the first item that has it, so that one item
    without it does not decide for all (:func:`screen_items` leaves such items out). UnknownBandError when
    no item has a band."""
    keys: list[str] = []
    for band in bands:
        for item in items:
            try:
                key = asset_key(item, band)
                break
            except UnknownBandError:
                continue
        else:
            raise UnknownBandError(
                f"none of the {len(items)} items found has an asset for band {band.name} (tried "
                f"{band.candidate_keys()} and eo:bands names); the first, {items[0].id}, has: "
                f"{', '.join(sorted(items[0].assets))}; ask for other bands, or check the collection")
        if key not in keys:
            keys.append(key)
    return sorted(keys)


def screen_items(items: Sequence[pystac.Item], keys: Sequence[str], *, fail_on_error: bool = False,
                 threads: int = 16, access: AssetAccess | None = None, settings: ReadSettings | None = None,
                 probe: bool = True) -> tuple[list[pystac.Item], list[AssetProblem]]:
    """Split ``items`` into the usable ones and the problems of the others (asset keys ``keys``): an item
    without one of the assets is left out, and (``probe``) one whose assets fail :func:`probe_asset`.

    ``fail_on_error``: raise :class:`AssetError` listing every problem instead of leaving items
    out. Raises it too when no item is usable.
    """
    pairs = [(it, k) for it in items for k in keys if k in it.assets] if probe else []
    missing = [AssetProblem(it.id, k, "", "the item has no such asset") for it in items for k in keys
               if k not in it.assets]

    def check(pair: tuple[pystac.Item, str]) -> tuple[str | None, int | None]:
        item, key = pair
        return probe_asset(item.assets[key].href, epsg=_declared_epsg(item, key), nodata=_declared_nodata(item, key),
                           access=access, settings=read_settings)

    read_settings = settings or ReadSettings.capture()

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(check, pairs))
    problems = list(missing)
    first_epsg: dict[str, int | None] = {}
    for (item, key), (reason, file_epsg) in zip(pairs, results, strict=True):
        if reason is None and _declared_epsg(item, key) is None:
            # nothing declared: the item's assets must at least agree with each other
            ref = first_epsg.setdefault(item.id, file_epsg)
            if file_epsg != ref:
                reason = f"wrong CRS: EPSG:{file_epsg}, the item's other assets are EPSG:{ref}"
        if reason is not None:
            problems.append(AssetProblem(item.id, key, redact(item.assets[key].href), reason))
    bad = {p.item for p in problems}
    good = [it for it in items if it.id not in bad]
    if problems and (fail_on_error or not good):
        lines = "; ".join(f"{p.item} {p.asset}: {p.reason}" for p in problems)
        what = "no item is usable" if not good else f"{len(bad)} of {len(items)} items have unusable assets"
        raise AssetError(f"{what}: {lines}" + ("" if not good else
                                               " (fail_on_error=False leaves such items out and lists them)"))
    if problems:
        warnings.warn(AssetsExcludedWarning(
            f"{len(bad)} of {len(items)} items left out for unusable assets: "
            + "; ".join(f"{p.item} {p.asset}: {p.reason}" for p in problems)), stacklevel=2)
    return good, problems

