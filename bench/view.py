"""``srcube view``'s map page: time to first paint in a real browser, and the tiles and zarr chunks one view reads.

On the sample cube (the demo's region, ``sample.DEFAULT_BBOX`` and ``DEFAULT_DATES``, the bicubic baseline with the
consistency projection; or ``--cube`` any complete cube), served by the view server on 127.0.0.1 and loaded in
headless Chromium (:mod:`srcube.pipeline.testing.browser`; ``scripts/browser.sh`` installs it):

* time to first paint: from asking the browser for the page until every tile of the first view (the whole cube,
  fitted to the window) is drawn; also the page's own figure (``performance.now()`` at that moment, from the start
  of navigation). Each repeat starts a new browser (empty cache) and a new server (empty tile cache, so every tile
  is read from the cube);
* tiles per view: the tile requests the server answered for one view, from a page that has drawn nothing yet,
  with the zarr chunks read from the store (inner chunks of shards: one ranged read each on an object store; a chunk
  that several tiles share is read once, then from the server's read cache) and their bytes (the date's stretch
  included: the quicklook's frame, read once per date), for
  the whole cube fitted to the window, the whole cube at a quarter of that zoom (the overview level), the full
  resolution at the cube's centre, and that view with the swipe (the input's bicubic view on its right half).

Figures are medians over ``--repeats``; the machine's load is printed with them. Ends with one JSON line.
Usage: ``python bench/view.py [--repeats 3] [--cube CUBE] [--size 1200x800]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from srcube.pipeline.testing.browser import Browser
from srcube.pipeline.view.server import ViewServer
from srcube.pipeline.view.tiles import CubeView

READY = "window.srcubeView && srcubeView.info !== null && srcubeView.idle()"


def sample_cube(folder: Path) -> Path:
    from srcube.pipeline import run_region
    from srcube.pipeline.testing import sample

    out = folder / "sample.zarr"
    if not (out / "zarr.json").exists():
        run_region(sample.DEFAULT_BBOX, sample.DEFAULT_DATES, out=str(out), catalog="sample", model="bicubic",
                   consistency=True, bands=["B02", "B03", "B04", "B08"])
    return out


def _stats(url: str) -> dict:
    with urllib.request.urlopen(url + "stats.json", timeout=30) as r:
        return json.loads(r.read())


def first_paint(cube: Path, width: int, height: int) -> tuple[float, float, int]:
    """(seconds from navigation to every tile of the fitted view drawn, the page's own figure, tiles)."""
    with ViewServer(CubeView.open(str(cube))) as server, Browser(width=width, height=height, timeout=120) as browser:
        t0 = time.perf_counter()
        browser.send("Page.navigate", {"url": server.url})
        browser.wait_until("window.srcubeView && srcubeView.firstPaint() !== null", timeout=120)
        wall = time.perf_counter() - t0
        page = float(browser.evaluate("srcubeView.firstPaint()")) / 1000
        return wall, page, _stats(server.url)["tiles"]


VIEWS = {
    "whole cube fitted": lambda info, fit: {"zoom": fit, "cx": info["width"] / 2, "cy": info["height"] / 2},
    "whole cube at 1/4 of that (overviews)": lambda info, fit: {"zoom": fit / 4, "cx": info["width"] / 2,
                                                                 "cy": info["height"] / 2},
    "full resolution, centre": lambda info, fit: {"zoom": 1, "cx": info["width"] / 2, "cy": info["height"] / 2},
    "full resolution, centre, swipe": lambda info, fit: {"zoom": 1, "cx": info["width"] / 2, "cy": info["height"] / 2,
                                                         "swipe": True, "swipePos": 0.5},
}


def per_view(cube: Path, width: int, height: int) -> dict[str, dict]:
    """For each of :data:`VIEWS`, on a fresh server and page: the view's tiles, levels, chunks and bytes read."""
    out = {}
    for name, make in VIEWS.items():
        with ViewServer(CubeView.open(str(cube))) as server, Browser(width=width, height=height,
                                                                     timeout=120) as browser:
            info = json.loads(urllib.request.urlopen(server.url + "info.json", timeout=30).read())
            fit = min((width - 280) / info["width"], height / info["height"])
            state = make(info, fit)
            urllib.request.urlopen(urllib.request.Request(server.url + "stats/reset", method="POST"), timeout=30)
            browser.goto(f"{server.url}#z={state['zoom']}&x={state['cx']}&y={state['cy']}"
                         + (f"&swipe={state['swipePos']}" if state.get("swipe") else ""))
            browser.wait_until(READY, timeout=120)
            stats = _stats(server.url)
            geo = browser.evaluate("srcubeView.origin()")
            out[name] = {"zoom": round(state["zoom"], 4), "level": geo["level"], "tiles": stats["tiles"],
                         "tiles_by_layer": stats["tiles_by_layer"], "chunk_reads": stats["chunk_reads"],
                         "index_reads": stats["index_reads"], "cache_hits": stats["cache_hits"],
                         "mb_read": round(stats["bytes_read"] / 1e6, 2),
                         "reads_by_array": stats["reads_by_array"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cube", type=Path, help="a complete cube (default: the sample cube, made under --work)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "srcube-bench-view")
    ap.add_argument("--size", default="1200x800", help="the browser window, WIDTHxHEIGHT")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    args.work.mkdir(parents=True, exist_ok=True)
    cube = args.cube or sample_cube(args.work)
    view = CubeView.open(str(cube))
    print(f"cube {cube}: {view.levels[1].width} x {view.levels[1].height} px, {len(view.dates)} dates, levels "
          f"{sorted(view.levels)}, window {width} x {height} (map {width - 280} x {height})")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    runs = [first_paint(cube, width, height) for _ in range(args.repeats)]
    wall = statistics.median(r[0] for r in runs)
    page = statistics.median(r[1] for r in runs)
    print(f"time to first paint: {wall:.2f} s from navigation to every tile drawn (page: {page:.2f} s; "
          f"{runs[0][2]} tiles; median of {args.repeats}, min {min(r[0] for r in runs):.2f} s; load {' '.join(load)})")
    views = per_view(cube, width, height)
    for name, v in views.items():
        print(f"{name}: zoom {v['zoom']}, level x{v['level']}: {v['tiles']} tiles ({v['tiles_by_layer']}), "
              f"{v['chunk_reads']} zarr chunks read from the store ({v['mb_read']} MB), {v['cache_hits']} reads from "
              f"the read cache; chunks used by array {v['reads_by_array']}")
    print(json.dumps({"bench": "view", "cube": str(cube), "window": [width, height], "load": load,
                      "first_paint_s": round(wall, 3), "first_paint_page_s": round(page, 3),
                      "first_paint_runs_s": [round(r[0], 3) for r in runs], "views": views}))


if __name__ == "__main__":
    main()
