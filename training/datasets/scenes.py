"""The real scenes srcube trains and evaluates on, each a different place, and the three splits by place.

Every scene comes from ``../shared/data`` (see each folder's PROVENANCE.md; nothing is copied into the
repository). A scene belongs to exactly one split of its task, so models are trained on some places,
selected on others and reported once on yet others:

=============  ==================================  ======================  ==========================
task           train                               validation (selection)  test (reported once)
=============  ==================================  ======================  ==========================
``s2-10m``     T18SVG (Virginia, US), T33UUU       29RKH (Western Sahara)  T49JGM (Western Australia)
               (Brandenburg, DE; one band)
``s2-20m``     T18SVG                              29RKH                   T49JGM
``probav``     imgset0000, 0001, 0007, 0595,       imgset0010, 0601,       scene_b (lr_only_scenes)
               0596
=============  ==================================  ======================  ==========================

* ``s2-10m``: the four 10 m bands B02 B03 B04 B08 (T33UUU: one visible band, used by band-agnostic
  models only). 29RKH is Earth Search's L2A scene decimated 10x (its 10 m bands at 100 m): real
  texture at another scale, a bright desert, the hard case for the offset check and a different
  landscape for model selection.
* ``s2-20m``: the 20 m bands B05 B06 B07 B8A B11 B12 with the 10 m bands of the same acquisition,
  on aligned grids (every 20 m pixel covers 2 x 2 pixels of the 10 m grid).
* ``probav``: real PROBA-V Kelvins LR frames (128 x 128, 300 m, 14-bit DN in 16-bit PNGs; 65520 =
  missing), several revisits of one site each. ``lr_only_scenes/scene_a`` is in no split: its 9 frames are
  byte for byte 9 of imgset0595's 10 (a training place), whatever its PROVENANCE.md says; a test split
  holding it would report on training data (``test_scenes`` checks every pair of splits frame by frame).

Loaders return reflectance (Sentinel-2: DN / 10000; PROBA-V Kelvins: DN / 65535 as the competition
scores it, see :data:`KELVINS_DN`) and a validity mask.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors

S2_10M = ("B02", "B03", "B04", "B08")
S2_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
#: PROBA-V Kelvins PNGs hold 14-bit DN; the competition scores them divided by 65535
KELVINS_DN = 65535.0
KELVINS_MISSING = 65520


def shared_data() -> Path:
    """``$SRCUBE_SHARED/data``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("SRCUBE_SHARED")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"
    return root / "data"


@dataclass(frozen=True)
class Scene:
    name: str
    place: str
    task: str  # "s2-10m", "s2-20m", "probav"
    split: str  # "train", "validation", "test"
    folder: str  # under shared/data
    note: str = ""

    @property
    def path(self) -> Path:
        return shared_data() / self.folder

    def available(self) -> bool:
        return self.path.exists()


SCENES: tuple[Scene, ...] = (
    Scene("T18SVG", "Virginia coast, US (2016-01-12, L1C)", "s2-10m", "train", "sentinel2_l1c_T18SVG_13band"),
    Scene("T33UUU", "Brandenburg, DE (2016-06-08, L1C, one visible band)", "s2-10m", "train",
          "sentinel2_l1c_T33UUU_pair", "single band: band-agnostic models only"),
    Scene("29RKH", "Western Sahara (2020-02-19, L2A, decimated to 100 m)", "s2-10m", "validation",
          "sentinel2_l2a_cog_S2A_29RKH_20200219"),
    Scene("T49JGM", "Western Australia (2017-10-22, L1C)", "s2-10m", "test", "sentinel2_l1c_T49JGM_dsen2"),
    Scene("T18SVG", "Virginia coast, US (2016-01-12, L1C)", "s2-20m", "train", "sentinel2_l1c_T18SVG_13band"),
    Scene("29RKH", "Western Sahara (2020-02-19, L2A, decimated to 200/100 m)", "s2-20m", "validation",
          "sentinel2_l2a_cog_S2A_29RKH_20200219"),
    Scene("T49JGM", "Western Australia (2017-10-22, L1C)", "s2-20m", "test", "sentinel2_l1c_T49JGM_dsen2"),
    *(Scene(f"imgset{n}", f"PROBA-V Kelvins imgset{n} ({band})", "probav", split,
            f"probav_kelvins_imgsets/{band}/imgset{n}")
      for n, band, split in (("0000", "RED", "train"), ("0001", "RED", "train"), ("0007", "RED", "train"),
                             ("0595", "NIR", "train"), ("0596", "NIR", "train"), ("0010", "RED", "validation"),
                             ("0601", "NIR", "validation"))),
    # lr_only_scenes/scene_a: the same frames as imgset0595 (train), so in no split (see the module docstring)
    Scene("scene_b", "PROBA-V Kelvins scene (lr_only_scenes/scene_b)", "probav", "test",
          "probav_kelvins/lr_only_scenes/scene_b"),
)


def scenes(task: str, split: str | None = None) -> list[Scene]:
    """The scenes of a task (and split); raises for an unknown task or split."""
    if task not in {s.task for s in SCENES}:
        raise ValueError(f"unknown task {task!r}; one of {sorted({s.task for s in SCENES})}")
    if split is not None and split not in ("train", "validation", "test"):
        raise ValueError(f"split must be train, validation or test, got {split!r}")
    return [s for s in SCENES if s.task == task and (split is None or s.split == split)]


def _read(path: Path) -> np.ndarray:
    with warnings.catch_warnings():  # PNG frames carry no georeferencing, and that is expected
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(1)


def _reflectance(dn: np.ndarray) -> np.ndarray:
    return dn.astype(np.float32) / np.float32(10000.0)


def load_s2(scene: Scene) -> dict[str, np.ndarray]:
    """A Sentinel-2 scene: ``{"b10": (4, H, W), "b20": (6, H/2, W/2) or absent, "valid10": (H, W)}`` on
    aligned grids (each 20 m pixel covers 2 x 2 pixels of the 10 m grid), reflectance."""
    p = scene.path
    if scene.name == "T18SVG":
        # the 10 m window starts 10 m east of the 20 m one (PROVENANCE): drop one 10 m and one 20 m column
        b10 = np.stack([_read(p / f"{b}.tif")[:, 1:1933] for b in S2_10M])
        b20 = np.stack([_read(p / f"{b}.tif")[:, 1:967] for b in S2_20M])
        h = min(b10.shape[1] // 2, b20.shape[1])
        b10, b20 = b10[:, : 2 * h], b20[:, :h]
    elif scene.name == "T49JGM":
        d = np.load(p / "T49JGM.npz")
        b10, b20 = d["b10"], d["b20"]
    elif scene.name == "29RKH":
        b10 = np.stack([_read(p / f"{b}.tif") for b in S2_10M])
        b20 = np.stack([_read(p / f"{b}.tif") for b in S2_20M])
    elif scene.name == "T33UUU":
        b10 = _read(p / "ref_S2A_20160608T153121_T33UUU_north.tif")[None]
        return {"b10": _reflectance(b10), "valid10": b10[0] > 0}
    else:
        raise ValueError(f"{scene.name} is not a Sentinel-2 scene")
    valid10 = (b10 > 0).all(0)
    if b20 is not None:
        valid20 = (b20 > 0).all(0)
        valid10 &= np.repeat(np.repeat(valid20, 2, 0), 2, 1)[: valid10.shape[0], : valid10.shape[1]]
    return {"b10": _reflectance(b10), "b20": _reflectance(b20), "valid10": valid10}


def load_probav(scene: Scene) -> dict[str, np.ndarray]:
    """A PROBA-V scene: ``{"frames": (T, 128, 128) reflectance (DN / 65535), "valid": (T, 128, 128)}``."""
    files = sorted(scene.path.glob("LR*.png"))
    if not files:
        raise FileNotFoundError(f"no LR*.png in {scene.path}")
    raw = np.stack([_read(f) for f in files]).astype(np.float32)
    valid = (raw != KELVINS_MISSING) & (raw > 0)
    return {"frames": np.where(valid, raw, 0.0) / np.float32(KELVINS_DN), "valid": valid,
            "ids": np.array([f.stem for f in files])}
