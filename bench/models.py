"""Per-model cost on this CPU: parameters, MACs per output pixel, and output Mpix/s.

Each model at its registered default size (the papers' widths; HighRes-net x3 with 16 views,
the others x4, one band), on one in-memory LR tile, torch using every core, median of repeats
after a warm-up. Bicubic runs in the same process as the baseline. Ends with one JSON line.
Usage: ``python bench/models.py [--size 128] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# this script is bench/models.py: keep its folder off sys.path so `import models` finds the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from srcube import models  # noqa: E402
from srcube.models.base import count_parameters  # noqa: E402
from srcube.models.profile import macs_per_output_pixel  # noqa: E402


def throughput(model, size: int, repeats: int) -> float:
    """Output megapixels per second (per band) on one (1, C, size, size) input."""
    if model.multi_frame:
        t = model.n_views
        args = (torch.rand(1, t, model.channels, size, size), torch.ones(1, t, size, size))
    else:
        args = (torch.rand(1, model.channels, size, size),)
    times = []
    with torch.inference_mode():
        model(*args)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(*args)
            times.append(time.perf_counter() - t0)
    return (size * model.scale) ** 2 / statistics.median(times) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="LR tile size (pixels)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    rows = {}
    for name in models.list_models():
        e = models.entry(name)
        scale = 3 if e.kind == "multi-frame" else 4
        model = models.build(name, scale=scale).eval()
        rows[name] = {
            "kind": e.kind, "scale": scale, "params": count_parameters(model),
            "receptive_field": model.receptive_field,
            "macs_per_out_px": round(macs_per_output_pixel(model), 1),
            "mpix_per_s": round(throughput(model, args.size, args.repeats), 3),
        }
        r = rows[name]
        print(f"{name:11s} {e.kind:13s} x{scale} params {r['params']:>10,}  MACs/out px {r['macs_per_out_px']:>10,.1f}"
              f"  rf {r['receptive_field']:>4d}  {r['mpix_per_s']:8.3f} Mpix/s")
    base = rows["bicubic"]["mpix_per_s"]
    for r in rows.values():
        r["speed_vs_bicubic"] = round(r["mpix_per_s"] / base, 5)
    print(json.dumps({"bench": "models", "device": "cpu", "threads": torch.get_num_threads(),
                      "lr_tile": args.size, "models": rows}))


if __name__ == "__main__":
    main()
