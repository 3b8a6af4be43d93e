"""End-to-end throughput of run_region on the sample archive vs a naive in-process baseline.

Both make the same cube (4 kept dates x 4 bands, bicubic x4) in the same process run:

* srcube: ``run_region`` as a scientist calls it (no client: dask's threaded scheduler in this process;
  the headline ``srcube_vs_naive``), and again on a LocalCluster of worker processes (started beforehand,
  its start-up reported apart), Dask-tiled inference, zarr v3 region writes, with the time of each step;
* naive: eager ``odc.stac.load`` of the same items and grid, one whole-array torch bicubic pass,
  one ``to_zarr``.

Each of the two runs ``--repeats`` times in turn (fresh outputs); the first run of each is reported as
``cold`` (imports and GDAL's first opens), the headline compares the medians of the others (warm).
Prints figures, where srcube's time goes (its steps, and the task time of its graph by task kind), and
ends with one JSON line. Usage: ``python bench/run_region.py [--workers N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

# bench/models.py sits beside this script: keep this folder off sys.path so `import models` is the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker_peak_rss_mb() -> float:
    import resource as r

    return r.getrusage(r.RUSAGE_SELF).ru_maxrss / 1024.0


def naive(items, bbox, bands, out: Path) -> float:
    import numpy as np
    import odc.stac
    import torch
    import xarray as xr

    from srcube.pipeline.assemble.stack import native_grid

    t0 = time.perf_counter()
    keys = {"B02": "B02", "B03": "B03", "B04": "B04", "B08": "B08"}
    grid = native_grid(items, list(keys.values()), bbox)
    ds = odc.stac.load(items, bands=[*bands, "SCL"], geobox=grid.geobox(bbox), groupby="solar_day")
    clear = ds.SCL.isin([4, 5, 6]).mean(("y", "x")).values
    ds = ds.isel(time=np.flatnonzero(clear >= 0.5))
    lr = np.stack([ds[b].values.astype(np.float32) * 1e-4 - 0.1 for b in bands], axis=1)
    with torch.inference_mode():
        torch.set_num_threads(os.cpu_count() or 1)
        hr = torch.nn.functional.interpolate(torch.from_numpy(lr), scale_factor=4, mode="bicubic",
                                             align_corners=False).numpy()
    xr.Dataset({"reflectance": (("time", "band", "y", "x"), hr)}).to_zarr(out, mode="w", zarr_format=3,
                                                                          consolidated=False)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4))
    parser.add_argument("--repeats", type=int, default=4, help="runs of each (the first is the cold one)")
    args = parser.parse_args()
    import statistics

    from dask.diagnostics import Profiler
    from distributed import Client, LocalCluster

    from srcube.pipeline import run_region
    from srcube.pipeline.params import BBox, DateRange
    from srcube.pipeline.search import catalog as cat
    from srcube.pipeline.testing import sample

    tmp = Path(tempfile.mkdtemp(prefix="srcube-bench-"))
    os.environ.setdefault("SRCUBE_SAMPLE_DIR", str(tmp / "sample"))
    sample.ensure_archive()
    bbox, dates = BBox(*sample.DEFAULT_BBOX), DateRange.parse(sample.DEFAULT_DATES)
    bands = ["B02", "B03", "B04", "B08"]
    items = cat.search(cat.open_catalog(cat.resolve_catalog("sample")), "sentinel-2-l2a", bbox, dates)

    # as a scientist calls it: no client, the run computes on threads in this process (the default); the naive
    # baseline in turn, so that both see the same warm caches
    srcube_runs, naive_runs, steps, tasks = [], [], {}, {}
    for r in range(max(2, args.repeats)):
        with Profiler() as prof:
            t0 = time.perf_counter()
            cube = run_region(bbox.as_tuple(), str(dates), out=str(tmp / f"threads-{r}.zarr"), bands=bands,
                              model="bicubic")
            srcube_runs.append(time.perf_counter() - t0)
        steps = cube.attrs["timings_s"]
        tasks = {}
        for rec in prof.results:  # task seconds by kind (the key's name without its token)
            kind = str(rec.key[0] if isinstance(rec.key, tuple) else rec.key).rsplit("-", 1)[0]
            tasks[kind] = tasks.get(kind, 0.0) + rec.end_time - rec.start_time
        naive_runs.append(naive(items, bbox, bands, tmp / f"naive-{r}.zarr"))
    srcube_s, naive_s = statistics.median(srcube_runs[1:]), statistics.median(naive_runs[1:])
    top_tasks = {k: round(v, 3) for k, v in sorted(tasks.items(), key=lambda kv: -kv[1])[:8]}
    # on a LocalCluster of worker processes, started beforehand (its start is reported apart; the first tasks
    # import srcube, torch and GDAL in each worker, which the clearance step then pays)
    t0 = time.perf_counter()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0") as lc, Client(lc) as client:
        cluster_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cube = run_region(bbox.as_tuple(), str(dates), out=str(tmp / "srcube.zarr"), client=client, bands=bands,
                          model="bicubic")
        cluster_run_s = time.perf_counter() - t0
        worker_rss = max(client.run(_worker_peak_rss_mb).values())
    out_mpix = cube.reflectance.size / 1e6  # output values (pixels x bands x dates)
    shutil.rmtree(tmp, ignore_errors=True)

    figures = {
        "bench": "run_region",
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "workers": args.workers,
        "model": "bicubic",
        "scale": 4,
        "output_mvalues": round(out_mpix, 2),
        "cluster_start_s": round(cluster_s, 2),
        "srcube_s": round(srcube_s, 2),
        "srcube_mvalues_per_s": round(out_mpix / srcube_s, 2),
        "srcube_steps_s": steps,
        "srcube_task_s_by_kind": top_tasks,
        "repeats": len(srcube_runs),
        "srcube_cold_s": round(srcube_runs[0], 2),
        "naive_cold_s": round(naive_runs[0], 2),
        "srcube_cold_vs_naive_cold": round(naive_runs[0] / srcube_runs[0], 3),
        "srcube_on_process_cluster_s": round(cluster_run_s, 2),
        "process_cluster_steps_s": cube.attrs["timings_s"],
        "naive_s": round(naive_s, 2),
        "naive_mvalues_per_s": round(out_mpix / naive_s, 2),
        "srcube_vs_naive": round(naive_s / srcube_s, 3),
        "client_peak_rss_mb": round(_peak_rss_mb(), 1),
        "worker_peak_rss_mb": round(worker_rss, 1),
    }
    print(f"output {out_mpix:.1f} M values ({cube.sizes['time']} dates x {cube.sizes['band']} bands x "
          f"{cube.sizes['y']} x {cube.sizes['x']})")
    print(f"srcube  {srcube_s:6.2f} s  {figures['srcube_mvalues_per_s']:7.2f} Mvalues/s  (default: threads here; "
          f"median of {len(srcube_runs) - 1} warm runs, cold {srcube_runs[0]:.2f} s)")
    print(f"        steps {steps}")
    print(f"        task seconds by kind (last run, summed over threads) {top_tasks}")
    print(f"        on {args.workers} worker processes: {cluster_run_s:.2f} s, steps {cube.attrs['timings_s']} "
          f"(cluster start {cluster_s:.1f} s not counted)")
    print(f"naive   {naive_s:6.2f} s  {figures['naive_mvalues_per_s']:7.2f} Mvalues/s  (eager load, one torch pass; "
          f"warm median, cold {naive_runs[0]:.2f} s)")
    print(f"srcube/naive speed ratio {figures['srcube_vs_naive']:.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
