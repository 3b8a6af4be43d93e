"""training.ship.refresh_card: a card's splits and test section rewritten from the current splits and report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from srcube.models.weights import SHIPPED_DIR
from srcube.training.ship import refresh_card


def test_refresh_card_rewrites_the_splits_and_the_test_section_only(tmp_path: Path):
    name = "probav-highresnet-x3"
    for suffix in (".json", ".md", ".safetensors", ".test.json"):
        shutil.copyfile(SHIPPED_DIR / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    card = tmp_path / f"{name}.md"
    old = card.read_text()
    # a stale card: an extra test scene in its splits and its table, a score that is not the report's
    stale = old.replace("- test (reported once): scene_b,", "- test (reported once): scene_z, stale; scene_b,")
    stale = stale.replace("| all | | 9 |", "| scene_z | stale | 9 | 1 | 1 | +9 | 0.5 |\n| all | | 9 |")
    assert stale != old
    card.write_text(stale)
    refresh_card(tmp_path / f"{name}.json", limits_add=["a new limit"])
    new = card.read_text()
    assert "scene_z" not in new and "- test (reported once): scene_b," in new
    report = json.loads((tmp_path / f"{name}.test.json").read_text())
    assert f"{report['summary']['wald_kelvins_score']:.4f}" in new
    head = old.split("## Limits")[0]
    assert new.startswith(head.split("## Test split")[0])  # everything before the test section is kept
    assert new.rstrip().endswith(old.rstrip().split("\n")[-1]) and "- a new limit\n\n## Licence" in new
