"""STAC search through named catalog profiles (pystac-client).

A profile names a STAC API, its default collection, the band vocabulary of its items and, where
needed, how asset hrefs are signed. ``catalog`` may also be any STAC API URL.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pystac
import pystac_client
import requests
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from urllib3.util.retry import Retry

from pipeline.errors import (
    CatalogUnavailableError,
    EmptySearchError,
    UnknownCatalogError,
    UnknownCollectionError,
)
from pipeline.params import BBox, DateRange
from pipeline.sensors import SensorProfile, get_sensor, sensor_for_collection

log = logging.getLogger(__name__)


def _sign_planetary_computer(obj: Any) -> Any:
    import planetary_computer

    return planetary_computer.sign_inplace(obj)


@dataclass(frozen=True)
class CatalogProfile:
    """A source srcube knows how to search and read.

    ``kind`` is ``"stac"`` (a STAC API), ``"sample"`` (srcube's own archive behind a local STAC API)
    or ``"kelvins"`` (a folder in the PROBA-V Kelvins layout; no search). ``collections`` maps the
    collection ids the profile knows to their sensor.
    """

    name: str
    url: str  # empty for "sample": resolved when the local server starts; a folder for "kelvins"
    collection: str
    kind: str = "stac"
    collections: Mapping[str, str] = field(default_factory=dict)
    modifier: Callable[[Any], Any] | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a catalog profile needs a name")
        if self.kind not in ("stac", "sample", "kelvins"):
            raise ValueError(f"catalog kind must be stac, sample or kelvins, got {self.kind!r}")
        if self.kind == "stac" and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"catalog profile {self.name}: url must be http(s), got {self.url!r}")

    def resolved_url(self) -> str:
        if self.kind == "sample":
            from pipeline.stac_server import sample_server_url

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
        CatalogProfile("earth-search", "https://earth-search.aws.element84.com/v1", "sentinel-2-l2a",
                       collections={"sentinel-2-l2a": _S2, "sentinel-2-c1-l2a": _S2},
                       notes="Element 84 Earth Search v1; public COGs on AWS, no credentials"),
        CatalogProfile("planetary-computer", "https://planetarycomputer.microsoft.com/api/stac/v1",
                       "sentinel-2-l2a", collections={"sentinel-2-l2a": _S2}, modifier=_sign_planetary_computer,
                       notes="Microsoft Planetary Computer; hrefs signed with the planetary-computer "
                             "package (set PC_SDK_SUBSCRIPTION_KEY for higher limits)"),
        CatalogProfile("cdse", "https://stac.dataspace.copernicus.eu/v1", "sentinel-2-l2a",
                       collections={"sentinel-2-l2a": _S2},
                       notes="Copernicus Data Space Ecosystem; assets are s3://eodata/... and need "
                             "CDSE S3 keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                             "AWS_S3_ENDPOINT=eodata.dataspace.copernicus.eu, AWS_VIRTUAL_HOSTING=FALSE)"),
        CatalogProfile("terrascope", "https://stac.terrascope.be", "terrascope-probav-s1-toc-333m-cog-v2",
                       collections={"terrascope-probav-s1-toc-333m-cog-v2": "proba-v",
                                    "terrascope-probav-s5-toc-100m-cog-v2": "proba-v"},
                       notes="VITO Terrascope; PROBA-V Collection 2 TOC syntheses as COGs (333 m daily, 100 m "
                             "5-day); assets need a Terrascope account (OIDC). Ids follow Terrascope's "
                             "terrascope-probav-*-cog-v2 naming; `srcube collections --catalog terrascope` lists them"),
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


def _stac_io(retries: int, timeout: float) -> StacApiIO:
    # connection errors, resets, read timeouts and 429/5xx answers are retried for every method
    # (searches are POST), 0.5, 1, 2, 4 ... s apart; Retry-After is honoured.
    retry = Retry(total=retries, backoff_factor=0.5, backoff_max=30, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=None, raise_on_status=False)
    headers = {}
    token = os.environ.get("SRCUBE_CATALOG_TOKEN")
    if token:  # from the environment (a Kubernetes Secret, CI secret); never logged (pipeline.redact)
        headers["Authorization"] = f"Bearer {token}"
    return StacApiIO(headers=headers, max_retries=retry, timeout=timeout)


def _down(what: str, url: str, retries: int, t0: float, exc: BaseException) -> CatalogUnavailableError:
    return CatalogUnavailableError(
        f"{what} the STAC API at {url} failed after {retries + 1} attempts over {time.monotonic() - t0:.1f} s "
        f"(retried on connection errors, timeouts and HTTP 429/5xx): {exc}. Check that the catalog is up and "
        f"reachable from here; transient outages are retried again by the Prefect flow's task retries")


def open_catalog(profile: CatalogProfile, *, retries: int = CATALOG_RETRIES,
                 timeout: float = CATALOG_TIMEOUT) -> pystac_client.Client:
    url = profile.resolved_url()
    t0 = time.monotonic()
    try:
        client = pystac_client.Client.open(url, modifier=profile.modifier, stac_io=_stac_io(retries, timeout))
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
