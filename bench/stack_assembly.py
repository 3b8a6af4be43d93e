"""Stack assembly throughput and memory: srcube vs a plain odc.stac.load of the same items.

Both stream the same stack (4 bands + SCL, 6 solar days of the sample archive, 10 m) into a zarr
store with the same chunks, on the dask threaded scheduler:

* srcube: ``assemble`` (band mapping, georef check, per-item scaling and harmonisation, NaN no
  data, grouping by solar day) + ``StackCache.save`` (reflectance float32 + raw SCL);
* plain: ``odc.stac.load`` of the same items on the same grid, raw DN to zarr.

The outputs differ in kind (srcube writes float32 reflectance + uint8 SCL, plain writes uint16
DN), so the ratio includes srcube's scaling and wider dtype. Throughput is in Mpix/s of frame
pixels (time x y x x, each with 4 bands + SCL) and in Mvalues/s.

Each run is a fresh subprocess, so its peak RSS is its own (sampled every 5 ms while the work runs;
``work_rss`` is the rise over the RSS after imports). 1x area = 320 x 320 px, 4x = 640 x 640.
Prints a table and ends with one JSON line. Usage: ``python bench/stack_assembly.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/models.py sits beside this script: keep this folder off sys.path so `import models` is the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

BANDS = ["B02", "B03", "B04", "B08"]
SIDE = {1: 320, 4: 640}  # pixels at 10 m


def _bbox(area: int) -> tuple[float, float, float, float]:
    from pyproj import Transformer

    side = SIDE[area] * 10.0
    x0, y1 = 600000.0 + 400.0, 5700000.0  # inside the union of the two sample tiles (7680 x 6400 m)
    tr = Transformer.from_crs(32631, 4326, always_xy=True)
    lon0, lat0 = tr.transform(x0 + 5, y1 - side + 5)
    lon1, lat1 = tr.transform(x0 + side - 5, y1 - 5)
    return (lon0, lat0, lon1, lat1)


class RssSampler:
    """Samples this process's resident set size every 5 ms (Linux /proc) while the work runs."""

    def __init__(self) -> None:
        import threading

        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.current())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def worker(kind: str, area: int, archive: str, out: str) -> dict:
    import dask
    import odc.stac

    from srcube.pipeline.assemble.stack import assemble, native_grid
    from srcube.pipeline.assemble.stackcache import StackCache
    from srcube.pipeline.params import BBox, DateRange
    from srcube.pipeline.search import catalog as cat
    from srcube.pipeline.sensors import SENTINEL2
    from srcube.pipeline.testing.sample import DEFAULT_DATES
    from srcube.pipeline.testing.stac_server import StacServer

    dask.config.set(scheduler="threads")
    bbox = BBox(*_bbox(area))
    with StacServer(Path(archive)) as server:
        client = cat.open_catalog(cat.resolve_catalog(server.url))
        items = cat.search(client, "sentinel-2-l2a", bbox, DateRange.parse(DEFAULT_DATES))
    baseline = RssSampler.current()
    t0 = time.perf_counter()
    with RssSampler() as rss:
        if kind == "srcube":
            stack = assemble(items, bbox, BANDS, sensor=SENTINEL2, chunk=256)
            StackCache(out).save("bench", stack, {"bench": True}, None, 256)
            shape = stack.reflectance.shape
        else:
            grid = native_grid(items, BANDS, bbox)
            ds = odc.stac.load(items, bands=[*BANDS, "SCL"], geobox=grid.geobox(bbox), groupby="solar_day",
                               chunks={"time": 1, "y": 256, "x": 256})
            ds.to_zarr(out + "/plain.zarr", mode="w", zarr_format=3, consolidated=False)
            shape = (ds.sizes["time"], len(BANDS), ds.sizes["y"], ds.sizes["x"])
    seconds = time.perf_counter() - t0
    values = shape[0] * (shape[1] + 1) * shape[2] * shape[3] / 1e6  # bands + SCL
    pixels = shape[0] * shape[2] * shape[3] / 1e6  # frame pixels (each with 4 bands + SCL)
    return {"kind": kind, "area": area, "seconds": round(seconds, 3), "mvalues": round(values, 3),
            "mpix": round(pixels, 3), "mpix_per_s": round(pixels / seconds, 3),
            "mvalues_per_s": round(values / seconds, 2), "rss_before_mb": round(baseline, 1),
            "peak_rss_mb": round(rss.peak, 1), "work_rss_mb": round(rss.peak - baseline, 1),
            "lifetime_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["srcube", "plain"])
    parser.add_argument("--area", type=int, choices=[1, 4])
    parser.add_argument("--archive")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.area, args.archive, args.out)))
        return
    from srcube.pipeline.testing import sample

    tmp = Path(tempfile.mkdtemp(prefix="srcube-bench-stack-"))
    archive = sample.ensure_archive(tmp / "archive")
    rows = {}
    for area in (1, 4):
        for kind in ("plain", "srcube"):
            proc = subprocess.run([sys.executable, __file__, "--worker", kind, "--area", str(area), "--archive",
                                   str(archive), "--out", str(tmp / f"{kind}-{area}")],
                                  capture_output=True, text=True, check=True, env=os.environ.copy())
            rows[(kind, area)] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = rows[(kind, area)]
            print(f"{kind:7s} {area}x area  {r['seconds']:6.2f} s  {r['mpix_per_s']:7.3f} Mpix/s "
                  f"({r['mvalues_per_s']:6.2f} Mvalues/s)  "
                  f"peak RSS {r['peak_rss_mb']:7.1f} MB (+{r['work_rss_mb']:.1f} MB over the "
                  f"{r['rss_before_mb']:.0f} MB after imports)  ({r['mvalues']} M values)")
    figures = {
        "bench": "stack_assembly", "device": "cpu", "cpu_count": os.cpu_count(),
        "srcube_mpix_per_s_1x": rows[("srcube", 1)]["mpix_per_s"],
        "plain_mpix_per_s_1x": rows[("plain", 1)]["mpix_per_s"],
        "srcube_mpix_per_s_4x": rows[("srcube", 4)]["mpix_per_s"],
        "plain_mpix_per_s_4x": rows[("plain", 4)]["mpix_per_s"],
        "srcube_mvalues_per_s_1x": rows[("srcube", 1)]["mvalues_per_s"],
        "plain_mvalues_per_s_1x": rows[("plain", 1)]["mvalues_per_s"],
        "srcube_mvalues_per_s_4x": rows[("srcube", 4)]["mvalues_per_s"],
        "plain_mvalues_per_s_4x": rows[("plain", 4)]["mvalues_per_s"],
        "srcube_vs_plain_1x": round(rows[("srcube", 1)]["mvalues_per_s"] / rows[("plain", 1)]["mvalues_per_s"], 3),
        "srcube_vs_plain_4x": round(rows[("srcube", 4)]["mvalues_per_s"] / rows[("plain", 4)]["mvalues_per_s"], 3),
        "srcube_peak_rss_mb_1x": rows[("srcube", 1)]["peak_rss_mb"],
        "srcube_peak_rss_mb_4x": rows[("srcube", 4)]["peak_rss_mb"],
        "plain_peak_rss_mb_1x": rows[("plain", 1)]["peak_rss_mb"],
        "plain_peak_rss_mb_4x": rows[("plain", 4)]["peak_rss_mb"],
        "srcube_work_rss_mb_1x": rows[("srcube", 1)]["work_rss_mb"],
        "srcube_work_rss_mb_4x": rows[("srcube", 4)]["work_rss_mb"],
        "plain_work_rss_mb_1x": rows[("plain", 1)]["work_rss_mb"],
        "plain_work_rss_mb_4x": rows[("plain", 4)]["work_rss_mb"],
        "srcube_rss_4x_over_1x": round(rows[("srcube", 4)]["peak_rss_mb"] / rows[("srcube", 1)]["peak_rss_mb"], 3),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
