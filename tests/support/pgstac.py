"""A real STAC API with the Transactions extension on loopback: stac-fastapi-pgstac over a PostgreSQL +
PostGIS cluster made in a temporary folder, its schema installed by ``pypgstac migrate``.

Installed by ``scripts/stac-api.sh`` (which ``scripts/test.sh`` runs): the server lives in
``.venv-stac-api`` (its own hashed lock; it is a server the tests use, not a dependency of srcube).
:func:`missing` says what is not installed, for the tests' skip reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("SRCUBE_STAC_API_VENV", REPO / ".venv-stac-api"))


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def missing() -> str | None:
    """Why the server cannot start here (None when it can)."""
    bindir = _pg_bin()
    if bindir is None:
        return "PostgreSQL's server (initdb) is not installed: run scripts/stac-api.sh"
    version = bindir.parent.name
    if not glob.glob(f"/usr/share/postgresql/{version}/extension/postgis.control"):
        return f"PostGIS for PostgreSQL {version} is not installed: run scripts/stac-api.sh"
    if not (VENV / "bin" / "python").exists():
        return f"stac-fastapi-pgstac is not installed in {VENV}: run scripts/stac-api.sh"
    return None


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the ``postgres`` user where we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"the STAC API did not start: {out[-2000:]}")
        time.sleep(0.2)


@contextmanager
def stac_api() -> Iterator[str]:
    """Start PostgreSQL, install pgstac, start stac-fastapi-pgstac with transactions; yield its URL.

    The cluster lives in a folder of its own under the system's temporary folder (the ``postgres`` user
    must reach it: pytest's own temporary folders are private to the user running the tests)."""
    bindir = _pg_bin()
    assert bindir is not None, missing()
    folder = Path(tempfile.mkdtemp(prefix="srcube-pgstac-"))
    data, log = folder / "pgdata", folder / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "srcube", "--auth=trust",
                                 "--no-sync"]), check=True, capture_output=True)
    pg_port = free_port()
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "start", "-o",
                                 f"-p {pg_port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"]),
                   check=True, capture_output=True)
    api: subprocess.Popen[bytes] | None = None
    try:
        dsn = f"postgresql://srcube@127.0.0.1:{pg_port}/postgres"
        subprocess.run([str(VENV / "bin" / "pypgstac"), "migrate", "--dsn", dsn], check=True, capture_output=True)
        port = free_port()
        env = {**os.environ, "PGUSER": "srcube", "PGPASSWORD": "unused", "PGHOST": "127.0.0.1",
               "PGPORT": str(pg_port), "PGDATABASE": "postgres", "ENABLE_TRANSACTIONS_EXTENSIONS": "true",
               "STAC_FASTAPI_TITLE": "srcube test catalog", "STAC_FASTAPI_DESCRIPTION": "loopback",
               "STAC_FASTAPI_VERSION": "test", "STAC_FASTAPI_LANDING_ID": "srcube-test"}
        api = subprocess.Popen([str(VENV / "bin" / "python"), "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app",
                                "--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=folder)
        url = f"http://127.0.0.1:{port}"
        _wait(f"{url}/", api)
        yield url
    finally:
        if api is not None:
            api.terminate()
            try:
                api.wait(timeout=10)
            except subprocess.TimeoutExpired:
                api.kill()
            if api.stdout:
                api.stdout.close()
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
