"""Reading a cube: one pixel's time series and one full date, with zarr's default codec (before) and srcube's
(after: Blosc zstd level 5 with bit shuffle, ``write.cube.codec``).

The data: the sample region's cube (``run_region``, bicubic x4, 4 bands), its dates repeated to
``--dates``, rewritten with each codec in srcube's chunking (one chunk per date, band and SR tile). Each read
runs ``--repeats`` times on a fresh open (medians). Prints figures and ends with one JSON line.
Usage: ``python bench/cube_read.py [--dates 24] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# bench/models.py sits beside this script: keep this folder off sys.path so `import models` is the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import xarray as xr
    from zarr.codecs import ZstdCodec

    from srcube.pipeline import run_region
    from srcube.pipeline.testing import sample
    from srcube.pipeline.write.cube import CODEC_NOTE, codec

    tmp = Path(tempfile.mkdtemp(prefix="srcube-bench-read-"))
    os.environ.setdefault("SRCUBE_SAMPLE_DIR", str(tmp / "sample"))
    sample.ensure_archive()
    cube = run_region(sample.DEFAULT_BBOX, sample.DEFAULT_DATES, out=str(tmp / "cube.zarr"), model="bicubic",
                      bands=["B02", "B03", "B04", "B08"])
    refl = cube.reflectance.load()
    reps = -(-args.dates // refl.sizes["time"])
    series = xr.concat([refl] * reps, "time").isel(time=slice(0, args.dates))
    every_5_days = np.datetime64("2024-01-01", "ns") + np.arange(args.dates) * np.timedelta64(5, "D")
    series = series.assign_coords(time=every_5_days)
    chunks = (1, 1, cube.reflectance.encoding["chunks"][2], cube.reflectance.encoding["chunks"][3])
    ds = series.to_dataset(name="reflectance").drop_vars("spatial_ref", errors="ignore")
    codecs = {"before: zarr default (zstd level 0, no shuffle)": [ZstdCodec(level=0)],
              f"after: {CODEC_NOTE}": [codec()]}
    y, x = refl.sizes["y"] // 2, refl.sizes["x"] // 2
    figures: dict[str, dict[str, float]] = {}
    for label, compressors in codecs.items():
        path = tmp / f"{len(figures)}.zarr"
        ds.to_zarr(path, zarr_format=3, consolidated=False,
                   encoding={"reflectance": {"chunks": chunks, "compressors": compressors}})

        def timed(read, path: Path = path) -> float:
            out = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                read(xr.open_zarr(path, consolidated=False).reflectance)
                out.append(time.perf_counter() - t0)
            return statistics.median(out)

        figures[label] = {
            "mb_on_disk": round(folder_mb(path), 2),
            "pixel_series_s": round(timed(lambda r: r.isel(y=y, x=x).values), 4),
            "full_date_s": round(timed(lambda r: r.isel(time=args.dates // 2).values), 4),
        }
    print(f"cube: {args.dates} dates x {refl.sizes['band']} bands x {refl.sizes['y']} x {refl.sizes['x']} float32, "
          f"chunks {chunks}; medians of {args.repeats} reads")
    for label, f in figures.items():
        print(f"  {label:48s} {f['mb_on_disk']:8.1f} MB  pixel series {f['pixel_series_s'] * 1e3:7.1f} ms  "
              f"full date {f['full_date_s'] * 1e3:7.1f} ms")
    print(json.dumps({"bench": "cube_read", "dates": args.dates, "chunks": list(chunks), "repeats": args.repeats,
                      "codecs": figures}))


if __name__ == "__main__":
    main()
