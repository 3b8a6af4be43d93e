"""Cube attributes and STAC documents are untrusted input (issue 22): cubes are shared between people, so the ids
and hashes a cube carries are checked with the name rules of requests before they become file names or URL path
segments, publish reads only the cube's own documents inside ``<cube>.stac``, and URL segments are escaped.

Each test crafts a copy of a real cube (a run of the sample) and publishes it to a STAC API on loopback that
records what it is sent (a small http.server speaking the Transactions extension's create calls).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from srcube.cli.commands import app
from srcube.pipeline import CubeAttributeError, run_region
from srcube.pipeline.write.publish import ITEM_TRANSACTIONS, publish
from srcube.pipeline.write.stac import item_id, write_stac
from srcube.pipeline.write.store import CubeStore

SMALL = (4.465, 51.401, 4.487, 51.414)
DATES = "2024-05-01/2024-06-30"


@pytest.fixture(scope="module")
def cube(sample_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("untrusted") / "shared.zarr"
    run_region(SMALL, DATES, model="bicubic", bands=["B04"], out=str(out))
    return out


@pytest.fixture
def api() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    """A STAC API on loopback that takes transactions and records every (method, raw path, JSON body)."""
    seen: list[tuple[str, str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # http.server's names
            seen.append(("GET", self.path, None))
            self._answer(200, {"type": "Catalog", "conformsTo": [ITEM_TRANSACTIONS[0]], "links": []})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            seen.append(("POST", self.path, json.loads(self.rfile.read(length))))
            self._answer(201, {})

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _copy(cube: Path, where: Path, *, attrs: Callable[[dict[str, Any]], None] | None = None,
          keep_stac: bool = True) -> Path:
    """A copy of ``cube`` at ``where`` (a folder two levels deep, so that escapes have somewhere to land), its root
    attributes changed by ``attrs``; its STAC folder copied too unless ``keep_stac`` is False."""
    target = where / "a" / "b" / cube.name
    shutil.copytree(cube, target)
    if keep_stac:
        shutil.copytree(cube.parent / f"{cube.name}.stac", target.parent / f"{cube.name}.stac")
    if attrs is not None:
        meta = target / "zarr.json"
        doc = json.loads(meta.read_text())
        attrs(doc["attributes"])
        meta.write_text(json.dumps(doc))
    return target


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _posts(seen: list[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
    return [s for s in seen if s[0] != "GET"]


def test_a_crafted_request_hash_never_becomes_a_file_name(cube: Path, tmp_path: Path, api: Any) -> None:
    """The cube's STAC documents are written from its attributes when it has none: a request hash that walks out
    of ``<cube>.stac`` is refused, and nothing is written anywhere."""
    url, seen = api

    def craft(attrs: dict[str, Any]) -> None:
        attrs["request_hash"] = "/../../P"

    crafted = _copy(cube, tmp_path, attrs=craft, keep_stac=False)
    # as its sharer left it: a STAC folder without documents, holding the folder the crafted id walks through
    (crafted.parent / f"{crafted.name}.stac" / f"{crafted.name.removesuffix('.zarr')}-").mkdir(parents=True)
    before = _files(tmp_path)
    with pytest.raises(CubeAttributeError, match=r"request_hash '/\.\./\.\./P', which is not a hash"):
        publish(str(crafted), url)
    assert _files(tmp_path) == before and not _posts(seen)  # the old code wrote <cube folder>/P.json
    with pytest.raises(CubeAttributeError, match="not a hash"):
        write_stac(CubeStore(str(crafted)).open(), CubeStore(str(crafted)))
    assert _files(tmp_path) == before


def test_item_ids_follow_the_name_rules_of_requests() -> None:
    assert item_id("/data/antwerp.zarr", "e10c3bbe306da828f50460f11df856bd") == "antwerp-e10c3bbe"
    assert item_id("s3://bucket/my cube (v2).zarr/", "e10c3bbe306da828") == "my-cube-v2-e10c3bbe"
    assert item_id("/data/...zarr", "e10c3bbe") == "cube-e10c3bbe"
    for bad in ("../../x", "E10C3BBE", "e10c3bb", None, 12345678, "e10c3bbe/../"):
        with pytest.raises(CubeAttributeError, match="is not a hash"):
            item_id("/data/antwerp.zarr", bad)


@pytest.mark.parametrize("overviews", [{"group": "../../elsewhere", "factors": [4]}, "../../elsewhere/4"],
                         ids=["out-of-the-cube", "not-a-record"])
def test_crafted_overview_attributes_are_refused(cube: Path, tmp_path: Path, overviews: Any) -> None:
    def craft(attrs: dict[str, Any]) -> None:
        attrs["overviews"] = overviews

    crafted = _copy(cube, tmp_path, attrs=craft, keep_stac=False)
    store = CubeStore(str(crafted))
    with pytest.raises(CubeAttributeError, match=r"overviews .*elsewhere.*not a group of plain names"):
        write_stac(store.open(), store)


def test_publish_reads_only_the_cube_s_own_documents(cube: Path, tmp_path: Path, api: Any) -> None:
    """An item link that leaves ``<cube>.stac`` (a relative path, an absolute one, a symbolic link): refused
    before the API is asked, so no foreign JSON file is ever sent."""
    url, seen = api
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"id": "secret", "type": "Feature", "token": "do-not-send"}))
    for n, href in enumerate(["../../../secret.json", str(secret), "./sub/../../../../secret.json"]):
        crafted = _copy(cube, tmp_path / f"link{n}")
        coll_path = crafted.parent / f"{crafted.name}.stac" / "collection.json"
        doc = json.loads(coll_path.read_text())
        doc["links"] = [{**link, "href": href} if link["rel"] == "item" else link for link in doc["links"]]
        coll_path.write_text(json.dumps(doc))
        with pytest.raises(CubeAttributeError, match=r"outside the cube's STAC folder"):
            publish(str(crafted), url)
    # a document of the folder that is a symbolic link to a file elsewhere
    crafted = _copy(cube, tmp_path / "symlink")
    folder = crafted.parent / f"{crafted.name}.stac"
    item_file = next(p for p in folder.iterdir() if p.name != "collection.json")
    item_file.unlink()
    os.symlink(secret, item_file)
    with pytest.raises(CubeAttributeError, match=r"leads out of the cube's STAC folder"):
        publish(str(crafted), url)
    res = CliRunner().invoke(app, ["publish", str(crafted), "--to", url])
    assert res.exit_code == 2 and "Traceback" not in res.output and "leads out of" in " ".join(res.output.split())
    assert not seen, "the API was asked"


def test_ids_are_checked_and_url_segments_escaped(cube: Path, tmp_path: Path, api: Any) -> None:
    url, seen = api
    crafted = _copy(cube, tmp_path / "traversal")
    folder = crafted.parent / f"{crafted.name}.stac"
    coll_path = folder / "collection.json"
    doc = json.loads(coll_path.read_text())
    doc["id"] = "../../../admin"
    coll_path.write_text(json.dumps(doc))
    with pytest.raises(CubeAttributeError, match=r"collection id .*'\.\./\.\./\.\./admin' is not a valid name.*remove"):
        publish(str(crafted), url)
    assert not seen
    # a valid name with characters that mean something in a URL: each id is one escaped path segment
    crafted = _copy(cube, tmp_path / "escaped")
    folder = crafted.parent / f"{crafted.name}.stac"
    for path in folder.iterdir():
        doc = json.loads(path.read_text())
        doc["id"] = "cube:v1+2"
        path.write_text(json.dumps(doc))
    done = publish(str(crafted), url)
    assert done.collection_url == f"{url}/collections/cube%3Av1%2B2"
    assert done.item_url == f"{url}/collections/cube%3Av1%2B2/items/cube%3Av1%2B2"
    assert [(m, p) for m, p, _ in _posts(seen)] == [("POST", "/collections"),
                                                    ("POST", "/collections/cube%3Av1%2B2/items")]


def test_publish_sends_the_cube_where_it_is_not_where_its_documents_say(cube: Path, tmp_path: Path,
                                                                         api: Any) -> None:
    """A cube moved (or shared) keeps its old documents: the published href is the cube's own place; an asset
    that points anywhere else is refused."""
    url, seen = api
    moved = _copy(cube, tmp_path / "moved")
    publish(str(moved), url)
    item = _posts(seen)[-1][2]
    assert {a["href"] for a in item["assets"].values()} == {os.path.abspath(moved)}
    crafted = _copy(cube, tmp_path / "asset")
    folder = crafted.parent / f"{crafted.name}.stac"
    item_file = next(p for p in folder.iterdir() if p.name != "collection.json")
    doc = json.loads(item_file.read_text())
    doc["assets"]["extra"] = {"href": "https://example.com/other.zarr", "roles": ["data"]}
    item_file.write_text(json.dumps(doc))
    n = len(seen)
    with pytest.raises(CubeAttributeError, match=r"assets other than the cube"):
        publish(str(crafted), url)
    assert len(seen) == n
