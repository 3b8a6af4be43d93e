"""Reading a cube: one pixel's time series and one full date, with zarr's default codec and one chunk per
date, band and SR tile (before), srcube's codec (Blosc zstd level 5 with bit shuffle, then each chunk's crc32c:
``write.cube.compressors``),
and srcube's layout (that codec, one shard per date and SR tile, inner chunks of every band and at most
``write.cube.INNER_CHUNK`` px a side: ``write.cube.encoding``).

The data: the sample region's cube (``run_region``, bicubic x4, 4 bands), its dates repeated to
``--dates``, rewritten in each layout. Each read
runs ``--repeats`` times on a fresh open (medians). Prints figures and ends with one JSON line.
The same reads also run against an S3-compatible server on loopback (moto), where every object read is an HTTP
request. Usage: ``python bench/cube_read.py [--dates 24] [--repeats 5] [--no-s3]``.
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


def s3_server(tmp: Path) -> dict | None:
    """An S3-compatible server on loopback (moto, a test dependency) with a bucket ``bench``; None without moto."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("moto is not installed (pip install -e .[test]): no S3 figures")
        return None
    import socket

    import boto3
    import s3fs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    so = {"key": "bench", "secret": "bench", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}",
                                                               "region_name": "us-east-1"}}
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="bench",
                 aws_secret_access_key="bench", region_name="us-east-1").create_bucket(Bucket="bench")
    fs = s3fs.S3FileSystem(**so)
    return {"server": server, "so": so, "fs": fs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keepbits", type=int, default=10, help="mantissa bits of the bit-rounded layout")
    parser.add_argument("--no-s3", action="store_true", help="skip the reads from an S3-compatible server")
    args = parser.parse_args()

    import numpy as np
    import xarray as xr
    from zarr.codecs import ZstdCodec

    from srcube.pipeline import run_region
    from srcube.pipeline.testing import sample
    from srcube.pipeline.write.cube import CODEC_NOTE, bitround, compressors, inner_chunk

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
    shards = tuple(cube.reflectance.encoding["shards"])
    ty, tx = shards[2], shards[3]
    chunks = (1, 1, ty, tx)
    inner = (1, shards[1], inner_chunk(ty), inner_chunk(tx))
    ds = series.to_dataset(name="reflectance").drop_vars("spatial_ref", errors="ignore")
    layouts = {"before: zarr default (zstd level 0, no shuffle), chunk per date+band+tile":
               {"chunks": chunks, "compressors": [ZstdCodec(level=0)]},
               f"codec: {CODEC_NOTE}, chunk per date+band+tile": {"chunks": chunks, "compressors": compressors()},
               f"after: {CODEC_NOTE}, shard per date+tile, inner chunk every band x {inner[2]} x {inner[3]}":
               {"chunks": inner, "shards": shards, "compressors": compressors()},
               f"optional: the same, reflectance bit-rounded to {args.keepbits} mantissa bits":
               {"chunks": inner, "shards": shards, "compressors": compressors(), "keepbits": args.keepbits}}
    y, x = refl.sizes["y"] // 2, refl.sizes["x"] // 2
    s3 = s3_server(tmp) if not args.no_s3 else None
    figures: dict[str, dict[str, float]] = {}
    for label, enc in layouts.items():
        path = tmp / f"{len(figures)}.zarr"
        enc = dict(enc)
        keepbits = enc.pop("keepbits", None)
        data = ds if keepbits is None else ds.copy(data={"reflectance": bitround(ds.reflectance.values, keepbits)})
        data.to_zarr(path, zarr_format=3, consolidated=False, encoding={"reflectance": enc})

        def timed(read, url: str, so: dict | None = None) -> float:
            out = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                read(xr.open_zarr(url, consolidated=False, storage_options=so).reflectance)
                out.append(time.perf_counter() - t0)
            return statistics.median(out)

        def pixel(r):
            return r.isel(y=y, x=x).values

        def full_date(r):
            return r.isel(time=args.dates // 2).values

        f = figures[label] = {
            "mb_on_disk": round(folder_mb(path), 2),
            "objects": sum(1 for f in (path / "reflectance").rglob("*") if f.is_file()),
            "pixel_series_s": round(timed(pixel, str(path)), 4),
            "full_date_s": round(timed(full_date, str(path)), 4),
        }
        if s3 is not None:
            url = f"s3://bench/{path.name}"
            s3["fs"].put(str(path), url, recursive=True)
            f["s3_pixel_series_s"] = round(timed(pixel, url, s3["so"]), 4)
            f["s3_full_date_s"] = round(timed(full_date, url, s3["so"]), 4)
    print(f"cube: {args.dates} dates x {refl.sizes['band']} bands x {refl.sizes['y']} x {refl.sizes['x']} float32, "
          f"tiles {ty} x {tx}; medians of {args.repeats} reads")
    for label, f in figures.items():
        print(f"  {label}")
        print(f"      {f['mb_on_disk']:8.1f} MB in {f['objects']:4d} objects; local disk: pixel series "
              f"{f['pixel_series_s'] * 1e3:7.1f} ms, full date {f['full_date_s'] * 1e3:7.1f} ms" +
              (f"; S3 (moto on loopback): pixel series {f['s3_pixel_series_s'] * 1e3:7.1f} ms, full date "
               f"{f['s3_full_date_s'] * 1e3:7.1f} ms" if "s3_full_date_s" in f else ""))
    if s3 is not None:
        s3["server"].stop()
    print(json.dumps({"bench": "cube_read", "dates": args.dates, "tile": [ty, tx], "inner": [inner[2], inner[3]],
                      "repeats": args.repeats, "layouts": figures}))


if __name__ == "__main__":
    main()
