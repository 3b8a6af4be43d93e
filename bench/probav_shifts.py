"""How far real PROBA-V revisits are shifted against each other: the measurement behind registering views.

For every PROBA-V scene of ``training.datasets.scenes`` on disk (real Kelvins LR frames, 128 x 128 at 300 m),
each frame is registered to the scene's clearest frame (:func:`models.registration.register_views`: phase
correlation weighted to ``BAND`` cycles per pixel, refined to 1/20 pixel). Printed per scene: frames, the
median and largest shift magnitude, the share of frames shifted by more than 0.25 and 0.5 pixel; then the
pooled percentiles. These are shifts at the LR frames' own resolution: the multi-frame Wald protocol degrades
frames 3x more, so there the same shifts are a third as large (``training.evaluation.probav`` adds
misregistration rows of the real scale). Ends with one JSON line.

Usage: ``python bench/probav_shifts.py``. Needs ``../shared/data`` (PROBA-V Kelvins frames).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from srcube.models.registration import BAND, register_views  # noqa: E402
from srcube.training.datasets.scenes import load_probav, scenes  # noqa: E402


def main() -> None:
    t0 = time.perf_counter()
    per_scene, pooled = [], []
    for sc in scenes("probav"):
        if not sc.available():
            continue
        d = load_probav(sc)
        frames, valid = torch.from_numpy(d["frames"]).double(), torch.from_numpy(d["valid"])
        shifts = register_views(frames, valid).numpy()
        ref = int(valid.double().flatten(1).mean(1).argmax())
        mag = np.hypot(*np.delete(shifts, ref, 0).T)
        pooled += mag.tolist()
        row = {"scene": sc.name, "split": sc.split, "frames": len(frames), "median_px": round(float(np.median(mag)), 3),
               "max_px": round(float(mag.max()), 3), "over_0.25": round(float((mag > 0.25).mean()), 3),
               "over_0.5": round(float((mag > 0.5).mean()), 3)}
        per_scene.append(row)
        print(f"{sc.name:11s} {sc.split:10s} {len(frames):3d} frames  |shift| median {row['median_px']:.2f} px, "
              f"max {row['max_px']:.2f} px; > 0.25 px: {row['over_0.25']:.0%}, > 0.5 px: {row['over_0.5']:.0%}")
    if not pooled:
        raise SystemExit("no PROBA-V scene is on disk (../shared/data)")
    pct = {str(p): round(float(np.percentile(pooled, p)), 3) for p in (10, 50, 90, 100)}
    print(f"all {len(pooled)} frames: |shift| percentiles " + ", ".join(f"{k}%: {v:.2f} px" for k, v in pct.items()))
    print(json.dumps({"bench": "probav_shifts", "band_cycles_per_px": BAND, "frames": len(pooled),
                      "percentiles_px": pct, "scenes": per_scene, "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
