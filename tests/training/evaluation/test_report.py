"""The test report next to the weights, the model card and the README table made from it
(training/evaluation/report.py, training/card.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from srcube import models
from srcube.training import card
from srcube.training.evaluation.report import (
    REPORT_FORMAT,
    report_path,
    robustness_markdown,
    rows_markdown,
    write_test_report,
)
from srcube.training.evaluation.scenes import SceneData
from srcube.training.evaluation.score import summarize
from srcube.training.evaluation.stats import PEAK_CONVENTION, Bootstrap
from srcube.training.evaluation.wald import WALD, SplitResult, evaluate_wald, robustness_table
from tests.support.helpers import REPO, shared_path
from tests.support.textures import texture

STALE = "README tables are stale: run python -m srcube.training.card --readme README.md"


def _synthetic_report(weights: Path) -> dict:
    """A test report made by the module's own code on synthetic data, for weights at ``weights``."""
    meta = models.weights.read_meta(weights)
    ref = texture(2, 64, 64, seed=20)
    data = SceneData("SYN01", ref.float().numpy(), ("B04", "B08"), window=(0, 0, 64, 64), place="Nowhere")
    res = evaluate_wald(models.build("bilinear", scale=2), data, 2)
    split = SplitResult(meta.name, "s2-10m", "test", 2, WALD, Bootstrap(), (res,), (),
                           summarize([res]), None,
                           robustness_table(models.build("bilinear", scale=2), [data], 2,
                                               bootstrap=Bootstrap(resamples=100)))
    doc = {"format": REPORT_FORMAT, "weights": meta.name, "weights_sha256": meta.sha256,
           "architecture": meta.architecture, **split.to_json(), "created": "2026-01-01T00:00:00+00:00"}
    report_path(weights).write_text(json.dumps(doc))
    return doc


def test_cards_and_the_readme_table_are_generated_from_test_reports(tmp_path):
    readme = (REPO / "README.md").read_text()
    assert card.test_table_markdown() in readme, STALE
    assert card.test_table_markdown(tmp_path).count("\n") == 1  # no report: header only
    models.save_weights(models.build("elsr", scale=2), tmp_path / "tiny", trained=True,
                        training={"sensors": ["sentinel-2"], "data": "none"})
    doc = _synthetic_report(tmp_path / "tiny.safetensors")
    assert report_path(tmp_path / "tiny.safetensors") == tmp_path / "tiny.test.json"
    table = card.test_table_markdown(tmp_path)
    s = doc["summary"]
    row = table.splitlines()[2]
    assert row.startswith("| `tiny` | s2-10m | SYN01 |") and f"{s['mean_gain']:+.2f}" in row
    assert f"[{s['mean_gain_ci'][0]:+.2f}, {s['mean_gain_ci'][1]:+.2f}]" in row
    path = card.write_card(tmp_path / "tiny.safetensors", ["synthetic"])
    text = path.read_text()
    assert "## Test split" in text and "SYN01 (Nowhere)" in text and PEAK_CONVENTION in text
    assert rows_markdown(doc["rows"]) in text and robustness_markdown(doc["robustness"]) in text
    with pytest.raises(FileExistsError, match="reported once"):  # the test split is reported once per weights
        write_test_report(tmp_path / "tiny.safetensors", "s2-10m")
    stale = {**doc, "weights_sha256": "0" * 64}
    report_path(tmp_path / "tiny").write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="other weights"):
        card.test_table_markdown(tmp_path)


def test_write_test_report_on_the_real_test_split(tmp_path):
    shared_path("sentinel2_l1c_T49JGM_dsen2")
    torch.set_num_threads(2)
    models.save_weights(models.build("elsr", scale=4), tmp_path / "tiny4", trained=True,
                        training={"sensors": ["sentinel-2"], "data": "none"})
    path = write_test_report(tmp_path / "tiny4.safetensors", "s2-10m", max_side=64,
                                bootstrap=Bootstrap(resamples=200))
    doc = json.loads(path.read_text())
    assert path.name == "tiny4.test.json"
    assert doc["weights_sha256"] == models.weights.read_meta(tmp_path / "tiny4.json").sha256
    assert [s["name"] for s in doc["scenes"]] == ["T49JGM"] and doc["split"] == "test"
    assert len(doc["rows"]) == 4 and len(doc["robustness"]) == 14 and doc["srcube_version"]
    assert doc["peak_convention"] == PEAK_CONVENTION and doc["degradation"]["decimation"] == "point"
    assert all(r["peak"] < 1 and r["psnr_ci"][0] <= r["psnr"] <= r["psnr_ci"][1] for r in doc["rows"])
    assert "| `tiny4` | s2-10m | T49JGM |" in card.test_table_markdown(tmp_path)
