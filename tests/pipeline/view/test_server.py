"""The map page's server on 127.0.0.1, asked over HTTP as a browser asks it: the page and its own files (nothing from
elsewhere), the cube's description, PNG tiles per level with what they read counted, one-line 4xx answers to bad
requests, and a cube in an S3-compatible object store (moto on loopback) served like a local one."""

from __future__ import annotations

import http.client
import io
import json
import logging
import re

import pytest
from PIL import Image

from srcube.pipeline.view.server import CSP, ViewServer
from srcube.pipeline.view.tiles import CubeView
from tests.support.helpers import S3_CREDS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(view_cube):
    with ViewServer(CubeView.open(str(view_cube))) as srv:
        yield srv


def get(server, path, method="GET", host=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, headers={"Host": host} if host else {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def test_the_server_listens_on_loopback_only(server):
    assert server.server_address[0] == "127.0.0.1" and server.url == f"http://127.0.0.1:{server.port}/"


def test_the_page_is_the_packages_own_files_and_asks_for_nothing_elsewhere(server):
    status, headers, body = get(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"] == CSP and "default-src 'none'" in CSP
    page = body.decode()
    for path in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert path.startswith("/static/"), path  # no CDN, no font, no basemap
        assert get(server, path)[0] == 200
    script = get(server, "/static/view.js")[2].decode()
    assert not re.search(r"https?://", script), "the script names no other server"
    assert "innerHTML" not in script  # what the cube says is shown as text


def test_info_describes_the_cube(server, view_cube):
    status, headers, body = get(server, "/info.json")
    info = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert info["name"] == "corner.zarr" and info["crs"] == "EPSG:32631" and info["tile"] == 256
    assert [lvl["factor"] for lvl in info["levels"]] == [1, 4]
    assert info["layers"] == ["true", "false", "true-input", "false-input", "clear", "consistency"]
    assert "derived per tile" in info["input_view"]["text"] and "exact" in info["input_view"]["text"]


def test_tiles_are_pngs_read_from_the_level_asked_for(server):
    assert get(server, "/stats/reset", "POST")[0] == 200
    shapes = {}
    for level, ty, tx in [(1, 0, 0), (1, 2, 2), (4, 0, 0)]:
        status, headers, body = get(server, f"/tiles/{level}/{ty}/{tx}.png?t=0&layer=true")
        assert status == 200 and headers["Content-Type"] == "image/png"
        shapes[(level, ty, tx)] = Image.open(io.BytesIO(body)).size
    assert shapes == {(1, 0, 0): (256, 256), (1, 2, 2): (628 - 512, 596 - 512), (4, 0, 0): (157, 149)}
    stats = json.loads(get(server, "/stats.json")[2])
    assert stats["tiles"] == 3 and stats["tiles_by_level"] == {"1": 2, "4": 1}
    assert stats["tile_log"] == [[1, 0, 0, 0, "true"], [1, 2, 2, 0, "true"], [4, 0, 0, 0, "true"]]
    # the full-resolution tiles read the full-resolution array, the overview tile its level (and the date's
    # stretch reads the quicklook's frame: that level too)
    assert set(stats["reads_by_array"]) == {"reflectance", "overviews/4/reflectance"}
    legend = json.loads(get(server, "/legend.json?t=0&layer=true")[2])
    assert legend["bands"] == ["B04", "B03", "B02"] and 0 < legend["lo"] < legend["hi"] < 1


@pytest.mark.parametrize(("path", "status", "said"), [
    ("/tiles/1/0/0.png?t=0&layer=ndvi", 400, "layer 'ndvi' is not one of"),
    ("/tiles/1/0/0.png?t=x&layer=true", 400, "not a whole number"),
    ("/tiles/1/0/0.png?layer=true", 400, "give one t= parameter"),
    ("/tiles/1/0/0.png?t=0&t=1&layer=true", 400, "give one t= parameter"),
    ("/tiles/1/9/0.png?t=0&layer=true", 404, "level 1 has tiles 0..2 x 0..2"),
    ("/tiles/8/0/0.png?t=0&layer=true", 404, "no level 8; the levels are 1, 4"),
    ("/tiles/1/0/0.png?t=5&layer=true", 404, "date index t=5"),
    ("/tiles/1/-1/0.png?t=0&layer=true", 404, "not a tile path"),
    ("/tiles/1/0/0.jpg?t=0&layer=true", 404, "not a tile path"),
    ("/tiles/../../etc/passwd", 404, "not a tile path"),
    ("/static/../tiles.py", 404, "no such page"),
    ("/legend.json?t=0&layer=consistency-input", 400, "not one of"),
    ("/legend.json?t=&layer=true", 400, "not a whole number"),
    ("/legend.json?t=%C2%B2&layer=true", 400, "not a whole number"),
    ("/tiles/1/0/0.png?t=99999999&layer=true", 400, "not a whole number"),
    ("/nothing", 404, "no such page"),
])
def test_bad_requests_get_a_4xx_with_a_reason_not_a_traceback(server, caplog, path, status, said):
    with caplog.at_level(logging.DEBUG, logger="srcube.pipeline.view"):
        got, headers, body = get(server, path)
    assert got == status and headers["Content-Type"].startswith("text/plain")
    assert said in body.decode() and "Traceback" not in body.decode()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


def test_requests_for_another_host_name_are_refused(server):
    """A DNS name bound to 127.0.0.1 by a page elsewhere (DNS rebinding) does not reach the cube."""
    assert get(server, "/info.json", host="evil.example:80")[0] == 403
    assert get(server, "/stats/reset", "POST", host=f"evil.example:{server.port}")[0] == 403
    assert get(server, "/info.json", host=f"localhost:{server.port}")[0] == 200


def test_a_cube_in_an_object_store_is_served_as_a_local_one(view_cube, s3_endpoint):
    import s3fs

    options = {"key": S3_CREDS["AWS_ACCESS_KEY_ID"], "secret": S3_CREDS["AWS_SECRET_ACCESS_KEY"],
               "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": S3_CREDS["AWS_REGION"]}}
    s3fs.S3FileSystem(**options).put(str(view_cube), "cubes/view/corner.zarr", recursive=True)
    url = "s3://cubes/view/corner.zarr"
    remote, local = CubeView.open(url, options), CubeView.open(str(view_cube))
    assert remote.info()["transform"] == local.info()["transform"]
    with ViewServer(remote) as srv:
        for path in ["/tiles/1/1/1.png?t=1&layer=true", "/tiles/4/0/0.png?t=0&layer=false",
                     "/tiles/1/0/2.png?t=1&layer=true-input", "/tiles/1/0/0.png?t=1&layer=clear"]:
            status, _, body = get(srv, path)
            level, ty, tx = (int(v) for v in path.split("?")[0][len("/tiles/"):-len(".png")].split("/"))
            query = dict(p.split("=") for p in path.split("?")[1].split("&"))
            assert status == 200 and body == local.tile_png(level, ty, tx, int(query["t"]), query["layer"]), path
        stats = json.loads(get(srv, "/stats.json")[2])
    assert stats["tiles"] == 4 and stats["chunk_reads"] > 0 and stats["bytes_read"] > 0
