"""Typed training configuration, read from YAML and validated before anything runs.

Paths in ``data.sources``/``data.root`` may use ``${SHARED}`` (the ``SRCUBE_SHARED`` environment
variable, default ``../shared`` beside the repository) and are relative to the config file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DATA_KINDS = ("wald", "wald-multiframe", "kelvins", "sen2venus", "worldstrat", "scenes", "scenes-sharpen",
              "scenes-multiframe")


class ConfigError(ValueError):
    """A training configuration that cannot run, with what to change."""


@dataclass(frozen=True)
class ModelCfg:
    architecture: str
    scale: int
    config: dict[str, Any] = field(default_factory=dict)
    normalisation: dict[str, float] = field(default_factory=lambda: {"offset": 0.0, "scale": 1.0})
    name: str = ""  # weights name (default: the config's name)
    sensors: list[str] = field(default_factory=list)  # sensors the weights are meant for (models.default_model)


@dataclass(frozen=True)
class DataCfg:
    kind: str
    sources: list[str] = field(default_factory=list)  # images (wald), sites (sen2venus), root (kelvins, worldstrat)
    bands: list[int] | None = None  # 1-based raster bands for wald sources
    band: str | None = None  # kelvins: RED or NIR (None: both)
    patch: int = 64  # HR patch size (wald, wald-multiframe) / LR patch (kelvins)
    train_window: list[float] = field(default_factory=lambda: [0.0, 0.75, 0.0, 1.0])
    val_window: list[float] = field(default_factory=lambda: [0.8, 1.0, 0.0, 1.0])
    train_samples: int = 1024
    val_samples: int = 64
    band_agnostic: bool = True
    n_views: int = 8
    min_L: int = 1
    val_sources: list[str] = field(default_factory=list)  # multi-frame: separate validation scenes
    shifted_sources: list[str] = field(default_factory=list)  # wald-multiframe: single images for ShiftedViews
    shifted_samples: int = 0  # how many ShiftedViews samples to add to the training set
    split_csv: str | None = None
    mtf: float = 0.3
    max_invalid: float = 0.0
    task: str = ""  # scenes / scenes-sharpen: the task whose splits by place are used (training.datasets.scenes)
    gain: list[float] = field(default_factory=lambda: [0.7, 1.8])  # scenes: random brightness gain range
    sigma: list[float] = field(default_factory=lambda: [0.3, 0.7])  # scenes: random PSF width range (x scale)
    p_area: float = 0.3  # scenes: share of samples decimated by block means instead of point sampling
    max_phase: float = 0.5  # scenes: largest sub-pixel sampling phase (output pixels) of point decimation
    max_noise: float = 0.002  # scenes: largest noise standard deviation (reflectance), half the samples
    # scenes-multiframe: self-supervised samples per epoch (real views, a held-out real frame as the target; loss
    # term "selfsup"), each step's batch of them fused with the Wald batch; 0: none
    selfsup_samples: int = 0
    description: str = ""


@dataclass(frozen=True)
class TrainCfg:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    amp: str = "auto"  # "auto" (bf16 autocast on CUDA, off on CPU), "bf16" (CUDA or CPU), "fp16" (CUDA), "off"
    ema: float | None = None  # decay, e.g. 0.999
    loss: dict[str, float] = field(default_factory=lambda: {"l1": 1.0})
    scheduler: str = "cosine"  # or "constant"
    warmup_steps: int = 0  # linear learning-rate warm-up (zero-initialised output layers + Adam need it)
    num_workers: int = 0
    threads: int | None = None  # torch CPU threads
    max_steps_per_epoch: int | None = None


@dataclass(frozen=True)
class Config:
    name: str
    model: ModelCfg
    data: DataCfg
    train: TrainCfg = field(default_factory=TrainCfg)
    output: str = "runs/{name}"
    seed: int = 0
    device: str = "auto"
    licence: str = "Apache-2.0"
    path: str = ""  # the YAML file it came from

    @property
    def out_dir(self) -> Path:
        p = Path(self.output.format(name=self.name))
        return p if p.is_absolute() else REPO / p


LOSS_TERMS = ("l1", "mse", "ssim", "cmse", "registered", "adversarial", "feature", "selfsup")


def portable(obj: Any) -> Any:
    """``obj`` with this machine's shared-data and repository paths written back as ``${SHARED}``
    and ``${REPO}`` (for metadata that ships: no local absolute paths)."""
    if isinstance(obj, str):
        shared = str(Path(os.environ.get("SRCUBE_SHARED", str(REPO.parent / "shared"))).resolve())
        return obj.replace(shared, "${SHARED}").replace(str(REPO), "${REPO}")
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v) for v in obj]
    return obj


def _expand(value: str, base: Path) -> str:
    shared = os.environ.get("SRCUBE_SHARED", str(REPO.parent / "shared"))
    s = value.replace("${SHARED}", shared).replace("${REPO}", str(REPO))
    if "${SAMPLE}" in s:  # the generated sample archive (made on first use)
        from srcube.pipeline.testing import sample

        s = s.replace("${SAMPLE}", str(sample.ensure_archive()))
    p = Path(s)
    return str(p if p.is_absolute() or "://" in s else (base / p).resolve())


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(known)}")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_config(raw: dict[str, Any], base: Path = REPO, path: str = "") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a YAML mapping")
    for key in ("name", "model", "data"):
        if key not in raw:
            raise ConfigError(f"the config needs '{key}'")
    raw = dict(raw)
    model = _build(ModelCfg, raw.pop("model"), "model")
    data_raw = dict(raw.pop("data"))
    for key in ("sources", "val_sources", "shifted_sources"):
        data_raw[key] = [_expand(s, base) for s in data_raw.get(key, [])]
    if data_raw.get("split_csv"):
        data_raw["split_csv"] = _expand(data_raw["split_csv"], base)
    data = _build(DataCfg, data_raw, "data")
    train = _build(TrainCfg, raw.pop("train", {}), "train")
    cfg = _build(Config, {**raw, "model": model, "data": data, "train": train, "path": path}, "config")
    validate(cfg)
    return cfg


def load_config(path: str | Path) -> Config:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config {p} does not exist")
    return parse_config(yaml.safe_load(p.read_text()), p.resolve().parent, str(p))


def windows_disjoint(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    """Two (row0, row1, col0, col1) windows of fractions of an image share no area."""
    if not a or not b:
        return False
    return a[1] <= b[0] or b[1] <= a[0] or a[3] <= b[2] or b[3] <= a[2]


def _check_selfsup(cfg: Config) -> None:
    selfsup = cfg.train.loss.get("selfsup", 0) > 0
    if selfsup != (cfg.data.selfsup_samples > 0):
        raise ConfigError("train.loss selfsup and data.selfsup_samples go together: the self-supervised term "
                          f"needs its samples and the samples need the term (got loss {cfg.train.loss}, "
                          f"selfsup_samples {cfg.data.selfsup_samples})")
    if selfsup and cfg.data.kind not in ("scenes-multiframe", "kelvins"):
        raise ConfigError("the self-supervised term (train.loss selfsup) is for data.kind scenes-multiframe or "
                          "kelvins: real revisits of one place predicting each other")
    if selfsup and cfg.data.kind == "kelvins" and cfg.data.patch > 116:
        raise ConfigError(f"data.patch {cfg.data.patch} is too large for the self-supervised samples of 128 px "
                          "Kelvins frames: registering a view reads 6 px beyond its crop; use data.patch <= 116")


def validate(cfg: Config) -> None:
    from srcube import models

    if cfg.data.kind not in DATA_KINDS:
        raise ConfigError(f"data.kind must be one of {DATA_KINDS}, got {cfg.data.kind!r}")
    if cfg.model.architecture not in models.list_models():
        raise ConfigError(f"model.architecture {cfg.model.architecture!r} is not registered; "
                          f"known: {', '.join(models.list_models())}")
    if models.entry(cfg.model.architecture).kind == "interpolation":
        raise ConfigError(f"{cfg.model.architecture} has nothing to train")
    multi = models.entry(cfg.model.architecture).kind == "multi-frame"
    sharpen = models.entry(cfg.model.architecture).kind == "sharpen"
    if sharpen != (cfg.data.kind == "scenes-sharpen"):
        raise ConfigError(f"model {cfg.model.architecture} and data.kind {cfg.data.kind!r} do not fit: band "
                          "sharpeners train on data.kind scenes-sharpen, and only they do")
    if multi != (cfg.data.kind in ("wald-multiframe", "kelvins", "worldstrat", "scenes-multiframe")):
        raise ConfigError(f"model {cfg.model.architecture} is {'multi-frame' if multi else 'single-image'} but "
                          f"data.kind {cfg.data.kind!r} gives {'single images' if multi else 'frame stacks'}")
    if cfg.data.kind in ("scenes", "scenes-sharpen", "scenes-multiframe"):
        from srcube.training.datasets.scenes import scenes

        try:
            found = scenes(cfg.data.task)
        except ValueError as exc:
            raise ConfigError(f"data.task: {exc}") from None
        missing = [s.name for s in found if s.split in ("train", "validation") and not s.available()]
        if missing:
            raise ConfigError(f"scenes of task {cfg.data.task} are absent: {missing} (../shared/data)")
        if cfg.data.patch % cfg.model.scale:
            raise ConfigError(f"data.patch {cfg.data.patch} must be a multiple of model.scale {cfg.model.scale}")
        _check_selfsup(cfg)
        return
    if multi != (cfg.data.kind in ("wald-multiframe", "kelvins", "worldstrat")):
        raise ConfigError(f"model {cfg.model.architecture} is {'multi-frame' if multi else 'single-image'} but "
                          f"data.kind {cfg.data.kind!r} gives {'single images' if multi else 'frame stacks'}")
    _check_selfsup(cfg)
    bad = sorted(set(cfg.train.loss) - set(LOSS_TERMS))
    if bad or not cfg.train.loss or not any(v > 0 for v in cfg.train.loss.values()):
        raise ConfigError(f"train.loss must weight some of {LOSS_TERMS}, got {cfg.train.loss}")
    if cfg.train.amp not in ("auto", "bf16", "fp16", "off"):
        raise ConfigError(f"train.amp must be auto, bf16, fp16 or off, got {cfg.train.amp!r}")
    if cfg.train.ema is not None and not 0 < cfg.train.ema < 1:
        raise ConfigError(f"train.ema must be a decay in (0, 1), got {cfg.train.ema}")
    if cfg.train.epochs < 1 or cfg.train.batch_size < 1 or cfg.train.lr <= 0:
        raise ConfigError("train.epochs and train.batch_size must be >= 1 and train.lr > 0")
    if cfg.data.kind in ("wald", "wald-multiframe") and cfg.data.patch % cfg.model.scale:
        raise ConfigError(f"data.patch {cfg.data.patch} must be a multiple of model.scale {cfg.model.scale}")
    if not cfg.data.sources:
        raise ConfigError("data.sources is empty")
    if cfg.data.kind == "wald" and not cfg.data.val_sources:
        tw, vw = cfg.data.train_window, cfg.data.val_window
        if not windows_disjoint(tw, vw):
            raise ConfigError(f"data.train_window {list(tw)} and data.val_window {list(vw)} overlap: validation "
                              "must be on an area the model never trains on")
    for src in (*cfg.data.sources, *cfg.data.val_sources):
        if "://" not in src and not Path(src).exists():
            raise ConfigError(f"data source {src} does not exist")
