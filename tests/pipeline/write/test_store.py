import dask
import numpy as np
import pytest
import xarray as xr

from srcube.pipeline.errors import IncompleteCubeError, NotACubeError, OutputExistsError
from srcube.pipeline.write.store import CubeStore, open_cube


def _cube() -> xr.Dataset:
    ds = xr.Dataset({"reflectance": (("time", "band", "y", "x"), np.ones((1, 1, 8, 8), np.float32))})
    ds.attrs["srcube_version"] = "test"
    return ds.chunk({"y": 4, "x": 4})


def test_status_of_paths(tmp_path):
    assert CubeStore(str(tmp_path / "none.zarr")).status() == "absent"
    (tmp_path / "empty").mkdir()
    assert CubeStore(str(tmp_path / "empty")).status() == "empty"
    (tmp_path / "file.txt").write_text("x")
    assert CubeStore(str(tmp_path / "file.txt")).status() == "foreign"
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "thesis.tex").write_text("x")
    assert CubeStore(str(tmp_path / "dir")).status() == "foreign"
    xr.Dataset({"a": ("x", [1, 2])}).to_zarr(tmp_path / "other.zarr", zarr_format=3, consolidated=False)
    assert CubeStore(str(tmp_path / "other.zarr")).status() == "foreign"


def test_template_then_writes_then_complete(tmp_path):
    store = CubeStore(str(tmp_path / "c.zarr"))
    writes = store.write_template(_cube(), {"reflectance": {"chunks": (1, 1, 4, 4)}})
    assert store.status() == "incomplete" and store.attrs()["complete"] is False
    assert store.chunk_counts("reflectance") == (0, 4)
    with pytest.raises(IncompleteCubeError, match="not complete"):
        open_cube(store.url)
    dask.compute(writes)
    assert store.chunk_counts("reflectance") == (4, 4)
    assert store.status() == "incomplete"  # every chunk in, but not finalized yet
    store.finalize({"note": "x"})
    assert store.status() == "complete" and store.attrs()["note"] == "x"
    ds = open_cube(store.url)
    assert float(ds.reflectance.sum()) == 64.0


def test_check_writable(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "data.csv").write_text("x")
    with pytest.raises(NotACubeError, match="not an srcube cube"):
        CubeStore(str(tmp_path / "dir")).check_writable()
    store = CubeStore(str(tmp_path / "c.zarr"))
    dask.compute(store.write_template(_cube(), {}))
    assert store.check_writable() == "incomplete"  # an unfinished cube may be redone
    store.finalize()
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        store.check_writable()
    assert store.check_writable(overwrite=True) == "complete"


def test_memory_filesystem_urls():
    store = CubeStore("memory://srcube-test/c.zarr")
    assert store.status() == "absent"
    # in-process scheduler: a memory:// store does not exist in worker processes
    dask.compute(store.write_template(_cube(), {}), scheduler="threads")
    store.finalize()
    assert store.status() == "complete"
    assert open_cube("memory://srcube-test/c.zarr").sizes["y"] == 8


def test_a_run_stopped_inside_the_template_is_reported(tmp_path):
    import zarr
    from typer.testing import CliRunner

    from srcube.cli.commands import app

    out = tmp_path / "t.zarr"
    zarr.open_group(str(out), mode="w", zarr_format=3).attrs.update({"srcube_version": "x", "complete": False})
    store = CubeStore(str(out))
    assert store.status() == "incomplete" and store.chunk_counts("reflectance") is None
    res = CliRunner().invoke(app, ["info", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "while writing the template" in res.output


def test_finalize_sweeps_writes_of_killed_writers_and_refuses_missing_chunks(tmp_path):
    store = CubeStore(str(tmp_path / "k.zarr"))
    writes = store.write_template(_cube(), {"reflectance": {"chunks": (1, 1, 4, 4)}})
    dask.compute(writes)
    chunk_dir = tmp_path / "k.zarr" / "reflectance" / "c" / "0" / "0" / "1"
    stray = chunk_dir / "0.3f2a9c0d.partial"  # what zarr's local store leaves when its writer is SIGKILLed
    stray.write_bytes(b"half a chunk")
    done = tmp_path / "k.zarr" / ".srcube" / "done" / "reflectance"
    entry = sorted(done.iterdir())[0]
    entry.unlink()  # a chunk without its manifest entry
    with pytest.raises(IncompleteCubeError, match="3 of 4 chunks"):
        store.finalize()
    assert store.status() == "incomplete"
    entry.write_text("")
    store.finalize()
    assert not stray.exists() and store.status() == "complete"
    assert not list((tmp_path / "k.zarr").rglob("*.partial"))


def test_a_replaced_cube_is_named_in_a_warning(tmp_path, caplog):
    """An unfinished cube of another request is replaced, never silently (issue 22 item 7)."""
    store = CubeStore(str(tmp_path / "r.zarr"))
    first, second = _cube(), _cube()
    first.attrs.update(request_hash="aaaa1111" * 4, dates="2024-05-01/2024-05-31", model="bicubic")
    second.attrs.update(request_hash="bbbb2222" * 4, dates="2024-06-01/2024-06-30", model="bicubic")
    store.write_template(first, {}, template_only=True)
    with caplog.at_level("WARNING", logger="srcube.pipeline.write.store"):
        store.write_template(second, {}, template_only=True)
    assert "replacing the unfinished cube of another request there (dates 2024-05-01/2024-05-31" in caplog.text
    assert "aaaa1111" in caplog.text and "bbbb2222" in caplog.text
    assert store.attrs()["request_hash"] == "bbbb2222" * 4


@pytest.mark.parametrize("damage", ["truncated", "garbled", "not-an-object", "missing"])
def test_info_on_a_cube_with_damaged_array_metadata_is_a_typed_error(tmp_path, damage):
    """``srcube info`` exits 2 with CorruptCubeError's message, never a traceback (issue 22 finding 4)."""
    from typer.testing import CliRunner

    from srcube.cli.commands import app

    store = CubeStore(str(tmp_path / "d.zarr"))
    dask.compute(store.write_template(_cube(), {"reflectance": {"chunks": (1, 1, 4, 4)}}))
    store.finalize()
    meta = tmp_path / "d.zarr" / "reflectance" / "zarr.json"
    {"truncated": lambda: meta.write_bytes(meta.read_bytes()[:100]), "garbled": lambda: meta.write_bytes(bytes(256)),
     "not-an-object": lambda: meta.write_text("[1, 2]"), "missing": meta.unlink}[damage]()
    res = CliRunner().invoke(app, ["info", store.url], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    message = " ".join(res.output.split())
    assert "the cube's metadata cannot be read" in message and "the cube is damaged" in message
