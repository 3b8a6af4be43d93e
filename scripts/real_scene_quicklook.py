"""A cube of a real Sentinel-2 scene and its quicklook, from ../shared (nothing downloaded).

The scene is Earth Search's S2A 29RKH 2020-02-19 (COGs decimated 10x in ../shared: 100 m), served by a local
STAC API; srcube super-resolves B02/B03/B04/B08 x4 with the default learned model, writes the cube (with its
overviews), and ``srcube quicklook`` reads the PNG from them. Usage:
``python scripts/real_scene_quicklook.py OUT_FOLDER [--model auto]``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import pystac

from srcube.pipeline import run_region
from srcube.pipeline.errors import GeorefMismatchWarning
from srcube.pipeline.testing.sample import write_catalog_files
from srcube.pipeline.testing.stac_server import StacServer
from srcube.pipeline.write.quicklook import cube_quicklook
from srcube.pipeline.write.store import CubeStore

FILES = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "scl": "SCL"}
SCENE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sentinel2_l2a_cog_S2A_29RKH_20200219"


def real_cube(out: Path, model: str = "auto", bbox: str = "-11.6,24.9,-11.2,25.3") -> tuple[Path, Any, float]:
    """(the cube at ``out/real.zarr``, its dataset, seconds) of the scene's ``bbox``, served by a local STAC API from a
    catalog written under ``out/catalog`` (the item's hrefs rewritten to the files in ../shared)."""
    doc = json.loads((SCENE / "S2A_29RKH_20200219_0_L2A.json").read_text())
    doc["links"] = [link for link in doc["links"] if link["rel"] not in ("self", "canonical")]
    doc["assets"] = {k: {**a, "href": (SCENE / f"{FILES[k]}.tif").as_uri()} for k, a in doc["assets"].items()
                     if k in FILES}
    item = pystac.Item.from_dict(doc)
    collection = pystac.Collection(
        "sentinel-2-l2a", "one real Earth Search item, re-hosted",
        pystac.Extent(pystac.SpatialExtent([list(item.bbox)]), pystac.TemporalExtent([[item.datetime, item.datetime]])),
        license="proprietary")
    write_catalog_files(out / "catalog", collection, [item])
    cube = out / "real.zarr"
    with StacServer(out / "catalog") as server, warnings.catch_warnings():
        warnings.simplefilter("ignore", GeorefMismatchWarning)  # the files are 100 m, the item says 10 m
        t0 = time.perf_counter()
        ds = run_region(tuple(float(v) for v in bbox.split(",")), "2020-02-19/2020-02-19", catalog=server.url,
                        bands=["B02", "B03", "B04", "B08"], out=str(cube), model=model, overwrite=True)
        seconds = time.perf_counter() - t0
    return cube, ds, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default="auto")
    ap.add_argument("--bbox", default="-11.6,24.9,-11.2,25.3")
    ap.add_argument("--size", type=int, default=768, help="longest side of the quicklook (px)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cube, ds, seconds = real_cube(args.out, args.model, args.bbox)
    png = args.out / "real-quicklook.png"
    png.write_bytes(cube_quicklook(CubeStore(str(cube)), max_side=args.size))
    print(f"{cube}: {dict(ds.sizes)} at {ds.rio.resolution()[0]} m, model {ds.attrs['model']}, "
          f"overviews x{ds.attrs['overviews']['factors']}, {seconds:.1f} s; quicklook {png}")


if __name__ == "__main__":
    main()
