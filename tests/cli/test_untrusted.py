"""What the ``srcube`` commands print from a cube is untrusted (issue 22): cubes are shared between people, so their
attributes reach the terminal as plain text (no rich markup, hyperlinks, emoji codes or terminal control sequences)
and attributes that are not what srcube writes (frames, overviews) are typed errors (exit 2), not tracebacks.

Each test crafts a copy of a real cube (a small run of the sample): its root ``zarr.json`` attributes edited, as a
sharer could."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from srcube.cli.commands import app
from srcube.pipeline import CubeAttributeError, run_region
from srcube.pipeline.write.quicklook import cube_quicklook
from srcube.pipeline.write.store import CubeStore

pytestmark = pytest.mark.integration
runner = CliRunner()
WIDE = {"COLUMNS": "400"}  # no crafted value is folded inside its table cell
SMALL = (4.465, 51.401, 4.487, 51.414)
DATES = "2024-05-01/2024-06-30"
LINK = "[link=https://evil.example/]bicubic[/link]"  # rich markup: a hyperlink on the model's name
OSC8 = "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\"  # the terminal's own hyperlink sequence
CLEAR = "\x1b[2J\x1b[H"  # clears the screen


@pytest.fixture(scope="module")
def cube(sample_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-untrusted") / "shared.zarr"
    run_region(SMALL, DATES, model="bicubic", bands=["B04"], out=str(out))
    return out


def _crafted(cube: Path, where: Path, attrs: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of ``cube`` in ``where`` with its root attributes changed by ``attrs``."""
    target = where / cube.name
    shutil.copytree(cube, target)
    meta = target / "zarr.json"
    doc = json.loads(meta.read_text())
    attrs(doc["attributes"])
    meta.write_text(json.dumps(doc))
    return target


def test_info_shows_crafted_attributes_as_plain_text(cube: Path, tmp_path: Path) -> None:
    def craft(attrs: dict[str, Any]) -> None:
        attrs["model"] = LINK
        attrs["catalog"] = f"sample {OSC8}"
        attrs["collection"] = f":skull: {CLEAR}[bold red]FAKE[/]"
        attrs["sharpened_bands"] = "B11, [i]B12[/i]"  # not the JSON list srcube writes: shown as it is
        attrs["stac_item_ids"] = 7
        frames = json.loads(attrs["frames"])
        frames[0]["reason"] = "[blink]see https://evil.example[/blink]"
        frames[0]["time"] = f"{frames[0]['time']}{CLEAR}"
        attrs["frames"] = json.dumps(frames)

    res = runner.invoke(app, ["info", str(_crafted(cube, tmp_path, craft))], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "\x9b" not in res.output  # no control sequence reaches the terminal
    for shown in (LINK, f"sample {OSC8}", f":skull: {CLEAR}[bold red]FAKE[/]", "[blink]see https://evil.example[/blink]",
                  CLEAR, "B11, [i]B12[/i] by"):
        visible = shown.replace("\x1b", r"\x1b")  # the escape character shown, never sent
        assert visible in res.output, (visible, res.output)
    assert "💀" not in res.output


def test_info_on_frames_that_are_not_what_srcube_writes(cube: Path, tmp_path: Path) -> None:
    for frames in ("[{", json.dumps([{"time": "2024-05-03", "clear_fraction": "all", "kept": True, "reason": ""}]),
                   json.dumps({"not": "a list"})):
        crafted = _crafted(cube, tmp_path / str(len(list(tmp_path.iterdir()))),
                           lambda attrs, frames=frames: attrs.update(frames=frames))
        res = runner.invoke(app, ["info", str(crafted)], env=WIDE)
        assert res.exit_code == 2, (frames, res.output)
        assert "frames attribute is not the list of records srcube writes" in res.output
        assert "Traceback" not in res.output and "--overwrite" in res.output


def test_an_error_quoting_a_crafted_value_prints_it_as_plain_text(tmp_path: Path) -> None:
    """Error messages carry what was given (paths, a cube's values): not read as markup either."""
    path = tmp_path / "[link=evil.example]x[/link]" / f"a{CLEAR}.zarr"
    res = runner.invoke(app, ["info", str(path)], env=WIDE)
    assert res.exit_code == 2
    assert "\x1b" not in res.output and r"[link=evil.example]x[/link]/a\x1b[2J\x1b[H.zarr" in res.output


@pytest.mark.parametrize("overviews", [
    {"group": "overviews", "factors": [3]},  # a level the cube does not hold
    {"group": "reflectance", "factors": [4]},  # an array, not a group
    {"group": "overviews/4", "factors": [4]},  # a level, not the group of levels
    {"group": "../../elsewhere", "factors": [4]},  # out of the cube
    {"group": "overviews", "factors": ["4"]},
    {"group": "overviews", "factors": 4},
    "overviews/4",
], ids=["missing-level", "an-array", "a-level", "out-of-the-cube", "factor-text", "factors-not-a-list", "not-a-record"])
def test_quicklook_on_a_crafted_overviews_attribute(cube: Path, tmp_path: Path, overviews: Any) -> None:
    """The overviews attribute names the group and factors of the levels quicklook reads: one that is not what
    srcube writes, or names levels the cube lacks, is a CubeAttributeError (exit 2) that says what to do."""
    crafted = _crafted(cube, tmp_path, lambda attrs: attrs.update(overviews=overviews))
    with pytest.raises(CubeAttributeError, match=r"overview.*the cube is corrupt or crafted: write it again"):
        cube_quicklook(CubeStore(str(crafted)))
    res = runner.invoke(app, ["quicklook", str(crafted), str(tmp_path / "q.png")], env=WIDE)
    assert res.exit_code == 2, res.output
    assert "overview" in res.output and "--overwrite" in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "q.png").exists()
