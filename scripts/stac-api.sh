#!/usr/bin/env bash
# Install the STAC API that the publish tests start on loopback (tests/support/pgstac.py): PostgreSQL with
# PostGIS from Debian's packages (only when missing, and only where apt-get can run), and stac-fastapi-pgstac
# with pypgstac into ./.venv-stac-api from the hashed requirements/stac-api.lock.
# It never fails the caller: what cannot be installed is said here, and the tests that need it skip, naming it.
set -uo pipefail
cd "$(dirname "$0")/.."
pg_share() { ls -d /usr/share/postgresql/*/extension 2>/dev/null | sort -V | tail -1; }
if ! ls "$(pg_share)"/postgis.control >/dev/null 2>&1; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        major=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)
        pkgs=("postgresql-${major:-15}-postgis-3")
        [ -n "$major" ] || pkgs=(postgresql postgresql-15-postgis-3)
        echo "stac-api.sh: installing ${pkgs[*]} from Debian's packages" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null 2>&1; } \
            || echo "stac-api.sh: could not install ${pkgs[*]}; the publish tests will skip" >&2
    else
        echo "stac-api.sh: PostgreSQL with PostGIS is missing and apt-get cannot run here; the publish tests will skip" >&2
    fi
fi
python="${PYTHON:-python3}"
if [ ! -x .venv-stac-api/bin/python ]; then
    "$python" -m venv .venv-stac-api || { echo "stac-api.sh: no venv; the publish tests will skip" >&2; exit 0; }
fi
uv=(uv)
if [ -x .venv/bin/python ] && .venv/bin/python -m uv --version >/dev/null 2>&1; then uv=(.venv/bin/python -m uv); fi
"${uv[@]}" pip install --quiet --python .venv-stac-api/bin/python --require-hashes --no-deps \
    -r requirements/stac-api.lock \
    || echo "stac-api.sh: could not install the STAC API server; the publish tests will skip" >&2
exit 0
