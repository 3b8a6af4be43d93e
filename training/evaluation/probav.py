"""PROBA-V multi-frame: the Kelvins metric on the multi-frame Wald protocol, per scene and over a split."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from srcube import models
from srcube.models.psf import Degradation, sensor_degradation
from srcube.training.datasets.scenes import Scene
from srcube.training.evaluation.scenes import split_scenes
from srcube.training.evaluation.score import _degradation_json
from srcube.training.evaluation.stats import BOOTSTRAP, Bootstrap, interval


@torch.inference_mode()
def evaluate_probav(model: models.SRModel, scene: Scene, *, n_views: int | None = None,
                    degradation: Degradation | None = None, bootstrap: Bootstrap = BOOTSTRAP,
                    max_targets: int | None = None) -> dict[str, Any]:
    """Multi-frame Wald protocol on a real PROBA-V scene: every frame in turn is the target (cropped to a
    multiple of the scale), its ``n_views`` clearest other frames (another date each), degraded with
    ``degradation`` (default: the sensor's), are the views. Kelvins metric: cPSNR (bias removed, best of
    the 49 shifts, border 3) of the model and of the Kelvins baseline (bicubic of the mean of the views),
    and of bicubic of the clear median (srcube's multi-frame reference). The scene's "Wald Kelvins score" is
    the mean over targets of cPSNR(baseline) / cPSNR(model) (lower is better, 1.0 = the baseline): the
    competition's score with its baseline, on Wald pairs, since the scenes' real HR images were not released.
    The interval of the mean cPSNR gain resamples targets."""
    from srcube.models.highresnet import masked_median
    from srcube.training.datasets.scenes import load_probav
    from srcube.training.metrics import cpsnr

    s = model.scale
    deg = degradation or sensor_degradation("proba-v")
    d = load_probav(scene)
    frames, valid = torch.from_numpy(d["frames"]), torch.from_numpy(d["valid"])
    t_all, h, w = frames.shape
    n = n_views or int(getattr(model, "n_views", getattr(getattr(model, "inner", None), "n_views", 8)))
    size = (min(h, w) // s) * s
    r0, c0 = (h - size) // 2, (w - size) // 2
    bicubic = models.build("bicubic", scale=s)
    rows = []
    gen = torch.Generator().manual_seed(zlib.crc32(f"{bootstrap.seed}/{scene.name}".encode()))
    for t in range(t_all if max_targets is None else min(t_all, max_targets)):
        others = sorted((j for j in range(t_all) if j != t), key=lambda j: -float(valid[j].float().mean()))[:n]
        hr = frames[t, r0 : r0 + size, c0 : c0 + size]
        clear = valid[t, r0 : r0 + size, c0 : c0 + size]
        views = deg(frames[others, r0 : r0 + size, c0 : c0 + size], s, gen)[None, :, None]  # (1, T, 1, h, w)
        vmask = F.avg_pool2d(valid[others, r0 : r0 + size, c0 : c0 + size].float()[:, None], s)[:, 0] > 0.999
        masks = vmask.float()[None]
        present = torch.ones(1, len(others), dtype=torch.bool)
        sr = model(views, masks, present)[0, 0].float()
        mean_base = bicubic(views.mean(1))[0, 0]
        median_base = bicubic(masked_median(views, masks, present))[0, 0]
        scores = {k: cpsnr(x, hr, clear, border=3) for k, x in
                  (("model", sr), ("kelvins-baseline", mean_base), ("median", median_base))}
        rows.append({"target": str(d["ids"][t]), "views": len(others), **{f"cpsnr_{k}": v for k, v in scores.items()}})
    model_c = np.array([r["cpsnr_model"] for r in rows])
    base_c = np.array([r["cpsnr_kelvins-baseline"] for r in rows])
    med_c = np.array([r["cpsnr_median"] for r in rows])
    rng = np.random.default_rng(zlib.crc32(f"{bootstrap.seed}/{scene.name}/boot".encode()))
    idx = rng.integers(0, len(rows), size=(bootstrap.resamples, len(rows)))
    gain, gain_med = model_c - base_c, model_c - med_c
    return {"scene": scene.name, "place": scene.place, "targets": len(rows), "size": size,
            "degradation": _degradation_json(deg), "rows": rows,
            "cpsnr_model": float(model_c.mean()), "cpsnr_kelvins_baseline": float(base_c.mean()),
            "cpsnr_median": float(med_c.mean()),
            "gain": float(gain.mean()), "gain_ci": list(interval(gain[idx].mean(1), bootstrap.level)),
            "gain_over_median": float(gain_med.mean()),
            "gain_over_median_ci": list(interval(gain_med[idx].mean(1), bootstrap.level)),
            "wald_kelvins_score": float(np.mean(base_c / model_c)),
            "wald_kelvins_score_ci": list(interval((base_c / model_c)[idx].mean(1), bootstrap.level))}


def evaluate_probav_split(model: models.SRModel, split: str, *, bootstrap: Bootstrap = BOOTSTRAP,
                          max_targets: int | None = None, name: str | None = None) -> dict[str, Any]:
    """:func:`evaluate_probav` over the scenes of a ``probav`` split, and a summary pooled over all targets
    (mean cPSNR gain over the Kelvins baseline with its interval, mean Wald Kelvins score, worst scene)."""
    from srcube.pipeline import __version__

    scenes_out, skipped = [], []
    for sc in split_scenes("probav", split):
        if not sc.available():
            skipped.append({"scene": sc.name, "reason": f"data absent: {sc.path}"})
            continue
        scenes_out.append(evaluate_probav(model, sc, bootstrap=bootstrap, max_targets=max_targets))
    if not scenes_out:
        raise FileNotFoundError(f"no probav {split} scene could be evaluated: {skipped}")
    gains = np.concatenate([[r["cpsnr_model"] - r["cpsnr_kelvins-baseline"] for r in s["rows"]] for s in scenes_out])
    scores = np.concatenate([[r["cpsnr_kelvins-baseline"] / r["cpsnr_model"] for r in s["rows"]]
                             for s in scenes_out])
    rng = np.random.default_rng(bootstrap.seed)
    idx = rng.integers(0, len(gains), size=(bootstrap.resamples, len(gains)))
    worst = min(scenes_out, key=lambda s: s["gain"])
    summary = {"baseline": "kelvins-baseline", "metric": "cPSNR", "n": len(gains),
               "mean_gain": float(gains.mean()), "mean_gain_ci": list(interval(gains[idx].mean(1), bootstrap.level)),
               "wald_kelvins_score": float(scores.mean()),
               "wald_kelvins_score_ci": list(interval(scores[idx].mean(1), bootstrap.level)),
               "worst": {"scene": worst["scene"], "gain": worst["gain"], "gain_ci": worst["gain_ci"]}}
    return {"model": name or model.name, "task": "probav", "split": split, "scale": model.scale,
            "scenes": scenes_out, "skipped": skipped, "summary": summary, "bootstrap": bootstrap.to_json(),
            "srcube_version": __version__}
