"""Publish a complete cube's STAC Collection and Item to a STAC API with the Transactions extension.

``publish(cube, api)`` reads the documents :func:`pipeline.write.stac.finalize` wrote beside the cube
(``<cube>.stac/``; written now if an older cube lacks them), checks that the API says it takes
transactions (its landing page's ``conformsTo``) before it writes anything, then creates the Collection
and the Item: ``POST /collections`` and ``POST /collections/{id}/items``. Publishing again (a grown cube,
a re-run) updates them: a ``409 Conflict`` on create is followed by ``PUT`` of the same document, so a
publish is idempotent and a retried request cannot leave a duplicate.

The zarr asset's href is what catalog users will open. A local cube is published with its absolute path;
``asset_href`` replaces it (the cube's ``https://`` or ``s3://`` address where users reach it).

Requests carry ``headers`` (e.g. ``Authorization: Bearer ...``) and are retried on connection errors and
502/503/504 answers with back-off. Refusals raise :class:`PublishError` naming the status, the URL and
the server's own words.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from srcube.pipeline.errors import IncompleteCubeError, PublishError
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
_RETRY = Retry(total=4, connect=4, read=2, backoff_factor=0.5, status_forcelist=(502, 503, 504),
               allowed_methods=frozenset({"GET", "POST", "PUT"}), raise_on_status=False)


@dataclass(frozen=True)
class Published:
    """Where the cube now is in the API, and whether each document was created or updated."""

    collection_url: str
    item_url: str
    collection: str  # "created" | "updated"
    item: str


def _session(headers: Mapping[str, str] | None) -> requests.Session:
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=_RETRY))
    session.mount("https://", HTTPAdapter(max_retries=_RETRY))
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


def check_transactions(api: str, *, headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> list[str]:
    """The API's conformance classes; raise :class:`PublishError` unless one says it takes Item transactions."""
    root = api.rstrip("/")
    with _session(headers) as session:
        resp = _call(session, "GET", f"{root}/", "reading the STAC API's landing page", timeout)
        if not resp.ok:
            raise _refused(resp, "reading the STAC API's landing page")
        try:
            conforms = list(resp.json().get("conformsTo") or [])
        except ValueError as exc:
            raise PublishError(f"{root}/ is not a STAC API: its landing page is not JSON") from exc
        if not conforms:  # some APIs list them only under /conformance
            resp = _call(session, "GET", f"{root}/conformance", "reading the STAC API's conformance", timeout)
            conforms = list(resp.json().get("conformsTo") or []) if resp.ok else []
    if not any(c in conforms for c in ITEM_TRANSACTIONS):
        raise PublishError(
            f"the STAC API at {root} does not take transactions: none of its {len(conforms)} conformance classes "
            f"is the Transaction extension ({ITEM_TRANSACTIONS[0]}); enable it on the server (stac-fastapi: "
            "ENABLE_TRANSACTIONS_EXTENSIONS=true) or publish to another API")
    return conforms


def _documents(store: CubeStore) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = stac_folder(store)
    coll_path = f"{folder}/collection.json"
    if not store.fs.exists(coll_path):  # a cube finished before srcube wrote STAC beside its cubes
        write_stac(store.open(), store)
    collection = json.loads(store.fs.cat_file(coll_path))
    item_links = [link for link in collection.get("links", []) if link.get("rel") == "item"]
    if len(item_links) != 1:
        raise PublishError(f"{coll_path} should link exactly one item, it links {len(item_links)}")
    item = json.loads(store.fs.cat_file(f"{folder}/{item_links[0]['href'].removeprefix('./')}"))
    return collection, item


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
    check_transactions(api, headers=headers, timeout=timeout)
    written = item["assets"]["zarr"]["href"]
    href = asset_href or (written if "://" in written else os.path.abspath(written))
    item = _for_api(item)
    # the cube and its overview levels (groups of the same store) move together
    item["assets"] = {k: {**a, "href": href} if a["href"] == written else a for k, a in item["assets"].items()}
    item["collection"] = collection["id"]
    collection = _for_api(collection)
    root = api.rstrip("/")
    coll_url = f"{root}/collections/{collection['id']}"
    item_url = f"{coll_url}/items/{item['id']}"
    done: dict[str, str] = {}
    with _session(headers) as session:
        for what, create, update, doc in (("collection", f"{root}/collections", coll_url, collection),
                                          ("item", f"{coll_url}/items", item_url, item)):
            resp = _call(session, "POST", create, f"creating the {what}", timeout, doc)
            done[what] = "created"
            if resp.status_code == 409:  # it exists: replace it with this (newer) document
                resp = _call(session, "PUT", update, f"updating the {what}", timeout, doc)
                done[what] = "updated"
            if not resp.ok:
                raise _refused(resp, f"publishing the {what} {doc['id']}")
    return Published(collection_url=coll_url, item_url=item_url, collection=done["collection"], item=done["item"])
