"""Consistency by construction: the consistency error before/after the projection, and what it costs per tile.

Real Sentinel-2 B04 (T18SVG L1C, 10 m, reflectance = DN / 10000), two settings:

* ``real``: the 10 m crop is the input, super-resolved x4 to 2.5 m (the pipeline's case: no reference,
  only the consistency error ``mean |D(sr) - x|`` over the image, ``D`` = Sentinel-2's degradation);
* ``wald``: the crop degraded by ``D`` to 40 m is the input, super-resolved back to 10 m; also the PSNR
  against the crop (peak = the crop's own maximum) before and after the projection.

Models: bicubic and the shipped ``s2-sisr-x4`` (when present), each through ``super_resolve`` with
``consistency=False`` and ``True`` (default tiling). Cost: one input tile of ``--tile`` pixels plus the
margin, model forward alone vs the projection alone (median of ``--repeat`` runs, one torch thread on the
CPU, or the GPU when torch sees one). Ends with one JSON line.

Usage: ``python bench/consistency.py [--size 512] [--tile 256] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# bench/models.py sits beside this script: keep this folder off sys.path so `import models` is the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHARED = Path(os.environ.get("SRCUBE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
B04 = SHARED / "data" / "sentinel2_l1c_T18SVG_13band" / "B04.tif"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def crop(size: int) -> np.ndarray:
    import rasterio

    with rasterio.open(B04) as src:
        r0, c0 = (src.height - size) // 2, (src.width - size) // 2
        dn = src.read(1, window=((r0, r0 + size), (c0, c0 + size)))
    return dn.astype(np.float32) / 10000.0


def as_dataarray(a: np.ndarray, res: float):
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr
    from affine import Affine

    h, w = a.shape
    x0, y0 = 435730.0, 4200000.0
    da = xr.DataArray(a[None, None], dims=("time", "band", "y", "x"),
                      coords={"time": [np.datetime64("2016-01-12")], "band": ["B04"],
                              "x": x0 + res * (np.arange(w) + 0.5), "y": y0 - res * (np.arange(h) + 0.5)})
    return da.rio.write_crs("EPSG:32618").rio.write_transform(Affine(res, 0, x0, 0, -res, y0))


def psnr(sr: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(float(ref.max()) ** 2 / float(np.mean((sr - ref) ** 2))))


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="side of the real 10 m crop in pixels")
    parser.add_argument("--tile", type=int, default=256, help="input tile side for the cost figures")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not B04.exists():
        sys.exit(f"real data not available: {B04} is absent")

    from srcube import models
    from srcube.models.consistency import Projection
    from srcube.pipeline import super_resolve

    torch.set_num_threads(1)
    proj = Projection.for_sensor("sentinel-2", 4)
    hr = crop(args.size)
    lr = proj.degrade(torch.from_numpy(hr)[None, None]).numpy()[0, 0]
    names = ["bicubic"] + (["s2-sisr-x4"] if "s2-sisr-x4" in models.shipped_weights() else [])

    def err(x: np.ndarray, sr: np.ndarray) -> float:
        return float(proj.error(torch.from_numpy(x)[None, None], torch.from_numpy(sr)[None, None]).mean())

    rows, figures = [], {"bench": "consistency", "device": str(DEVICE), "psf": proj.describe()["consistency_psf"],
                         "order": proj.order, "margin_px": proj.margin, "size_px": args.size}
    for name in names:
        for setting, x, res in (("real", hr, 10.0), ("wald", lr, 40.0)):
            src = as_dataarray(x, res)
            before = super_resolve(src, name, scale=4, consistency=False).values[0, 0]
            after_da = super_resolve(src, name, scale=4, consistency=True)
            after = after_da.values[0, 0]
            row = {"model": name, "setting": setting, "error_before": err(x, before), "error_after": err(x, after),
                   "layer_mean": float(np.nanmean(after_da.consistency.values)),
                   "max_abs_change": float(np.abs(after - before).max())}
            if setting == "wald":
                row.update(psnr_before=psnr(before, hr), psnr_after=psnr(after, hr))
            rows.append(row)

        # cost per tile: one tile with its margin, the model alone and the projection alone
        model = models.load_model(name, scale=4).to(DEVICE).eval()
        m = model.receptive_field + proj.margin
        side = min(args.tile + 2 * m, args.size)
        xt = torch.from_numpy(np.ascontiguousarray(hr[:side, :side]))[None, None].to(DEVICE)
        with torch.inference_mode():
            y = model(xt)
            t_model = timed(lambda m=model, x=xt: m(x), args.repeat)
            proj.project(xt, y)  # the banded inverse is built once per process (not timed)
            t_proj = timed(lambda x=xt, y=y: proj.project(x, y), args.repeat)
        figures[f"{name}_tile_px"] = side
        figures[f"{name}_model_ms"] = round(1000 * t_model, 2)
        figures[f"{name}_projection_ms"] = round(1000 * t_proj, 2)
        figures[f"{name}_margin_px"] = m

    print(f"consistency bench on {B04.parent.name}/B04 ({args.size}^2 px), device {DEVICE}, "
          f"PSF: {figures['psf']}, order {proj.order}")
    for r in rows:
        extra = (f"  PSNR {r['psnr_before']:.2f} -> {r['psnr_after']:.2f} dB" if "psnr_before" in r else "")
        print(f"  {r['model']:11s} {r['setting']:4s}  consistency error {r['error_before']:.2e} -> "
              f"{r['error_after']:.2e} (layer mean {r['layer_mean']:.2e}); max |change| "
              f"{r['max_abs_change']:.2e}{extra}")
    for name in names:
        print(f"  {name:11s} one tile of {figures[f'{name}_tile_px']}^2 px (margin {figures[f'{name}_margin_px']}): "
              f"model {figures[f'{name}_model_ms']:.1f} ms, projection +{figures[f'{name}_projection_ms']:.1f} ms")
    for r in rows:
        key = f"{r['model']}_{r['setting']}"
        figures[f"{key}_error_before"] = float(f"{r['error_before']:.3e}")
        figures[f"{key}_error_after"] = float(f"{r['error_after']:.3e}")
        if "psnr_before" in r:
            figures[f"{key}_psnr_before"] = round(r["psnr_before"], 3)
            figures[f"{key}_psnr_after"] = round(r["psnr_after"], 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
