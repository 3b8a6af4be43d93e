"""Sen2Venµs (Michel et al. 2022): Sentinel-2 patches with co-registered VENµS 5 m targets.

One folder per site with a tab-separated ``index.csv`` whose columns name ``torch.save`` tensors
``[N, 4, H, W]`` (surface reflectance x 10000, negatives allowed):

* ``tensor_10m_b2b3b4b8`` (128 px) -> ``tensor_05m_b2b3b4b8`` (256 px): x2;
* ``tensor_20m_b5b6b7b8a`` (64 px) -> ``tensor_05m_b5b6b7b8a`` (256 px): x4.

The 20 m group's files are named ``..._20m_b4b5b6b8a.pt`` although the columns say ``b5b6b7b8a``;
the reader follows the column, whatever the file is called.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

GROUPS = {
    "10m": ("tensor_10m_b2b3b4b8", "tensor_05m_b2b3b4b8", 2, ("B02", "B03", "B04", "B08")),
    "20m": ("tensor_20m_b5b6b7b8a", "tensor_05m_b5b6b7b8a", 4, ("B05", "B06", "B07", "B8A")),
}
SCALE = 10000.0


def read_index(site: Path) -> list[dict[str, str]]:
    with open(site / "index.csv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


class Sen2VenusDataset(Dataset):
    """(lr, hr) patch pairs of one band group over the given sites (all patches of every row)."""

    def __init__(self, sites: Sequence[str | Path], group: str = "10m", *, band_agnostic: bool = False) -> None:
        if group not in GROUPS:
            raise ValueError(f"group must be one of {sorted(GROUPS)}, got {group!r}")
        self.lr_col, self.hr_col, self.scale, self.bands = GROUPS[group]
        self.band_agnostic = band_agnostic
        self.entries: list[tuple[Path, str, str, int]] = []
        for site in map(Path, sites):
            for row in read_index(site):
                for k in range(int(row["nb_patches"])):
                    self.entries.append((site, row[self.lr_col], row[self.hr_col], k))
        if not self.entries:
            raise FileNotFoundError(f"no patches in {sites}")
        self._cache: dict[Path, torch.Tensor] = {}

    def _tensor(self, path: Path) -> torch.Tensor:
        if path not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[path] = torch.load(path, weights_only=True)
        return self._cache[path]

    def __len__(self) -> int:
        return len(self.entries) * (len(self.bands) if self.band_agnostic else 1)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        band = None
        if self.band_agnostic:
            k, band = divmod(k, len(self.bands))
        site, lr_name, hr_name, i = self.entries[k]
        lr = self._tensor(site / lr_name)[i].float() / SCALE
        hr = self._tensor(site / hr_name)[i].float() / SCALE
        if band is not None:
            lr, hr = lr[band : band + 1], hr[band : band + 1]
        return lr, hr
