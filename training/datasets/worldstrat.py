"""WorldStrat (Cornebise et al. 2022): Sentinel-2 L2A revisits with a SPOT 6/7 target.

``lr_dataset/<AOI>/L2A/<AOI>-<n>-L2A_data.tiff`` (12 bands B01..B12 with B8A, float reflectance,
~160 px at 10 m, revisits n = 1..16) with ``<AOI>-<n>-CLM.tiff`` cloud masks, and
``hr_dataset/<AOI>/<AOI>_ps.tiff`` (pansharpened SPOT, uint16 12-bit, / 10000, ~1054 px at 1.5 m).
The official ``stratified_train_val_test_split.csv`` names each AOI's split. As the official
loader does, LR is resized to ``input_size`` and HR to ``output_size``.

The HR imagery is CC BY-NC 4.0 (Airbus): weights trained on it inherit that licence note.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

LR_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
HR_LICENCE = "CC BY-NC 4.0 (Airbus SPOT imagery of WorldStrat)"
log = logging.getLogger(__name__)


def read_split(path: str | Path) -> dict[str, str]:
    """AOI -> split ("train", "val", "test") from the official CSV.

    The official file lists some AOIs twice, a few of them in two different splits (11 of its 3928
    rows); those would leak between training and evaluation, so they are marked ``"conflict"``
    and belong to no split.
    """
    seen: dict[str, set[str]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            seen.setdefault(row["tile"], set()).add(row["split"])
    conflicts = sorted(t for t, s in seen.items() if len(s) > 1)
    if conflicts:
        log.warning("%d AOIs of %s are in more than one split and are left out: %s", len(conflicts), path,
                    ", ".join(conflicts[:5]) + (" ..." if len(conflicts) > 5 else ""))
    return {t: (s.pop() if len(s) == 1 else "conflict") for t, s in seen.items()}


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


class WorldStratDataset(Dataset):
    """Multi-frame samples: ``revisits`` LR views (T, C, h, w) + clear masks + ``present`` (views past
    the AOI's own revisits are zeros, masked and marked absent), HR (C', H, W)."""

    def __init__(self, root: str | Path, split_csv: str | Path, split: str = "train", *, revisits: int = 8,
                 lr_bands: tuple[str, ...] = ("B04", "B03", "B02", "B08"), hr_bands: tuple[int, ...] = (1, 2, 3, 4),
                 input_size: tuple[int, int] | None = (160, 160),
                 output_size: tuple[int, int] | None = (1054, 1054)) -> None:
        self.root = Path(root)
        splits = read_split(split_csv)
        self.aois = sorted(a for a, s in splits.items() if s == split and (self.root / "hr_dataset" / a).is_dir())
        if not self.aois:
            raise FileNotFoundError(f"no {split} AOIs of {split_csv} under {self.root}/hr_dataset")
        self.revisits, self.hr_bands = revisits, hr_bands
        self.lr_index = [LR_BANDS.index(b) for b in lr_bands]
        self.input_size, self.output_size = input_size, output_size

    def __len__(self) -> int:
        return len(self.aois)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        aoi = self.aois[k]
        l2a = self.root / "lr_dataset" / aoi / "L2A"
        views, masks = [], []
        for n in range(1, self.revisits + 1):
            data = l2a / f"{aoi}-{n}-L2A_data.tiff"
            if not data.exists():
                break
            views.append(torch.from_numpy(_read(data)[self.lr_index].astype(np.float32)).clamp(0, 1))
            clm = l2a / f"{aoi}-{n}-CLM.tiff"
            cloud = _read(clm)[0] > 0 if clm.exists() else np.zeros(views[-1].shape[1:], bool)
            masks.append(torch.from_numpy((~cloud).astype(np.float32)))
        if not views:
            raise FileNotFoundError(f"AOI {aoi} has no L2A revisits in {l2a}")
        v, m = torch.stack(views), torch.stack(masks)
        hr = torch.from_numpy(_read(self.root / "hr_dataset" / aoi / f"{aoi}_ps.tiff")[
            [b - 1 for b in self.hr_bands]].astype(np.float32) / 10000.0).clamp(0, 1)
        if self.input_size:
            v = F.interpolate(v, size=self.input_size, mode="bicubic", align_corners=False)
            m = (F.interpolate(m[:, None], size=self.input_size, mode="nearest")[:, 0] > 0.5).float()
        if self.output_size:
            hr = F.interpolate(hr[None], size=self.output_size, mode="bicubic", align_corners=False)[0]
        # AOIs have 1..16 revisits: pad to `revisits` with masked empty views so any AOIs batch together
        present = torch.zeros(self.revisits, dtype=torch.bool)
        present[: v.shape[0]] = True
        pad = self.revisits - v.shape[0]
        if pad:
            v = torch.cat([v, v.new_zeros((pad, *v.shape[1:]))])
            m = torch.cat([m, m.new_zeros((pad, *m.shape[1:]))])
        return {"views": v, "masks": m, "present": present, "hr": hr, "aoi": aoi}  # type: ignore[dict-item]
