"""A catalog URL that answers, but not as a STAC API (a web page, JSON of another API, a static catalog, a search
page that is an error page served with HTTP 200): a typed :class:`NotAStacApiError` that says to check the URL,
exit 2 on the CLI, never a traceback and never "no items" (issue 22, finding 4). Served by
:class:`tests.support.servers.CannedServer` on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import srcube.cli.commands as cli
from srcube.pipeline import run_region
from srcube.pipeline.errors import NotAStacApiError, is_transient
from srcube.pipeline.params import BBox, DateRange
from srcube.pipeline.search import catalog as cat
from srcube.pipeline.testing import sample
from tests.support.servers import CannedServer

BBOX = sample.DEFAULT_BBOX
SHORT = "2024-06-12/2024-06-22"
JSON, HTML = "application/json", "text/html"
API = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
       "https://api.stacspec.org/v1.0.0/collections"]


def _landing(conforms: list[str] | None) -> str:
    doc = {"type": "Catalog", "id": "canned", "stac_version": "1.0.0", "description": "a canned catalog",
           "links": [{"rel": "self", "href": "{url}/"}, {"rel": "root", "href": "{url}/"},
                     {"rel": "data", "href": "{url}/collections"},
                     {"rel": "search", "href": "{url}/search", "method": "POST",
                      "type": "application/geo+json"}]}
    if conforms is not None:
        doc["conformsTo"] = conforms
    return json.dumps(doc)


def _api(search: tuple[int, str, str]) -> dict[str, tuple[int, str, str]]:
    """A STAC API whose landing page and collection are right and whose search answers ``search``."""
    collection = json.dumps({"type": "Collection", "id": "sentinel-2-l2a", "stac_version": "1.0.0",
                             "description": "canned", "license": "CC0-1.0", "links": [],
                             "extent": {"spatial": {"bbox": [[4.4, 51.3, 4.6, 51.5]]},
                                        "temporal": {"interval": [["2024-05-01T00:00:00Z", None]]}}})
    return {"/": (200, JSON, _landing(API)), "/collections/sentinel-2-l2a": (200, JSON, collection),
            "/search": search}


CASES = {
    "web-page": ({"/": (200, HTML, "<!doctype html><html><body><h1>Welcome</h1></body></html>")},
                 r"opening .*JSONDecodeError"),
    "other-json": ({"/": (200, JSON, '{"status": "ok", "version": "2.1"}')},
                   r"opening .*expected type=Catalog, found type=None"),
    "json-list": ({"/": (200, JSON, "[1, 2, 3]")}, r"opening "),
    "static-catalog": ({"/": (200, JSON, _landing(None))}, r"no conformance classes \(a static catalog"),
    "not-item-search": ({"/": (200, JSON, _landing(API[:1]))}, r"none of them STAC API - Item Search"),
    "search-page-html": (_api((200, HTML, "<html><body>Service temporarily unavailable</body></html>")),
                         r"searching .*JSONDecodeError"),
    "search-page-other-json": (_api((200, JSON, '{"results": [], "error": "quota exceeded"}')),
                               r"searching .*not a FeatureCollection: it is an object with keys "
                               r"\['error', 'results'\]"),
    "search-features-not-items": (_api((200, JSON, '{"type": "FeatureCollection", "features": [{"id": 1}]}')),
                                  r"searching "),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_catalog_that_is_not_a_stac_api_gives_the_typed_error(case):
    routes, match = CASES[case]
    with CannedServer(routes) as server:
        with pytest.raises(NotAStacApiError, match=match) as err:
            client = cat.open_catalog(cat.resolve_catalog(server.url), retries=0, timeout=5)
            cat.check_collection(client, "sentinel-2-l2a")
            cat.search(client, "sentinel-2-l2a", BBox(*BBOX), DateRange.parse(SHORT))
    msg = " ".join(str(err.value).split())
    assert server.url in msg and "Check the catalog URL" in msg and "`srcube catalogs`" in msg
    assert not is_transient(err.value)  # a wrong URL: the flow does not retry it


def test_cli_run_against_a_web_page_exits_2_without_a_traceback(tmp_path: Path):
    out = tmp_path / "never.zarr"
    with CannedServer(CASES["web-page"][0]) as server:
        res = CliRunner().invoke(cli.app, ["run", f"--bbox={','.join(map(str, BBOX))}", f"--dates={SHORT}",
                                           f"--catalog={server.url}", "--model=bicubic", f"--out={out}"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2, text
    assert isinstance(res.exception, SystemExit) and "Traceback" not in text
    assert "is not a STAC API's" in text and "Check the catalog URL" in text
    assert not out.exists() and not Path(f"{out}.lock").exists()


def test_run_region_against_json_of_another_api_raises_before_any_write(tmp_path: Path):
    out = tmp_path / "never.zarr"
    with CannedServer(CASES["other-json"][0]) as server, pytest.raises(NotAStacApiError):
        run_region(BBOX, SHORT, catalog=server.url, out=str(out), model="bicubic")
    assert not out.exists() and not Path(f"{out}.lock").exists()


def test_cli_collections_of_an_api_whose_collection_list_is_a_web_page():
    routes = {**_api((200, JSON, "{}")), "/collections": (200, HTML, "<html><body>maintenance</body></html>")}
    with CannedServer(routes) as server:
        res = CliRunner().invoke(cli.app, ["collections", f"--catalog={server.url}"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "Traceback" not in text, text
    assert "listing the collections of the STAC API" in text and "Check the catalog URL" in text
