"""The trainer: config -> data -> model -> epochs with validation -> checkpoints -> weights.

AMP (bf16/fp16 autocast on CUDA, bf16 on a CPU when asked), gradient clipping, optional EMA of the weights, cosine or
constant learning rate, checkpoint every epoch (``last.pt``, ``best.pt``) and resume, validation
each epoch against the interpolation baseline, CSV and TensorBoard logs, seeds. Runs on the CPU
here and on CUDA when present, as one process or data-parallel on several (:mod:`srcube.training.distributed`:
DistributedDataParallel, each global batch shared out so that N processes train the weights of one; rank 0 alone
writes). The best checkpoint is exported as ``NAME.safetensors`` +
``NAME.json`` with its validation metrics and the recipe.
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import math
import os
import pickle
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import BatchSampler, ConcatDataset, DataLoader, Dataset, RandomSampler, Subset

from srcube import models
from srcube.models.base import Normalized
from srcube.models.consistency import own_projection
from srcube.models.highresnet import masked_median
from srcube.models.psf import SENSOR_PSF
from srcube.models.sisr import Discriminator
from srcube.models.weights import Normalisation
from srcube.training import losses
from srcube.training.config import Config, ConfigError, portable
from srcube.training.distributed import (
    RankBatches,
    World,
    average_gradients,
    check_batch,
    gather_rows,
    loss_weight,
    share,
    sum_over_ranks,
    train_device,
)
from srcube.training.metrics import cpsnr, cssim, psnr, ssim

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def is_multi(cfg: Config) -> bool:
    return models.entry(cfg.model.architecture).kind == "multi-frame"


def is_sharpen(cfg: Config) -> bool:
    return models.entry(cfg.model.architecture).kind == "sharpen"


def make_datasets(cfg: Config) -> tuple[Dataset, Dataset]:
    """(train, validation) datasets of the config; validation never overlaps training."""
    d, s = cfg.data, cfg.model.scale
    if d.kind in ("scenes", "scenes-sharpen", "scenes-multiframe"):  # splits by place: other places validate
        from srcube.training.datasets.real import SceneMultiFrame, SceneSharpen, SceneWald
        from srcube.training.datasets.scenes import scenes as split_scenes

        train_scenes, val_scenes = split_scenes(d.task, "train"), split_scenes(d.task, "validation")
        gain = (float(d.gain[0]), float(d.gain[1]))
        if d.kind == "scenes-multiframe":
            return (SceneMultiFrame(train_scenes, s, d.n_views, d.patch, d.train_samples, train=True, seed=cfg.seed,
                                    gain=gain),
                    SceneMultiFrame(val_scenes, s, d.n_views, d.patch, d.val_samples, train=False, seed=cfg.seed + 1))
        if d.kind == "scenes-sharpen":
            return (SceneSharpen(train_scenes, d.patch, d.train_samples, train=True, seed=cfg.seed, ratio=s, gain=gain),
                    SceneSharpen(val_scenes, d.patch, d.val_samples, train=False, seed=cfg.seed + 1, ratio=s))
        return (SceneWald(train_scenes, s, d.patch, d.train_samples, train=True, seed=cfg.seed,
                          band_agnostic=d.band_agnostic, gain=gain, sigma=(float(d.sigma[0]), float(d.sigma[1])),
                          p_area=d.p_area, max_phase=d.max_phase, max_noise=d.max_noise),
                SceneWald(val_scenes, s, d.patch, d.val_samples, train=False, seed=cfg.seed + 1,
                          band_agnostic=d.band_agnostic))
    if d.kind == "wald":
        from srcube.training.datasets.wald import WaldPairs, read_image

        images = [read_image(p, bands=d.bands) for p in d.sources]
        return (WaldPairs(images, s, d.patch, d.train_samples, seed=cfg.seed, window=tuple(d.train_window),  # type: ignore[arg-type]
                          band_agnostic=d.band_agnostic, mtf=d.mtf, max_invalid=d.max_invalid),
                WaldPairs(images, s, d.patch, d.val_samples, seed=cfg.seed + 1, window=tuple(d.val_window),  # type: ignore[arg-type]
                          band_agnostic=d.band_agnostic, fixed=True, mtf=d.mtf, max_invalid=d.max_invalid))
    if d.kind == "wald-multiframe":
        from srcube.pipeline.sensors.probav import read_imgset
        from srcube.training.datasets.wald import WaldMultiFrame

        def scenes(paths: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
            sets = [read_imgset(p, require_qm=False) for p in paths]
            frames = [im.lr.astype(np.float32) / 65535.0 for im in sets]
            masks = [im.qm if im.qm is not None else np.ones(im.lr.shape, bool) for im in sets]
            return frames, masks

        if not d.val_sources:
            raise ConfigError("wald-multiframe needs data.val_sources: scenes kept apart for validation")
        tf, tm = scenes(d.sources)
        vf, vm = scenes(d.val_sources)
        train_mf: Dataset = WaldMultiFrame(tf, tm, s, d.n_views, d.patch, d.train_samples, cfg.seed, d.mtf,
                                           augment=True)
        if d.shifted_sources and d.shifted_samples:
            from srcube.training.datasets.wald import ShiftedViews, read_image

            images = [read_image(p) for p in d.shifted_sources]
            shifted = ShiftedViews(images, s, d.n_views, d.patch, d.shifted_samples, seed=cfg.seed,
                                   window=tuple(d.train_window), mtf=d.mtf)  # type: ignore[arg-type]
            train_mf = ConcatDataset([train_mf, shifted])
        return train_mf, WaldMultiFrame(vf, vm, s, d.n_views, None, d.val_samples, cfg.seed + 1, d.mtf)
    if d.kind == "kelvins":
        from srcube.training.datasets.probav import KelvinsDataset

        full = KelvinsDataset(d.sources[0], "train", d.band, n_views=d.n_views, min_L=d.min_L, patch=None)
        n_val = max(1, len(full) // 10)
        patched = KelvinsDataset(d.sources[0], "train", d.band, n_views=d.n_views, min_L=d.min_L,
                                 patch=d.patch if d.patch < 128 else None, seed=cfg.seed)
        return Subset(patched, range(len(full) - n_val)), Subset(full, range(len(full) - n_val, len(full)))
    if d.kind == "sen2venus":
        from srcube.training.datasets.sen2venus import Sen2VenusDataset

        group = "10m" if cfg.model.scale == 2 else "20m"
        train_sites = d.sources
        val_sites = d.val_sources or d.sources[-1:]
        if not d.val_sources:
            train_sites = d.sources[:-1] or d.sources
        return (Sen2VenusDataset(train_sites, group, band_agnostic=d.band_agnostic),
                Sen2VenusDataset(val_sites, group, band_agnostic=d.band_agnostic))
    if d.kind == "worldstrat":
        from srcube.training.datasets.worldstrat import WorldStratDataset

        if not d.split_csv:
            raise ConfigError("worldstrat needs data.split_csv (the official stratified split)")
        # LR resized to data.patch and HR to scale x that, as the official loader resizes (160 -> 1054)
        lr_size, hr_size = (d.patch, d.patch), (d.patch * s, d.patch * s)
        return (WorldStratDataset(d.sources[0], d.split_csv, "train", revisits=d.n_views, input_size=lr_size,
                                  output_size=hr_size),
                WorldStratDataset(d.sources[0], d.split_csv, "val", revisits=d.n_views, input_size=lr_size,
                                  output_size=hr_size))
    raise ConfigError(f"unknown data.kind {d.kind!r}")


def make_selfsup_datasets(cfg: Config) -> tuple[Dataset, Dataset] | None:
    """(train, validation) self-supervised datasets of a ``scenes-multiframe`` config with ``data.selfsup_samples``
    or of a ``kelvins`` one (the release's imgsets: their LR frames predicting each other beside the HR pairs)
    (:class:`training.datasets.real.SceneSelfSupervised`: real views predicting a held-out real frame), else None.
    Training crops have the views' size (``data.patch / scale`` view pixels for the Wald views, ``data.patch`` for
    Kelvins'), so that one forward pass fuses both."""
    d = cfg.data
    if d.kind not in ("scenes-multiframe", "kelvins") or d.selfsup_samples <= 0:
        return None
    from srcube.training.datasets.real import SceneSelfSupervised

    gain = (float(d.gain[0]), float(d.gain[1]))
    if d.kind == "kelvins":  # the release's imgsets, split as make_datasets splits them (the last tenth validates)
        from srcube.pipeline.sensors.probav import list_imgsets

        paths = list_imgsets(d.sources[0], "train", d.band)
        n_val = max(1, len(paths) // 10)
        train, val, patch = paths[: len(paths) - n_val], paths[len(paths) - n_val :], d.patch
    else:
        from srcube.training.datasets.scenes import scenes as split_scenes

        train, val = split_scenes(d.task, "train"), split_scenes(d.task, "validation")  # type: ignore[assignment]
        patch = d.patch // cfg.model.scale
    return (SceneSelfSupervised(train, d.n_views, patch, d.selfsup_samples, train=True, seed=cfg.seed + 2, gain=gain),
            SceneSelfSupervised(val, d.n_views, 0, d.val_samples, train=False, seed=cfg.seed + 3))


def build_model(cfg: Config) -> models.SRModel:
    net = models.build(cfg.model.architecture, scale=cfg.model.scale, **cfg.model.config)
    norm = Normalisation(**cfg.model.normalisation)
    return net if norm == Normalisation() else Normalized(net, norm)


def _bare(model: torch.nn.Module) -> models.SRModel:
    inner = model.module if isinstance(model, AveragedModel) else model
    return inner  # type: ignore[return-value]


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device``: ``auto`` is bf16 on CUDA and off elsewhere; ``bf16`` runs
    on CUDA and on a CPU (CPU autocast: slower than float32 on CPUs without bf16 units, but the same code path);
    ``fp16`` (with loss scaling) on CUDA only, as GradScaler is CUDA's here."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode in ("auto", "bf16") and device.type in ("cuda", "cpu"):
        return torch.bfloat16
    if mode == "fp16" and device.type == "cuda":
        return torch.float16
    raise ConfigError(f"train.amp {mode!r} does not run on {device}: fp16 autocast (with loss scaling) is for CUDA "
                      "devices, bf16 for CUDA and CPUs; use --amp bf16 or --amp off here")


class CheckpointError(ValueError):
    """A training checkpoint that holds more than tensors and plain values (a crafted pickle, or one written by
    an srcube before checkpoints were plain): never unpickled."""


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """A checkpoint written by :class:`Trainer`, read with ``torch.load(weights_only=True)``: tensors and plain
    values only, so a crafted checkpoint cannot run code when it is resumed or exported (CheckpointError)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values, which srcube does not unpickle (a crafted "
            f"file, or a checkpoint of an older srcube): {str(exc).splitlines()[0]}; train again without --resume, "
            "or from a checkpoint this srcube wrote") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of srcube's trainer")
    return state


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write a checkpoint whole or not at all (a temporary file renamed over it): a process killed while saving
    leaves the previous checkpoint, which a restarted run resumes from."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class Trainer:
    """One training run of a config. ``world``: this process among the processes of a data-parallel run (from
    :func:`srcube.training.distributed.process_group`); every rank builds the same trainer, rank 0 alone writes."""

    def __init__(self, cfg: Config, *, resume: bool = False, world: World | None = None) -> None:
        self.cfg = cfg
        self.world = world or World()
        self.local_batch = check_batch(cfg.train.batch_size, self.world.size)
        self.out = cfg.out_dir
        self.ckpt_dir = self.out / "checkpoints"
        self.device = train_device(cfg.device, self.world)
        if self.device.type == "cpu":  # the processes on one machine share its cores
            torch.set_num_threads(cfg.train.threads or max(1, (os.cpu_count() or 1) // self.world.local_size))
        self.amp = _amp_dtype(cfg.train.amp, self.device)
        seed_everything(cfg.seed)
        self.multi = is_multi(cfg)
        self.sharpen = is_sharpen(cfg)
        self.model = build_model(cfg).to(self.device)
        # context for validation: what the model's own projection (None unless it ends in one) makes of bicubic
        self.projection = None if (self.multi or self.sharpen) else own_projection(_bare(self.model))
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema))
                    if cfg.train.ema else None)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.train_ds, self.val_ds = make_datasets(cfg)
        self.shuffle = torch.Generator().manual_seed(cfg.seed)  # saved in checkpoints: a resumed run shuffles on
        if self.world.launched:  # the one-process batches (same sampler, same generator), each shared out
            batches = BatchSampler(RandomSampler(self.train_ds, generator=self.shuffle),  # type: ignore[arg-type]
                                   cfg.train.batch_size, drop_last=False)
            self.loader = DataLoader(self.train_ds, batch_sampler=RankBatches(batches, self.world),
                                     num_workers=cfg.train.num_workers, generator=self.shuffle)
        else:
            self.loader = DataLoader(self.train_ds, batch_size=cfg.train.batch_size, shuffle=True, drop_last=False,
                                     num_workers=cfg.train.num_workers, generator=self.shuffle)
        # self-supervised samples (real views, a held-out real frame as the target): a batch of them joins each
        # step's batch, drawn by their own shuffling sampler and shared out over the ranks alike
        self.shuffle_ss = torch.Generator().manual_seed(cfg.seed + 1)
        selfsup = make_selfsup_datasets(cfg)
        self.ss_train: Dataset | None = selfsup[0] if selfsup else None
        self.ss_val: Dataset | None = selfsup[1] if selfsup else None
        self.ss_loader: DataLoader | None = None
        if self.ss_train is not None:
            ss_batches = BatchSampler(RandomSampler(self.ss_train, generator=self.shuffle_ss),  # type: ignore[arg-type]
                                      cfg.train.batch_size, drop_last=False)
            self.ss_loader = DataLoader(self.ss_train, batch_sampler=RankBatches(ss_batches, self.world)
                                        if self.world.launched else ss_batches, num_workers=cfg.train.num_workers)
        # validation: each rank its contiguous share of the samples, joined in order (gather_rows); export
        # validates alone, on every sample
        self.val_all = DataLoader(self.val_ds, batch_size=cfg.train.batch_size, shuffle=False,
                                  num_workers=cfg.train.num_workers)
        self.val_loader = self.val_all if not self.world.launched else DataLoader(
            self.val_ds, batch_size=self.local_batch, sampler=share(len(self.val_ds), self.world),  # type: ignore[arg-type]
            num_workers=cfg.train.num_workers)
        steps = cfg.train.epochs * self._steps_per_epoch()
        self.sched: torch.optim.lr_scheduler.LambdaLR
        warm = max(0, cfg.train.warmup_steps)

        def factor(step: int) -> float:
            ramp = min(1.0, (step + 1) / warm) if warm else 1.0
            if cfg.train.scheduler != "cosine":
                return ramp
            t = min(1.0, step / max(1, steps))
            return ramp * (1 / 50 + (1 - 1 / 50) * 0.5 * (1 + math.cos(math.pi * t)))

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, factor)
        w = cfg.train.loss
        self.gan = w.get("adversarial", 0) > 0 or w.get("feature", 0) > 0
        if self.gan:
            self.disc = Discriminator(channels=_bare(self.model).channels, features=32).to(self.device)
            self.tap = losses.FeatureTap(self.disc)
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=cfg.train.lr)
        # fp16 autocast needs loss scaling (bf16 does not): on CUDA with train.amp = fp16 only
        fp16 = self.amp == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=fp16 and self.gan)
        # the module a training step runs: the model itself, or DistributedDataParallel's wrapper of it (which
        # averages the gradients over the ranks in the backward pass); checkpoints, EMA and validation use the model
        self.net: torch.nn.Module = self.model
        if self.world.launched:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda"
                                               else None)
        self.epoch, self.step, self.best = 0, 0, -math.inf
        self.history: list[dict[str, Any]] = []
        if resume:  # every rank reads the same checkpoint
            self._resume()
        elif self.world.main:  # a fresh run replaces the logs of an earlier run in the same folder
            import shutil

            (self.out / "metrics.csv").unlink(missing_ok=True)
            shutil.rmtree(self.out / "tb", ignore_errors=True)

    def close(self) -> None:
        """Let go of DistributedDataParallel's wrapper while its process group still exists: its reducer, freed
        after the group is destroyed, can wait forever for the group (a rank then never exits)."""
        if self.net is not self.model:
            self.net = self.model
            gc.collect()

    # --- bookkeeping ---------------------------------------------------------------------------

    def _steps_per_epoch(self) -> int:
        n = math.ceil(len(self.train_ds) / self.cfg.train.batch_size)  # type: ignore[arg-type]
        return min(n, self.cfg.train.max_steps_per_epoch or n)

    def _autocast(self) -> Any:
        if self.amp is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp)

    def _state(self) -> dict[str, Any]:
        """The checkpoint: tensors and plain Python values only (numpy's RNG state as a tensor and numbers, the
        config as JSON values), so that :func:`load_checkpoint` reads it with ``weights_only=True``."""
        kind, keys, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "opt": self.opt.state_dict(), "sched": self.sched.state_dict(), "epoch": self.epoch,
                "step": self.step, "best": float(self.best),
                "history": json.loads(json.dumps(self.history, default=float)),
                "disc": self.disc.state_dict() if self.gan else None,
                "opt_d": self.opt_d.state_dict() if self.gan else None,
                "rng": {"torch": torch.get_rng_state(),
                        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                                  float(gauss)],
                        "python": random.getstate(), "shuffle": self.shuffle.get_state(),
                        "shuffle_ss": self.shuffle_ss.get_state()},
                "scaler": self.scaler.state_dict(), "scaler_d": self.scaler_d.state_dict(),
                "config": json.loads(json.dumps(asdict(self.cfg), default=str))}

    def _resume(self) -> None:
        path = self.ckpt_dir / "last.pt"
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint to resume from at {path}")
        state = load_checkpoint(path, self.device)
        self.model.load_state_dict(state["model"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        # the schedule is a function of the step over this config's total: --resume --epochs N lengthens it,
        # from the step where the run stopped (the optimizer's saved rates are those of the old total)
        self.sched.load_state_dict(state["sched"])
        for group, base, f in zip(self.opt.param_groups, self.sched.base_lrs, self.sched.lr_lambdas, strict=True):
            group["lr"] = base * f(self.sched.last_epoch)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
            self.scaler_d.load_state_dict(state.get("scaler_d") or {})
        if self.gan and state["disc"]:
            self.disc.load_state_dict(state["disc"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.epoch, self.step, self.best, self.history = state["epoch"], state["step"], state["best"], state["history"]
        torch.set_rng_state(state["rng"]["torch"])
        kind, keys, pos, has_gauss, gauss = state["rng"]["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state["rng"]["python"])
        if "shuffle" in state["rng"]:
            self.shuffle.set_state(state["rng"]["shuffle"])
        if "shuffle_ss" in state["rng"]:
            self.shuffle_ss.set_state(state["rng"]["shuffle_ss"])
        log.info("resumed %s at epoch %d, step %d", self.cfg.name, self.epoch, self.step)

    # --- one step ------------------------------------------------------------------------------

    def _forward(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self.multi:
            b = {k: v.to(self.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            return model(b["views"], b["masks"], b["present"]), b["hr"], b.get("hr_clear")
        if self.sharpen:
            low, guide = batch["low"].to(self.device), batch["guide"].to(self.device)
            return model(low, guide), batch["hr"].to(self.device), None
        lr, hr = (t.to(self.device) for t in batch)
        return model(lr), hr, None

    def _forward_selfsup(self, model: torch.nn.Module, batch: Any,
                         ss: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The Wald batch and the self-supervised batch fused in one forward pass (one pass per step, as
        DistributedDataParallel wants): (SR of the Wald views, their HR, its clear mask, SR of the real views)."""
        b = {k: v.to(self.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        sb = {k: v.to(self.device) for k, v in ss.items() if isinstance(v, torch.Tensor)}
        n = b["views"].shape[0]
        sr = model(*(torch.cat([b[k], sb[k]]) for k in ("views", "masks", "present")))
        return sr[:n], b["hr"], b.get("hr_clear"), sr[n:]

    def _selfsup(self, sr_ss: torch.Tensor, ss: Any) -> torch.Tensor:
        return losses.selfsup_loss(sr_ss, ss["target"].to(self.device), ss["target_clear"].to(self.device),
                                   ss["target_shift"], self.cfg.model.scale, SENSOR_PSF["proba-v"])

    def _loss(self, sr: torch.Tensor, hr: torch.Tensor, clear: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        w, parts = self.cfg.train.loss, {}
        scale = self.cfg.model.scale
        if w.get("l1"):
            parts["l1"] = losses.l1(sr, hr)
        if w.get("mse"):
            parts["mse"] = losses.mse(sr, hr)
        if w.get("ssim"):
            parts["ssim"] = losses.ssim_loss(sr, hr)
        if w.get("cmse"):
            parts["cmse"] = losses.cmse_loss(sr, hr, clear, border=scale)
        if w.get("registered"):
            parts["registered"] = losses.registered_loss(sr, hr)
        if self.gan:
            g_adv, feat, d_loss = losses.gan_losses(self.disc, self.tap, sr, hr)
            parts["adversarial"], parts["feature"] = g_adv, feat
            self._d_loss = d_loss
        total = sum(w.get(k, 0.0) * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}  # type: ignore[return-value]

    def _batch_weight(self, n_items: int, step: int) -> float:
        """What this rank's mean loss over its share of step ``step``'s global batch, drawn from a set of ``n_items``
        samples, is multiplied by (:func:`loss_weight`; 1 for a process not launched)."""
        if not self.world.launched:
            return 1.0
        batch_size = self.cfg.train.batch_size
        return loss_weight(min(batch_size, n_items - step * batch_size), self.world)

    def train_epoch(self) -> float:
        self.net.train()
        total, n = 0.0, 0
        limit = self._steps_per_epoch()
        for ds in (self.train_ds, *getattr(self.train_ds, "datasets", ()), self.ss_train):
            if hasattr(ds, "set_epoch"):  # random degradations differ from one epoch to the next
                ds.set_epoch(self.epoch)
        n_train = len(self.train_ds)  # type: ignore[arg-type]
        n_ss = len(self.ss_train) if self.ss_train is not None else 0  # type: ignore[arg-type]
        ss_batches = iter(self.ss_loader) if self.ss_loader is not None else None
        for i, batch in enumerate(self.loader):
            if i >= limit:
                break
            ss = next(ss_batches, None) if ss_batches is not None else None
            with self._autocast():
                if ss is None:
                    sr, hr, clear = self._forward(self.net, batch)
                    loss, _ = self._loss(sr.float(), hr.float(), clear)
                else:
                    sr, hr, clear, sr_ss = self._forward_selfsup(self.net, batch, ss)
                    loss, _ = self._loss(sr.float(), hr.float(), clear)
                    ss_loss = self.cfg.train.loss["selfsup"] * self._selfsup(sr_ss.float(), ss)
            if self.world.launched:  # this rank's share of the global batch (losses are means over samples)
                weight = self._batch_weight(n_train, i)
                loss = loss * weight
                if self.gan:
                    self._d_loss = self._d_loss * weight
            if ss is not None:  # the self-supervised batch: its own share of its own global batch
                loss = loss + ss_loss * self._batch_weight(n_ss, i)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg.train.grad_clip:
                self.scaler.unscale_(self.opt)  # clip the true gradients
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            if self.gan:
                self.opt_d.zero_grad(set_to_none=True)
                self.scaler_d.scale(self._d_loss).backward()
                average_gradients(self.disc.parameters(), self.world)
                self.scaler_d.step(self.opt_d)
                self.scaler_d.update()
            if self.ema:
                self.ema.update_parameters(self.model)
            total += float(loss.detach()) / self.world.size  # launched: this rank's part of the global batch's loss
            n += 1
            self.step += 1
        return sum_over_ranks(total, self.world) / max(n, 1)

    # --- validation ----------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self, model: torch.nn.Module | None = None, *, full: bool = False,
                 alone: bool = False) -> dict[str, float]:
        """Mean validation metrics of the model and of the interpolation baseline (multi-frame: the
        bicubic clear-median composite). ``full`` adds cSSIM (49 SSIM maps per sample: slow). In a data-parallel
        run every rank scores its share of the samples and the per-sample values are joined in order (the means
        of one process); ``alone``: this process scores every sample and talks to no other (export)."""
        model = model or (self.ema.module if self.ema else self.model)
        model.eval()
        rows: dict[str, list[float]] = {}
        s = self.cfg.model.scale
        for batch in self.val_all if alone else self.val_loader:
            sr, hr, clear = self._forward(model, batch)
            extra: torch.Tensor | None = None
            if self.multi:
                b = {k: v.to(self.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
                ref = masked_median(b["views"], b["masks"], b["present"])
                base = F.interpolate(ref, scale_factor=s, mode="bicubic", align_corners=False)
            elif self.sharpen:
                low, guide = batch["low"].to(self.device), batch["guide"].to(self.device)
                base = F.interpolate(low, scale_factor=s, mode="bicubic", align_corners=False)
                extra = models.build("hpf", scale=s)(low, guide)  # the no-learning baseline to beat
            else:
                lr_in = batch[0].to(self.device)
                base = F.interpolate(lr_in, scale_factor=s, mode="bicubic", align_corners=False)
                if self.projection is not None:  # context: what the projection alone makes of bicubic
                    extra = self.projection.project(lr_in, base)[0]
            for k in range(sr.shape[0]):
                pairs = {"": sr[k].float().cpu(), "_bicubic": base[k].float().cpu()}
                if extra is not None:
                    pairs["_hpf" if self.sharpen else "_bicubic_projected"] = extra[k].float().cpu()
                h = hr[k].float().cpu()
                c = None if clear is None else clear[k, 0].cpu()
                peak = float(h.max())  # the reference's own peak: the gain over a baseline is what selects
                for suffix, img in pairs.items():
                    rows.setdefault("psnr" + suffix, []).append(psnr(img.clamp(0, 1), h))
                    rows.setdefault("psnr_own_peak" + suffix, []).append(psnr(img, h, data_range=peak))
                    if full or self.multi:  # SSIM per epoch costs more than the epoch's training on a CPU
                        rows.setdefault("ssim" + suffix, []).append(ssim(img.clamp(0, 1), h))
                    if self.multi:
                        rows.setdefault("cpsnr" + suffix, []).append(cpsnr(img[0], h[0], c, border=s))
                        if full:
                            rows.setdefault("cssim" + suffix, []).append(cssim(img[0], h[0], c, border=s))
        if not alone:
            rows = gather_rows(rows, self.world)
        out = {k: float(np.mean(v)) for k, v in rows.items()}
        if self.ss_val is not None:  # every rank scores every held-out real frame (a few dozen)
            from srcube.training.evaluation.probav import native_frame_rows

            native = native_frame_rows(cast(models.SRModel, model), self.ss_val)
            out["native_cpsnr"] = float(np.mean([r["cpsnr_model"] for r in native]))
            out["native_cpsnr_median"] = float(np.mean([r["cpsnr_median_lr"] for r in native]))
            out["native_score"] = float(np.mean([r["cpsnr_median_lr"] / r["cpsnr_model"] for r in native]))
            # what selects: the Wald gain over bicubic of the median plus the gain on real frames over their median
            out["selection_gain"] = (out["cpsnr"] - out["cpsnr_bicubic"]) + (out["native_cpsnr"]
                                                                              - out["native_cpsnr_median"])
        if not self.multi:  # the selection metric: mean PSNR gain over bicubic (dB), per sample
            out["psnr_gain"] = out["psnr_own_peak"] - out["psnr_own_peak_bicubic"]
            if "psnr_own_peak_hpf" in out:
                out["psnr_gain_hpf"] = out["psnr_own_peak"] - out["psnr_own_peak_hpf"]
            if "psnr_own_peak_bicubic_projected" in out:
                out["psnr_gain_bicubic_projected"] = out["psnr_own_peak"] - out["psnr_own_peak_bicubic_projected"]
        return out

    # --- the run -------------------------------------------------------------------------------

    def _selection_key(self) -> str:
        """The validation metric that selects the best epoch: the mean PSNR gain over bicubic (single image), the
        Wald cPSNR (multi-frame), or with self-supervised samples the sum of the Wald cPSNR gain and the gain on
        real frames (``selection_gain``)."""
        if not self.multi:
            return "psnr_gain"
        return "selection_gain" if self.ss_val is not None else "cpsnr"

    def fit(self) -> dict[str, Any]:
        """Train to ``train.epochs``, validating and checkpointing after each epoch. Every rank of a data-parallel
        run trains and validates; rank 0 alone writes the config, logs and checkpoints."""
        from torch.utils.tensorboard import SummaryWriter

        main = self.world.main
        if main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(
                yaml.safe_dump(json.loads(json.dumps(asdict(self.cfg), default=str)), sort_keys=False))
        writer = SummaryWriter(str(self.out / "tb")) if main else None
        csv_path = self.out / "metrics.csv"
        key = self._selection_key()
        t_start = time.perf_counter()
        while self.epoch < self.cfg.train.epochs:
            t0 = time.perf_counter()
            train_loss = self.train_epoch()
            metrics = self.validate()
            self.epoch += 1
            row = {"epoch": self.epoch, "step": self.step, "train_loss": train_loss,
                   "lr": self.opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 2), **metrics}
            self.history.append(row)
            if metrics[key] > self.best:
                self.best = metrics[key]
                if main:  # before last.pt, which records this best: a run stopped between the two keeps both
                    save_checkpoint(self._state(), self.ckpt_dir / "best.pt")
            if not main:
                continue
            new_file = not csv_path.exists()
            with open(csv_path, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                if new_file:
                    w.writeheader()
                w.writerow(row)
            for k, v in row.items():
                if k != "epoch" and writer is not None:
                    writer.add_scalar(k, v, self.epoch)
            log.info("epoch %d: loss %.5f, val %s %.3f (%.1f s)", self.epoch, train_loss, key, metrics[key],
                     row["seconds"])
            save_checkpoint(self._state(), self.ckpt_dir / "last.pt")
        if writer is not None:
            writer.close()
        return {"epochs": self.epoch, "steps": self.step, "seconds": round(time.perf_counter() - t_start, 1),
                "history": self.history}

    def export(self, path: str | Path | None = None, *, trained: bool = True) -> models.WeightsMeta:
        """Write the best checkpoint's weights (EMA if used) with metrics and recipe."""
        state = load_checkpoint(self.ckpt_dir / "best.pt", torch.device("cpu"))
        net = build_model(self.cfg)
        if state["ema"]:
            ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.train.ema or 0.999))
            ema.load_state_dict(state["ema"])
            net = ema.module  # type: ignore[assignment]
        else:
            net.load_state_dict(state["model"])
        best = max(state["history"], key=lambda r: r[self._selection_key()])
        best = {**best, **self.validate(net.to(self.device), full=True, alone=True)}  # adds cSSIM for multi-frame
        name = self.cfg.model.name or self.cfg.name
        target = Path(path) if path else self.out / name
        d = self.cfg.data
        training = {
            "data": d.description or f"{d.kind}: {', '.join(Path(s).name for s in d.sources)}",
            "sources": d.sources, "val_sources": d.val_sources, "kind": d.kind,
            "train_window": d.train_window, "val_window": d.val_window,
            "recipe": json.loads(json.dumps(asdict(self.cfg), default=str)),
            "epochs": state["epoch"], "steps": state["step"], "device": str(self.device),
            "processes": self.world.size,
            "sensors": list(self.cfg.model.sensors), "licence": self.cfg.licence,
            # the network ends in the sensor's consistency projection (its output is consistent with its input)
            "consistency_projection": bool(self.projection is not None),
        }
        licence = self.cfg.licence
        if d.kind == "worldstrat":
            from srcube.training.datasets.worldstrat import HR_LICENCE

            if HR_LICENCE not in licence:  # the HR targets' licence follows the weights
                licence = f"{licence}; trained on {HR_LICENCE}: non-commercial use only"
        training["licence"] = licence
        training = portable(training)
        metrics = {k: round(float(v), 4) for k, v in best.items() if k not in ("epoch", "step", "lr", "seconds")}
        metrics["best_epoch"] = best["epoch"]
        return models.save_weights(net, target, name=name, trained=trained, training=training, metrics=metrics,
                                   licence=licence)
