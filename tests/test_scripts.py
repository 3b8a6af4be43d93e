"""The repository's scripts, run where a test can run them without touching the machine: scripts/stac-api.sh in
a copy of its folder, with apt-get, uv and Python replaced by stand-ins on PATH (nothing is installed)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.helpers import REPO


def _postgis_here() -> bool:
    """PostgreSQL's newest server and PostGIS for it are installed (as tests/support/pgstac.py looks)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return bool(found) and Path(f"/usr/share/postgresql/{Path(found[-1]).parts[-3]}/extension/postgis.control").exists()


def _stand_in(path: Path, rc: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexit {rc}\n")
    path.chmod(0o755)
    return path


def _script(path: Path, stand_ins: Path, ci: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the script at ``path`` with the stand-in commands of ``stand_ins`` first on PATH, ``CI`` set to ``ci``
    (absent for None) and ``env`` added."""
    full = {k: v for k, v in os.environ.items() if k != "CI"}
    full.update(PATH=f"{stand_ins}{os.pathsep}{full['PATH']}", **env)
    if ci is not None:
        full["CI"] = ci
    return subprocess.run(["bash", str(path)], env=full, capture_output=True, text=True, timeout=120)


@pytest.fixture
def stac_api_sh(tmp_path):
    """Runs a copy of scripts/stac-api.sh in a folder of its own, whose apt-get and uv fail and whose ``PYTHON``
    cannot make a venv; ``installed=True`` puts a .venv-stac-api there whose Python imports anything."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "stac-api.sh", root / "scripts" / "stac-api.sh")
    (root / "requirements").mkdir()
    (root / "requirements" / "stac-api.lock").write_text("")
    stand_ins = tmp_path / "bin"
    _stand_in(stand_ins / "apt-get", 100)
    _stand_in(stand_ins / "uv", 2)
    no_venv = _stand_in(stand_ins / "python-without-venv", 1)

    def run(ci: str | None, installed: bool = False) -> subprocess.CompletedProcess[str]:
        if installed:
            _stand_in(root / ".venv-stac-api" / "bin" / "python", 0)
            _stand_in(stand_ins / "uv", 0)
        return _script(root / "scripts" / "stac-api.sh", stand_ins, ci, PYTHON=str(no_venv))

    return run


def test_stac_api_sh_fails_ci_when_the_publish_tests_would_skip(stac_api_sh):
    here = stac_api_sh(None)
    assert here.returncode == 0, here.stderr  # a workstation: said, and the tests skip naming it
    assert "stac-fastapi-pgstac and pypgstac in .venv-stac-api" in here.stderr
    assert "the publish tests will skip" in here.stderr
    ci = stac_api_sh("true")
    assert ci.returncode == 1
    assert "CI=true: failing" in ci.stderr and "stac-fastapi-pgstac and pypgstac in .venv-stac-api" in ci.stderr
    assert stac_api_sh("false").returncode == 0


def test_stac_api_sh_passes_ci_when_everything_is_there(stac_api_sh):
    done = stac_api_sh("true", installed=True)
    if _postgis_here():
        assert done.returncode == 0 and "failing" not in done.stderr, done.stderr
    else:  # this machine lacks PostgreSQL or PostGIS, and the stand-in apt-get installs nothing
        assert done.returncode == 1 and ("PostgreSQL" in done.stderr or "PostGIS" in done.stderr), done.stderr


@pytest.fixture
def browser_sh(tmp_path):
    """Runs a copy of scripts/browser.sh whose apt-get fails, with ``$SRCUBE_CHROMIUM`` naming a Chromium that is not
    there (whatever this machine has); ``installed=True`` names a stand-in that is."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "browser.sh", root / "scripts" / "browser.sh")
    stand_ins = tmp_path / "bin"
    _stand_in(stand_ins / "apt-get", 100)

    def run(ci: str | None, installed: bool = False) -> subprocess.CompletedProcess[str]:
        chromium = _stand_in(stand_ins / "chromium-stand-in", 0) if installed else tmp_path / "no" / "chromium"
        return _script(root / "scripts" / "browser.sh", stand_ins, ci, SRCUBE_CHROMIUM=str(chromium))

    return run


def test_browser_sh_fails_ci_when_the_browser_test_would_skip(browser_sh):
    here = browser_sh(None)
    assert here.returncode == 0, here.stderr  # a workstation: said, and the browser test skips naming it
    assert "Chromium not installed: the browser test will skip" in here.stderr
    ci = browser_sh("true")
    assert ci.returncode == 1 and "CI=true: failing" in ci.stderr
    assert browser_sh("false").returncode == 0
    done = browser_sh("true", installed=True)
    assert done.returncode == 0 and not done.stderr, done.stderr
