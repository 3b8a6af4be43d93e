"""End-to-end throughput of run_region on the sample archive vs a naive in-process baseline.

Both make the same cube (4 kept dates x 4 bands, bicubic x4) in the same process run:

* srcube: ``run_region`` as a scientist calls it (no client: threads in this process; the headline
  ``srcube_vs_naive``), and again on a LocalCluster of worker processes (started beforehand, its start-up
  reported apart), Dask-tiled inference, zarr v3 region writes, with the time of each step;
* naive: eager ``odc.stac.load`` of the same items and grid, one whole-array torch bicubic pass,
  one ``to_zarr``.

Prints figures and ends with one JSON line. Usage: ``python bench/run_region.py [--workers N]``.
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
    args = parser.parse_args()

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

    # as a scientist calls it: no client, the run computes on threads in this process (the default)
    t0 = time.perf_counter()
    cube = run_region(bbox.as_tuple(), str(dates), out=str(tmp / "threads.zarr"), bands=bands, model="bicubic")
    srcube_s = time.perf_counter() - t0
    steps = cube.attrs["timings_s"]
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
    naive_s = naive(items, bbox, bands, tmp / "naive.zarr")
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
    print(f"srcube  {srcube_s:6.2f} s  {figures['srcube_mvalues_per_s']:7.2f} Mvalues/s  (default: threads here)")
    print(f"        steps {steps}")
    print(f"        on {args.workers} worker processes: {cluster_run_s:.2f} s, steps {cube.attrs['timings_s']} "
          f"(cluster start {cluster_s:.1f} s not counted)")
    print(f"naive   {naive_s:6.2f} s  {figures['naive_mvalues_per_s']:7.2f} Mvalues/s  (eager load, one torch pass)")
    print(f"srcube/naive speed ratio {figures['srcube_vs_naive']:.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
