"""A country-size request on paper and in a dry run: how big it is, what each piece of srcube's design costs
at that size, and where the design breaks first.

The request (defaults): 300 x 300 km of Sentinel-2 at 10 m, one year (73 dates: one every 5 days), 4 bands,
x4 with the default model's tiles and halo. Nothing is read: the dry run builds srcube's own cube graph
(``build.single_image_cube``, the engine, the store) over a synthetic all-zero stack of the full area,
with a no-op model that has the default model's receptive field, for ``--measure-dates`` dates, and measures

* graph build, template write (zarr metadata) and ``write_batches`` time and the client's memory for them,
  which grow with the number of chunks (measured at 1 and 2 dates, extrapolated linearly to the year);
* one write batch of the Prefect flow (``--batch`` output locations): tasks in its graph, the time to build
  and run it on a LocalCluster (no-op model, real zarr writes to a temporary folder) and the scheduler's
  memory before and during it;
* the model's throughput per tile on this machine's device (a real forward pass of the default model on
  one tile), or ``--mpix-per-s`` (e.g. a GPU's figure from ``bench/inference.py``), to project the wall
  time on N workers.

With ``--area``, a continent-year cut into cells (:mod:`~srcube.pipeline.cells`, ``run_area``), planned without
computing a pixel (see :func:`area_plan`): the area's cells and chunks; the largest per-cell graph (tasks); the client
of the area run streaming 10 .. 10,000 cells through a real Dask cluster whose cell tasks do no pixel work (its peak
memory and its plan + submit time per cell); object-store PUTs per second and worker-hours from this machine's
measured model throughput (GPU-hours only from ``--gpu-mpix-per-s``, a figure of ``scripts/gpu-check.sh``).

Prints figures and ends with one JSON line. Usage:
``python bench/scale_plan.py [--km 300] [--dates 73] [--workers-n 8] [--mpix-per-s X]``,
``python bench/scale_plan.py --area [--bbox=-10,35,30,70] [--cell-km 50.1] [--client-cells 10,100,1000,10000]
[--mpix-per-s X] [--gpu-mpix-per-s X]`` (a bbox that starts with a minus sign after ``=``).
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
from typing import Any

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
from srcube.pipeline.area import CELL_BATCH  # noqa: E402
from srcube.pipeline.assemble.clearance import FrameDecision  # noqa: E402
from srcube.pipeline.build import single_image_cube  # noqa: E402
from srcube.pipeline.cluster import culled, usable_cores  # noqa: E402
from srcube.pipeline.options import RunOptions  # noqa: E402
from srcube.pipeline.sr.spec import ResolvedModel, tile_margin, tile_spec, wants_consistency  # noqa: E402
from srcube.pipeline.write.cube import encoding, write_batches  # noqa: E402
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


def _hwm_mb() -> float:
    """This process's peak RSS since it started its program (VmHWM): unlike ``ru_maxrss``, which a process started
    by another keeps from its parent (Linux carries it across fork and exec), its own alone."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return _peak_mb()


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
    enc = encoding(cube, plan["tiles"].tile * plan["tiles"].scale, opts.dtype)
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


# --- an area: a continent-year cut into cells (--area) -------------------------------------------------------

#: the issue's continent-year: Europe from Portugal to the Black Sea, from the Mediterranean to the North Cape
EUROPE = "-10,35,30,70"
#: where the client series takes its cells: the issue's Europe holds fewer than 10,000 cells of 50.1 km, Europe from
#: Iceland to the Urals more (the client's cost per cell does not depend on where the cell is)
EUROPE_WIDE = "-25,34,60,72"
AREA_YEAR = "2024-01-01/2024-12-31"
S2_BANDS = ("B02", "B03", "B04", "B08")
#: Sentinel-2 L2A granules (MGRS tiles): 109.8 km squares every 100 km of a UTM zone
MGRS_M, MGRS_STEP_M = 109_800, 100_000
#: the cluster of the client series, a process of its own (scheduler and worker processes, as pods are), so that
#: the client's memory is the client's alone; it stops when its stdin closes
_CLUSTER = """
import importlib, sys
from distributed import Client, LocalCluster
with LocalCluster(n_workers=int(sys.argv[1]), threads_per_worker=1, processes=True, dashboard_address=":0") as lc:
    with Client(lc) as client:  # what a cell's task imports, imported before the first client comes
        client.run(importlib.import_module, "srcube.pipeline.write.areaindex")
    print(lc.scheduler_address, flush=True)
    sys.stdin.read()
"""


def dry_cell(template: Any, cell_id: str) -> Any:
    """A cell's task without its pixel work: what ``run_cell`` returns for a made cube, and the cell's entry in the
    area's index (an empty Item file: ``write_collection`` lists the index and reads no Item), so that the end of
    the client's run (the index over every cell) is the real one."""
    from fsspec.core import url_to_fs

    from srcube.pipeline.area import CellResult
    from srcube.pipeline.cells import Cell
    from srcube.pipeline.write.areaindex import ITEMS

    cell = Cell.parse(cell_id)
    fs, path = url_to_fs(template.out)
    fs.makedirs(f"{path}/{ITEMS}", exist_ok=True)
    fs.pipe_file(f"{path}/{ITEMS}/{cell.id}.json", b"{}")
    return CellResult(cell.id, "done")


def _dry_pool(client: Any) -> Any:
    """``run_area``'s Dask pool (:class:`~srcube.pipeline.area.DaskCells`) whose cell tasks are :func:`dry_cell`;
    it adds up the time its submits take."""
    from srcube.pipeline.area import DaskCells

    class DryCells(DaskCells):
        submit_s, submits = 0.0, 0

        def submit(self, fn: Any, *args: Any, key: str) -> Any:
            t0 = time.perf_counter()
            fut = super().submit(dry_cell, *args, key=key)
            self.submit_s += time.perf_counter() - t0
            self.submits += 1
            return fut

    return DryCells(client, None)


def _sched_rss() -> float:
    import psutil as p

    return p.Process().memory_info().rss / 2**20


def client_run(n: int, scheduler: str, area: str, cell_km: float, out: str) -> dict:
    """The client of an area run (this process) over the first ``n`` cells of ``area``'s lazy enumeration, on the
    cluster at ``scheduler`` whose cell tasks do no pixel work: the request planned as ``run_area`` plans it
    (``prepare_area``), then ``pipeline.area.run_cells`` with ``run_area``'s bound (twice the workers' cells in
    flight): enumeration, submits, waits, states, the index and the summary. Peak RSS of this process (VmHWM: the
    whole run, imports and planning included) and its RSS sampled while the cells stream."""
    import itertools
    import threading

    from distributed import Client

    from srcube.pipeline import area as area_mod
    from srcube.pipeline import cells

    template, size = area_mod.prepare_area(area, AREA_YEAR, cell_km=cell_km, out=out, bands=list(S2_BANDS))
    # the area's first n cells: run_cells counts and streams its cells through these names
    def first_n(a: Any, km: float) -> Any:
        return itertools.islice(cells.iter_cells(a, km), n)

    area_mod.iter_cells = first_n
    if hasattr(area_mod, "count_cells"):
        area_mod.count_cells = lambda a, km: sum(1 for _ in first_n(a, km))
    stop, peak = threading.Event(), [0.0]

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], _rss_mb())

    with Client(scheduler) as client:
        pool = _dry_pool(client)
        limit = 2 * max(1, len(client.scheduler_info()["workers"]))
        gc.collect()
        before = peak[0] = _rss_mb()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0, cpu0 = time.perf_counter(), time.process_time()
        summary = area_mod.run_cells(template, size, area, cell_km, pool, limit, 2)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        stop.set()
        sampler.join()
        after = _rss_mb()
        scheduler_mb = client.run_on_scheduler(_sched_rss)
    return {"cells": summary.cells, "done": summary.counts["done"], "failed": summary.counts["failed"],
            "limit": limit, "wall_s": wall, "ms_per_cell": 1e3 * wall / max(summary.cells, 1),
            "client_cpu_ms_per_cell": 1e3 * cpu / max(summary.cells, 1),
            "submit_ms_per_cell": 1e3 * pool.submit_s / max(pool.submits, 1),
            "peak_rss_mb": _hwm_mb(), "rss_before_mb": before, "rss_during_peak_mb": max(peak[0], after),
            "rss_after_mb": after, "scheduler_rss_mb": scheduler_mb}


def client_series(counts: list[int], area: str, cell_km: float, workers: int) -> list[dict]:
    """:func:`client_run` for each count, each in a fresh process (its own peak RSS), on one cluster started in a
    process of its own with ``workers`` worker processes (which import what a cell's task needs first)."""
    import subprocess

    log = tempfile.NamedTemporaryFile(prefix="srcube-cluster-", suffix=".log", delete=False)
    cluster = subprocess.Popen([sys.executable, "-c", _CLUSTER, str(workers)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert cluster.stdout is not None
        address = cluster.stdout.readline().strip()
        if not address:
            raise RuntimeError(f"the cluster did not start: {Path(log.name).read_text()[-2000:]}")
        runs = []
        for n in counts:
            out = tempfile.mkdtemp(prefix="srcube-area-")
            try:
                done = subprocess.run([sys.executable, __file__, "--client-run", str(n), "--scheduler", address,
                                       f"--client-bbox={area}", "--cell-km", str(cell_km), "--out", out],
                                      capture_output=True, text=True, check=False)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            if done.returncode:
                raise RuntimeError(f"the client run over {n} cells failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        return runs
    finally:
        if cluster.stdin is not None:
            cluster.stdin.close()
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            cluster.kill()
            cluster.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def cell_items(cell: Any, dates: list[Any], bands: tuple[str, ...]) -> list[Any]:
    """Sentinel-2 L2A items over ``cell`` as a catalog serves them: on every date the 2 x 2 MGRS tiles that meet at
    a point inside the cell (the most granules a 50 km cell meets in one pass), with the ``proj`` and ``raster``
    metadata assembly builds its graph from. Their hrefs lead nowhere: nothing is read."""
    import datetime as dt

    import pystac
    from pyproj import Transformer
    from shapely.geometry import box, mapping

    x0, y0, _, _ = cell.bounds
    cx, cy = x0 + 25_200.0, y0 + 25_200.0  # a multiple of 60 m inside the cell: the tiles' shared corner
    to_lonlat = Transformer.from_crs(cell.epsg, 4326, always_xy=True)
    items = []
    for day in dates:
        for i, tx in enumerate((cx - MGRS_STEP_M, cx)):
            for j, ty in enumerate((cy, cy + MGRS_STEP_M)):  # the tiles' upper edges
                foot = box(*to_lonlat.transform_bounds(tx, ty - MGRS_M, tx + MGRS_M, ty))
                item = pystac.Item(
                    id=f"S2A_T{cell.zone:02d}X{i}{j}_{day:%Y%m%d}_0_L2A", geometry=mapping(foot),
                    bbox=list(foot.bounds), datetime=dt.datetime.combine(day, dt.time(10, 56), tzinfo=dt.UTC),
                    properties={"platform": "sentinel-2a", "constellation": "sentinel-2", "eo:cloud_cover": 10.0,
                                "s2:processing_baseline": "05.10", "proj:code": f"EPSG:{cell.epsg}"},
                    collection="sentinel-2-l2a")
                for band in (*bands, "SCL"):
                    res = 20 if band == "SCL" else 10
                    raster: dict[str, Any] = {"nodata": 0, "data_type": "uint8" if band == "SCL" else "uint16",
                                              "spatial_resolution": res}
                    if band != "SCL":
                        raster.update(scale=0.0001, offset=-0.1)
                    extra: dict[str, Any] = {"proj:shape": [MGRS_M // res] * 2, "gsd": res,
                                             "proj:transform": [res, 0.0, tx, 0.0, -res, ty], "raster:bands": [raster]}
                    if band != "SCL":
                        extra["eo:bands"] = [{"name": band}]
                    item.add_asset(band, pystac.Asset(href=f"file:///nowhere/{item.id}/{band}.tif",
                                                      media_type=pystac.MediaType.COG, roles=["data"],
                                                      extra_fields=extra))
                items.append(item)
    return items


def cell_graph(cell: Any, n_dates: int, bands: tuple[str, ...], tmp: Path, **options: Any) -> dict:
    """The graph of one cell's cube as ``run_cell`` computes it, nothing computed: the cell's request planned
    (``plan``: the default model, its tiles, the sharpener), its stack assembled from :func:`cell_items` (odc-stac's
    read graph, scaling, the QA band, the clearance), every frame kept, the cube built (``build_cube``: the
    super-resolution graph with the consistency projection, the QA layers), its template written and all its chunk
    writes culled (``CubeStore.chunk_writes``, ``culled``, as ``RegionJob.write`` computes them); tasks counted."""
    import datetime as dt

    from srcube.pipeline.assemble.stack import assemble, with_clearance
    from srcube.pipeline.build import build_cube
    from srcube.pipeline.load import Loaded
    from srcube.pipeline.plan import plan
    from srcube.pipeline.request import RunRequest
    from srcube.pipeline.sensors.sentinel2 import SENTINEL2

    out = tmp / f"{cell.id}-{len(list(tmp.iterdir()))}.zarr"
    req = RunRequest.make(cell.region(), AREA_YEAR, catalog="sample", bands=list(bands), out=str(out), options=options)
    t0 = time.perf_counter()
    p = plan(req)
    plan_s = time.perf_counter() - t0
    dates = [dt.date(2024, 1, 1) + dt.timedelta(days=5 * i) for i in range(n_dates)]
    items = cell_items(cell, dates, bands)
    gc.collect()
    rss0, t0 = _rss_mb(), time.perf_counter()
    stack = assemble(items, p.region, bands, sensor=SENTINEL2, chunk=p.tiles.tile, harmonize="raster",
                     georef_check="none", sharpen=p.sharpener.model, halo=p.tiles.margin)
    stack = with_clearance(stack, SENTINEL2, SENTINEL2.validate_clear_classes(p.opts.clear_classes))
    frames = [FrameDecision(str(t)[:10], 1.0, 1.0, True, "clear") for t in stack.time.values]
    cube, enc = build_cube(p, Loaded(stack, SENTINEL2, bands, len(items)), frames, [], None, None)
    t1 = time.perf_counter()
    p.store.write_template(cube, enc, template_only=True)
    t2 = time.perf_counter()
    writes = culled(p.store.chunk_writes(cube, enc))
    whole = len(dask.base.collections_to_expr(writes, optimize_graph=False).__dask_graph__())
    # run_cell computes a cell CELL_BATCH output locations at a time (region.write_region(batch=...)): its largest
    # graph is the largest batch's
    tasks = max(len(dask.base.collections_to_expr(culled(p.store.chunk_writes(cube, enc, only=part)),
                                                  optimize_graph=False).__dask_graph__())
                for part in write_batches(cube, CELL_BATCH))
    t3 = time.perf_counter()
    objects = len(p.store.fs.find(p.store.path))  # the template's metadata objects
    shards = {str(k): int(np.prod(v.data.numblocks)) for k, v in cube.data_vars.items() if isinstance(v.data, da.Array)}
    return {"tile": p.tiles.tile, "margin": p.tiles.margin, "options": options, "dates": n_dates, "items": len(items),
            "tasks": tasks, "tasks_whole_cell": whole, "batch_locations": CELL_BATCH,
            "chunk_writes": p.store.count_blocks(writes), "shards_by_variable": shards,
            "locations": int(np.prod(cube.reflectance.data.numblocks[-2:])),
            "out_px": int(cube.sizes["y"] * cube.sizes["x"]), "template_objects": objects,
            "plan_s": plan_s, "graph_build_s": t1 - t0, "template_s": t2 - t1, "chunk_writes_s": t3 - t2,
            "graph_rss_mb": _rss_mb() - rss0}


def pass_throughput(name: str, margin: int) -> tuple[float, float]:
    """(output Mpix/s of one forward pass of the model over one pass tile with its margins on this machine's CPU
    threads, the engine's pass tile core): what each SR task's tile is cut into (``engine.forward``)."""
    from srcube.pipeline.sr.engine import pass_tile

    _, model = models.resolve(name)
    core = pass_tile("cpu", margin)
    model = model.eval()
    x = torch.rand(1, 1, core + 2 * margin, core + 2 * margin) * 0.3
    seconds = []
    with torch.inference_mode():
        model(x)
        for _ in range(3):  # the fastest: the least disturbed by other work on the machine
            t0 = time.perf_counter()
            y = model(x)
            seconds.append(time.perf_counter() - t0)
    return y.shape[-1] * y.shape[-2] / min(seconds) / 1e6, core


def processed_per_useful(tile: int, margin: int, core: int) -> float:
    """Pixels the model processes per output pixel of a task's tile: the tile with its borrowed margin cut into pass
    tiles that each borrow the margin again (the engine's windows)."""
    from srcube.pipeline.sr.engine import _windows

    per_axis = sum(w.hi - w.lo for w in _windows(tile + 2 * margin, core, margin))
    return (per_axis / tile) ** 2


def area_plan(args: argparse.Namespace) -> None:
    """A continent-year on paper (``--area``): prints figures and one JSON line."""
    from srcube.pipeline.cells import Cell, cell_size_m, iter_cells

    start = time.perf_counter()
    size = cell_size_m(args.cell_km)
    bands = S2_BANDS[: args.bands] if args.bands <= len(S2_BANDS) else S2_BANDS
    t0 = time.perf_counter()
    n_cells, zones, first = 0, set(), None
    for cell in iter_cells(args.bbox, args.cell_km):
        n_cells += 1
        zones.add(cell.zone)
        first = first or cell
    enum_ms = 1e3 * (time.perf_counter() - t0) / max(n_cells, 1)
    assert isinstance(first, Cell)
    print(f"area {args.bbox} (lon/lat), cells of {size} m: {n_cells} cells in {len(zones)} UTM zones "
          f"(enumerated in {enum_ms:.2f} ms per cell)", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="srcube-scale-area-"))
    try:
        graphs = [cell_graph(first, args.dates, bands, tmp)]
        if graphs[0]["tasks"] > DASK_GRAPH_LIMIT:
            graphs += [cell_graph(first, args.dates, bands, tmp, tile=t) for t in args.graph_tiles]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    g = graphs[0]
    for r in graphs:
        print(f"  one cell's graph, {r['dates']} dates x {len(bands)} bands ({r['items']} items), tile {r['tile']}: "
              f"{r['tasks']} tasks in its largest graph ({r['batch_locations']} locations a compute; "
              f"{r['tasks_whole_cell']} as one graph) for {r['chunk_writes']} chunk writes ({r['locations']} locations "
              "per date); "
              f"plan {r['plan_s']:.2f} s, graph {r['graph_build_s']:.1f} s, template {r['template_s']:.1f} s, "
              f"chunk writes + cull {r['chunk_writes_s']:.1f} s, +{r['graph_rss_mb']:.0f} MB", flush=True)

    counts = [int(c) for c in args.client_cells.split(",") if c.strip()]
    runs = client_series(counts, args.client_bbox, args.cell_km, args.workers)
    for n, r in zip(counts, runs, strict=True):
        print(f"  client over {r['cells']} cells ({args.workers} workers, {r['limit']} in flight): "
              f"{r['ms_per_cell']:.2f} ms per cell (client CPU {r['client_cpu_ms_per_cell']:.2f} ms, submit "
              f"{r['submit_ms_per_cell']:.2f} ms), peak RSS "
              f"{r['peak_rss_mb']:.0f} MB (streaming: {r['rss_before_mb']:.0f} -> {r['rss_during_peak_mb']:.0f} MB), "
              f"scheduler {r['scheduler_rss_mb']:.0f} MB", flush=True)
        assert r["cells"] == n and r["done"] == n, r
    peak_by = {str(n): round(r["peak_rss_mb"], 1) for n, r in zip(counts, runs, strict=True)}
    ratio = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
    plan_ms = runs[-1]["ms_per_cell"]

    _, local = models.resolve(args.model)
    if args.mpix_per_s is not None:
        mpix, core, source = args.mpix_per_s, None, "given"
    else:
        mpix, core = pass_throughput(args.model, g["margin"])
        source = f"measured here, {usable_cores()} CPU cores"
    factor = processed_per_useful(g["tile"], g["margin"], core) if core else 1.0
    out_px_cell = g["out_px"] * args.dates * len(bands)  # output values of one cell's cube
    cell_s = out_px_cell * factor / (mpix * 1e6)
    worker_h = n_cells * cell_s / 3600
    puts_cell = 2 * g["chunk_writes"] + 2 * g["template_objects"] + 2  # shard + manifest entry; metadata x2; Items
    puts_by_n = {str(n): round(n * puts_cell / cell_s, 3) for n in args.put_workers}
    gpu_h = None
    if args.gpu_mpix_per_s:
        gpu_h = n_cells * out_px_cell / (args.gpu_mpix_per_s * 1e6) / 3600
    figures = {
        "bench": "scale_plan_area", "bbox": args.bbox, "cell_km": args.cell_km, "cell_m": size, "cells": n_cells,
        "utm_zones": len(zones), "dates": args.dates, "bands": len(bands), "scale": local.scale, "model": args.model,
        "enumerate_ms_per_cell": round(enum_ms, 3),
        "chunk_writes_per_cell": g["chunk_writes"], "shards_per_cell": g["chunk_writes"],
        "chunks": n_cells * g["chunk_writes"], "template_objects_per_cell": g["template_objects"],
        "output_px_per_cell_band_date": g["out_px"], "output_values_total": n_cells * out_px_cell,
        "max_tasks_per_cell_graph": g["tasks"], "cell_graph_tile": g["tile"],
        "cell_graph_tasks_by_tile": {str(r["tile"]): r["tasks"] for r in graphs},
        "cell_graph_tasks_whole_cell": g["tasks_whole_cell"], "cell_batch_locations": g["batch_locations"],
        "cell_graph_items": g["items"], "cell_plan_s": round(g["plan_s"], 3),
        "cell_graph_build_s": round(g["graph_build_s"] + g["template_s"] + g["chunk_writes_s"], 2),
        "cell_graph_rss_mb": round(g["graph_rss_mb"], 1),
        "client_cells_bbox": args.client_bbox, "client_workers": args.workers,
        "client_peak_rss_mb_by_cells": peak_by,
        "client_rss_ratio_max_vs_min": round(ratio, 3),
        "client_streaming_rss_growth_mb_by_cells": {str(n): round(r["rss_during_peak_mb"] - r["rss_before_mb"], 1)
                                                    for n, r in zip(counts, runs, strict=True)},
        "plan_ms_per_cell": round(plan_ms, 3),
        "plan_ms_per_cell_by_cells": {str(n): round(r["ms_per_cell"], 3) for n, r in zip(counts, runs, strict=True)},
        "submit_ms_per_cell": round(runs[-1]["submit_ms_per_cell"], 3),
        "client_cpu_ms_per_cell": round(runs[-1]["client_cpu_ms_per_cell"], 3),
        "scheduler_rss_mb_after": round(runs[-1]["scheduler_rss_mb"], 1),
        "mpix_per_s_per_worker": round(mpix, 4), "mpix_source": source,
        "processed_per_output_px": round(factor, 3), "cell_compute_s_per_worker": round(cell_s, 1),
        "worker_hours": round(worker_h, 1), "core_hours": round(worker_h * usable_cores(), 1)
        if args.mpix_per_s is None else None,
        "gpu_hours": round(gpu_h, 1) if gpu_h is not None else None,
        "gpu_hours_source": f"--gpu-mpix-per-s {args.gpu_mpix_per_s} (scripts/gpu-check.sh)" if gpu_h is not None
        else "none measured",
        "puts_per_cell": puts_cell, "object_store_puts_per_s_by_workers": puts_by_n,
        "bench_s": round(time.perf_counter() - start, 1),
        "targets": {"client_rss_ratio_le_1.2": ratio <= 1.2, "plan_ms_per_cell_le_50": plan_ms <= 50.0,
                    "max_tasks_per_cell_graph_le_100k": g["tasks"] <= DASK_GRAPH_LIMIT},
    }
    print(f"  {n_cells} cells x {g['chunk_writes']} chunk writes (shards) = {figures['chunks'] / 1e6:.2f} M shards; "
          f"{out_px_cell / 1e9:.0f} G output values per cell")
    print(f"  client peak RSS by cells {peak_by} MB: {ratio:.3f} x from {counts[0]} to {counts[-1]} cells; "
          f"plan + submit {plan_ms:.2f} ms per cell at {counts[-1]} cells")
    print(f"  compute: {mpix:.3f} Mpix/s per worker ({source}), {factor:.2f} px processed per output px -> "
          f"{cell_s / 3600:.1f} h per cell, {worker_h:,.0f} worker-hours for the area; GPU-hours: "
          f"{figures['gpu_hours'] if gpu_h is not None else 'none measured'}")
    print(f"  object store: {puts_cell} PUTs per cell -> PUTs/s by workers {puts_by_n} (S3: {S3_PUT_PER_PREFIX_S}/s "
          "per prefix; each cell is a prefix)")
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--km", type=float, default=300.0, help="side of the square region in km")
    parser.add_argument("--dates", type=int, default=73, help="acquisition dates in the year (kept frames)")
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--model", default="s2-sisr-x4")
    parser.add_argument("--batch", type=int, default=8, help="output locations per write batch (the flow's)")
    parser.add_argument("--measure-dates", type=int, default=2, help="dates the dry run builds (1 and this)")
    parser.add_argument("--workers", type=int, default=2,
                        help="LocalCluster workers: the one-batch run; --area: the client runs' cluster")
    parser.add_argument("--workers-n", type=int, default=8, help="GPU workers to project the wall time on")
    parser.add_argument("--mpix-per-s", type=float, default=None,
                        help="output Mpix/s per worker per band (default: measured here on one tile)")
    parser.add_argument("--area", action="store_true", help="a continent-year cut into cells (see the docstring)")
    parser.add_argument("--bbox", default=EUROPE, help="--area: the area (lon/lat bbox)")
    parser.add_argument("--cell-km", type=float, default=50.1, help="--area: the cell size")
    parser.add_argument("--client-cells", default="10,100,1000,10000", help="--area: cells of each client run")
    parser.add_argument("--client-bbox", default=EUROPE_WIDE, help="--area: the area the client runs take cells from")
    parser.add_argument("--graph-tiles", type=lambda v: [int(t) for t in v.split(",")], default=[1512],
                        help="--area: tile sizes whose cell graph is counted too when the default's is over 100k")
    parser.add_argument("--put-workers", type=lambda v: [int(t) for t in v.split(",")], default=[10, 100, 1000],
                        help="--area: workers to give the object store's PUT rate at")
    parser.add_argument("--gpu-mpix-per-s", type=float, default=None,
                        help="--area: a GPU's output Mpix/s per band from scripts/gpu-check.sh, for GPU-hours")
    parser.add_argument("--client-run", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--scheduler", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_run is not None:  # one client of the --area series, in a process of its own
        print(json.dumps(client_run(args.client_run, args.scheduler, args.client_bbox, args.cell_km, args.out)))
        return
    if args.area:
        area_plan(args)
        return

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
