"""What an evaluation runs on: a real scene of a split (:mod:`training.datasets.scenes`) or any raster as a
Wald reference, cut to its largest fully valid window; the scenes of a split by place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srcube.training.datasets.scenes import S2_10M, S2_20M, Scene, load_s2
from srcube.training.datasets.scenes import scenes as task_scenes


class IncompatibleSceneError(ValueError):
    """The scene cannot be evaluated with this model (bands, kind, size); the message says why."""


@dataclass(frozen=True)
class SceneData:
    """A reference to evaluate on: (bands, H, W) reflectance, and for sharpeners the finer guide bands
    (G, ratio H, ratio W) of the same acquisition on the aligned grid."""

    name: str
    reference: np.ndarray
    bands: tuple[str, ...]
    guide: np.ndarray | None = None
    guide_bands: tuple[str, ...] = ()
    window: tuple[int, int, int, int] | None = None
    place: str = ""

    def __post_init__(self) -> None:
        if self.reference.ndim != 3 or len(self.bands) != self.reference.shape[0]:
            raise ValueError(f"{self.name}: reference {self.reference.shape} with band names {self.bands}")
        if self.guide is not None and (self.guide.ndim != 3 or len(self.guide_bands) != self.guide.shape[0]):
            raise ValueError(f"{self.name}: guide {self.guide.shape} with band names {self.guide_bands}")


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """(start, stop) of the longest run of True in a 1-D boolean array ((0, 0) when none)."""
    best, start = (0, 0), None
    for i, f in enumerate([*flags.tolist(), False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            best = max(best, (start, i), key=lambda r: r[1] - r[0])
            start = None
    return best


def valid_window(valid: np.ndarray, multiple: int, max_side: int | None = None) -> tuple[int, int, int, int]:
    """(row0, col0, height, width): a fully valid window (the longest run of fully valid columns over the
    valid rows, then of fully valid rows in it), sides multiples of ``multiple``, at most ``max_side``
    from that run's top-left corner."""
    rows = np.flatnonzero(valid.any(1))
    if rows.size == 0:
        raise IncompatibleSceneError("no valid pixels")
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    c0, c1 = _longest_run(np.asarray(valid[r0:r1].all(0)))
    r0, r1 = (r0 + a for a in _longest_run(np.asarray(valid[r0:r1, c0:c1].all(1))))
    cap = max_side if max_side is not None else max(r1 - r0, c1 - c0)
    h = min(r1 - r0, cap) // multiple * multiple
    w = min(c1 - c0, cap) // multiple * multiple
    if h < 8 * multiple or w < 8 * multiple:
        raise IncompatibleSceneError(f"no fully valid window of at least {8 * multiple} px (x{multiple})")
    return r0, c0, h, w


def scene_data(scene: Scene, *, multiple: int, crop: tuple[int, int, int] | None = None,
               max_side: int | None = None) -> SceneData:
    """A real scene as a Wald reference: ``s2-10m`` the 10 m bands; ``s2-20m`` the 20 m bands with the
    10 m bands as guide. ``crop=(row0, col0, side)`` on the reference grid, else the largest fully valid
    window (at most ``max_side``); sides multiples of ``multiple``."""
    if scene.task not in ("s2-10m", "s2-20m"):
        raise IncompatibleSceneError(f"{scene.name} ({scene.task}): only Sentinel-2 scenes have a single-image "
                                     "Wald evaluation here (PROBA-V multi-frame evaluation is not implemented)")
    if not scene.available():
        raise FileNotFoundError(f"data absent: {scene.path}")
    d = load_s2(scene)
    valid: np.ndarray = d["valid10"]
    guide: np.ndarray | None = None
    guide_names: tuple[str, ...] = ()
    ratio = 1
    if scene.task == "s2-10m":
        ref = d["b10"]
        names: tuple[str, ...] = S2_10M if ref.shape[0] == 4 else ("vis",)  # T33UUU: one unnamed visible band
    else:
        if "b20" not in d:
            raise IncompatibleSceneError(f"{scene.name} has no 20 m bands")
        ref, names, guide, guide_names, ratio = d["b20"], S2_20M, d["b10"], S2_10M, 2
        h20, w20 = ref.shape[-2:]
        valid = np.asarray(valid[: 2 * h20, : 2 * w20].reshape(h20, 2, w20, 2).all((1, 3)))
    if crop is not None:
        r0, c0, side = crop
        side = side // multiple * multiple
        if r0 + side > ref.shape[-2] or c0 + side > ref.shape[-1] or not valid[r0 : r0 + side, c0 : c0 + side].all():
            raise IncompatibleSceneError(f"{scene.name}: crop {crop} is not a fully valid window of "
                                         f"{tuple(ref.shape[-2:])}")
        window = (r0, c0, side, side)
    else:
        window = valid_window(valid, multiple, max_side)
    r0, c0, h, w = window
    reference = np.ascontiguousarray(ref[:, r0 : r0 + h, c0 : c0 + w], np.float32)
    g = None if guide is None else np.ascontiguousarray(
        guide[:, ratio * r0 : ratio * (r0 + h), ratio * c0 : ratio * (c0 + w)], np.float32)
    return SceneData(scene.name, reference, tuple(names), g, tuple(guide_names), window, scene.place)

def image_data(image: str | Path, *, multiple: int, bands: list[int] | None = None,
               max_side: int = 1024) -> SceneData:
    """Any raster (GeoTIFF/COG/srcube zarr) as a Wald reference: its largest fully valid window."""
    from srcube.training.datasets.wald import read_image

    im = read_image(image, bands=bands)
    try:
        window = valid_window(np.asarray(im.valid), multiple, max_side)
    except IncompatibleSceneError as exc:
        raise IncompatibleSceneError(f"{image}: {exc} for the Wald protocol") from None
    r0, c0, h, w = window
    names = tuple(f"band{b}" for b in (bands or range(1, im.data.shape[0] + 1)))
    return SceneData(Path(str(image)).stem, np.ascontiguousarray(im.data[:, r0 : r0 + h, c0 : c0 + w]), names,
                     window=window)

def split_scenes(task: str, split: str) -> list[Scene]:
    """The scenes of one split of a task (``s2-10m``, ``s2-20m``, ``probav``); raises for unknown names."""
    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be train, validation or test, got {split!r}")
    return task_scenes(task, split)
