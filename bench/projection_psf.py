"""Which PSF the consistency projection should assume: the measurement behind ``models.psf.PROJECTION_PSF``.

The projection (``models.consistency``) makes the output, degraded with an assumed PSF, give back the input.
Where the data's own PSF is sharper than the assumed one, it restores contrast the data never lost
(overshoot) and amplifies noise; where it is softer, it only restores less. This script measures that on
the places of the training and validation splits (never the test split: the choice is model selection),
on bicubic made consistent, so no network's training enters the choice:

1. **Projection sweep.** For x2 and x4, every robustness row (``models.psf.ROBUSTNESS``: sigma 0.35 / 0.5 /
   0.65 x scale, point / area, noise 0.001, sampling phase +-0.5 HR pixel) degrades each place's 10 m bands;
   bicubic, then the projection with an assumed sigma of 0.35, 0.40, 0.45 and the nominal 0.494 x scale, is
   scored against the reference (PSNR against each band's own peak) and compared with bicubic alone. Printed:
   the mean gain per row and assumed sigma over the places' bands, the worst row and the sensor row.
2. **A per-scene PSF estimate** (the alternative): the sigma whose degradation of the input keeps its
   spectral sharpness (log power at 0.25-0.5 over 0.08-0.16 cycles per pixel), which holds where the scene's
   spectrum is self-similar across scales. Printed: the estimate per place and band for three true sigmas,
   and its spread across places and bands at the same true sigma.

Usage: ``python bench/projection_psf.py [--side 480]``. Needs ``../shared/data`` (the scenes of
``training.datasets.scenes``). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from srcube import models  # noqa: E402
from srcube.models.consistency import Projection  # noqa: E402
from srcube.models.psf import ROBUSTNESS, SENSOR_PSF, Degradation, blur_decimate  # noqa: E402
from srcube.training.datasets.scenes import scenes  # noqa: E402
from srcube.training.evaluation.scenes import scene_data  # noqa: E402
from srcube.training.evaluation.stats import psnr_own_peak  # noqa: E402

ASSUMED = (0.35, 0.40, 0.45, round(SENSOR_PSF["sentinel-2"], 3))
SENSOR_ROW = Degradation(SENSOR_PSF["sentinel-2"], "point")


def psnr_bands(x: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    """PSNR per band against each reference band's own peak (:func:`training.evaluation.stats.psnr_own_peak`)."""
    return np.array([psnr_own_peak(x[b], ref[b])[0] for b in range(ref.shape[0])])


def places(scale: int, side: int) -> list[tuple[str, torch.Tensor]]:
    out = []
    seen = set()
    for sc in [*scenes("s2-10m", "train"), *scenes("s2-10m", "validation")]:
        if sc.name in seen or not sc.available():
            continue
        seen.add(sc.name)
        ref = scene_data(sc, multiple=scale, max_side=side).reference
        out.append((f"{sc.name} ({sc.split})", torch.from_numpy(ref)))
    return out


def sweep(scale: int, data: list[tuple[str, torch.Tensor]]) -> list[dict]:
    bicubic = models.build("bicubic", scale=scale)
    projections = {k: Projection.for_sensor("sentinel-2", scale, sigma=k) for k in ASSUMED}
    rows = []
    for deg in (SENSOR_ROW, *ROBUSTNESS):
        gains: dict[float, list[float]] = {k: [] for k in ASSUMED}
        for _, ref in data:
            low = deg(ref.double(), scale, torch.Generator().manual_seed(0))
            base = bicubic(low[None])[0]
            p0 = psnr_bands(base, ref)
            for k, proj in projections.items():
                gains[k] += list(psnr_bands(proj.apply(low, base), ref) - p0)
        rows.append({"row": deg.label, "n": len(gains[ASSUMED[0]]),
                     "mean_gain": {str(k): round(float(np.mean(v)), 3) for k, v in gains.items()}})
    return rows


def sharpness(img: torch.Tensor) -> float:
    img = img - img.mean()
    h, w = img.shape
    win = torch.outer(torch.hann_window(h, periodic=False, dtype=img.dtype), torch.hann_window(w, periodic=False,
                                                                                                dtype=img.dtype))
    power = torch.fft.fft2(img * win).abs() ** 2
    fy, fx = torch.fft.fftfreq(h, dtype=img.dtype)[:, None], torch.fft.fftfreq(w, dtype=img.dtype)[None]
    r = torch.sqrt(fy**2 + fx**2)
    return float(torch.log(power[(r >= 0.25) & (r < 0.5)].mean() / power[(r >= 0.08) & (r < 0.16)].mean()))


def estimate_sigma(x: torch.Tensor, scale: int) -> float:
    """The sigma (x scale) whose degradation of ``x`` keeps its spectral sharpness (linear interpolation of the
    crossing on a grid of 0.2-0.9)."""
    grid = np.linspace(0.2, 0.9, 29)
    d = np.array([sharpness(blur_decimate(x, k * scale, scale)) for k in grid]) - sharpness(x)
    cross = np.flatnonzero((d[:-1] >= 0) & (d[1:] < 0))
    if cross.size == 0:
        return float(grid[0] if d[0] < 0 else grid[-1])
    i = int(cross[0])
    return float(grid[i] + (grid[i + 1] - grid[i]) * d[i] / (d[i] - d[i + 1]))


def estimates(scale: int, data: list[tuple[str, torch.Tensor]]) -> dict:
    out: dict[str, dict[str, list[float]]] = {}
    for true in (0.35, 0.5, 0.65):
        deg = Degradation(true, "point")
        per = {}
        for name, ref in data:
            low = deg(ref.double(), scale)
            per[name] = [round(estimate_sigma(low[b], scale), 3) for b in range(low.shape[0])]
        out[str(true)] = per
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=480, help="largest side of each place's crop (10 m pixels)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    result: dict = {"bench": "projection_psf", "assumed_sigma": list(ASSUMED), "scales": {}}
    for scale in (2, 4):
        data = places(scale, args.side)
        if not data:
            raise SystemExit("no training or validation scene is on disk (../shared/data)")
        rows = sweep(scale, data)
        print(f"\nx{scale}: bicubic + projection, mean gain over bicubic (dB) by assumed sigma; places "
              + ", ".join(n for n, _ in data))
        print(f"{'row':40s} " + " ".join(f"{k:>7}" for k in ASSUMED))
        for r in rows:
            print(f"{r['row']:40s} " + " ".join(f"{r['mean_gain'][str(k)]:+7.2f}" for k in ASSUMED))
        worst = {str(k): min(r["mean_gain"][str(k)] for r in rows) for k in ASSUMED}
        print(f"{'worst row':40s} " + " ".join(f"{worst[str(k)]:+7.2f}" for k in ASSUMED))
        est = estimates(scale, data)
        print(f"x{scale}: the spectral estimate of sigma (x scale) per place and band")
        spread = {}
        for true, per in est.items():
            flat = [v for vs in per.values() for v in vs]
            spread[true] = [min(flat), max(flat)]
            print(f"  true {true}: " + "; ".join(f"{n}: {', '.join(f'{v:.2f}' for v in vs)}" for n, vs in per.items())
                  + f"  (range {min(flat):.2f}-{max(flat):.2f})")
        result["scales"][str(scale)] = {"places": [n for n, _ in data], "rows": rows, "worst_row": worst,
                                        "sensor_row": rows[0]["mean_gain"], "estimates": est,
                                        "estimate_range": spread}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
