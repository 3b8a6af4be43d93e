"""STAC search through named catalog profiles (pystac-client).

A profile names a STAC API, its default collection, the band vocabulary of its items and, where
needed, how asset hrefs are signed. ``catalog`` may also be any STAC API URL.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pystac
import pystac_client
import requests
from pystac_client.conformance import ConformanceClasses
from pystac_client.errors import ClientTypeError
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from pystac_client.warnings import DoesNotConformTo

from srcube.pipeline.errors import (
    CatalogUnavailableError,
    EmptySearchError,
    NotAStacApiError,
    UnknownCatalogError,
    UnknownCollectionError,
)
from srcube.pipeline.network import DeadlineSession
from srcube.pipeline.params import BBox, DateRange
from srcube.pipeline.sensors import SensorProfile, get_sensor, sensor_for_collection

log = logging.getLogger(__name__)

#: how a profile's asset pixels may be read (each kind made by :func:`pipeline.search.access.access_for`); named
#: here, with the profiles, so that listing them imports no reader (rasterio, odc-stac, Dask)
ACCESS_KINDS = ("none", "planetary-computer", "terrascope", "cdse", "bearer", "s3-keys")


@dataclass(frozen=True)
class CatalogProfile:
    """A source srcube knows how to search and read.

    ``kind`` is ``"stac"`` (a STAC API), ``"sample"`` (srcube's own archive behind a local STAC API)
    or ``"kelvins"`` (a folder in the PROBA-V Kelvins layout; no search). ``collections`` maps the
    collection ids the profile knows to their sensor. ``access`` names how asset pixels are read
    (:func:`pipeline.search.access.access_for`: signing at read time, bearer token, S3 keys); items are
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


#: catalog requests: tries after the first, and seconds each attempt may take (connecting, then the whole answer)
CATALOG_RETRIES = 5
CATALOG_TIMEOUT = 30.0


class _StacIO(StacApiIO):
    """pystac-client's StacApiIO over a :class:`~srcube.pipeline.network.DeadlineSession`: each catalog request
    (landing page, collection, every search page) has a deadline per attempt and is retried on connection
    errors, timeouts, answers cut short and HTTP 429/5xx. pystac-client's ``Client.open``/``from_file`` reset a
    StacApiIO's own timeout to None (pass None on): this one keeps it, and the session's deadline holds anyway."""

    def __init__(self, headers: dict[str, str], retries: int, timeout: float) -> None:
        super().__init__(max_retries=None, timeout=timeout)
        self.session = DeadlineSession(timeout, retries)
        self.update(headers=headers, timeout=timeout)

    def update(self, headers: dict[str, str] | None = None, parameters: dict[str, Any] | None = None,
               request_modifier: Any = None, timeout: Any = None) -> None:
        super().update(headers=headers, parameters=parameters, request_modifier=request_modifier,
                       timeout=timeout if timeout is not None else getattr(self, "timeout", None))

    def get_pages(self, url: str, method: str | None = None,
                  parameters: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """pystac-client's paging, except that a page which is not a FeatureCollection (or collection list)
        raises instead of ending the results: an error page answered with HTTP 200 is not "no items"."""
        page = self.read_json(url, method=method, parameters=parameters)
        while True:
            if not isinstance(page, dict) or not ("features" in page or "collections" in page):
                shape = f"an object with keys {sorted(page)[:8]}" if isinstance(page, dict) else type(page).__name__
                raise ValueError(f"a page of {url} is not a FeatureCollection: it is {shape}")
            if not (page.get("features") or page.get("collections")):
                return
            yield page
            link = next((ln for ln in page.get("links", []) if isinstance(ln, dict) and ln.get("rel") == "next"), None)
            if link is None:
                return
            page = self.read_json(pystac.Link.from_dict(link), parameters=parameters)


def _stac_io(retries: int, timeout: float, access: Any = None) -> StacApiIO:
    headers = {}
    token = os.environ.get("SRCUBE_CATALOG_TOKEN")
    if token:  # from the environment (a Kubernetes Secret, CI secret); never logged (pipeline.redact)
        headers["Authorization"] = f"Bearer {token}"
    elif access is not None and hasattr(access, "headers"):  # the catalog's own bearer token (Terrascope)
        headers.update(access.headers())
    return _StacIO(headers, retries, timeout)


def _down(what: str, url: str, stac_io: Any, t0: float, exc: BaseException) -> CatalogUnavailableError:
    retries, timeout = _limits(stac_io)
    attempts = f"{retries + 1} attempt{'s' if retries else ''}"
    return CatalogUnavailableError(
        f"{what} the STAC API at {url} failed after {attempts} over {time.monotonic() - t0:.1f} s "
        f"(each allowed {timeout:g} s; retried on connection errors, timeouts and HTTP 429/5xx): {exc}. Check "
        f"that the catalog is up and reachable from here; a catalog that is slow rather than down needs a longer "
        f"--catalog-timeout (catalog_timeout=, now {timeout:g} s) or more --catalog-retries (now {retries}); "
        "transient outages are retried again by the Prefect flow's task retries")


def _not_stac(what: str, url: str, why: BaseException | str) -> NotAStacApiError:
    if isinstance(why, BaseException):
        why = f"{type(why).__name__}: {str(why)[:300]}"
    return NotAStacApiError(
        f"{what} the STAC API at {url}: the answer is not a STAC API's ({why}). Check "
        "the catalog URL: it must be a STAC API's landing page (its JSON has \"type\": \"Catalog\" and "
        "\"conformsTo\"), not a web page, a static catalog file or another API; `srcube catalogs` lists the "
        "profiles srcube knows")


#: what pystac and pystac-client raise for a document that is not STAC (HTML, other JSON, a wrong shape), or
#: for a STAC document that is not an API that searches (a static catalog: DoesNotConformTo)
_NOT_STAC = (ValueError, KeyError, TypeError, AttributeError, pystac.STACError, pystac.STACTypeError,
             pystac.errors.RequiredPropertyMissing, ClientTypeError, DoesNotConformTo)


def _limits(stac_io: Any) -> tuple[int, float]:
    """(retries, timeout) of the requests of ``stac_io`` (a client's ``_stac_io``)."""
    session = getattr(stac_io, "session", None)
    if isinstance(session, DeadlineSession):
        return session.retries, session.timeout
    return 0, CATALOG_TIMEOUT


def open_catalog(profile: CatalogProfile, *, retries: int = CATALOG_RETRIES,
                 timeout: float = CATALOG_TIMEOUT, access: Any = None) -> pystac_client.Client:
    """A pystac-client Client of the profile's API (items come back unsigned: reads sign them).

    Every request of the client (this one, the collection, each search page) may take ``timeout`` s per
    attempt and is tried ``retries`` more times (see :class:`_StacIO`): a catalog that stalls gives
    :class:`CatalogUnavailableError` within ``timeout x (retries + 1)`` plus the backoff. An answer that is
    not a STAC API gives :class:`NotAStacApiError`."""
    url = profile.resolved_url()
    stac_io = _stac_io(retries, timeout, access)  # a refused login is an AssetAuthError, not the catalog being down
    t0 = time.monotonic()
    try:  # Client.open is from_file and a warning when the landing page lists no conformance: refused below
        client = pystac_client.Client.from_file(url, stac_io=stac_io)
    except (requests.RequestException, APIError, OSError) as exc:
        raise _down("opening", url, stac_io, t0, exc) from exc
    except _NOT_STAC as exc:
        raise _not_stac("opening", url, exc) from exc
    if not isinstance(client, pystac_client.Client):  # a Collection or an Item: a document, not the API
        raise _not_stac("opening", url, f"the document is a {type(client).__name__}, not a landing page")
    if not client.conforms_to(ConformanceClasses.ITEM_SEARCH):
        listed = client.get_conforms_to()
        raise _not_stac("opening", url, "a STAC catalog that does not search: its landing page lists " + (
            f"{len(listed)} conformance classes, none of them STAC API - Item Search" if listed else
            "no conformance classes (a static catalog, or an API older than STAC API 1.0)"))
    return client


def check_collection(client: pystac_client.Client, collection: str) -> None:
    """Raise UnknownCollectionError (listing what exists) unless the API has ``collection``."""
    t0 = time.monotonic()
    try:
        found = client.get_collection(collection)
    except APIError as exc:
        if (getattr(exc, "status_code", None) or 0) in (429,) or (getattr(exc, "status_code", None) or 0) >= 500:
            raise _down("asking", str(client.self_href), client._stac_io, t0, exc) from exc
        found = None
    except requests.RequestException as exc:
        raise _down("asking", str(client.self_href), client._stac_io, t0, exc) from exc
    except _NOT_STAC as exc:
        raise _not_stac(f"asking for collection {collection!r} from", str(client.self_href), exc) from exc
    if found is not None:
        return
    try:
        known = sorted(c.id for c in client.get_collections())
    except (APIError, requests.RequestException, *_NOT_STAC):
        known = []
    raise UnknownCollectionError(
        f"collection {collection!r} not found at {client.self_href}"
        + (f"; it has: {', '.join(known)}" if known else ""))


def collection_ids(client: pystac_client.Client) -> list[str]:
    """The ids of the API's collections, sorted (CatalogUnavailableError or NotAStacApiError as for the search)."""
    t0 = time.monotonic()
    try:
        return sorted(str(c.id) for c in client.get_collections())
    except (APIError, requests.RequestException) as exc:
        raise _down("listing the collections of", str(client.self_href), client._stac_io, t0, exc) from exc
    except _NOT_STAC as exc:
        raise _not_stac("listing the collections of", str(client.self_href), exc) from exc


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
        raise _down("searching", str(client.self_href), client._stac_io, t0, exc) from exc
    except _NOT_STAC as exc:
        raise _not_stac("searching", str(client.self_href), exc) from exc
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
    """The catalog table of ARCHITECTURE.md: per catalog and collection, how pixels are read and what srcube does
    with the +1000 DN offset of processing baselines >= 04.00, and why (from the profiles and
    :data:`pipeline.sensors.sentinel2.OFFSET_TABLE`; tests/pipeline/assemble/test_harmonize.py keeps
    ARCHITECTURE.md equal to it)."""
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
