"""Tiled inference at scale: srcube's Dask pipeline vs the bare model and two common tiling loops.

All in one run, same model, same input (a valid window of the real 10 m T33UUU Sentinel-2 crop,
one band, reflectance), output written to zarr by every method except the bare forward:

* bare: one forward pass of the whole in-memory tensor (the device's ceiling; no tiling, no I/O);
* srcube: ``super_resolve`` (pad-and-crop tiles, margin = receptive field, default tile and pass tile
  sizes) on a LocalCluster, streamed to zarr;
* SEN2SR-style: a Python loop over 128 px input windows overlapping by 32 px (stride 96, as
  SEN2SR's ``define_iteration(chunk_size=128, overlap=32)``), batch 1, the centre 96 px of each
  window pasted into the output;
* CESBIO-style: a loop over 1000 px output tiles with margin = receptive field, batch 1.

Also: the cost of one forward pass per pixel at several pass tiles (what the per-device default rests
on), peak worker RSS of srcube at 1x and 4x area (fresh clusters), 1 vs 2 workers, the largest
difference of each method from the bare pass, the autocast fidelity (bf16; fp16 too on CUDA; PSNR
against the fp32 output's own peak), and the projected time of a full Sentinel-2 tile (10980^2 px,
4 bands) from the measured throughput.
Every method runs on one device: CUDA when torch sees one (the pipeline's workers pick it too), else
the CPU.
Each method runs ``--repeats`` times (medians; this machine's timings vary by a third from run to run).
Ends with one JSON line. Usage: ``python bench/inference.py [--size 1024] [--model s2-sisr-x4] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# bench/models.py sits beside this script: keep this folder off sys.path so `import models` is the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
S2_TILE_PX = 10980  # a Sentinel-2 MGRS tile at 10 m
SHARED = Path(os.environ.get("SRCUBE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
T33UUU = SHARED / "data" / "sentinel2_l1c_T33UUU_pair" / "ref_S2A_20160608T153121_T33UUU_north.tif"


def load_model(name: str):
    from srcube import models

    if name in models.shipped_weights() or name.endswith(".safetensors"):
        return models.load_model(name), name
    torch.manual_seed(0)  # the recipe's architecture with random weights: cost is the same
    return models.build("srgan", scale=4, features=32, blocks=6).eval(), "srgan-32x6 (random init)"


def input_array(size: int) -> np.ndarray:
    """A size x size window of real Sentinel-2 reflectance (valid pixels only), or seeded noise."""
    if T33UUU.exists():
        import rasterio

        with rasterio.open(T33UUU) as src:
            data = src.read(1).astype(np.float32) / 10000.0
        r0, c0 = data.shape[0] - size, data.shape[1] - size  # the south-east corner is inside the swath
        window = data[max(r0, 0) : max(r0, 0) + size, max(c0, 0) : max(c0, 0) + size]
        if window.shape == (size, size) and (window > 0).all():
            return window
        return np.tile(data[-512:, -512:], (size // 512 + 1, size // 512 + 1))[:size, :size]
    return np.random.default_rng(0).random((size, size), dtype=np.float32) * 0.3


def as_dataarray(a: np.ndarray) -> xr.DataArray:
    from affine import Affine

    h, w = a.shape
    da = xr.DataArray(a[None, None], dims=("time", "band", "y", "x"),
                      coords={"time": [np.datetime64("2016-06-08")], "band": ["B"],
                              "x": 330000 + 10 * (np.arange(w) + 0.5), "y": 5862000 - 10 * (np.arange(h) + 0.5)})
    return da.rio.write_crs("EPSG:32633").rio.write_transform(Affine(10, 0, 330000, 0, -10, 5862000))


def write_zarr(out: np.ndarray, path: Path) -> None:
    xr.Dataset({"r": (("y", "x"), out)}).chunk({"y": 1024, "x": 1024}).to_zarr(path, mode="w", zarr_format=3,
                                                                               consolidated=False)


def device_name() -> str:
    return torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else f"cpu x{os.cpu_count()}"


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def bare(model, a: np.ndarray) -> tuple[float, np.ndarray]:
    torch.set_num_threads(os.cpu_count() or 1)
    model.to(DEVICE)
    x = torch.from_numpy(a)[None, None].to(DEVICE)
    with torch.inference_mode():
        model(x[..., :64, :64])
        sync()
        t0 = time.perf_counter()
        y = model(x)[0, 0].cpu().numpy()
    return time.perf_counter() - t0, y


def loop(model, a: np.ndarray, window: int, overlap: int, out_dir: Path) -> tuple[float, np.ndarray]:
    """A sequential window loop, batch 1: each window adds ``overlap`` input pixels on every side
    that has a neighbour and only its centre is kept (SEN2SR: 128 px windows with 16 px on each
    side, i.e. 32 px overlap between neighbours; CESBIO: margin = receptive field)."""
    torch.set_num_threads(os.cpu_count() or 1)
    model.to(DEVICE)
    s = model.scale
    h, w = a.shape
    out = np.zeros((h * s, w * s), np.float32)
    step = window - 2 * overlap if window > 2 * overlap else window
    t0 = time.perf_counter()
    with torch.inference_mode():
        for r in range(0, h, step):
            for c in range(0, w, step):
                r0, c0 = max(r - overlap, 0), max(c - overlap, 0)
                r1, c1 = min(r + step + overlap, h), min(c + step + overlap, w)
                x = torch.from_numpy(np.ascontiguousarray(a[r0:r1, c0:c1]))[None, None].to(DEVICE)
                y = model(x)[0, 0].cpu().numpy()
                rr, cc = min(r + step, h), min(c + step, w)
                out[r * s : rr * s, c * s : cc * s] = y[(r - r0) * s : (rr - r0) * s, (c - c0) * s : (cc - c0) * s]
    write_zarr(out, out_dir / "loop.zarr")
    return time.perf_counter() - t0, out


def pass_sweep(model, margin: int) -> dict[str, float]:
    """Nanoseconds per output-core input pixel of one forward pass at several pass tiles (cores, with
    ``margin`` borrowed on each side), one torch thread on a CPU: what the per-device default of
    ``pass_tile`` rests on."""
    torch.set_num_threads(1)
    model.to(DEVICE)
    costs = {}
    with torch.inference_mode():
        for core in (96, 128, 192, 256, 384, 512, 768):
            n = core + 2 * margin
            x = torch.rand(1, model.channels, n, n, device=DEVICE)
            model(x)
            sync()
            reps = max(1, int((4e6 if DEVICE.type == "cuda" else 1e6) / (n * n)))
            t0 = time.perf_counter()
            for _ in range(reps):
                model(x)
            sync()
            costs[str(core)] = round((time.perf_counter() - t0) / reps / (core * core) * 1e9, 1)
    return costs


def median_of(repeats: int, run):
    """(median seconds, last output) of ``repeats`` calls of ``run() -> (seconds, output)``."""
    import statistics

    results = [run() for _ in range(max(1, repeats))]
    return statistics.median(t for t, _ in results), results[-1][1]


def pipeline(model_name: str, a: np.ndarray, workers: int, out_dir: Path, repeats: int = 1
             ) -> tuple[float, np.ndarray, float]:
    """srcube on a fresh LocalCluster: (median seconds of ``repeats`` runs, output, peak worker RSS MB)."""
    from srcube.pipeline import super_resolve
    from srcube.pipeline.cluster import dask_client
    from srcube.pipeline.write.store import CubeStore

    def rss() -> float:
        # VmHWM: this process's own peak (getrusage's ru_maxrss survives exec, so a spawned worker
        # would report the parent's peak, e.g. the bare whole-image forward)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024.0

    with dask_client(n_workers=workers) as client:  # the LocalCluster run_region starts
        # load the model on every worker before timing (several small tiles)
        super_resolve(as_dataarray(a[:256, :256]).chunk({"y": 64, "x": 64}), model_name, client=client, tile=64,
                      consistency=False)
        times = []
        for r in range(max(1, repeats)):
            store = CubeStore(str(out_dir / f"srcube-{workers}-{a.shape[0]}-{r}.zarr"))
            t0 = time.perf_counter()
            # the model alone, as the bare pass and the loops run it (no consistency projection)
            sr = super_resolve(as_dataarray(a).chunk({"y": 2048, "x": 2048}), model_name, client=client,
                               consistency=False)
            cube = sr.to_dataset(name="reflectance").assign_attrs(srcube_version="bench")
            client.gather(client.compute(store.write_template(cube, {})))
            times.append(time.perf_counter() - t0)
        seconds = float(np.median(times))
        peak = max(client.run(rss).values())
    out = xr.open_zarr(store.url, consolidated=False).reflectance.values[0, 0]
    return seconds, out, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="input side in pixels for 1x area")
    parser.add_argument("--model", default="s2-sisr-x4")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each method (medians reported)")
    args = parser.parse_args()
    model, label = load_model(args.model)
    rf, s = model.receptive_field, model.scale
    tmp = Path(tempfile.mkdtemp(prefix="srcube-bench-inf-"))
    a1 = input_array(args.size)
    a4 = input_array(2 * args.size)
    mpix = a1.size * s * s / 1e6

    from srcube.pipeline.sr.engine import pass_tile

    sweep = pass_sweep(model, rf)
    default_pass = pass_tile(DEVICE.type, rf)
    n = args.repeats
    t_bare, ref = median_of(n, lambda: bare(model, a1))
    t_pipe, out_pipe, rss1 = pipeline(args.model, a1, 2, tmp, n)
    t_sen2sr, out_sen2sr = median_of(n, lambda: loop(model, a1, 128, 16, tmp))  # 128 px windows, 32 px overlap
    t_cesbio, out_cesbio = median_of(n, lambda: loop(model, a1, 1000 // s + 2 * rf, rf, tmp))
    t_pipe1, out_pipe1, _ = pipeline(args.model, a1, 1, tmp, n)
    t_pipe4, _, rss4 = pipeline(args.model, a4, 2, tmp)

    model.to(DEVICE)
    x = torch.from_numpy(a1[:256, :256])[None, None].to(DEVICE)
    fidelity = {}
    with torch.inference_mode():
        fp32 = model(x)
        for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            if name == "fp16" and DEVICE.type != "cuda":
                continue  # fp16 autocast is a CUDA feature
            with torch.autocast(DEVICE.type, dtype=dtype):
                low = model(x).float()
            mse = float(((low - fp32) ** 2).mean())
            peak = float(fp32.abs().max())  # PSNR against the fp32 output's own peak, not 1.0
            fidelity[name] = (float((low - fp32).abs().max()), float(10 * np.log10(peak**2 / max(mse, 1e-20))))
    bf16_err, bf16_psnr = fidelity["bf16"]
    shutil.rmtree(tmp, ignore_errors=True)

    def diff(o: np.ndarray) -> float:
        return float(np.abs(o - ref).max())

    rows = [("bare forward (ceiling)", t_bare, 0.0), ("srcube pipeline, 2 workers -> zarr", t_pipe, diff(out_pipe)),
            ("SEN2SR-style 128/32 loop -> zarr", t_sen2sr, diff(out_sen2sr)),
            ("CESBIO-style 1000 px loop -> zarr", t_cesbio, diff(out_cesbio)),
            ("srcube pipeline, 1 worker -> zarr", t_pipe1, diff(out_pipe1))]
    print(f"model {label}: x{s}, receptive field {rf} px; input {args.size}^2 px -> {mpix:.1f} Mpix out; "
          f"device {device_name()}; medians of {n} runs")
    for name, t, d in rows:
        print(f"  {name:38s} {t:7.2f} s  {mpix / t:7.2f} Mpix/s  max |diff from bare| {d:.2e}")
    print(f"  srcube at 4x area: {t_pipe4:.2f} s; peak worker RSS {rss1:.0f} MB (1x) -> {rss4:.0f} MB (4x)")
    # a full Sentinel-2 tile (10980 x 10980 px, 4 bands) at this run's measured per-band throughput (4x area run)
    full_tile_s = S2_TILE_PX**2 * 4 / ((2 * args.size) ** 2 / t_pipe4)
    print(f"  projected full Sentinel-2 tile (10980^2 px, 4 bands, x{s}) on this device: {full_tile_s / 60:.1f} min")
    print(f"  forward pass cost by pass tile (ns per core input px, margin {rf}): {sweep}; default on "
          f"{DEVICE.type}: {default_pass}")
    for name, (err, db) in fidelity.items():
        print(f"  {name} autocast on {DEVICE.type} vs fp32: max abs diff {err:.2e}, PSNR {db:.1f} dB")
    figures = {
        "bench": "inference", "device": device_name(), "model": label, "scale": s, "receptive_field": rf,
        "input_px": args.size, "out_mpix": round(mpix, 2), "repeats": n,
        "bare_s": round(t_bare, 3), "pipeline_s": round(t_pipe, 3), "sen2sr_style_s": round(t_sen2sr, 3),
        "cesbio_style_s": round(t_cesbio, 3), "pipeline_1_worker_s": round(t_pipe1, 3),
        "pipeline_4x_area_s": round(t_pipe4, 3),
        "pipeline_vs_bare": round(t_bare / t_pipe, 3),
        "pipeline_vs_sen2sr_style": round(t_sen2sr / t_pipe, 3),
        "pipeline_vs_cesbio_style": round(t_cesbio / t_pipe, 3),
        "rss_1x_mb": round(rss1, 1), "rss_4x_mb": round(rss4, 1), "rss_4x_over_1x": round(rss4 / rss1, 3),
        "two_workers_over_one": round(t_pipe1 / t_pipe, 3),
        "projected_full_s2_tile_4_bands_s": round(full_tile_s, 1),
        "pass_tile_default": default_pass, "pass_cost_ns_per_core_px": sweep,
        "max_diff_pipeline": diff(out_pipe), "max_diff_sen2sr_style": diff(out_sen2sr),
        "max_diff_cesbio_style": diff(out_cesbio), "bf16_max_abs_diff": bf16_err, "bf16_psnr_db": round(bf16_psnr, 2),
        **({"fp16_max_abs_diff": fidelity["fp16"][0], "fp16_psnr_db": round(fidelity["fp16"][1], 2)}
           if "fp16" in fidelity else {}),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
