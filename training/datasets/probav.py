"""The PROBA-V Kelvins release as a multi-frame training set (HighRes-net's recipe).

Each sample is one imgset: its ``n_views`` clearest LR frames (ranked by the fraction of clear
pixels in their QM masks, as HighRes-net's ``save_clearance`` does) as views (T, 1, 128, 128), their
masks, the HR target (1, 384, 384) and its clear mask SM, and the scene's norm (baseline cPSNR).
Values are DN / 65535, as the competition scores them. Scenes with fewer than ``min_L`` frames get
their clearest frames repeated up to ``min_L``; beyond that, missing views are padded and masked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from srcube.pipeline.sensors.probav import KelvinsImgset, list_imgsets, read_imgset, read_norm


class KelvinsDataset(Dataset):
    def __init__(self, root: str | Path, split: str = "train", band: str | None = None, *, n_views: int = 16,
                 min_L: int = 9, patch: int | None = None, seed: int = 0, require_hr: bool = True) -> None:
        if min_L > n_views:
            raise ValueError(f"min_L {min_L} exceeds n_views {n_views}")
        self.root = Path(root)
        norm_path = self.root / "norm.csv"
        self.norm = read_norm(norm_path) if norm_path.exists() else {}
        self.paths = list_imgsets(self.root, split, band)
        if not self.paths:
            raise FileNotFoundError(f"no imgsets under {self.root}/{split}/{band or '*'}/")
        self.n_views, self.min_L, self.patch, self.require_hr = n_views, min_L, patch, require_hr
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def imgset(self, k: int) -> KelvinsImgset:
        return read_imgset(self.paths[k], norm=self.norm)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        im = self.imgset(k)
        if self.require_hr and im.hr is None:
            raise ValueError(f"{im.path} has no HR.png (test split?); use require_hr=False")
        order = im.clearest(self.n_views)
        while len(order) < self.min_L:  # repeat the clearest frames up to min_L
            order = order + order[: self.min_L - len(order)]
        order = order[: self.n_views]
        lr = im.lr[order].astype(np.float32) / 65535.0
        qm = im.qm[order] if im.qm is not None else np.ones_like(lr, bool)
        views = torch.zeros(self.n_views, 1, 128, 128)
        masks = torch.zeros(self.n_views, 128, 128)
        views[: len(order), 0] = torch.from_numpy(lr)
        masks[: len(order)] = torch.from_numpy(qm.astype(np.float32))
        present = torch.zeros(self.n_views, dtype=torch.bool)
        present[: len(order)] = True
        out = {"views": views, "masks": masks, "present": present,
               "norm": torch.tensor(im.norm if im.norm is not None else float("nan"))}
        if im.hr is not None:
            out["hr"] = torch.from_numpy(im.hr.astype(np.float32) / 65535.0)[None]
            out["hr_clear"] = torch.from_numpy(im.sm.astype(np.float32) if im.sm is not None
                                               else np.ones((384, 384), np.float32))[None]
        if self.patch:  # random aligned crop: LR patch p -> HR patch 3p
            p = self.patch
            r, c = (int(v) for v in self.rng.integers(0, 128 - p + 1, 2))
            out["views"] = out["views"][..., r : r + p, c : c + p]
            out["masks"] = out["masks"][..., r : r + p, c : c + p]
            if "hr" in out:
                out["hr"] = out["hr"][..., 3 * r : 3 * (r + p), 3 * c : 3 * (c + p)]
                out["hr_clear"] = out["hr_clear"][..., 3 * r : 3 * (r + p), 3 * c : 3 * (c + p)]
        return out
