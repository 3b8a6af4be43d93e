"""``srcube run-area``: an area from a bbox or a GeoJSON file, a progress bar, a summary table and JSON; typed errors
exit 2 without a traceback; the same command again skips the finished cells."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from srcube.cli.commands import app

pytestmark = pytest.mark.integration
runner = CliRunner()
RUN = ["--dates", "2024-06-12", "--cell-km", "0.9", "--model", "bicubic", "--bands", "B04,B08", "--min-clear", "0"]


def test_run_area_from_a_geojson_file_then_again(sample_url, tmp_path):
    polygon = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[
        [4.47, 51.405], [4.4775, 51.405], [4.4775, 51.408], [4.47, 51.408], [4.47, 51.405]]]}}
    path = tmp_path / "area.geojson"
    path.write_text(json.dumps(polygon))
    out = tmp_path / "cells"
    result = runner.invoke(app, ["run-area", "--area", str(path), "--out", str(out), *RUN, "--json"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    summary = json.loads(result.output[result.output.index("{"):result.output.rindex("}") + 1])
    assert (summary["cells"], summary["done"], summary["failed"]) == (2, 2, 0)
    assert (out / "collection.json").is_file() and "index" in result.output
    again = runner.invoke(app, ["run-area", "--area", "4.47,51.405,4.4775,51.408", "--out", str(out), *RUN, "--json"])
    assert again.exit_code == 0, again.output
    assert '"skipped": 2' in again.output


@pytest.mark.parametrize("args, match", [
    (["--area", "4.47,51.405,4.4775"], "4 numbers"),
    (["--area", '{"type": "Point", "coordinates": [4.5, 51.4]}'], "Polygon"),
    (["--area", "4.47,51.405,4.4775,51.408", "--cell-km", "0.01"], "cell_km"),
    (["--area", "4.47,51.405,4.4775,51.408", "--max-cells", "0"], "max_cells"),
])
def test_bad_areas_exit_2_without_a_traceback(args, match, tmp_path):
    result = runner.invoke(app, ["run-area", *args, "--out", str(tmp_path / "x"), "--dates", "2024-06-12"])
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()
