"""A country-size request on paper and in a dry run: how big it is, what each piece of srcube's design costs
at that size, and where the design breaks first.

The request (defaults): 300 x 300 km of Sentinel-2 at 10 m, one year (73 dates: one every 5 days), 4 bands,
x4 with the default model's tiles and halo. Nothing is read: the dry run builds srcube's own cube graph
(``write.cube.single_image_cube``, the engine, the store) over a synthetic all-zero stack of the full area,
with a no-op model that has the default model's receptive field, for ``--measure-dates`` dates, and measures

* graph build, template write (zarr metadata) and ``write_batches`` time and the client's memory for them,
  which grow with the number of chunks (measured at 1 and 2 dates, extrapolated linearly to the year);
* one write batch of the Prefect flow (``--batch`` output locations): tasks in its graph, the time to build
  and run it on a LocalCluster (no-op model, real zarr writes to a temporary folder) and the scheduler's
  memory before and during it;
* the model's throughput per tile on this machine's device (a real forward pass of the default model on
  one tile), or ``--mpix-per-s`` (e.g. a GPU's figure from ``bench/inference.py``), to project the wall
  time on N workers.

Prints figures and ends with one JSON line. Usage:
``python bench/scale_plan.py [--km 300] [--dates 73] [--workers-n 8] [--mpix-per-s X]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

# bench/models.py sits beside this script: keep this folder off sys.path so `import models` is the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402
from odc.geo.geobox import GeoBox  # noqa: E402
from odc.geo.xr import xr_coords  # noqa: E402

from srcube import models  # noqa: E402
from srcube.models import SRModel  # noqa: E402
from srcube.models.consistency import Projection  # noqa: E402
from srcube.pipeline.assemble.clearance import FrameDecision  # noqa: E402
from srcube.pipeline.cluster import culled  # noqa: E402
from srcube.pipeline.options import RunOptions  # noqa: E402
from srcube.pipeline.sr.infer import ResolvedModel, tile_margin, tile_spec, wants_consistency  # noqa: E402
from srcube.pipeline.write.cube import encoding, single_image_cube, write_batches  # noqa: E402
from srcube.pipeline.write.store import CubeStore  # noqa: E402

RES = 10.0
S3_PUT_PER_PREFIX_S = 3500  # Amazon S3's documented PUT rate per prefix (requests per second)
DASK_GRAPH_LIMIT = 100_000  # tasks: above this a single graph's scheduling overhead dominates (Dask best practice)


class NoOp(SRModel):
    """Zeros at ``scale`` x: the default model's shape and receptive field, none of its compute."""

    name = "noop"

    def __init__(self, scale: int, receptive_field: int) -> None:
        super().__init__(scale=scale)
        self._rf = receptive_field

    @property
    def receptive_field(self) -> int:
        return self._rf

    def sr(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], x.shape[1], x.shape[2] * self.scale, x.shape[3] * self.scale)


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic_stack(n_px: int, n_dates: int, bands: int, halo: int, tile: int) -> xr.Dataset:
    """An all-zero lazy stack of ``n_px`` x ``n_px`` input pixels (plus the halo) as ``assemble`` returns it."""
    gbox = GeoBox.from_bbox((500000.0, 5600000.0, 500000.0 + n_px * RES, 5600000.0 + n_px * RES), "EPSG:32631",
                            resolution=RES).pad(halo)
    ny, nx = gbox.shape
    refl = da.zeros((n_dates, bands, ny, nx), dtype=np.float32, chunks=(1, bands, tile, tile))
    clear = da.ones((n_dates, ny, nx), dtype=bool, chunks=(1, tile, tile))
    coords = {"time": np.datetime64("2025-01-01", "ns") + np.arange(n_dates) * np.timedelta64(5, "D"),
              "band": [f"B{i}" for i in range(bands)], **xr_coords(gbox, crs_coord_name="spatial_ref")}
    ds = xr.Dataset({"reflectance": (("time", "band", "y", "x"), refl), "clear": (("time", "y", "x"), clear)},
                    coords=coords)
    return ds.assign_coords(items=("time", [f"item-{i}" for i in range(n_dates)])).assign_attrs(
        halo=halo, grid_epsg=32631, resolution=RES)


def dry_run(n_px: int, n_dates: int, bands: int, plan: dict, tmp: Path, batch: int) -> dict:
    """srcube's cube graph, template and batches for ``n_dates`` dates over the full area (no model work)."""
    gc.collect()
    rss0, t0 = _rss_mb(), time.perf_counter()
    stack = synthetic_stack(n_px, n_dates, bands, plan["halo"], plan["tile"])
    frames = [FrameDecision(str(t)[:10], 1.0, 1.0, True, "clear") for t in stack.time.values]
    opts = RunOptions()
    cube = single_image_cube(stack, frames, plan["model"], plan["tiles"], None, opts, None, plan["consistency"],
                             "sentinel-2")
    enc = encoding(cube, plan["tiles"], opts.dtype)
    graph_s = time.perf_counter() - t0
    store = CubeStore(str(tmp / f"dry-{n_dates}.zarr"))
    t0 = time.perf_counter()
    store.write_template(cube, enc, template_only=True)
    template_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batches = write_batches(cube, batch)
    batches_s = time.perf_counter() - t0
    batches_json_mb = len(json.dumps([[[n, list(i)] for n, i in b] for b in batches])) / 2**20
    chunks = sum(len(b) for b in batches)
    return {"dates": n_dates, "graph_build_s": graph_s, "template_s": template_s, "write_batches_s": batches_s,
            "chunks": chunks, "batches": len(batches), "batches_json_mb": batches_json_mb,
            "client_rss_growth_mb": _rss_mb() - rss0, "cube": cube, "enc": enc, "store": store,
            "batch_list": batches}


def one_batch(run: dict, workers: int) -> dict:
    """Build and run one write batch of the flow on a LocalCluster; tasks and scheduler memory."""
    from distributed import Client, LocalCluster

    cube, enc, store, batches = run["cube"], run["enc"], run["store"], run["batch_list"]
    mid = batches[len(batches) // 2]  # an interior batch: tiles with neighbours on every side
    t0 = time.perf_counter()
    writes = culled(store.chunk_writes(cube, enc, only=mid))  # as run_region and the flow compute them
    tasks = len(dask.base.collections_to_expr(writes, optimize_graph=False).__dask_graph__())
    build_s = time.perf_counter() - t0

    def sched_rss() -> float:
        import psutil as p

        return p.Process().memory_info().rss / 2**20

    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as lc, Client(lc) as client:
        client.run(lambda: torch.set_num_threads(1))
        before = client.run_on_scheduler(sched_rss)
        t0 = time.perf_counter()
        futures = client.compute(writes, optimize_graph=False)  # as pipeline.cluster.compute does
        time.sleep(0.5)
        during = client.run_on_scheduler(sched_rss)
        client.gather(futures)
        run_s = time.perf_counter() - t0
    return {"locations": len({(i[-2], i[-1]) for _, i in mid}), "chunk_writes": len(mid), "tasks": tasks,
            "graph_build_s": build_s, "run_s": run_s, "scheduler_rss_before_mb": before,
            "scheduler_rss_during_mb": during}


def tile_throughput(name: str, tile: int, margin: int) -> float:
    """Output Mpix/s of one forward pass of the model on one tile (with its margins) on this device."""
    _, model = models.resolve(name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    x = torch.rand(1, 1, tile + 2 * margin, tile + 2 * margin, device=device) * 0.3
    with torch.inference_mode():
        model(x)
        t0 = time.perf_counter()
        for _ in range(2):
            model(x)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / 2
    return (tile * model.scale) ** 2 / seconds / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--km", type=float, default=300.0, help="side of the square region in km")
    parser.add_argument("--dates", type=int, default=73, help="acquisition dates in the year (kept frames)")
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--model", default="s2-sisr-x4")
    parser.add_argument("--batch", type=int, default=8, help="output locations per write batch (the flow's)")
    parser.add_argument("--measure-dates", type=int, default=2, help="dates the dry run builds (1 and this)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers for the one-batch run")
    parser.add_argument("--workers-n", type=int, default=8, help="GPU workers to project the wall time on")
    parser.add_argument("--mpix-per-s", type=float, default=None,
                        help="output Mpix/s per worker per band (default: measured here on one tile)")
    args = parser.parse_args()

    _, local = models.resolve(args.model)
    projection = Projection.for_sensor("sentinel-2", local.scale) if wants_consistency(local, None) else None
    margin = tile_margin(local, projection)
    tiles = tile_spec(None, margin, local.scale, projection)
    plan = {"tile": tiles.tile, "halo": margin, "tiles": tiles, "consistency": projection is not None,
            "model": ResolvedModel(*(2 * [NoOp(local.scale, local.receptive_field)]))}
    n_px = round(args.km * 1000 / RES)
    locations_per_date = len(tiles.chunks(n_px)) ** 2  # the region's tiles (the halo rides on the edge ones)
    out_px_per_band = (n_px * local.scale) ** 2 * args.dates
    layers = args.bands + 1 + (1 if projection is not None else 0)  # reflectance bands, clear, consistency
    chunks_total = args.dates * locations_per_date * layers + locations_per_date  # + clear_count
    batches_total = math.ceil(args.dates * locations_per_date / args.batch)

    tmp = Path(tempfile.mkdtemp(prefix="srcube-scale-"))
    runs = [dry_run(n_px, d, args.bands, plan, tmp, args.batch) for d in sorted({1, args.measure_dates})]
    batch = one_batch(runs[-1], args.workers)
    shutil.rmtree(tmp, ignore_errors=True)

    def per_date(key: str) -> float:  # linear in dates from the two dry runs
        a, b = runs[0], runs[-1]
        return (b[key] - a[key]) / max(b["dates"] - a["dates"], 1) if len(runs) > 1 else b[key] / b["dates"]

    def year(key: str) -> float:
        return runs[0][key] + per_date(key) * (args.dates - runs[0]["dates"])

    mpix = args.mpix_per_s or tile_throughput(args.model, tiles.tile, margin)
    wall_h = out_px_per_band * args.bands / 1e6 / mpix / args.workers_n / 3600 * tiles.overhead()
    put_rate = chunks_total / max(wall_h * 3600, 1e-9)
    figures = {
        "bench": "scale_plan", "km": args.km, "dates": args.dates, "bands": args.bands, "model": args.model,
        "scale": local.scale, "tile": tiles.tile, "margin": margin, "halo": margin,
        "input_px_per_axis": n_px, "output_px_per_band_date": (n_px * local.scale) ** 2,
        "locations_per_date": locations_per_date, "output_chunks_total": chunks_total,
        "write_batches_total": batches_total, "batch_locations": args.batch,
        "batch_tasks": batch["tasks"], "batch_graph_build_s": round(batch["graph_build_s"], 3),
        "batch_run_noop_s": round(batch["run_s"], 2),
        "scheduler_rss_before_mb": round(batch["scheduler_rss_before_mb"], 1),
        "scheduler_rss_during_batch_mb": round(batch["scheduler_rss_during_mb"], 1),
        "dry_run_dates": [r["dates"] for r in runs],
        "graph_build_s_per_date": round(per_date("graph_build_s"), 3),
        "template_s_per_date": round(per_date("template_s"), 3),
        "write_batches_s_per_date": round(per_date("write_batches_s"), 3),
        "batches_json_mb_per_date": round(per_date("batches_json_mb"), 3),
        "client_rss_mb_per_date": round(per_date("client_rss_growth_mb"), 1),
        "year_template_s": round(year("template_s"), 1), "year_write_batches_s": round(year("write_batches_s"), 1),
        "year_batches_json_mb": round(year("batches_json_mb"), 1),
        "year_client_rss_mb": round(year("client_rss_growth_mb"), 1),
        "mpix_per_s_per_worker": round(mpix, 3), "mpix_per_s_measured_here": args.mpix_per_s is None,
        "workers_n": args.workers_n, "projected_wall_h": round(wall_h, 2),
        "object_store_puts_per_s": round(put_rate, 1), "client_peak_rss_mb": round(_peak_mb(), 1),
    }
    print(f"request: {args.km:.0f} x {args.km:.0f} km, {args.dates} dates, {args.bands} bands, x{local.scale} "
          f"({args.model}); tile {tiles.tile} px, margin = halo {margin} px")
    print(f"  output: {(n_px * local.scale) ** 2 / 1e9:.0f} Gpx per band and date, {locations_per_date} locations "
          f"per date, {chunks_total / 1e6:.2f} M chunks, {batches_total} write batches of {args.batch} locations")
    print(f"  one batch: {batch['tasks']} tasks (graph {batch['graph_build_s']:.2f} s; no-op run {batch['run_s']:.1f} "
          f"s); scheduler RSS {batch['scheduler_rss_before_mb']:.0f} -> {batch['scheduler_rss_during_mb']:.0f} MB")
    print(f"  per date of the cube: graph {figures['graph_build_s_per_date']} s, template "
          f"{figures['template_s_per_date']} s, write_batches {figures['write_batches_s_per_date']} s, batch list "
          f"{figures['batches_json_mb_per_date']} MB JSON, client {figures['client_rss_mb_per_date']} MB")
    print(f"  the year: template {figures['year_template_s']} s, write_batches {figures['year_write_batches_s']} s, "
          f"batch list {figures['year_batches_json_mb']} MB, client memory {figures['year_client_rss_mb']} MB")
    source = "measured here" if args.mpix_per_s is None else "given"
    print(f"  compute: {mpix:.2f} Mpix/s per worker per band ({source}) -> {wall_h:.1f} h on {args.workers_n} "
          f"workers; {put_rate:.0f} chunk PUTs/s "
          f"(S3: {S3_PUT_PER_PREFIX_S}/s per prefix)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
