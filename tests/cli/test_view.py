"""``srcube view``: the command (a real process serving an ``s3://`` cube, stopped with Ctrl-C; what it refuses before
serving) and its page in a real browser: headless Chromium (Debian's package, scripts/browser.sh) driven over the
DevTools protocol (:mod:`srcube.pipeline.testing.browser`) on the small ``view_cube``.

The browser test's tolerance: where the cube has data, the page's pixels at the quicklook's zoom (one screen pixel per
pixel of overview level 4, the level ``srcube quicklook`` reads for this cube) are the quicklook's within 2 of 255 per
channel (drawn 1:1 they are equal; the 2 allow for a colour conversion on the way to the screenshot). Screenshots are
written under the test's ``tmp_path`` (their paths are printed).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from srcube.cli.commands import app
from srcube.pipeline.testing.browser import Browser, find_chromium
from srcube.pipeline.view.server import ViewServer
from srcube.pipeline.view.tiles import TILE, CubeView
from srcube.pipeline.write.quicklook import cube_quicklook
from srcube.pipeline.write.store import CubeStore
from tests.support.helpers import S3_CREDS, stop_process_group

pytestmark = pytest.mark.integration
runner = CliRunner()


def _get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)


def test_srcube_view_serves_an_s3_cube_until_ctrl_c(view_cube, s3_endpoint, tmp_path):
    """Credentials and endpoint from AWS_* as for srcube info, quicklook and export; the URL printed; Ctrl-C ends it
    with exit status 0 and no traceback."""
    import s3fs

    env = {**S3_CREDS, "AWS_ENDPOINT_URL": s3_endpoint}
    s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                      client_kwargs={"endpoint_url": s3_endpoint, "region_name": env["AWS_REGION"]}).put(
        str(view_cube), "cubes/cli/corner.zarr", recursive=True)
    proc = subprocess.Popen([sys.executable, "-m", "srcube.cli", "view", "s3://cubes/cli/corner.zarr", "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **env})
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
    try:
        deadline, line = time.monotonic() + 120, ""
        while "http://127.0.0.1:" not in line:
            try:
                line = out.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"srcube view printed no URL: {proc.stderr.read() if proc.poll() is not None else ''}")
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        assert _get(port, "/")[0] == 200
        assert json.loads(_get(port, "/info.json")[1])["url"] == "s3://cubes/cli/corner.zarr"
        status, png = _get(port, "/tiles/1/1/1.png?t=1&layer=false")
        assert status == 200 and Image.open(io.BytesIO(png)).size == (TILE, TILE)
        assert _get(port, "/tiles/1/1/1.png?t=9&layer=false")[0] == 404
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        err = proc.stderr.read()
        assert "stopped" in err and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            stop_process_group(proc)


def test_srcube_view_refuses_what_it_cannot_serve_before_serving(view_cube, tmp_path):
    unfinished = tmp_path / "unfinished.zarr"
    shutil.copytree(view_cube, unfinished)
    doc = json.loads((unfinished / "zarr.json").read_text())
    doc["attributes"]["complete"] = False
    (unfinished / "zarr.json").write_text(json.dumps(doc))
    res = runner.invoke(app, ["view", str(unfinished), "--no-browser"])
    assert res.exit_code == 2 and "is not complete" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["view", str(tmp_path / "absent.zarr"), "--no-browser"])
    assert res.exit_code == 2 and "nothing there" in res.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = runner.invoke(app, ["view", str(view_cube), "--no-browser", "--port", str(port)])
    assert res.exit_code == 2 and f"port {port} on 127.0.0.1 is in use" in res.output


# --- the page in a real browser -----------------------------------------------------------------------------------

WIDTH, HEIGHT, PANEL = 800, 600, 280  # the page's side panel is 280 px wide: the map is the rest


@pytest.fixture(scope="module")
def page(view_cube):
    if find_chromium() is None:
        pytest.skip("no Chromium here (the map page's browser test): scripts/browser.sh installs Debian's chromium")
    with ViewServer(CubeView.open(str(view_cube))) as server, Browser(width=WIDTH, height=HEIGHT) as browser:
        yield server, browser


def _show(browser: Browser, state: dict | None = None) -> dict:
    """Apply a state to the page, wait until every tile in view is drawn; the view's geometry."""
    if state is not None:
        browser.evaluate(f"srcubeView.set({json.dumps(state)})")
    browser.wait_until("window.srcubeView && srcubeView.info !== null && srcubeView.idle()")
    return dict(browser.evaluate("srcubeView.origin()"))


def _shot(browser: Browser, path) -> np.ndarray:
    png = browser.screenshot(path)
    print(f"screenshot: {path}")
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _quicklook(view_cube, date: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(cube_quicklook(CubeStore(str(view_cube)), date=date))).convert("RGB"))


def test_the_page_in_a_real_browser(page, view_cube, tmp_path):
    server, browser = page
    view = server.view
    assert _get(server.port, "/stats/reset", "POST")[0] == 200
    browser.goto(server.url + "#t=0&z=0.25&x=314&y=298")
    geo = _show(browser)
    assert geo["level"] == 4 and geo["w"] == WIDTH - PANEL and geo["h"] == HEIGHT
    ox, oy = geo["ox"], geo["oy"]
    lvl = view.levels[4]
    shots = {}
    for t in (0, 1):
        if t:
            geo = _show(browser, {"t": 1})
        shot = _shot(browser, tmp_path / f"view-overview-t{t}.png")
        shots[t] = got = shot[oy : oy + lvl.height, ox : ox + lvl.width]
        data = np.isfinite(view.window(4, t, view.composites["true"], 0, lvl.height, 0, lvl.width)).all(axis=0)
        assert data.mean() > 0.5 and got[data].std() > 10, "the map is blank"
        # the quicklook of the same date: the same pixels where the cube has data
        assert np.abs(got[data] - _quicklook(view_cube, view.dates[t])[data]).max() <= 2
    both = np.isfinite(view.window(4, 0, ["B04"], 0, lvl.height, 0, lvl.width))[0] & \
        np.isfinite(view.window(4, 1, ["B04"], 0, lvl.height, 0, lvl.width))[0]
    assert np.abs(shots[0][both] - shots[1][both]).mean() > 3, "changing the date changed nothing"
    stats = json.loads(_get(server.port, "/stats.json")[1])
    assert {e[0] for e in stats["tile_log"]} == {4}  # zoomed out: the overview level only
    assert "reflectance" not in stats["reads_by_array"]

    # zoomed in to full resolution: the tiles in view and no other are asked for, from the full-resolution array
    assert _get(server.port, "/stats/reset", "POST")[0] == 200
    geo = _show(browser, {"t": 0, "zoom": 2, "cx": 314, "cy": 298})
    assert geo["level"] == 1
    span = TILE * geo["zoom"]
    expected = {(ty, tx) for ty in range(3) for tx in range(3)
                if geo["ox"] + tx * span < geo["w"] and geo["ox"] + (tx + 1) * span > 0
                and geo["oy"] + ty * span < geo["h"] and geo["oy"] + (ty + 1) * span > 0}
    assert 0 < len(expected) < 9
    stats = json.loads(_get(server.port, "/stats.json")[1])
    assert sorted((e[1], e[2]) for e in stats["tile_log"]) == sorted(expected)
    assert {(e[0], e[3], e[4]) for e in stats["tile_log"]} == {(1, 0, "true")}
    assert set(stats["reads_by_array"]) == {"reflectance"}
    plain = _shot(browser, tmp_path / "view-full-resolution.png")

    # the swipe: the super-resolved image left of the line, the bicubic view of the input right of it
    geo = _show(browser, {"swipe": True, "swipePos": 0.5})
    swiped = _shot(browser, tmp_path / "view-swipe.png")
    split = round(0.5 * geo["w"])
    rows = slice(40, geo["h"] - 40)  # the swipe's labels at the top, the cursor's box at the bottom
    left, right = slice(0, split - 10), slice(split + 10, geo["w"])
    np.testing.assert_array_equal(swiped[rows, left], plain[rows, left])
    change = np.abs(swiped[rows, right] - plain[rows, right])
    assert change.mean() > 0.5 and change.max() > 20, "the swipe shows the same image on both sides"
    assert change.mean() < 20  # the same place: the input's view, not another image
    inputs = {e[4] for e in json.loads(_get(server.port, "/stats.json")[1])["tile_log"]}
    assert inputs == {"true", "true-input"}

    # the cursor's place in the cube's CRS
    browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 101, "y": 75})
    text = browser.evaluate("document.getElementById('cursor').textContent")
    a, _, c, _, e, f = view.info()["transform"]
    col, row = (101 - geo["ox"]) / geo["zoom"], (75 - geo["oy"]) / geo["zoom"]
    shown = re.fullmatch(r"EPSG:32631  x (\S+)  y (\S+)  \(pixel (\d+), (\d+)\)", text)
    assert shown, text
    assert abs(float(shown[1]) - (a * col + c)) <= 0.051 and abs(float(shown[2]) - (e * row + f)) <= 0.051  # 0.1 m
    assert (int(shown[3]), int(shown[4])) == (int(col), int(row))

    # every request the page made went to this server
    urls = list(browser.requests())
    assert urls and all(u.startswith(server.url) for u in urls), [u for u in urls if not u.startswith(server.url)]
