"""STAC search through named catalog profiles (pystac-client).

A profile names a STAC API, its default collection, the band vocabulary of its items and, where
needed, how asset hrefs are signed. ``catalog`` may also be any STAC API URL.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pystac
import pystac_client
import requests
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from urllib3.util.retry import Retry

from srcube.pipeline.errors import (
    CatalogUnavailableError,
    EmptySearchError,
    UnknownCatalogError,
    UnknownCollectionError,
)
from srcube.pipeline.params import BBox, DateRange
from srcube.pipeline.sensors import SensorProfile, get_sensor, sensor_for_collection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogProfile:
    """A source srcube knows how to search and read.

    ``kind`` is ``"stac"`` (a STAC API), ``"sample"`` (srcube's own archive behind a local STAC API)
    or ``"kelvins"`` (a folder in the PROBA-V Kelvins layout; no search). ``collections`` maps the
    collection ids the profile knows to their sensor. ``access`` names how asset pixels are read
    (:func:`pipeline.access.access_for`: signing at read time, bearer token, S3 keys); items are
    searched and kept unsigned.
    """

    name: str
    url: str  # empty for "sample": resolved when the local server starts; a folder for "kelvins"
    collection: str
    kind: str = "stac"
    collections: Mapping[str, str] = field(default_factory=dict)
    access: str = "none"
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a catalog profile needs a name")
        if self.kind not in ("stac", "sample", "kelvins"):
            raise ValueError(f"catalog kind must be stac, sample or kelvins, got {self.kind!r}")
        if self.kind == "stac" and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"catalog profile {self.name}: url must be http(s), got {self.url!r}")
        from srcube.pipeline.search.access import ACCESS_KINDS

        if self.access not in ACCESS_KINDS:
            raise ValueError(f"catalog profile {self.name}: access must be one of {ACCESS_KINDS}, got {self.access!r}")

    def resolved_url(self) -> str:
        if self.kind == "sample":
            from srcube.pipeline.testing.stac_server import sample_server_url

            return sample_server_url()
        return self.url

    def sensor_for(self, collection: str) -> SensorProfile | None:
        """The sensor of a collection: from the profile, else from the collection id's markers."""
        if collection in self.collections:
            return get_sensor(self.collections[collection])
        return sensor_for_collection(collection)


_S2 = "sentinel-2"
PROFILES: dict[str, CatalogProfile] = {
    p.name: p
    for p in (
        CatalogProfile("sample", "", "sentinel-2-l2a", kind="sample",
                       collections={"sentinel-2-l2a": _S2, "proba-v-s1-toc-333m": "proba-v"},
                       notes="srcube's own synthetic archive (Sentinel-2 L2A and PROBA-V 333 m) behind a "
                             "local STAC API on 127.0.0.1"),
        CatalogProfile("earth-search", "https://earth-search.aws.element84.com/v1", "sentinel-2-c1-l2a",
                       collections={"sentinel-2-c1-l2a": _S2, "sentinel-2-l2a": _S2},
                       notes="Element 84 Earth Search v1; public COGs on AWS, no credentials. Default collection "
                             "sentinel-2-c1-l2a (Collection-1 reprocessing, offset declared); sentinel-2-l2a has "
                             "the offset removed from some items' pixels (checked item by item)"),
        CatalogProfile("planetary-computer", "https://planetarycomputer.microsoft.com/api/stac/v1",
                       "sentinel-2-l2a", collections={"sentinel-2-l2a": _S2}, access="planetary-computer",
                       notes="Microsoft Planetary Computer; each read signs its href (planetary-computer "
                             "package, tokens cached and renewed, re-signed after HTTP 403); "
                             "PC_SDK_SUBSCRIPTION_KEY for higher limits"),
        CatalogProfile("cdse", "https://stac.dataspace.copernicus.eu/v1", "sentinel-2-l2a",
                       collections={"sentinel-2-l2a": _S2}, access="cdse",
                       notes="Copernicus Data Space Ecosystem; assets are s3://eodata/... on CDSE's S3 endpoint: "
                             "set CDSE_S3_ACCESS_KEY and CDSE_S3_SECRET_KEY (CDSE_S3_ENDPOINT to override "
                             "eodata.dataspace.copernicus.eu); kept apart from the output store's AWS keys"),
        CatalogProfile("terrascope", "https://stac.terrascope.be", "terrascope-probav-s1-toc-333m-cog-v2",
                       collections={"terrascope-probav-s1-toc-333m-cog-v2": "proba-v",
                                    "terrascope-probav-s5-toc-100m-cog-v2": "proba-v"}, access="terrascope",
                       notes="VITO Terrascope; PROBA-V Collection 2 TOC syntheses as COGs (333 m daily, 100 m "
                             "5-day); reads need a bearer token: TERRASCOPE_TOKEN, or TERRASCOPE_USERNAME and "
                             "TERRASCOPE_PASSWORD (exchanged at Terrascope's OIDC endpoint, renewed as it expires). "
                             "`srcube collections --catalog terrascope` lists the collections"),
    )
}


def list_catalogs() -> list[str]:
    return sorted(PROFILES)


def resolve_catalog(catalog: str | CatalogProfile) -> CatalogProfile:
    """A profile by name, or a generic profile for a STAC API URL."""
    if isinstance(catalog, CatalogProfile):
        return catalog
    if not isinstance(catalog, str) or not catalog.strip():
        raise UnknownCatalogError(f"catalog must be a profile name or a STAC API URL, got {catalog!r}")
    if catalog in PROFILES:
        return PROFILES[catalog]
    if catalog.startswith("kelvins:"):
        return CatalogProfile("kelvins", catalog[len("kelvins:"):], "kelvins", kind="kelvins",
                              collections={"kelvins": "proba-v"},
                              notes="a PROBA-V Kelvins imgset folder (LR###.png, QM###.png)")
    if catalog.startswith(("http://", "https://")):
        return CatalogProfile(name=catalog, url=catalog.rstrip("/"), collection="sentinel-2-l2a")
    raise UnknownCatalogError(
        f"unknown catalog {catalog!r}; use one of {', '.join(list_catalogs())}, a STAC API URL "
        "(http:// or https://), or kelvins:/path/to/imgset")


#: catalog requests: tries after the first, and seconds to wait for a connection or a read
CATALOG_RETRIES = 5
CATALOG_TIMEOUT = 30.0


def _stac_io(retries: int, timeout: float, access: Any = None) -> StacApiIO:
    # connection errors, resets, read timeouts and 429/5xx answers are retried for every method
    # (searches are POST), 0.5, 1, 2, 4 ... s apart; Retry-After is honoured.
    retry = Retry(total=retries, backoff_factor=0.5, backoff_max=30, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=None, raise_on_status=False)
    headers = {}
    token = os.environ.get("SRCUBE_CATALOG_TOKEN")
    if token:  # from the environment (a Kubernetes Secret, CI secret); never logged (pipeline.redact)
        headers["Authorization"] = f"Bearer {token}"
    elif access is not None and hasattr(access, "headers"):  # the catalog's own bearer token (Terrascope)
        headers.update(access.headers())
    return StacApiIO(headers=headers, max_retries=retry, timeout=timeout)


def _down(what: str, url: str, retries: int, t0: float, exc: BaseException) -> CatalogUnavailableError:
    return CatalogUnavailableError(
        f"{what} the STAC API at {url} failed after {retries + 1} attempts over {time.monotonic() - t0:.1f} s "
        f"(retried on connection errors, timeouts and HTTP 429/5xx): {exc}. Check that the catalog is up and "
        f"reachable from here; transient outages are retried again by the Prefect flow's task retries")


def open_catalog(profile: CatalogProfile, *, retries: int = CATALOG_RETRIES,
                 timeout: float = CATALOG_TIMEOUT, access: Any = None) -> pystac_client.Client:
    """A pystac-client Client of the profile's API (items come back unsigned: reads sign them)."""
    url = profile.resolved_url()
    stac_io = _stac_io(retries, timeout, access)  # a refused login is an AssetAuthError, not the catalog being down
    t0 = time.monotonic()
    try:
        client = pystac_client.Client.open(url, stac_io=stac_io)
    except (requests.RequestException, APIError, OSError) as exc:
        raise _down("opening", url, retries, t0, exc) from exc
    client.srcube_retries = retries  # type: ignore[attr-defined]  # for the error messages of search()
    return client


def check_collection(client: pystac_client.Client, collection: str) -> None:
    """Raise UnknownCollectionError (listing what exists) unless the API has ``collection``."""
    t0 = time.monotonic()
    try:
        found = client.get_collection(collection)
    except APIError as exc:
        if (getattr(exc, "status_code", None) or 0) in (429,) or (getattr(exc, "status_code", None) or 0) >= 500:
            raise _down("asking", str(client.self_href), getattr(client, "srcube_retries", 0), t0, exc) from exc
        found = None
    except requests.RequestException as exc:
        raise _down("asking", str(client.self_href), getattr(client, "srcube_retries", 0), t0, exc) from exc
    if found is not None:
        return
    try:
        known = sorted(c.id for c in client.get_collections())
    except (APIError, requests.RequestException):
        known = []
    raise UnknownCollectionError(
        f"collection {collection!r} not found at {client.self_href}"
        + (f"; it has: {', '.join(known)}" if known else ""))


def search(client: pystac_client.Client, collection: str, bbox: BBox, dates: DateRange, *,
           max_cloud_cover: float | None = None, max_items: int | None = None) -> list[pystac.Item]:
    """Items of ``collection`` intersecting ``bbox`` within ``dates``, oldest first.

    ``max_cloud_cover`` (percent) filters on ``eo:cloud_cover`` on the client side, so it works
    with APIs that lack the query/filter extensions.
    """
    t0 = time.monotonic()
    try:
        result = client.search(collections=[collection], bbox=bbox.as_tuple(), datetime=dates.to_stac(),
                                max_items=max_items)
        items = list(result.items())
    except (APIError, requests.RequestException) as exc:
        raise _down("searching", str(client.self_href), getattr(client, "srcube_retries", 0), t0, exc) from exc
    n_found = len(items)
    if max_cloud_cover is not None:
        items = [it for it in items if float(it.properties.get("eo:cloud_cover", 0.0)) <= max_cloud_cover]
    if not items:
        extra = (f" ({n_found} found, none with eo:cloud_cover <= {max_cloud_cover})"
                 if n_found else "")
        raise EmptySearchError(
            f"no {collection} items at {client.self_href} for bbox {bbox.as_tuple()} and dates "
            f"{dates}{extra}; widen the dates or the bbox, or check the collection")
    items.sort(key=lambda it: (it.datetime or it.common_metadata.start_datetime, it.id))
    log.info("found %d items in %s", len(items), collection)
    return items


def describe(profiles: Sequence[CatalogProfile] | None = None) -> list[tuple[str, str, str, str]]:
    """(name, url, collections, notes) per profile, for the CLI."""
    return [(p.name, p.url or "(local, started on demand)",
             ", ".join(f"{c} ({s})" for c, s in p.collections.items()), p.notes)
            for p in (profiles or list(PROFILES.values()))]


def offset_table_markdown() -> str:
    """The README's catalog table: per catalog and collection, how pixels are read and what srcube does
    with the +1000 DN offset of processing baselines >= 04.00, and why (from the profiles and
    :data:`pipeline.sensors.sentinel2.OFFSET_TABLE`; tests/test_harmonize.py keeps the README equal to it)."""
    from srcube.pipeline.sensors.sentinel2 import OFFSET_TABLE

    does = {"offset": "subtracts 0.1 unless the item's pixels show no offset (then it warns and subtracts nothing)",
            "unknown": "lets each item's pixels decide (ESA's offset where they cannot tell, with a warning)",
            "no-offset": "subtracts nothing"}
    access = {"none": "public", "planetary-computer": "SAS-signed at each read", "cdse": "CDSE S3 keys",
              "terrascope": "bearer token"}
    rows = ["| catalog | collection | pixels read with | baseline >= 04.00: the +1000 DN offset | why |",
            "|---|---|---|---|---|"]
    for p in PROFILES.values():
        for coll, sensor in p.collections.items():
            if sensor != "sentinel-2" or p.kind != "stac":
                continue
            provider = p.name
            rule = next(r for r in OFFSET_TABLE if r.provider in ("*", provider) and r.collection in ("*", coll)
                        and r.low is not None and r.low <= 4.0)
            default = " (default)" if coll == p.collection else ""
            rows.append(f"| {p.name} | `{coll}`{default} | {access[p.access]} | {does[rule.pixels]} | {rule.source} |")
    last = OFFSET_TABLE[-1]
    rows.append(f"| any other STAC API | any | `auth=` option | {does[last.pixels]} | {last.source} |")
    first = OFFSET_TABLE[0]
    return "\n".join(rows) + f"\n\nEvery catalog, baseline < 04.00: {does[first.pixels]} ({first.source})."
