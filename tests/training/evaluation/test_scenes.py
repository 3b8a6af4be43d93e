"""Splits by place (training/evaluation/scenes.py): disjoint, every scene in exactly one split of its task."""

from __future__ import annotations

from collections import Counter

import pytest

from srcube import models
from srcube.training.datasets.scenes import SCENES, scenes
from srcube.training.evaluation.scenes import split_scenes
from srcube.training.evaluation.wald import evaluate_split


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
