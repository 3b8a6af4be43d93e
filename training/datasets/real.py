"""Wald-protocol training and validation samples from the real scenes of a split
(:mod:`training.datasets.scenes`), with degradations drawn at random for training.

* :class:`SceneWald`: single-image pairs. Training samples are random crops of the split's scenes
  (weighted by valid area), flipped and turned, with a random brightness gain (other places are
  brighter or darker than the training ones), degraded by a random :func:`models.psf.random_degradation`
  (blur width, point or area decimation, noise, sampling phase) drawn per sample and per epoch.
  Validation samples are a fixed grid of crops degraded with the sensor's own degradation.
  ``band_agnostic`` yields one band per sample (the 10 m bands and, as extra texture, the 20 m bands);
  otherwise the four 10 m bands together (cross-band models).
* :class:`SceneSharpen`: band-sharpening pairs: the 20 m bands degraded to 40 m and the 10 m guide
  degraded to 20 m with the same degradation; the target is the original 20 m bands.

Both implement ``set_epoch`` so that random draws differ from one epoch to the next (the trainer calls it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from srcube.models.psf import Degradation, random_degradation, sensor_degradation
from srcube.training.datasets.scenes import Scene, load_s2


class _Epoch(Dataset):
    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self, k: int) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.seed) * 1_000_003 + self.epoch * 10_007 + k)  # type: ignore[attr-defined]


def _valid_starts(valid: np.ndarray, size: int, stride: int) -> list[tuple[int, int]]:
    h, w = valid.shape
    out = []
    for r in range(0, h - size + 1, stride):
        for c in range(0, w - size + 1, stride):
            if valid[r : r + size, c : c + size].all():
                out.append((r, c))
    return out


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    turns, flip = int(torch.randint(4, (1,), generator=g)), bool(torch.randint(2, (1,), generator=g))
    x = torch.rot90(x, turns, dims=(-2, -1))
    return x.flip(-1) if flip else x


class SceneWald(_Epoch):
    """Single-image Wald pairs from real scenes (see the module docstring)."""

    def __init__(self, scenes: list[Scene], scale: int, patch: int, length: int, *, train: bool, seed: int = 0,
                 band_agnostic: bool = False, gain: tuple[float, float] = (0.7, 1.8),
                 degradation: Degradation | None = None, sigma: tuple[float, float] = (0.3, 0.7),
                 p_area: float = 0.3, max_phase: float = 0.5, max_noise: float = 0.002) -> None:
        if patch % scale:
            raise ValueError(f"patch {patch} must be a multiple of the scale {scale}")
        self.scale, self.patch, self.length, self.train, self.seed = scale, patch, length, train, seed
        self.band_agnostic, self.gain, self.sigma = band_agnostic, gain, sigma
        self.randomness = {"p_area": p_area, "max_phase": max_phase, "max_noise": max_noise}
        self.degradation = degradation or sensor_degradation()
        self.images: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []
        for scene in scenes:
            d = load_s2(scene)
            if band_agnostic:
                self.images.append(d["b10"])
                self.valid.append(d["valid10"])
                if "b20" in d:  # the 20 m bands: more real texture for a band-agnostic model
                    self.images.append(d["b20"])
                    self.valid.append(np.asarray((d["b20"] > 0).all(0)))
            elif d["b10"].shape[0] == 4:
                self.images.append(d["b10"])
                self.valid.append(d["valid10"])
        if not self.images:
            raise ValueError(f"no usable image in scenes {[s.name for s in scenes]}")
        stride = patch if not train else max(8, patch // 4)
        self.starts = [_valid_starts(v, patch, stride) for v in self.valid]
        weights = np.array([len(s) for s in self.starts], float)
        if weights.sum() == 0:
            raise ValueError(f"no fully valid {patch} px patch in scenes {[s.name for s in scenes]}")
        self.weights = weights / weights.sum()
        if not train:  # a fixed grid, every image in turn, one band after another for band-agnostic models
            self.fixed = [(i, r, c, b) for i, starts in enumerate(self.starts) for (r, c) in starts
                          for b in (range(self.images[i].shape[0]) if band_agnostic else [-1])]
            rng = np.random.default_rng(seed)
            if len(self.fixed) > length:
                keep = rng.choice(len(self.fixed), length, replace=False)
                self.fixed = [self.fixed[j] for j in sorted(keep)]
            self.length = len(self.fixed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.patch
        if not self.train:
            i, r, c, b = self.fixed[k]
            hr = torch.from_numpy(self.images[i][:, r : r + p, c : c + p].copy())
            if b >= 0:
                hr = hr[b : b + 1]
            g = torch.Generator().manual_seed(self.seed + k)
            return self.degradation(hr, self.scale, g), hr
        g = self._generator(k)
        i = int(torch.multinomial(torch.from_numpy(self.weights), 1, generator=g))
        r, c = self.starts[i][int(torch.randint(len(self.starts[i]), (1,), generator=g))]
        hr = torch.from_numpy(self.images[i][:, r : r + p, c : c + p].copy())
        if self.band_agnostic:
            b = int(torch.randint(hr.shape[0], (1,), generator=g))
            hr = hr[b : b + 1]
        hr = _augment(hr, g)
        lo, hi = self.gain
        hr = hr * (lo + (hi - lo) * float(torch.rand(1, generator=g)))
        return random_degradation(g, sigma=self.sigma, **self.randomness)(hr, self.scale, g), hr


class SceneSharpen(_Epoch):
    """Band-sharpening Wald samples: ``{"low": 40 m, "guide": 20 m, "hr": 20 m}`` (see the module docstring)."""

    def __init__(self, scenes: list[Scene], patch: int, length: int, *, train: bool, seed: int = 0,
                 ratio: int = 2, gain: tuple[float, float] = (0.7, 1.8),
                 degradation: Degradation | None = None) -> None:
        if patch % ratio:
            raise ValueError(f"patch {patch} must be a multiple of the ratio {ratio}")
        self.patch, self.length, self.train, self.seed, self.ratio, self.gain = patch, length, train, seed, ratio, gain
        self.degradation = degradation or sensor_degradation()
        self.low: list[np.ndarray] = []
        self.guide: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []
        for scene in scenes:
            d = load_s2(scene)
            if "b20" not in d:
                continue
            b20, b10 = d["b20"], d["b10"]
            h, w = b20.shape[1], b20.shape[2]
            self.low.append(b20)
            self.guide.append(b10[:, : 2 * h, : 2 * w])
            self.valid.append((b20 > 0).all(0) & d["valid10"][: 2 * h : 2, : 2 * w : 2])
        if not self.low:
            raise ValueError(f"no scene with 20 m bands in {[s.name for s in scenes]}")
        stride = patch if not train else max(8, patch // 4)
        self.starts = [_valid_starts(v, patch, stride) for v in self.valid]
        weights = np.array([len(s) for s in self.starts], float)
        self.weights = weights / weights.sum()
        if not train:
            self.fixed = [(i, r, c) for i, starts in enumerate(self.starts) for (r, c) in starts]
            if len(self.fixed) > length:
                keep = np.random.default_rng(seed).choice(len(self.fixed), length, replace=False)
                self.fixed = [self.fixed[j] for j in sorted(keep)]
            self.length = len(self.fixed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        p, r2 = self.patch, self.ratio
        if self.train:
            g = self._generator(k)
            i = int(torch.multinomial(torch.from_numpy(self.weights), 1, generator=g))
            r, c = self.starts[i][int(torch.randint(len(self.starts[i]), (1,), generator=g))]
            deg = random_degradation(g)
        else:
            i, r, c = self.fixed[k]
            g = torch.Generator().manual_seed(self.seed + k)
            deg = self.degradation
        hr = torch.from_numpy(self.low[i][:, r : r + p, c : c + p].copy())
        guide = torch.from_numpy(self.guide[i][:, 2 * r : 2 * (r + p), 2 * c : 2 * (c + p)].copy())
        if self.train:
            both = _augment(torch.cat([guide, hr.repeat_interleave(2, -2).repeat_interleave(2, -1)]), g)
            guide, hr = both[: guide.shape[0]], both[guide.shape[0] :, ::2, ::2]
            lo, hi = self.gain
            gain = lo + (hi - lo) * float(torch.rand(1, generator=g))
            hr, guide = hr * gain, guide * gain
        return {"low": deg(hr, r2, g), "guide": deg(guide, r2, g), "hr": hr}


class _Revisits(_Epoch):
    """Samples of real revisits (``self.frames``: one (T, H, W) stack per scene): training draws scenes in
    proportion to their frames; validation holds every frame of every scene once as the target."""

    frames: list[np.ndarray]
    length: int

    def _plan_targets(self, scenes: Sequence[Scene | Path], length: int, train: bool) -> None:
        if not self.frames:
            raise ValueError(f"no scene with two or more frames in {[getattr(s, 'name', s) for s in scenes]}")
        sizes = np.array([f.shape[0] for f in self.frames], float)
        self.weights = sizes / sizes.sum()
        if not train:  # every frame of every scene is the target once, on the whole (cropped) frame
            self.fixed = [(i, t) for i, f in enumerate(self.frames) for t in range(f.shape[0])]
            self.length = min(length, len(self.fixed)) if length else len(self.fixed)
            self.fixed = self.fixed[: self.length]

    def __len__(self) -> int:
        return self.length


class SceneMultiFrame(_Revisits):
    """Multi-frame Wald samples from real revisits (PROBA-V Kelvins LR frames, task ``probav``).

    One real frame is the target (another date than the views, as in the Kelvins data: the loss and
    the metric remove the brightness bias and search the shift); the views are other real frames of
    the same scene, chosen by clearance (the clearest first; ties in random order while training),
    each degraded by ``scale``: a random degradation per sample while training (each view with its
    own sampling phase on top of the real sub-pixel shifts between revisits), the sensor's for
    validation. Returns HighRes-net's batch dict (views, masks, present, hr, hr_clear).
    """

    def __init__(self, scenes: list[Scene], scale: int, n_views: int, patch: int, length: int, *, train: bool,
                 seed: int = 0, gain: tuple[float, float] = (0.7, 1.8),
                 degradation: Degradation | None = None) -> None:
        from srcube.training.datasets.scenes import load_probav

        if patch % scale:
            raise ValueError(f"patch {patch} must be a multiple of the scale {scale}")
        self.scale, self.n_views, self.patch, self.length, self.train = scale, n_views, patch, length, train
        self.seed, self.gain = seed, gain
        self.degradation = degradation or sensor_degradation("proba-v")
        self.frames: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []
        for scene in scenes:
            d = load_probav(scene)
            if d["frames"].shape[0] < 2:
                continue
            self.frames.append(d["frames"])
            self.valid.append(d["valid"])
        self._plan_targets(scenes, length, train)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        s, n = self.scale, self.n_views
        if self.train:
            g = self._generator(k)
            i = int(torch.multinomial(torch.from_numpy(self.weights), 1, generator=g))
            t = int(torch.randint(self.frames[i].shape[0], (1,), generator=g))
            size = self.patch
        else:
            i, t = self.fixed[k]
            g = torch.Generator().manual_seed(self.seed + k)
            size = (min(self.frames[i].shape[1:]) // s) * s
        frames, valid = self.frames[i], self.valid[i]
        _, h, w = frames.shape
        r = int(torch.randint(h - size + 1, (1,), generator=g)) if self.train else (h - size) // 2
        c = int(torch.randint(w - size + 1, (1,), generator=g)) if self.train else (w - size) // 2
        others = [j for j in range(frames.shape[0]) if j != t]
        clearness = {j: float(valid[j].mean()) for j in others}
        order = torch.randperm(len(others), generator=g).tolist() if self.train else list(range(len(others)))
        others = sorted((others[o] for o in order), key=lambda j: -clearness[j])[:n]
        target = torch.from_numpy(frames[t, r : r + size, c : c + size].copy())[None]
        clear = torch.from_numpy(valid[t, r : r + size, c : c + size].copy())[None]
        stack = torch.from_numpy(frames[others, r : r + size, c : c + size].copy())
        vmask = torch.from_numpy(valid[others, r : r + size, c : c + size].astype(np.float32))
        if self.train:
            both = _augment(torch.cat([target, clear.float(), stack, vmask]), g)
            target, clear = both[:1], both[1:2] > 0.5
            stack, vmask = both[2 : 2 + len(others)], both[2 + len(others) :]
            lo, hi = self.gain
            gain = lo + (hi - lo) * float(torch.rand(1, generator=g))
            target, stack = target * gain, stack * gain
            base = random_degradation(g, max_phase=0.0)
            views = torch.stack([Degradation(base.sigma, base.decimation, base.noise,
                                             phase=tuple((torch.rand(2, generator=g) - 0.5).tolist()) if
                                             base.decimation == "point" else (0.0, 0.0))(stack[j], s, g)
                                 for j in range(len(others))])
        else:
            views = self.degradation(stack, s, g)
        m = torch.nn.functional.avg_pool2d(vmask[:, None], s)[:, 0] > 0.999
        out_views = torch.zeros(n, 1, size // s, size // s)
        out_masks = torch.zeros(n, size // s, size // s)
        present = torch.zeros(n, dtype=torch.bool)
        out_views[: len(others), 0] = views
        out_masks[: len(others)] = m.float()
        present[: len(others)] = True
        return {"views": out_views, "masks": out_masks, "present": present, "hr": target,
                "hr_clear": clear.float()}


def _probav_frames(scene: Scene | Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, H, W) reflectance DN / 65535, clear (T, H, W)) of a scene of the splits, or of an imgset folder
    of the Kelvins release (its QM masks, where it has them, say what is clear)."""
    from srcube.training.datasets.scenes import KELVINS_DN, KELVINS_MISSING, load_probav

    if isinstance(scene, Scene):
        d = load_probav(scene)
        return d["frames"], d["valid"]
    from srcube.pipeline.sensors.probav import read_imgset

    im = read_imgset(scene, require_qm=False)
    valid = (im.lr != KELVINS_MISSING) & (im.lr > 0)
    if im.qm is not None:
        valid &= im.qm
    return np.where(valid, im.lr.astype(np.float32), 0.0) / np.float32(KELVINS_DN), valid


def augment_shift(shift: tuple[float, float], turns: int, flip: bool) -> tuple[float, float]:
    """The (dy, dx) shift between two images after both went through :func:`_augment`'s ``turns`` quarter turns
    (``torch.rot90`` over the last two dims) and then, if ``flip``, the flip of the last dim."""
    dy, dx = shift
    for _ in range(turns % 4):
        dy, dx = -dx, dy
    return (dy, -dx) if flip else (dy, dx)


class SceneSelfSupervised(_Revisits):
    """Self-supervised multi-frame samples from real revisits, nothing degraded (task ``probav``): the views are
    ``n_views`` real frames at their own resolution, registered to the clearest of them (as ``run_region`` fuses
    them), and the target is another real frame of the scene, held out, with its sub-pixel shift against the
    reference view. The loss (:func:`training.losses.selfsup_loss`) projects the fused HR image through the sensor
    (its PSF, point sampling at the target's own shifted grid) and compares it with the held-out frame, brightness
    bias removed: a fusion of real frames must predict a real frame it has not seen. Shifts are measured once per
    scene against its clearest frame (:func:`models.registration.phase_shift` on whole frames) and combined.

    Training: random crops of ``patch`` view pixels, random target, flips and quarter turns (the shift turns
    with them), brightness gain. Validation: every frame of every scene once as the target, the central crop.
    ``scenes``: scenes of the splits (:mod:`training.datasets.scenes`) or imgset folders of the Kelvins release.
    Returns ``{"views", "masks", "present", "target", "target_clear", "target_shift"}``."""

    def __init__(self, scenes: Sequence[Scene | Path], n_views: int, patch: int, length: int, *, train: bool,
                 seed: int = 0, gain: tuple[float, float] = (0.7, 1.8)) -> None:
        from srcube.models.registration import MAX_SHIFT, phase_shift

        self.n_views, self.patch, self.length, self.train = n_views, patch, length, train
        self.seed, self.gain = seed, gain
        self.frames: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []
        self.shifts: list[np.ndarray] = []  # (T, 2): each frame's shift against the scene's clearest frame
        for scene in scenes:
            frames, valid = _probav_frames(scene)
            anchor = int(valid.reshape(len(valid), -1).mean(1).argmax())
            ref, ref_clear = torch.from_numpy(frames[anchor]), torch.from_numpy(valid[anchor])
            shifts = np.array([(0.0, 0.0) if j == anchor else
                               phase_shift(ref, torch.from_numpy(frames[j]), ref_clear, torch.from_numpy(valid[j]))
                               for j in range(len(frames))])
            keep = np.abs(shifts).max(1) <= MAX_SHIFT  # a larger one is a mismatch (the pipeline leaves it too)
            if keep.sum() < 2:
                continue
            self.frames.append(frames[keep])
            self.valid.append(valid[keep])
            self.shifts.append(shifts[keep])
        self._plan_targets(scenes, length, train)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        from srcube.models.registration import MAX_SHIFT, apply_shifts, reach

        n = self.n_views
        if self.train:
            g = self._generator(k)
            i = int(torch.multinomial(torch.from_numpy(self.weights), 1, generator=g))
            t = int(torch.randint(self.frames[i].shape[0], (1,), generator=g))
        else:
            i, t = self.fixed[k]
            g = torch.Generator().manual_seed(self.seed + k)
        frames, valid, shifts = self.frames[i], self.valid[i], self.shifts[i]
        _, h, w = frames.shape
        m = reach(MAX_SHIFT)
        size = self.patch if self.train else min(h, w) - 2 * m
        r = m + int(torch.randint(h - size - 2 * m + 1, (1,), generator=g)) if self.train else (h - size) // 2
        c = m + int(torch.randint(w - size - 2 * m + 1, (1,), generator=g)) if self.train else (w - size) // 2
        others = [j for j in range(frames.shape[0]) if j != t]
        clearness = {j: float(valid[j, r : r + size, c : c + size].mean()) for j in others}
        order = torch.randperm(len(others), generator=g).tolist() if self.train else list(range(len(others)))
        others = sorted((others[o] for o in order), key=lambda j: -clearness[j])[:n]
        reference = others[0]  # the clearest view: the grid of the fused image (register_views' default)
        rel = torch.from_numpy(shifts[others] - shifts[reference])
        window = (slice(r - m, r + size + m), slice(c - m, c + size + m))
        stack = torch.from_numpy(frames[others][:, window[0], window[1]].copy()).double()[:, None]
        vmask = torch.from_numpy(valid[others][:, window[0], window[1]].copy()).double()
        moved, clear_moved = apply_shifts(stack, vmask, rel)
        stack, vmask = moved[:, 0, m:-m, m:-m].float(), clear_moved[:, m:-m, m:-m].float()
        target = torch.from_numpy(frames[t, r : r + size, c : c + size].copy())[None]
        clear = torch.from_numpy(valid[t, r : r + size, c : c + size].astype(np.float32))[None]
        shift = tuple(float(v) for v in shifts[t] - shifts[reference])
        if self.train:
            turns, flip = int(torch.randint(4, (1,), generator=g)), bool(torch.randint(2, (1,), generator=g))
            both = torch.rot90(torch.cat([target, clear, stack, vmask]), turns, dims=(-2, -1))
            both = both.flip(-1) if flip else both
            target, clear = both[:1], both[1:2]
            stack, vmask = both[2 : 2 + len(others)], both[2 + len(others) :]
            shift = augment_shift(shift, turns, flip)  # type: ignore[arg-type]
            lo, hi = self.gain
            gain = lo + (hi - lo) * float(torch.rand(1, generator=g))
            target, stack = target * gain, stack * gain
        views = torch.zeros(n, 1, size, size)
        masks = torch.zeros(n, size, size)
        present = torch.zeros(n, dtype=torch.bool)
        views[: len(others), 0] = stack
        masks[: len(others)] = vmask
        present[: len(others)] = True
        return {"views": views, "masks": masks, "present": present, "target": target, "target_clear": clear,
                "target_shift": torch.tensor(shift, dtype=torch.float32)}
