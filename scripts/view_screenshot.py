"""The README's screenshot of ``srcube view``: the page on a cube of the real 29RKH scene, made from ../shared.

The cube is made as ``scripts/real_scene_quicklook.py`` makes it (Earth Search's S2A 29RKH 2020-02-19, its COGs
decimated 10x to 100 m in ../shared, served by a local STAC API; B02/B03/B04/B08 x4 with the default learned model and
its consistency projection), then served by ``srcube view``'s server and loaded in headless Chromium
(:mod:`srcube.pipeline.testing.browser`, ``scripts/browser.sh`` installs it): true colour at full resolution with the
swipe between the super-resolved image and the bicubic view of its input (zoomed in 1.5x on the dark outcrop in the
north-west), and the clear layer over it. The PNG is
reduced to a palette of 256 colours so that it stays small enough to commit (under 300 KB).
Usage: ``python scripts/view_screenshot.py OUT_FOLDER [--png docs/view-real-29RKH-20200219.png] [--model auto]``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_scene_quicklook import real_cube

from srcube.pipeline.testing.browser import Browser
from srcube.pipeline.view.server import ViewServer
from srcube.pipeline.view.tiles import CubeView

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 300_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for the cube (made once; --remake makes it again)")
    ap.add_argument("--png", type=Path, default=REPO / "docs" / "view-real-29RKH-20200219.png")
    ap.add_argument("--model", default="auto")
    ap.add_argument("--bbox", default="-11.6,24.9,-11.2,25.3")
    ap.add_argument("--remake", action="store_true")
    ap.add_argument("--state", default='{"zoom": 1.5, "cx": 640, "cy": 560, "swipe": true, "swipePos": 0.5, '
                                       '"overlays": {"clear": {"on": true, "opacity": 0.45}}}',
                    help="the page's state (JSON, as srcubeView.set takes it)")
    ap.add_argument("--size", default="1100x660", help="the browser window, WIDTHxHEIGHT")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cube = args.out / "real.zarr"
    if args.remake or not (cube / "zarr.json").exists():
        cube, ds, seconds = real_cube(args.out, args.model, args.bbox)
        print(f"{cube}: {dict(ds.sizes)}, model {ds.attrs['model']}, {seconds:.1f} s")
    width, height = (int(v) for v in args.size.split("x"))
    with ViewServer(CubeView.open(str(cube))) as server, Browser(width=width, height=height) as browser:
        browser.goto(server.url)
        browser.wait_until("window.srcubeView && srcubeView.info !== null && srcubeView.idle()", timeout=120)
        browser.evaluate(f"srcubeView.set({json.dumps(json.loads(args.state))})")
        browser.wait_until("srcubeView.idle()", timeout=120)
        png = browser.screenshot()
        state = browser.evaluate("location.hash")
    image = Image.open(io.BytesIO(png)).convert("RGB")
    for colours in (256, 192, 128, 96, 64):
        buf = io.BytesIO()
        image.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buf, format="PNG", optimize=True)
        if buf.tell() <= MAX_BYTES:
            break
    args.png.parent.mkdir(parents=True, exist_ok=True)
    args.png.write_bytes(buf.getvalue())
    print(f"{args.png}: {buf.tell() / 1000:.0f} KB, {colours} colours, page state {state}")


if __name__ == "__main__":
    main()
