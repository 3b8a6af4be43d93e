"""``srcube verify`` (exit 0 sound, 1 damaged, 2 typed error; ``--json``; ``--repair``) and the read commands on a
damaged cube: ``info``, ``export`` and ``quicklook`` refuse a complete cube that lacks chunks, and a chunk that fails
its checksum is a typed error, not a traceback (issue 22, finding 3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from srcube.cli.commands import app
from srcube.pipeline import run_region
from srcube.pipeline.testing import sample

pytestmark = pytest.mark.integration
runner = CliRunner()
WIDE = {"COLUMNS": "250"}


@pytest.fixture(scope="module")
def reference(sample_url, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli-verify") / "ref.zarr"
    run_region(sample.DEFAULT_BBOX, "2024-06-12/2024-06-22", catalog=sample_url, out=str(out), tile=64,
               model="bicubic", bands=["B02", "B03", "B04"])
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_verify_a_sound_cube_and_what_is_not_a_cube(reference, tmp_path):
    res = runner.invoke(app, ["verify", str(reference)], env=WIDE)
    assert res.exit_code == 0 and "sound" in res.output and "chunk files" in res.output
    res = runner.invoke(app, ["verify", str(tmp_path / "nothing.zarr")], env=WIDE)
    assert res.exit_code == 2 and "no srcube cube" in res.output and "Traceback" not in res.output


def test_a_damaged_cube_is_refused_found_and_repaired(reference, tmp_path):
    cube = tmp_path / "cube.zarr"
    shutil.copytree(reference, cube)
    (cube / "reflectance/c/1/0/2/3").unlink()  # the second date, tile y 480-720, x 756-1008
    shard = cube / "clear/c/0/0/0"
    shard.write_bytes(shard.read_bytes()[:-3] + b"xyz")
    for args in (["info", str(cube)], ["export", str(cube), "--cog", str(tmp_path / "cogs")],
                 ["quicklook", str(cube), str(tmp_path / "q.png")]):
        res = runner.invoke(app, args, env=WIDE)
        assert res.exit_code == 2, (args, res.output)
        assert "reflectance 2024-06-22 y 480-720, x 756-1008: missing shard" in res.output
        assert "--repair" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "q.png").exists() and not list((tmp_path / "cogs").glob("*.tif"))

    res = runner.invoke(app, ["verify", str(cube)], env=WIDE)
    assert res.exit_code == 1 and "damaged: 2" in res.output
    assert "missing shard" in res.output and "corrupt index" in res.output and "2024-06-22" in res.output
    res = runner.invoke(app, ["verify", str(cube), "--json"], env=WIDE)
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["chunks"] > 0 and doc["repaired"] == []
    assert sorted((d["array"], d["problem"], d["part"], d["date"][:10], d["tile"]["x"][0]) for d in doc["damage"]) == [
        ("clear", "corrupt", "index", "2024-06-12", 0), ("reflectance", "missing", "shard", "2024-06-22", 756)]

    res = runner.invoke(app, ["verify", str(cube), "--repair", "--json"], env=WIDE)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["ok"] is True and len(doc["repaired"]) == 2
    assert _files(cube) == _files(reference)
    assert runner.invoke(app, ["info", str(cube)], env=WIDE).exit_code == 0


def test_a_flipped_byte_is_a_typed_error_of_export(reference, tmp_path):
    cube = tmp_path / "cube.zarr"
    shutil.copytree(reference, cube)
    shard = cube / "reflectance/c/0/0/1/1"
    data = bytearray(shard.read_bytes())
    data[40] ^= 1
    shard.write_bytes(bytes(data))
    res = runner.invoke(app, ["export", str(cube), "--cog", str(tmp_path / "cogs"), "--date", "2024-06-12"], env=WIDE)
    assert res.exit_code == 2 and "fails its crc32c checksum" in res.output and "srcube verify" in res.output
    assert "Traceback" not in res.output
