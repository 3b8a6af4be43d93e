"""One scene scored: every band, the model against its baselines (own-peak PSNR with block-bootstrap
intervals, paired gains, SSIM, the opensr-test metrics), and the mean over scene-bands with its stratified
interval (the conventions: :mod:`training.evaluation.stats`, :mod:`training.evaluation.opensr`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from srcube.models.psf import Degradation
from srcube.training.evaluation.opensr import OPENSR_BORDER, consistency, correctness
from srcube.training.evaluation.stats import (
    BOOTSTRAP,
    ArrayLike,
    Bootstrap,
    _3d,
    _boot_gain,
    _boot_psnr,
    _finite,
    _mean,
    _scene_seed,
    _t,
    block_sse,
    interval,
    own_peak,
    psnr_own_peak,
    resample_counts,
)
from srcube.training.metrics import ssim


@dataclass(frozen=True)
class Score:
    """One method on one band: PSNR (own peak) with its interval, SSIM (data range of the reference)."""

    psnr: float
    psnr_ci: tuple[float, float]
    ssim: float | None  # None where it was not asked for (robustness rows)


@dataclass(frozen=True)
class BandRow:
    """The model and its baselines on one band of one scene; gains paired over the same blocks."""

    scene: str
    band: str
    peak: float
    pixels: int
    n_blocks: int
    model: Score
    baselines: Mapping[str, Score]
    gains: Mapping[str, tuple[float, tuple[float, float]]]  # baseline -> (gain dB, interval)
    opensr: Mapping[str, float | None] = field(default_factory=dict)
    boot_gains: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def gain(self) -> float:
        """Gain over bicubic (dB)."""
        return self.gains["bicubic"][0]

    def to_json(self) -> dict[str, Any]:
        return {
            "scene": self.scene, "band": self.band, "peak": self.peak, "pixels": self.pixels,
            "n_blocks": self.n_blocks, "psnr": _finite(self.model.psnr), "psnr_ci": list(self.model.psnr_ci),
            "ssim": self.model.ssim,
            "baselines": {name: {"psnr": _finite(s.psnr), "psnr_ci": list(s.psnr_ci), "ssim": s.ssim,
                                 "gain": _finite(self.gains[name][0]), "gain_ci": list(self.gains[name][1])}
                          for name, s in self.baselines.items()},
            **{k: _finite(v) for k, v in self.opensr.items()},
        }


@dataclass(frozen=True)
class SceneResult:
    """Every band of one scene, and the scene-level opensr-test metrics (all bands together)."""

    scene: str
    rows: tuple[BandRow, ...]
    scale: int
    degradation: str
    window: tuple[int, int, int, int] | None = None  # row0, col0, height, width of the reference grid
    place: str = ""
    opensr: Mapping[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"scene": self.scene, "place": self.place, "scale": self.scale, "degradation": self.degradation,
                "window": list(self.window) if self.window else None,
                **{k: _finite(v) for k, v in self.opensr.items()}, "rows": [r.to_json() for r in self.rows]}


def _score(x: torch.Tensor, ref: torch.Tensor, sse: np.ndarray, n: np.ndarray, counts: np.ndarray,
           level: float, with_ssim: bool) -> Score:
    p, peak = psnr_own_peak(x, ref)
    data_range = max(float(ref.max() - ref.min()), 1e-12)
    return Score(p, interval(_boot_psnr(sse, n, counts, peak), level),
                 ssim(x, ref, data_range=data_range) if with_ssim else None)


def compare(sr: ArrayLike, baselines: Mapping[str, ArrayLike], reference: ArrayLike, lr: ArrayLike, *, scale: int,
            scene: str, bands: Sequence[str] | None = None, bootstrap: Bootstrap = BOOTSTRAP,
            opensr: bool = True, degradation: str = "", window: tuple[int, int, int, int] | None = None,
            place: str = "", border: int = OPENSR_BORDER, with_ssim: bool = True) -> SceneResult:
    """Score an SR image and its baselines against the reference, per band (all (bands, H, W) on the
    reference grid; ``lr`` the input on the low grid). ``baselines`` must contain ``"bicubic"``.
    ``opensr=False`` / ``with_ssim=False`` leave those metrics out (faster: robustness rows)."""
    ref = _3d(_t(reference))
    x = _3d(_t(sr))
    base = {k: _3d(_t(v)) for k, v in baselines.items()}
    if "bicubic" not in base:
        raise ValueError("the baselines must include 'bicubic'")
    for name, arr in [("sr", x), *base.items()]:
        if arr.shape != ref.shape:
            raise ValueError(f"{name} is {tuple(arr.shape)}, the reference {tuple(ref.shape)}")
    names = list(bands) if bands is not None else [f"band{i + 1}" for i in range(ref.shape[0])]
    if len(names) != ref.shape[0]:
        raise ValueError(f"{len(names)} band names for {ref.shape[0]} bands")
    sse, n = block_sse(x, ref, bootstrap.block)
    base_sse = {k: block_sse(v, ref, bootstrap.block)[0] for k, v in base.items()}
    counts = resample_counts(n.size, bootstrap.resamples, np.random.default_rng(_scene_seed(bootstrap.seed, scene)))
    low = _3d(_t(lr))
    cons = consistency(low, x, scale, border=border) if opensr else None
    rows = []
    for c, band in enumerate(names):
        model_score = _score(x[c], ref[c], sse[c], n, counts, bootstrap.level, with_ssim)
        scores, gains, boots = {}, {}, {}
        for k, v in base.items():
            scores[k] = _score(v[c], ref[c], base_sse[k][c], n, counts, bootstrap.level, with_ssim)
            boots[k] = _boot_gain(sse[c], base_sse[k][c], counts)
            gain = 0.0 if model_score.psnr == scores[k].psnr else model_score.psnr - scores[k].psnr
            gains[k] = (gain, interval(boots[k], bootstrap.level))
        extra: dict[str, float | None] = {}
        if cons is not None:
            corr = correctness(low[c], x[c], ref[c], scale, border=border)
            extra = {"consistency_l1": cons["reflectance_l1"][c], "spatial_px": cons["spatial_px"][c],
                     "improvement_pct": corr["improvement_pct"], "omission_pct": corr["omission_pct"],
                     "hallucination_pct": corr["hallucination_pct"]}
        rows.append(BandRow(scene, band, own_peak(ref[c]), int(n.sum()), int(n.size), model_score, scores, gains,
                            extra, boots))
    scene_metrics: dict[str, float | None] = {}
    if cons is not None:
        corr = correctness(low, x, ref, scale, border=border)
        scene_metrics = {"consistency_l1": cons["reflectance_l1_all"], "spectral_deg": cons["spectral_deg"],
                         "spatial_px": cons["spatial_px_all"], "improvement_pct": corr["improvement_pct"],
                         "omission_pct": corr["omission_pct"], "hallucination_pct": corr["hallucination_pct"]}
    return SceneResult(scene, tuple(rows), scale, degradation, window, place, scene_metrics)


def summarize(results: Sequence[SceneResult], baseline: str = "bicubic", level: float = 0.95) -> dict[str, Any]:
    """Mean gain over ``baseline`` across scene-bands with its stratified bootstrap interval, mean PSNR and
    SSIM, and the worst scene-band (lowest gain, with its interval)."""
    rows = [r for res in results for r in res.rows if baseline in r.gains]
    if not rows:
        return {"baseline": baseline, "n": 0, "mean_gain": None, "mean_gain_ci": None, "worst": None}
    gains = np.array([r.gains[baseline][0] for r in rows])
    boot = np.stack([r.boot_gains[baseline] for r in rows]).mean(0)
    worst = min(rows, key=lambda r: r.gains[baseline][0])
    return {"baseline": baseline, "n": len(rows), "mean_gain": _finite(float(gains.mean())),
            "mean_gain_ci": list(interval(boot, level)),
            "mean_psnr": _finite(float(np.mean([r.model.psnr for r in rows]))),
            "mean_psnr_baseline": _finite(float(np.mean([r.baselines[baseline].psnr for r in rows]))),
            "mean_ssim": _mean([r.model.ssim for r in rows]),
            "mean_ssim_baseline": _mean([r.baselines[baseline].ssim for r in rows]),
            "worst": {"scene": worst.scene, "band": worst.band, "gain": _finite(worst.gains[baseline][0]),
                      "gain_ci": list(worst.gains[baseline][1])}}


def _degradation_json(d: Degradation) -> dict[str, Any]:
    return {"label": d.label, "sigma": d.sigma, "decimation": d.decimation, "noise": d.noise, "phase": list(d.phase)}
