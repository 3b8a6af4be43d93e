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


def model_views(model: models.SRModel) -> int:
    """How many views a multi-frame model fuses (its own ``n_views``, or that of the network it wraps; 8 else)."""
    return int(getattr(model, "n_views", getattr(getattr(model, "inner", None), "n_views", 8)))


@torch.inference_mode()
def evaluate_probav(model: models.SRModel, scene: Scene, *, n_views: int | None = None,
                    degradation: Degradation | None = None, bootstrap: Bootstrap = BOOTSTRAP,
                    max_targets: int | None = None, register: bool = False,
                    misregistration: float = 0.0) -> dict[str, Any]:
    """Multi-frame Wald protocol on a real PROBA-V scene: every frame in turn is the target (cropped to a
    multiple of the scale), its ``n_views`` clearest other frames (another date each), degraded with
    ``degradation`` (default: the sensor's), are the views. Kelvins metric: cPSNR (bias removed, best of
    the 49 shifts, border 3) of the model and of the Kelvins baseline (bicubic of the mean of the views),
    and of bicubic of the clear median (srcube's multi-frame reference). The scene's "Wald Kelvins score" is
    the mean over targets of cPSNR(baseline) / cPSNR(model) (lower is better, 1.0 = the baseline): the
    competition's score with its baseline, on Wald pairs, since the scenes' real HR images were not released.
    The interval of the mean cPSNR gain resamples targets.

    ``register``: the model fuses the views registered to the clearest one (:mod:`models.registration`, as
    ``run_region`` does by default); the baselines fuse them as they are (the Kelvins baseline's definition).
    ``misregistration``: each view's sampling grid is also shifted by a random amount, uniform in
    +-``misregistration`` view pixels on each axis (the real frames' own shifts are a third of that at the view
    scale: this is the misregistration between real revisits at their own resolution)."""
    from srcube.models.highresnet import masked_median
    from srcube.training.datasets.scenes import load_probav
    from srcube.training.metrics import cpsnr

    s = model.scale
    deg = degradation or sensor_degradation("proba-v")
    d = load_probav(scene)
    frames, valid = torch.from_numpy(d["frames"]), torch.from_numpy(d["valid"])
    t_all, h, w = frames.shape
    n = n_views or model_views(model)
    size = (min(h, w) // s) * s
    r0, c0 = (h - size) // 2, (w - size) // 2
    bicubic = models.build("bicubic", scale=s)
    rows = []
    gen = torch.Generator().manual_seed(zlib.crc32(f"{bootstrap.seed}/{scene.name}".encode()))
    for t in range(t_all if max_targets is None else min(t_all, max_targets)):
        others = sorted((j for j in range(t_all) if j != t), key=lambda j: -float(valid[j].float().mean()))[:n]
        hr = frames[t, r0 : r0 + size, c0 : c0 + size]
        clear = valid[t, r0 : r0 + size, c0 : c0 + size]
        crops = frames[others, r0 : r0 + size, c0 : c0 + size]
        if misregistration > 0:  # each view sampled on its own shifted grid (HR pixels = s x view pixels)
            off = (torch.rand(len(others), 2, generator=gen) * 2 - 1) * misregistration * s
            views = torch.stack([Degradation(deg.sigma, deg.decimation, deg.noise,
                                             (deg.phase[0] + float(o[0]), deg.phase[1] + float(o[1])))(c, s, gen)
                                 for c, o in zip(crops, off, strict=True)])[None, :, None]
        else:
            views = deg(crops, s, gen)[None, :, None]  # (1, T, 1, h, w)
        vmask = F.avg_pool2d(valid[others, r0 : r0 + size, c0 : c0 + size].float()[:, None], s)[:, 0] > 0.999
        masks = vmask.float()[None]
        present = torch.ones(1, len(others), dtype=torch.bool)
        fused_in, fused_masks = views, masks
        if register:
            from srcube.models.registration import apply_shifts, register_views

            moved, clear_moved = apply_shifts(views[0].double(), masks[0],
                                              register_views(views[0, :, 0].double(), masks[0] > 0.5))
            fused_in, fused_masks = moved.float()[None], clear_moved[None]
        sr = model(fused_in, fused_masks, present)[0, 0].float()
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
            "degradation": _degradation_json(deg), "register": register, "misregistration": misregistration,
            "rows": rows,
            "cpsnr_model": float(model_c.mean()), "cpsnr_kelvins_baseline": float(base_c.mean()),
            "cpsnr_median": float(med_c.mean()),
            "gain": float(gain.mean()), "gain_ci": list(interval(gain[idx].mean(1), bootstrap.level)),
            "gain_over_median": float(gain_med.mean()),
            "gain_over_median_ci": list(interval(gain_med[idx].mean(1), bootstrap.level)),
            "wald_kelvins_score": float(np.mean(base_c / model_c)),
            "wald_kelvins_score_ci": list(interval((base_c / model_c)[idx].mean(1), bootstrap.level))}


@torch.inference_mode()
def native_frame_rows(model: models.SRModel, dataset: Any) -> list[dict[str, Any]]:
    """Held-out real frames predicted from fusions of other real frames, nothing degraded: each sample of
    ``dataset`` (:class:`training.datasets.real.SceneSelfSupervised`, validation mode: every frame of every scene
    once the target, its clearest other frames registered to the clearest as views) fused by ``model``, projected
    through the sensor onto the target's own shifted grid (:func:`training.losses.predict_frame`), scored by cPSNR
    (bias removed, ``-10 log10`` of the clear pixels' MSE, 3 pixels in from the edges: the Kelvins metric at the
    frame's resolution). Baselines: the clear median of the same registered views moved onto the target's grid by
    Lanczos resampling (``cpsnr_median_lr``: no super-resolution; the one to beat), and bicubic of that median
    projected like the model's output (``cpsnr_median``: what the Wald protocol's baseline is at this scale)."""
    from srcube.models.highresnet import masked_median
    from srcube.models.psf import sensor_degradation
    from srcube.models.registration import shift_views
    from srcube.training.losses import frame_errors

    s = model.scale
    sigma = sensor_degradation("proba-v").sigma
    bicubic = models.build("bicubic", scale=s)
    rows = []
    for k in range(len(dataset)):
        b = dataset[k]
        views, masks, present = b["views"][None], b["masks"][None], b["present"][None]
        sr = model(views, masks, present).float()
        base = bicubic(masked_median(views, masks, present)).float()
        target, clear, shift = b["target"][None], b["target_clear"][None], b["target_shift"][None]
        err = frame_errors(torch.cat([sr, base]), target.repeat(2, 1, 1, 1), clear.repeat(2, 1, 1, 1),
                           shift.repeat(2, 1), s, sigma)
        cpsnr_model, cpsnr_median = (float(-10 * torch.log10(e.clamp(min=1e-12))) for e in err)
        # no super-resolution at all: the clear median itself moved onto the target's grid (Lanczos)
        med = masked_median(views, masks, present)[0].double()
        moved = shift_views(med, -b["target_shift"].double()[None])
        lr_err = frame_errors(moved.float()[None].repeat_interleave(s, -2).repeat_interleave(s, -1), target, clear,
                              torch.zeros(1, 2), s, 0.0)
        rows.append({"scene": int(dataset.fixed[k][0]), "target": int(dataset.fixed[k][1]),
                     "shift": [round(float(v), 3) for v in b["target_shift"]],
                     "cpsnr_model": cpsnr_model, "cpsnr_median": cpsnr_median,
                     "cpsnr_median_lr": float(-10 * torch.log10(lr_err[0].clamp(min=1e-12)))})
    return rows


def evaluate_probav_native(model: models.SRModel, scene: Scene, *, n_views: int | None = None,
                           bootstrap: Bootstrap = BOOTSTRAP) -> dict[str, Any]:
    """:func:`native_frame_rows` on one real PROBA-V scene: every frame in turn held out and predicted from the
    fusion of its ``n_views`` clearest other real frames at their own resolution (no degradation anywhere: what
    the pipeline fuses), with the mean cPSNR gain over the registered median at the frame's own resolution (no
    super-resolution), its interval (targets resampled), the "native score": the mean of cPSNR(baseline) /
    cPSNR(model), lower is better (1.0: the fusion's HR predicts unseen frames no better than the median does),
    and the gain over bicubic of the median projected alike."""
    from srcube.training.datasets.real import SceneSelfSupervised

    n = n_views or model_views(model)
    rows = native_frame_rows(model, SceneSelfSupervised([scene], n, 0, 0, train=False))
    model_c = np.array([r["cpsnr_model"] for r in rows])
    base_c = np.array([r["cpsnr_median_lr"] for r in rows])
    bic_c = np.array([r["cpsnr_median"] for r in rows])
    rng = np.random.default_rng(zlib.crc32(f"{bootstrap.seed}/{scene.name}/native".encode()))
    idx = rng.integers(0, len(rows), size=(bootstrap.resamples, len(rows)))
    gain, score, gain_bic = model_c - base_c, base_c / model_c, model_c - bic_c
    return {"scene": scene.name, "place": scene.place, "targets": len(rows),
            "baseline": "the registered views' clear median moved onto the target's grid (no super-resolution)",
            "rows": [{k: v for k, v in r.items() if k != "scene"} for r in rows],
            "cpsnr_model": float(model_c.mean()), "cpsnr_median_lr": float(base_c.mean()),
            "cpsnr_median_bicubic": float(bic_c.mean()),
            "gain": float(gain.mean()), "gain_ci": list(interval(gain[idx].mean(1), bootstrap.level)),
            "gain_over_bicubic": float(gain_bic.mean()),
            "gain_over_bicubic_ci": list(interval(gain_bic[idx].mean(1), bootstrap.level)),
            "native_score": float(score.mean()), "native_score_ci": list(interval(score[idx].mean(1), bootstrap.level))}


#: the misregistration rows of a split's report: views shifted by up to this many view pixels on each axis
MISREGISTRATION = (0.5, 1.0)


def _pool(scenes_out: list[dict[str, Any]], bootstrap: Bootstrap) -> dict[str, Any]:
    """Mean cPSNR gain over the Kelvins baseline and mean Wald Kelvins score over all targets of the scenes,
    with intervals resampling targets, and the worst scene."""
    gains = np.concatenate([[r["cpsnr_model"] - r["cpsnr_kelvins-baseline"] for r in s["rows"]] for s in scenes_out])
    scores = np.concatenate([[r["cpsnr_kelvins-baseline"] / r["cpsnr_model"] for r in s["rows"]]
                             for s in scenes_out])
    rng = np.random.default_rng(bootstrap.seed)
    idx = rng.integers(0, len(gains), size=(bootstrap.resamples, len(gains)))
    worst = min(scenes_out, key=lambda s: s["gain"])
    return {"baseline": "kelvins-baseline", "metric": "cPSNR", "n": len(gains),
            "mean_gain": float(gains.mean()), "mean_gain_ci": list(interval(gains[idx].mean(1), bootstrap.level)),
            "wald_kelvins_score": float(scores.mean()),
            "wald_kelvins_score_ci": list(interval(scores[idx].mean(1), bootstrap.level)),
            "worst": {"scene": worst["scene"], "gain": worst["gain"], "gain_ci": worst["gain_ci"]}}


def evaluate_probav_split(model: models.SRModel, split: str, *, bootstrap: Bootstrap = BOOTSTRAP,
                          max_targets: int | None = None, name: str | None = None, register: bool = True,
                          misregistration: tuple[float, ...] = MISREGISTRATION,
                          native_frames: bool = True) -> dict[str, Any]:
    """:func:`evaluate_probav` over the scenes of a ``probav`` split, and a summary pooled over all targets
    (mean cPSNR gain over the Kelvins baseline with its interval, mean Wald Kelvins score, worst scene).
    ``register``: as the pipeline runs the model (views registered first, its default). ``misregistration``:
    rows of the pooled score with views misregistered by up to that many view pixels, the model fed the views
    as they are and registered. ``native_frames``: per scene, held-out real frames predicted from fusions of the
    other real frames with nothing degraded (:func:`evaluate_probav_native`)."""
    from srcube.pipeline import __version__

    present = [sc for sc in split_scenes("probav", split) if sc.available()]
    skipped = [{"scene": sc.name, "reason": f"data absent: {sc.path}"}
               for sc in split_scenes("probav", split) if not sc.available()]
    if not present:
        raise FileNotFoundError(f"no probav {split} scene could be evaluated: {skipped}")
    scenes_out = [evaluate_probav(model, sc, bootstrap=bootstrap, max_targets=max_targets, register=register)
                  for sc in present]
    rows = []
    for amount in misregistration:
        for reg in (False, True):
            pooled = _pool([evaluate_probav(model, sc, bootstrap=bootstrap, max_targets=max_targets, register=reg,
                                            misregistration=amount) for sc in present], bootstrap)
            rows.append({"misregistration": amount, "register": reg, **{k: pooled[k] for k in (
                "n", "mean_gain", "mean_gain_ci", "wald_kelvins_score", "wald_kelvins_score_ci")}})
    native = [evaluate_probav_native(model, sc, bootstrap=bootstrap) for sc in present] if native_frames else []
    return {"model": name or model.name, "task": "probav", "split": split, "scale": model.scale,
            "register": register, "scenes": scenes_out, "skipped": skipped, "summary": _pool(scenes_out, bootstrap),
            "misregistration": rows, "native": native, "bootstrap": bootstrap.to_json(), "srcube_version": __version__}
