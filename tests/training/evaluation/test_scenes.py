"""Splits by place (training/evaluation/scenes.py): disjoint, every scene in exactly one split of its task."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import numpy as np
import pytest

from srcube import models
from srcube.training.datasets.scenes import SCENES, load_probav, scenes
from srcube.training.evaluation.scenes import split_scenes
from srcube.training.evaluation.wald import evaluate_split
from tests.support.helpers import shared_path


def test_splits_are_disjoint_by_place_and_every_scene_is_in_exactly_one_split_per_task():
    for task in ("s2-10m", "s2-20m", "probav"):
        by_split = {split: split_scenes(task, split) for split in ("train", "validation", "test")}
        assert all(by_split.values()), task
        places = {split: {s.place for s in chosen} for split, chosen in by_split.items()}
        folders = {split: {s.folder for s in chosen} for split, chosen in by_split.items()}
        for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
            assert not places[a] & places[b] and not folders[a] & folders[b], (task, a, b)
        names = Counter(s.name for chosen in by_split.values() for s in chosen)
        assert set(names.values()) == {1} and set(names) == {s.name for s in SCENES if s.task == task}
    with pytest.raises(ValueError, match="split must be"):
        split_scenes("s2-10m", "training")
    with pytest.raises(ValueError, match="unknown task"):
        split_scenes("s2-60m", "test")
    # PROBA-V: the split helpers accept the task; its multi-frame evaluation is not implemented: skipped, with why
    res = evaluate_split(models.build("bicubic", scale=3), "probav", "test", robustness=False)
    assert not res.results and [n for n, _ in res.skipped] == [s.name for s in scenes("probav", "test")]
    assert all("PROBA-V" in why for _, why in res.skipped) and res.summary["n"] == 0


def test_no_probav_frame_is_in_two_splits():
    """Splits by place hold on the data, not only on the names: no frame of one split correlates above 0.95 with a
    frame of another (lr_only_scenes/scene_a, the same frames as imgset0595, is why this is checked)."""
    present = [s for s in scenes("probav") if s.available()]
    if len({s.split for s in present}) < 2:
        pytest.skip("fewer than two PROBA-V splits on disk (../shared/data); the split names are checked above")
    frames = {s.name: load_probav(s)["frames"].reshape(-1, 128 * 128) for s in present}
    split = {s.name: s.split for s in present}
    for a, b in combinations(frames, 2):
        if split[a] == split[b]:
            continue
        x, y = (f - f.mean(1, keepdims=True) for f in (frames[a], frames[b]))
        x, y = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (x, y))
        assert float((x @ y.T).max()) < 0.95, (a, b)
    # and the duplicate that was once a test scene is indeed one of a training place
    dup = next((s for s in SCENES if s.name == "imgset0595"), None)
    scene_a = shared_path("probav_kelvins", "lr_only_scenes", "scene_a")
    if dup is not None and dup.available() and scene_a.is_dir():
        from srcube.training.datasets.scenes import Scene

        other = load_probav(Scene("scene_a", "", "probav", "test", "probav_kelvins/lr_only_scenes/scene_a"))["frames"]
        assert all(any(np.array_equal(f, g) for g in load_probav(dup)["frames"]) for f in other)
        assert "scene_a" not in {s.name for s in SCENES}
