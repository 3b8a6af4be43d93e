"""PROBA-V multi-frame weights side by side on the validation split: the numbers that choose which ones ship.

Each weights file given is scored as the trainer scores an epoch of
``training/configs/probav-highresnet-x3-selfsup.yaml`` (the Wald samples of the shipped recipe, and real frames) on
the validation places (imgset0010, imgset0601; never the test scene): Wald cPSNR of the multi-frame Wald
protocol against bicubic of the clear median, and on real frames with nothing degraded (every frame in turn held
out and predicted from the fusion of its 8 clearest other frames through the sensor, against the registered
median moved onto its grid: ``training.evaluation.probav.native_frame_rows``). ``selection_gain`` is the sum of
the two gains (dB), the metric that selects epochs of a self-supervised run. Ends with one JSON line.

Usage: ``python bench/probav_candidates.py WEIGHTS.json [WEIGHTS.json ...]`` (default: the shipped weights).
Needs ``../shared/data`` (PROBA-V Kelvins frames).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from srcube import models  # noqa: E402
from srcube.training.config import REPO, load_config  # noqa: E402
from srcube.training.trainer import Trainer  # noqa: E402

KEYS = ("cpsnr", "cpsnr_bicubic", "native_cpsnr", "native_cpsnr_median", "native_score", "selection_gain")


def main() -> None:
    weights = sys.argv[1:] or [str(REPO / "models" / "weights" / "probav-highresnet-x3.json")]
    # the self-supervised recipe's validation: the shipped recipe's Wald samples and the real-frame samples
    cfg = load_config(REPO / "training" / "configs" / "probav-highresnet-x3-selfsup.yaml")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(dataclasses.replace(cfg, output=out))
        rows = []
        print(f"{'weights':<60} " + " ".join(f"{k:>20}" for k in KEYS))
        for w in weights:
            got = trainer.validate(models.load_model(w).eval(), alone=True)
            rows.append({"weights": w, **{k: round(got[k], 4) for k in KEYS}})
            print(f"{w[-60:]:<60} " + " ".join(f"{got[k]:>20.4f}" for k in KEYS))
    best = max(rows, key=lambda r: r["selection_gain"])
    print(json.dumps({"bench": "probav_candidates", "split": "validation", "rows": rows, "best": best["weights"],
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
