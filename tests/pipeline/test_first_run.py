"""The first run works: the README's Python example as scientists run it.

Pasted into a script without an ``if __name__ == "__main__":`` guard, or piped to ``python -``, it runs on
srcube's default: dask's threaded scheduler in this process (no cluster to start, no dashboard). Asking
for worker processes from such a script gives a clear error, not a Nanny traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.helpers import REPO

pytestmark = pytest.mark.integration


def readme_example() -> str:
    """The first Python code block of the README."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```", text, re.S)
    assert match, "the README has no Python example"
    return match.group(1)


def _run(args: list[str], cwd: Path, sample_dir: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SRCUBE_SAMPLE_DIR": str(sample_dir), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=240)


def _check(proc: subprocess.CompletedProcess, cwd: Path) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nanny" not in proc.stderr
    assert "Dask dashboard" not in proc.stderr  # threads here: no distributed cluster was started
    import xarray as xr

    cube = xr.open_zarr(cwd / "cube.zarr")
    assert cube.attrs["complete"] is True and cube.sizes["time"] >= 1


def test_readme_example_as_a_script_without_a_main_guard(sample_dir, tmp_path):
    code = readme_example()
    assert "__main__" not in code
    (tmp_path / "analysis.py").write_text(code)
    _check(_run(["analysis.py"], tmp_path, sample_dir), tmp_path)


@pytest.mark.slow  # the same example as the script test above, read from stdin (~17 s of interpreter start and run)
def test_readme_example_piped_to_python(sample_dir, tmp_path):
    _check(_run(["-"], tmp_path, sample_dir, stdin=readme_example()), tmp_path)


@pytest.mark.slow  # ~25 s of spawned worker processes; the default run runs the README example as a script
# without a main guard (test_readme_example_as_a_script_without_a_main_guard)
def test_worker_processes_from_a_guardless_script_fail_clearly(sample_dir, tmp_path):
    code = readme_example().replace("out=\"cube.zarr\")", "out=\"cube.zarr\", processes=True)")
    assert "processes=True" in code
    (tmp_path / "analysis.py").write_text(code)
    proc = _run(["analysis.py"], tmp_path, sample_dir)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("srcube.pipeline.errors.ClusterStartError"), proc.stderr[-3000:]
    assert "if __name__ == \"__main__\":" in last and "analysis.py" in last
