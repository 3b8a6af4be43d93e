"""``harmonize="auto"``: the reflectance offset of each Sentinel-2 item, from the catalog's rule checked
against the item's own pixels.

The rule comes from :data:`pipeline.sensors.sentinel2.OFFSET_TABLE` (distributor, collection,
processing baseline). The pixels can contradict it: with the +1000 DN offset in the pixels, no valid
pixel can sit far below 1000 DN (that would be a reflectance below -0.01), while without it dark
surfaces (water in the NIR, shadows and dense vegetation in the blue) sit far below. srcube reads a
decimated view of the item's blue and NIR bands (plus the bands of the run) over the whole item, and
takes the 0.1th percentile of all valid pixels of the darkest band (not only clear ones: shadows and
water are what make the test work; not the minimum: a few defective pixels must not decide):

* below :data:`ABSENT_BELOW` DN: the offset is not in the pixels (strong evidence);
* in [:data:`ABSENT_BELOW`, :data:`PRESENT_BELOW`): darkest surfaces at 0-1 % reflectance plus the
  offset, i.e. the offset is in the pixels (weaker: a bright desert without water or shadow can look
  like this, so it only decides where the rule does not);
* above: inconclusive (bright deserts, snow: even their blue 1st percentile is near 1000 DN).

Decision: a ``no-offset`` rule (baselines before 04.00) stands; an ``offset`` rule stands unless the
pixels show no offset (then the pixels win and a :class:`HarmonizationWarning` names the item); an
``unknown`` rule (Earth Search ``sentinel-2-l2a``) follows the pixels, and ESA's definition (offset)
when they are inconclusive, with a warning. The decision travels with the item as the property
``srcube:harmonization`` (searched items are checked once per run, also across Prefect tasks) and
ends up, per item, in the cube's ``frames`` attribute.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pystac
import rasterio

from srcube.pipeline.errors import HarmonizationWarning, InvalidDataError
from srcube.pipeline.search.access import AssetAccess, ReadSettings, with_access

log = logging.getLogger(__name__)

PROPERTY = "srcube:harmonization"
#: DN: with the offset in the pixels, a valid pixel below this is a reflectance below -0.01
ABSENT_BELOW = 900.0
#: DN: darkest valid pixels between ABSENT_BELOW and this are dark surfaces plus the offset
PRESENT_BELOW = 1100.0
#: percentile of the valid pixels that counts as "the darkest"
PERCENTILE = 0.1
#: longest side of the decimated read (the COG's overviews serve it)
PROBE_SIDE = 1024


def darkest_dn(href: str, *, nodata: float | None, access: AssetAccess, settings: ReadSettings,
               side: int = PROBE_SIDE) -> tuple[float | None, int]:
    """(0.1th percentile of the valid DN of a decimated view of the whole asset, valid pixels read)."""

    def read(target: str) -> np.ndarray:
        with rasterio.open(target) as src:
            f = max(1.0, max(src.height, src.width) / side)
            shape = (max(1, round(src.height / f)), max(1, round(src.width / f)))
            fill = src.nodata if src.nodata is not None else nodata
            arr = src.read(1, out_shape=shape).astype(np.float64)
            valid = np.isfinite(arr) & (arr > 0) & (arr < 65535)
            if fill is not None:
                valid &= arr != fill
            return arr[valid]

    values = with_access(href, access, settings, read)
    if values.size == 0:
        return None, 0
    return float(np.percentile(values, PERCENTILE)), int(values.size)


def evidence_of(darkest: float | None) -> str:
    if darkest is None:
        return "none"
    if darkest < ABSENT_BELOW:
        return "absent"
    if darkest < PRESENT_BELOW:
        return "present"
    return "inconclusive"


def decide(item: pystac.Item, catalog: str | None, darkest: float | None, probed: Sequence[str]) -> dict[str, Any]:
    """The decision for one item (a JSON-able dict; see the module docstring)."""
    from srcube.pipeline.sensors.sentinel2 import offset_rule, provider_of

    rule, baseline = offset_rule(item, catalog)
    evidence = evidence_of(darkest)
    verdict: bool
    warn = False
    if rule is None:  # no baseline on the item: the pixels, else what raster:bands declares
        declared = _declared_offset(item)
        if evidence in ("absent", "present"):
            verdict, why = evidence == "present", f"no processing baseline; pixels say offset {evidence}"
        else:
            verdict, warn = declared != 0.0, True
            why = f"no processing baseline and pixels {evidence}: raster:bands offset {declared:g} used"
    elif rule.pixels == "no-offset":
        verdict, why = False, f"baseline {baseline:05.2f} < 04.00: no offset"
    elif rule.pixels == "offset":
        if evidence == "absent":
            verdict, warn = False, True
            why = (f"rule says the offset is in the pixels ({rule.source}) but the darkest valid pixels are "
                   f"{darkest:.0f} DN < {ABSENT_BELOW:.0f}: no offset in the pixels (the pixels win)")
        else:
            verdict, why = True, f"offset in the pixels ({rule.source}); pixels {evidence}"
    else:  # unknown: the pixels decide
        if evidence == "absent":
            verdict = False
            why = f"darkest valid pixels {darkest:.0f} DN < {ABSENT_BELOW:.0f}: offset not in the pixels"
        elif evidence == "present":
            verdict, why = True, f"darkest valid pixels {darkest:.0f} DN just above 1000: offset in the pixels"
        else:
            verdict, warn = True, True
            why = (f"{rule.source}; pixels {evidence}"
                   + (f" (darkest valid {darkest:.0f} DN)" if darkest is not None else "")
                   + ": ESA's definition (offset in the pixels) applied, unverified")
    return {"item": item.id, "provider": provider_of(item, catalog), "collection": item.collection_id,
            "baseline": baseline, "rule": rule.pixels if rule else "none",
            "darkest_dn": None if darkest is None else round(darkest, 1), "probed": list(probed),
            "evidence": evidence, "offset_in_pixels": verdict, "warn": warn, "why": why}


def _declared_offset(item: pystac.Item) -> float:
    for asset in item.assets.values():
        rb = asset.extra_fields.get("raster:bands")
        if isinstance(rb, list) and rb and isinstance(rb[0], Mapping) and "offset" in rb[0]:
            return float(rb[0]["offset"])
    return 0.0


def probe_keys(item: pystac.Item, sensor: Any, bands: Sequence[str]) -> list[str]:
    """Asset keys read for the check: the sensor's probe bands and the run's bands, where the item has them."""
    from srcube.pipeline.errors import UnknownBandError
    from srcube.pipeline.sensors.bands import asset_key

    voc = sensor.vocabulary
    keys: list[str] = []
    for name in (*getattr(sensor, "offset_probe_bands", ()), *bands):
        try:
            key = asset_key(item, voc.info(name))
        except (UnknownBandError, KeyError):
            continue
        if key not in keys:
            keys.append(key)
    return keys


def annotate(items: Sequence[pystac.Item], sensor: Any, bands: Sequence[str], *, catalog: str | None,
             access: AssetAccess, settings: ReadSettings, threads: int = 8) -> list[pystac.Item]:
    """Copies of ``items`` carrying their decision in ``properties["srcube:harmonization"]``; items that
    already carry one keep it (nothing is read again). Warns once, naming the items, where a decision
    is unverified or the pixels overrode the rule."""
    from srcube.pipeline.sensors.sentinel2 import offset_rule

    out = [it if PROPERTY in it.properties else it.clone() for it in items]
    todo = [it for it in out if PROPERTY not in it.properties]
    if not todo:
        return out

    def run(item: pystac.Item) -> dict[str, Any]:
        rule, _ = offset_rule(item, catalog)
        if rule is not None and rule.pixels == "no-offset":  # the pixels cannot change this decision
            return decide(item, catalog, None, [])
        keys = probe_keys(item, sensor, bands)
        darkest: float | None = None
        for key in keys:
            rb = item.assets[key].extra_fields.get("raster:bands") or [{}]
            nodata = rb[0].get("nodata") if isinstance(rb, list) and rb and isinstance(rb[0], Mapping) else None
            value, _ = darkest_dn(item.assets[key].href, nodata=None if nodata is None else float(nodata),
                                  access=access, settings=settings)
            if value is not None:
                darkest = value if darkest is None else min(darkest, value)
        return decide(item, catalog, darkest, keys)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(todo)))) as pool:
        decisions = list(pool.map(run, todo))
    for item, decision in zip(todo, decisions, strict=True):
        item.properties[PROPERTY] = decision
        log.info("harmonisation of %s: offset %s (%s)", item.id,
                 "in the pixels" if decision["offset_in_pixels"] else "not in the pixels", decision["why"])
    flagged = [d for d in decisions if d["warn"]]
    if flagged:
        warnings.warn(HarmonizationWarning(
            f"reflectance offset of {len(flagged)} item(s) contradicted by or not verifiable from the pixels: "
            + "; ".join(f"{d['item']}: {d['why']}" for d in flagged)
            + ". What was applied is in the cube's frames attribute; pass harmonize='baseline', 'raster' or "
              "'none' to choose yourself"), stacklevel=3)
    return out


def decision_of(item: pystac.Item) -> dict[str, Any]:
    """The decision :func:`annotate` attached to ``item``."""
    decision = item.properties.get(PROPERTY)
    if not isinstance(decision, Mapping):
        raise InvalidDataError(f"item {item.id} has no harmonisation decision; call "
                               "srcube.pipeline.assemble.harmonize.annotate first (run_region does)")
    return dict(decision)


def summary(decision: Mapping[str, Any]) -> dict[str, Any]:
    """What the cube records per item: the offset applied and why."""
    return {"item": decision["item"], "offset_applied": -0.1 if decision["offset_in_pixels"] else 0.0,
            "rule": decision["rule"], "evidence": decision["evidence"], "darkest_dn": decision["darkest_dn"],
            "why": decision["why"]}
