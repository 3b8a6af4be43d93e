"""ONNX: export time, parity and onnxruntime vs torch throughput of the shipped models, on this CPU.

For each shipped weights file (or ``--models``): the export (``models.onnx.export_onnx``, its parity check at
three sizes included; the first export of the process also pays the exporter's imports), the file's size, the
largest difference from torch there and at ``--size``, then one forward pass of a ``--size`` input grid (batch 1;
multi-frame: all views present; sharpener: its guide at twice the size) in torch and in onnxruntime with the same
number of threads, medians of ``--repeats`` after a warm-up. Then ``super_resolve`` of a ``--size`` x ``--size``
two-band array with the default model, in this process, ``engine="torch"`` vs ``engine="onnx"`` (consistency
projection on, default tiles): seconds and the largest difference. Ends with one JSON line.
Usage: ``python bench/onnx_engine.py [--size 256] [--repeats 5] [--models s2-sisr-x4 ...]``.
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

# keep this folder off sys.path so `import models` is the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def model_row(name: str, size: int, repeats: int, threads: int, folder: Path) -> dict[str, float | str]:
    import onnxruntime as ort

    from srcube import models
    from srcube.models.onnx import example_inputs, export_onnx, input_names

    model = models.load_model(name).eval()
    path = folder / f"{name}.onnx"
    c0, w0 = time.process_time(), time.perf_counter()
    report = export_onnx(model, path)
    export_cpu, export_wall = time.process_time() - c0, time.perf_counter() - w0
    inputs = example_inputs(model, 1, size, size, seed=3)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {k: t.numpy() for k, t in zip(input_names(model), inputs, strict=True)}

    def torch_pass() -> None:
        with torch.inference_mode():
            model(*inputs)

    t_torch = median_seconds(torch_pass, repeats)
    t_ort = median_seconds(lambda: session.run(None, feed), repeats)
    with torch.inference_mode():
        ref = model(*inputs).numpy()
    diff = float(np.abs(session.run(None, feed)[0] - ref).max())  # at this size too, beyond the export's checks
    out_mpix = (size * model.scale) ** 2 * model.channels / 1e6
    return {"model": name, "kind": report["kind"], "export_cpu_s": round(export_cpu, 1),
            "export_wall_s": round(export_wall, 1), "onnx_bytes": report["bytes"], "min_size": report["min_size"],
            "parity_max_abs_diff": report["max_abs_diff"], "max_abs_diff_at_size": diff, "torch_s": round(t_torch, 4),
            "onnxruntime_s": round(t_ort, 4),
            "torch_mpix_s": round(out_mpix / t_torch, 2), "onnxruntime_mpix_s": round(out_mpix / t_ort, 2),
            "onnxruntime_over_torch": round(t_torch / t_ort, 3)}


def pipeline_row(size: int, repeats: int, folder: Path) -> dict[str, float | str]:
    import rioxarray  # noqa: F401  (the .rio accessor)
    import xarray as xr

    from srcube.models import default_model
    from srcube.pipeline import super_resolve

    name = default_model("sentinel-2", 4)
    a = np.random.default_rng(0).random((2, size, size), dtype=np.float32) * np.float32(0.3)
    centres = 10.0 * (np.arange(size) + 0.5)
    data = xr.DataArray(a, dims=("band", "y", "x"), coords={"band": ["B04", "B08"], "x": 600000.0 + centres,
                                                             "y": 5700000.0 - centres}).rio.write_crs("EPSG:32631")
    os.environ["SRCUBE_ONNX_CACHE"] = str(folder / "cache")
    out = {}
    for engine in ("torch", "onnx"):
        out[engine] = super_resolve(data, name, engine=engine)  # warm-up (and the export into the cache)
    t_torch = median_seconds(lambda: super_resolve(data, name, engine="torch"), repeats)
    t_onnx = median_seconds(lambda: super_resolve(data, name, engine="onnx"), repeats)
    diff = float(np.nanmax(np.abs(out["onnx"].values - out["torch"].values)))
    return {"model": name, "input_px": size, "bands": 2, "torch_s": round(t_torch, 3), "onnx_s": round(t_onnx, 3),
            "onnx_over_torch_speed": round(t_torch / t_onnx, 3), "max_abs_diff": diff}


def main() -> None:
    from srcube import models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="input side (pixels)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=sorted(models.shipped_weights()))
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    folder = Path(tempfile.mkdtemp(prefix="srcube-bench-onnx-"))
    rows = []
    for name in args.models:
        row = model_row(name, args.size, args.repeats, threads, folder)
        rows.append(row)
        print(f"{name:22s} {row['kind']:12s} export {row['export_cpu_s']:5.1f} s cpu ({row['export_wall_s']:5.1f} s "
              f"wall), parity {row['parity_max_abs_diff']:.1e} ({row['max_abs_diff_at_size']:.1e} at {args.size}^2); "
              f"one {args.size}^2 pass: torch {row['torch_s']:.3f} s, "
              f"onnxruntime {row['onnxruntime_s']:.3f} s (x{row['onnxruntime_over_torch']:.2f})", flush=True)
    pipe = pipeline_row(args.size, args.repeats, folder)
    print(f"super_resolve {pipe['model']} {args.size}^2 x 2 bands in-process: torch {pipe['torch_s']:.2f} s, "
          f"onnx {pipe['onnx_s']:.2f} s (x{pipe['onnx_over_torch_speed']:.2f}); "
          f"max abs diff {pipe['max_abs_diff']:.1e}")
    print(json.dumps({"bench": "onnx", "device": "cpu", "threads": threads, "torch": torch.__version__,
                      "size": args.size, "repeats": args.repeats, "models": rows, "super_resolve": pipe}))


if __name__ == "__main__":
    main()
