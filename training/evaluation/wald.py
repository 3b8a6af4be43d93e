"""The Wald protocol on one real scene and over a split (model selection on validation, the report on
test), and the robustness table over degradations.

**Wald protocol** (:func:`evaluate_wald`): the reference is degraded with a
:class:`models.psf.Degradation` (default :data:`WALD`: the sensor's Gaussian PSF of ``0.494 x scale`` and point
sampling at the LR pixel centres, :func:`models.psf.sensor_degradation`, the degradation the real-scene
training samples validate with, :mod:`training.datasets.real`), super-resolved back
by the model and by ``models.build("bicubic")``, compared per band. Band sharpeners (``forward(low,
guide)``) are scored the same way with the low/guide variant: the 20 m bands degraded by the ratio
(to 40 m) and the 10 m guide degraded by the ratio (to 20 m), sharpened, compared with the original
20 m bands; baselines bicubic and ``hpf`` (linear high-pass injection).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from srcube import models
from srcube.models.psf import ROBUSTNESS, Degradation, sensor_degradation
from srcube.models.sharpen import Sharpener
from srcube.training.datasets.scenes import Scene
from srcube.training.evaluation.scenes import IncompatibleSceneError, SceneData, scene_data, split_scenes
from srcube.training.evaluation.score import BandRow, SceneResult, _degradation_json, compare, summarize
from srcube.training.evaluation.stats import BOOTSTRAP, PEAK_CONVENTION, Bootstrap, _finite

#: the headline degradation of reports: the sensor's PSF (MTF 0.3 at the LR Nyquist) and point sampling at
#: the LR pixel centres, as a sensor samples (the robustness table adds the others, block means included)
WALD = sensor_degradation("sentinel-2")


def _sharpener(model: torch.nn.Module) -> Sharpener | None:
    if isinstance(model, Sharpener):
        return model
    inner = getattr(model, "inner", None)
    return inner if isinstance(inner, Sharpener) else None


def _select(names: Sequence[str], wanted: Sequence[str] | None, what: str) -> list[int]:
    if wanted is None:
        return list(range(len(names)))
    missing = [b for b in wanted if b not in names]
    if missing:
        raise IncompatibleSceneError(f"the model takes {what} {list(wanted)}; the scene has {list(names)}")
    return [list(names).index(b) for b in wanted]


def _device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.inference_mode()
def evaluate_wald(model: models.SRModel, scene: Scene | SceneData, scale: int | None = None,
                  degradation: Degradation = WALD, *, crop: tuple[int, int, int] | None = None,
                  max_side: int | None = None, bootstrap: Bootstrap = BOOTSTRAP, opensr: bool = True,
                  with_ssim: bool = True, quicklook: Path | None = None, project: bool = False) -> SceneResult:
    """The Wald protocol on one real scene, per band (see the module docstring); raises
    IncompatibleSceneError when the scene does not fit the model (bands, kind, size). ``quicklook``: a
    PNG path for the four panels of :func:`training.evaluate.quicklook`. ``project``: the model's output
    goes through the consistency projection (:mod:`models.consistency`: the model's own when it ends in
    one, else the sensor's, :meth:`Projection.for_sensor`; the same PSF whatever ``degradation`` made the
    input), as the pipeline runs learned models by default; the baseline ``bicubic+projection`` (bicubic
    through that same projection) is added for context."""
    s = scale or model.scale
    if s != model.scale:
        raise ValueError(f"model {model.name} is x{model.scale}, not x{s}")
    if model.multi_frame:
        raise IncompatibleSceneError(f"{model.name} is multi-frame: PROBA-V multi-frame evaluation is not "
                                     "implemented here")
    sharp = _sharpener(model)
    data = scene if isinstance(scene, SceneData) else scene_data(scene, multiple=s, crop=crop, max_side=max_side)
    if sharp is not None and data.guide is None:
        raise IncompatibleSceneError(f"{model.name} sharpens with guide bands; {data.name} has none "
                                     "(evaluate sharpeners on the s2-20m task)")
    if data.reference.shape[-2] % s or data.reference.shape[-1] % s:
        raise IncompatibleSceneError(f"{data.name}: window {data.reference.shape[-2:]} is not a multiple of x{s}")
    model.eval()
    dev = _device(model)
    gen = torch.Generator().manual_seed(zlib.crc32(f"{bootstrap.seed}/{data.name}".encode()))
    idx = _select(data.bands, model.bands, "bands")
    if model.bands is None and model.channels > 1 and len(idx) != model.channels:
        raise IncompatibleSceneError(f"{model.name} takes {model.channels} bands, {data.name} has {len(idx)}")
    ref = torch.from_numpy(data.reference[idx])
    names = [data.bands[i] for i in idx]
    bicubic = models.build("bicubic", scale=s)
    if sharp is not None and data.guide is not None:
        gidx = _select(data.guide_bands, sharp.guide_bands, "guide bands")
        guide = torch.from_numpy(data.guide[gidx])
        low = degradation(ref, s, gen)
        guide_low = degradation(guide, s, gen)
        sr = model(low[None].to(dev), guide_low[None].to(dev))[0]
        hpf = models.build("hpf", scale=s, bands=names, guide_bands=[data.guide_bands[i] for i in gidx])
        baselines = {"bicubic": bicubic(low[None])[0], "hpf": hpf(low[None], guide_low[None])[0]}
    else:
        low = degradation(ref, s, gen)
        sr = model(low[None].to(dev))[0]
        baselines = {"bicubic": bicubic(low[None])[0]}
        if project:
            from srcube.models.consistency import own_projection, projection_for

            proj = projection_for(model, "sentinel-2")
            if own_projection(model) is None:  # else it is built in: the model's output is projected already
                sr = proj.project(low.to(dev), sr)[0]
            baselines["bicubic+projection"] = proj.project(low, baselines["bicubic"])[0]
    sr = sr.float().cpu()
    if quicklook is not None:
        from srcube.training.evaluate import quicklook as write_quicklook

        write_quicklook(quicklook, low, baselines["bicubic"].clamp(0, 1), sr.clamp(0, 1), ref)
    return compare(sr, baselines, ref, low, scale=s, scene=data.name, bands=names, bootstrap=bootstrap,
                   opensr=opensr, degradation=degradation.label, window=data.window, place=data.place,
                   with_ssim=with_ssim)


def robustness_table(model: models.SRModel, scenes: Sequence[Scene | SceneData], scale: int | None = None, *,
                     degradations: Sequence[Degradation] = ROBUSTNESS, bootstrap: Bootstrap = BOOTSTRAP,
                     crop: tuple[int, int, int] | None = None, max_side: int | None = None,
                     project: bool = False) -> list[dict[str, Any]]:
    """One row per degradation (default :data:`models.psf.ROBUSTNESS`, 14): the mean gain over bicubic
    across the scenes' bands with its stratified bootstrap interval, and the worst scene-band
    (``project``: through the consistency projection as in :func:`evaluate_wald`)."""
    s = scale or model.scale
    data = [sc if isinstance(sc, SceneData) else scene_data(sc, multiple=s, crop=crop, max_side=max_side)
            for sc in scenes]
    table = []
    for d in degradations:
        results = [evaluate_wald(model, sd, s, d, bootstrap=bootstrap, opensr=False, with_ssim=False, project=project)
                   for sd in data]
        summary = summarize(results, "bicubic", bootstrap.level)
        table.append({**_degradation_json(d), "n": summary["n"], "mean_gain": summary["mean_gain"],
                      "mean_gain_ci": summary["mean_gain_ci"], "worst": summary["worst"]})
    return table


@dataclass(frozen=True)
class SplitResult:
    """A model over every scene of one split: rows, summary, skipped scenes with the reason, robustness."""

    model: str
    task: str
    split: str
    scale: int
    degradation: Degradation
    bootstrap: Bootstrap
    results: tuple[SceneResult, ...]
    skipped: tuple[tuple[str, str], ...]
    summary: Mapping[str, Any]
    summary_hpf: Mapping[str, Any] | None = None
    robustness: Sequence[Mapping[str, Any]] | None = None
    summary_projection: Mapping[str, Any] | None = None  # against bicubic + the consistency projection

    @property
    def rows(self) -> list[BandRow]:
        return [r for res in self.results for r in res.rows]

    def to_json(self) -> dict[str, Any]:
        from srcube.pipeline import __version__

        return {
            "model": self.model, "task": self.task, "split": self.split, "scale": self.scale,
            "scenes": [{"name": r.scene, "place": r.place, "window": list(r.window) if r.window else None,
                        **{k: _finite(v) for k, v in r.opensr.items()}} for r in self.results],
            "skipped": [{"scene": n, "reason": why} for n, why in self.skipped],
            "degradation": _degradation_json(self.degradation),
            "peak_convention": PEAK_CONVENTION,
            "bootstrap": self.bootstrap.to_json(),
            "rows": [r.to_json() for r in self.rows],
            "summary": dict(self.summary),
            **({"summary_hpf": dict(self.summary_hpf)} if self.summary_hpf else {}),
            **({"summary_projection": dict(self.summary_projection)} if self.summary_projection else {}),
            "robustness": [dict(r) for r in self.robustness] if self.robustness is not None else None,
            "srcube_version": __version__,
        }


def evaluate_split(model: models.SRModel, task: str, split: str, *, degradation: Degradation = WALD,
                   robustness: bool = True, max_side: int | None = None, crop: tuple[int, int, int] | None = None,
                   bootstrap: Bootstrap = BOOTSTRAP, name: str | None = None, project: bool = False) -> SplitResult:
    """The Wald evaluation of ``model`` over every scene of a split (validation: model selection; test:
    reported once, :func:`write_test_report`). Scenes whose data is absent or that do not fit the model
    are skipped with the reason. ``robustness`` adds :func:`robustness_table` over the evaluated scenes."""
    chosen = split_scenes(task, split)
    results, skipped, used = [], [], []
    for sc in chosen:
        try:
            data = scene_data(sc, multiple=model.scale, crop=crop, max_side=max_side)
            results.append(evaluate_wald(model, data, model.scale, degradation, bootstrap=bootstrap,
                                         project=project))
            used.append(data)
        except (FileNotFoundError, IncompatibleSceneError) as exc:
            skipped.append((sc.name, str(exc)))
    summary = summarize(results, "bicubic", bootstrap.level)
    hpf = summarize(results, "hpf", bootstrap.level) if _sharpener(model) is not None else None
    # the projection's own share, for context: the model against bicubic made consistent the same way
    projected = summarize(results, "bicubic+projection", bootstrap.level) if project else None
    table = (robustness_table(model, used, model.scale, bootstrap=bootstrap, project=project)
             if robustness and used else None)
    return SplitResult(name or model.name, task, split, model.scale, degradation, bootstrap, tuple(results),
                       tuple(skipped), summary, hpf, table, projected)
