"""Publish a complete cube's STAC Collection and Item to a STAC API with the Transactions extension.

``publish(cube, api)`` reads the documents :func:`pipeline.write.stac.finalize` wrote beside the cube
(``<cube>.stac/``; written now if an older cube lacks them), checks that the API says it takes
transactions (its landing page's ``conformsTo``) before it writes anything, then creates the Collection
and the Item: ``POST /collections`` and ``POST /collections/{id}/items``. Publishing again (a grown cube,
a re-run) updates them: a ``409 Conflict`` on create is followed by ``PUT`` of the same document, so a
publish is idempotent and a retried request cannot leave a duplicate.

The zarr asset's href is what catalog users will open. A local cube is published with its absolute path;
``asset_href`` replaces it (the cube's ``https://`` or ``s3://`` address where users reach it).

Requests carry ``headers`` (e.g. ``Authorization: Bearer ...``), may take ``timeout`` s per attempt (from
connecting to the last byte of the answer) and are retried on connection errors, timeouts and 502/503/504
answers with back-off. Refusals raise :class:`PublishError` naming the status, the URL and
the server's own words.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from fsspec.implementations.local import LocalFileSystem

from srcube.pipeline.errors import CubeAttributeError, IncompleteCubeError, PublishError
from srcube.pipeline.network import DeadlineSession
from srcube.pipeline.params import safe_name
from srcube.pipeline.write.stac import stac_folder, write_stac
from srcube.pipeline.write.store import CubeStore

#: conformance classes that say an API takes POST/PUT of Items (STAC API Transaction extension, and the
#: OGC API - Features Part 4 class it builds on)
ITEM_TRANSACTIONS = (
    "https://api.stacspec.org/v1.0.0/ogcapi-features/extensions/transaction",
    "https://api.stacspec.org/v1.0.0-rc.3/ogcapi-features/extensions/transaction",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/simpletx",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete",
)
#: tries after the first of a request that failed on the network or with these statuses (a create answered
#: 409 after a retry is followed by PUT, so retried writes cannot duplicate)
RETRIES, RETRY_STATUSES = 4, (502, 503, 504)


@dataclass(frozen=True)
class Published:
    """Where the cube now is in the API, and whether each document was created or updated."""

    collection_url: str
    item_url: str
    collection: str  # "created" | "updated"
    item: str


def _session(headers: Mapping[str, str] | None, timeout: float) -> requests.Session:
    """A session whose every request may take ``timeout`` s per attempt, from connecting to the last byte of the
    answer, and is retried (see :class:`~srcube.pipeline.network.DeadlineSession`)."""
    session = DeadlineSession(timeout, RETRIES, statuses=RETRY_STATUSES)
    session.headers.update({"Accept": "application/json", **dict(headers or {})})
    return session


def _refused(resp: requests.Response, what: str) -> PublishError:
    body = resp.text.strip().replace("\n", " ")[:400]
    hint = ""
    if resp.status_code in (401, 403):
        hint = "; the API wants credentials: pass them as a header (CLI: --header 'Authorization: Bearer <token>')"
    elif resp.status_code in (404, 405):
        hint = "; the API does not take transactions at this path (is the Transaction extension enabled?)"
    return PublishError(f"{what}: {resp.request.method} {resp.url} answered {resp.status_code}: {body}{hint}")


def _call(session: requests.Session, method: str, url: str, what: str, timeout: float,
          doc: dict[str, Any] | None = None) -> requests.Response:
    try:
        return session.request(method, url, json=doc, timeout=timeout)
    except requests.RequestException as exc:
        raise PublishError(f"{what}: {method} {url} failed: {exc}; is the STAC API running and reachable?") from exc


def _conforms_to(resp: requests.Response) -> list[str] | None:
    """The ``conformsTo`` list of a JSON object answer (None: the answer is not a JSON object)."""
    try:
        doc = resp.json()
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    found = doc.get("conformsTo")
    return [str(c) for c in found] if isinstance(found, list) else []


def check_transactions(api: str, *, headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> list[str]:
    """The API's conformance classes; raise :class:`PublishError` unless one says it takes Item transactions."""
    root = api.rstrip("/")
    with _session(headers, timeout) as session:
        resp = _call(session, "GET", f"{root}/", "reading the STAC API's landing page", timeout)
        if not resp.ok:
            raise _refused(resp, "reading the STAC API's landing page")
        conforms = _conforms_to(resp)
        if conforms is None:
            raise PublishError(f"{root}/ is not a STAC API: its landing page is not a JSON object; check the URL")
        if not conforms:  # some APIs list them only under /conformance
            resp = _call(session, "GET", f"{root}/conformance", "reading the STAC API's conformance", timeout)
            conforms = (_conforms_to(resp) or []) if resp.ok else []
    if not any(c in conforms for c in ITEM_TRANSACTIONS):
        raise PublishError(
            f"the STAC API at {root} does not take transactions: none of its {len(conforms)} conformance classes "
            f"is the Transaction extension ({ITEM_TRANSACTIONS[0]}); enable it on the server (stac-fastapi: "
            "ENABLE_TRANSACTIONS_EXTENSIONS=true) or publish to another API")
    return conforms


#: the largest STAC document publish reads (srcube writes a few kB; a cube's documents are untrusted input)
MAX_DOCUMENT_BYTES = 16 << 20


def _read_document(store: CubeStore, folder: str, name: str) -> dict[str, Any]:
    """The JSON object ``<folder>/<name>``: a plain file name inside the cube's own STAC folder (a link or a
    symbolic link that leaves it is refused: cubes are shared, their documents are untrusted), of bounded size."""
    safe_name(name, f"STAC document {name!r} in {folder}: its name", CubeAttributeError)
    path = f"{folder}/{name}"
    if isinstance(store.fs, LocalFileSystem):
        real, inside = os.path.realpath(path), os.path.realpath(folder)
        if os.path.dirname(real) != inside:
            raise CubeAttributeError(f"{path} leads out of the cube's STAC folder (to {real}): publish reads only the "
                                     "cube's own documents; the cube is corrupt or crafted")
    if store.fs.size(path) > MAX_DOCUMENT_BYTES:
        raise CubeAttributeError(f"{path} is larger than {MAX_DOCUMENT_BYTES >> 20} MB, not a document srcube wrote")
    try:
        doc = json.loads(store.fs.cat_file(path))
    except ValueError as exc:
        raise CubeAttributeError(f"{path} is not JSON ({exc}); write the cube's STAC documents again "
                                 "(remove the folder: publish writes them from the cube)") from None
    if not isinstance(doc, dict):
        raise CubeAttributeError(f"{path} is not a STAC document (a JSON object)")
    return doc


def _documents(store: CubeStore) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cube's Collection and Item, read from its own STAC folder ``<cube>.stac`` only, their ids checked."""
    folder = stac_folder(store)
    coll_path = f"{folder}/collection.json"
    if not store.fs.exists(coll_path):  # a cube finished before srcube wrote STAC beside its cubes
        write_stac(store.open(), store)
    collection = _read_document(store, folder, "collection.json")
    item_links = [link for link in collection.get("links", []) if isinstance(link, dict) and link.get("rel") == "item"]
    if len(item_links) != 1:
        raise PublishError(f"{coll_path} should link exactly one item, it links {len(item_links)}")
    href = item_links[0].get("href")
    name = href.removeprefix("./") if isinstance(href, str) else ""
    if not name or "/" in name or "\\" in name or not name.endswith(".json"):
        raise CubeAttributeError(f"{coll_path} links its item at {str(href)[:120]!r}, outside the cube's STAC folder: "
                                 "publish reads only the cube's own documents (./<item id>.json); the cube is "
                                 "corrupt or crafted")
    item = _read_document(store, folder, name)
    for what, doc in (("collection", collection), ("item", item)):
        try:
            safe_name(doc.get("id"), f"the {what} id in {folder}", CubeAttributeError)
        except CubeAttributeError as exc:
            raise CubeAttributeError(f"{exc}. The id becomes a URL path segment: remove {folder} and publish again "
                                     "(the documents are written anew from the cube)") from None
    return collection, item


def _segment(value: str) -> str:
    """``value`` as one URL path segment (checked with the name rules already; escaped all the same)."""
    return quote(value, safe="")


def _for_api(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without its file-catalog links (the API makes its own self/parent/root/items links)."""
    out = dict(doc)
    out["links"] = [link for link in doc.get("links", [])
                    if link.get("rel") not in {"self", "root", "parent", "item", "items", "collection"}]
    return out


def publish(cube: str, api: str, *, asset_href: str | None = None, headers: Mapping[str, str] | None = None,
            storage_options: Mapping[str, Any] | None = None, timeout: float = 30.0) -> Published:
    """Add (or update) the complete cube ``cube``'s Collection and Item in the STAC API at ``api``."""
    store = CubeStore(cube, storage_options)
    status = store.status()
    if status != "complete":
        raise IncompleteCubeError(f"{cube}: no complete srcube cube here ({status}); only a complete cube is "
                                  "published (run it to the end first)")
    collection, item = _documents(store)
    assets = item.get("assets")
    written = assets.get("zarr", {}).get("href") if isinstance(assets, dict) else None
    if not isinstance(written, str) or not all(isinstance(a, dict) and a.get("href") == written
                                               for a in assets.values()):  # type: ignore[union-attr]
        raise CubeAttributeError(f"the item in {stac_folder(store)} has assets other than the cube (its zarr asset and "
                                 "overview levels, one href): the documents are corrupt or crafted; remove the "
                                 "folder and publish again (it is written from the cube)")
    # the cube as publish found it (its document's href may be stale or crafted), or where users reach it
    href = asset_href or (cube if "://" in cube else os.path.abspath(cube))
    check_transactions(api, headers=headers, timeout=timeout)
    item = _for_api(item)
    # the cube and its overview levels (groups of the same store) move together
    item["assets"] = {k: {**a, "href": href} for k, a in assets.items()}  # type: ignore[union-attr]
    item["collection"] = collection["id"]
    collection = _for_api(collection)
    root = api.rstrip("/")
    coll_url = f"{root}/collections/{_segment(collection['id'])}"
    item_url = f"{coll_url}/items/{_segment(item['id'])}"
    with _session(headers, timeout) as session:
        coll_done = _upsert(session, "collection", f"{root}/collections", coll_url, collection, timeout)
        item_done = _upsert(session, "item", f"{coll_url}/items", item_url, item, timeout)
    return Published(collection_url=coll_url, item_url=item_url, collection=coll_done, item=item_done)


def _upsert(session: requests.Session, what: str, create: str, update: str, doc: dict[str, Any],
            timeout: float) -> str:
    """POST ``doc`` to ``create``; when it exists (409), PUT it to ``update``: "created" or "updated"."""
    resp = _call(session, "POST", create, f"creating the {what}", timeout, doc)
    done = "created"
    if resp.status_code == 409:  # it exists: replace it with this (newer) document
        resp = _call(session, "PUT", update, f"updating the {what}", timeout, doc)
        done = "updated"
    if not resp.ok:
        raise _refused(resp, f"publishing the {what} {doc['id']}")
    return done


# --- an area: its Collection and one Item per cell ---------------------------------------------------------


def is_area(path: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``path`` is an area's folder (its index ``collection.json`` names a cell size)."""
    from srcube.pipeline.write import areaindex

    try:
        doc = areaindex.read_collection(path, storage_options)
    except (OSError, ValueError):
        return False
    return doc is not None and "srcube:cell_size_m" in doc


def _area_documents(prefix: str, storage_options: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """The area's Collection and the cell ids it links (``./items/<cell id>.json`` only: untrusted documents)."""
    from srcube.pipeline.cells import Cell
    from srcube.pipeline.write import areaindex

    store = CubeStore(prefix, storage_options)
    folder = store.path.rstrip("/")
    collection = _read_document(store, folder, areaindex.COLLECTION)
    cells = []
    for link in collection.get("links", []):
        if not isinstance(link, dict) or link.get("rel") != "item":
            continue
        href = str(link.get("href", ""))
        name = href.removeprefix(f"./{areaindex.ITEMS}/").removesuffix(".json")
        try:
            if href != f"./{areaindex.ITEMS}/{name}.json":
                raise ValueError(href)
            cells.append(Cell.parse(name).id)
        except ValueError:
            raise CubeAttributeError(f"{folder}/{areaindex.COLLECTION} links an item at {href[:120]!r}, not a cell's "
                                     f"item of the area (./{areaindex.ITEMS}/<cell id>.json): the index is corrupt "
                                     "or crafted") from None
    safe_name(collection.get("id"), f"the collection id in {folder}", CubeAttributeError)
    return collection, cells


def publish_area(prefix: str, api: str, *, asset_href: str | None = None, headers: Mapping[str, str] | None = None,
                 storage_options: Mapping[str, Any] | None = None, timeout: float = 30.0) -> Published:
    """Add (or update) an area's Collection and the Item of every cell it links in the STAC API at ``api``. Each
    Item's cube is checked to be complete; its assets point at ``<asset_href or the area's location>/<cell>.zarr``."""
    from srcube.pipeline.write import areaindex

    collection, cells = _area_documents(prefix, storage_options)
    base = (asset_href or (prefix if "://" in prefix else os.path.abspath(prefix))).rstrip("/")
    store = CubeStore(prefix, storage_options)
    folder = f"{store.path.rstrip('/')}/{areaindex.ITEMS}"
    items = []
    for cell in cells:
        status = CubeStore(f"{prefix.rstrip('/')}/{cell}.zarr", storage_options).status()
        if status != "complete":
            raise IncompleteCubeError(f"the area's cell {cell} has no complete cube ({status}); run the area again "
                                      "to finish it before publishing")
        item = _read_document(store, folder, f"{cell}.json")
        if item.get("id") != cell:
            raise CubeAttributeError(f"{folder}/{cell}.json holds the item {str(item.get('id'))[:80]!r}, not the "
                                     "cell's")
        item = _for_api(item)
        item["assets"] = {k: {**a, "href": f"{base}/{cell}.zarr"} for k, a in (item.get("assets") or {}).items()
                          if isinstance(a, dict)}
        item["collection"] = collection["id"]
        items.append(item)
    check_transactions(api, headers=headers, timeout=timeout)
    root = api.rstrip("/")
    coll_url = f"{root}/collections/{_segment(collection['id'])}"
    states = {"created": 0, "updated": 0}
    with _session(headers, timeout) as session:
        coll_done = _upsert(session, "collection", f"{root}/collections", coll_url, _for_api(collection), timeout)
        for item in items:
            states[_upsert(session, "item", f"{coll_url}/items", f"{coll_url}/items/{_segment(item['id'])}", item,
                           timeout)] += 1
    return Published(collection_url=coll_url, item_url=f"{coll_url}/items", collection=coll_done,
                     item=f"{len(items)} items: {states['created']} created, {states['updated']} updated")
