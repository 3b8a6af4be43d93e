#!/usr/bin/env bash
# Install the STAC API that the publish tests start on loopback (tests/support/pgstac.py): PostgreSQL with
# PostGIS from Debian's packages (only when missing, and only where apt-get can run), and stac-fastapi-pgstac
# with pypgstac into ./.venv-stac-api from the hashed requirements/stac-api.lock; then checks that all of it
# is there, as the tests look for it.
# What cannot be installed is said here. On a workstation that is all (exit 0): the tests that need it skip,
# naming it. Under CI=true (set by CI services) it fails (exit 1): CI must not go green without those tests.
set -uo pipefail
cd "$(dirname "$0")/.."
# the newest PostgreSQL server here (its major version), as tests/support/pgstac.py picks it
pg_major() { ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sed 's#/usr/lib/postgresql/\([^/]*\)/.*#\1#' | sort -V | tail -1; }
has_postgis() { local v; v=$(pg_major); [ -n "$v" ] && [ -f "/usr/share/postgresql/$v/extension/postgis.control" ]; }
if ! has_postgis; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        major=$(pg_major)
        pkgs=("postgresql-${major:-15}-postgis-3")
        [ -n "$major" ] || pkgs=(postgresql postgresql-15-postgis-3)
        echo "stac-api.sh: installing ${pkgs[*]} from Debian's packages" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null 2>&1; } \
            || echo "stac-api.sh: could not install ${pkgs[*]}" >&2
    else
        echo "stac-api.sh: PostgreSQL with PostGIS is missing and apt-get cannot run here (it needs root)" >&2
    fi
fi
python="${PYTHON:-python3}"
if [ ! -x .venv-stac-api/bin/python ]; then
    "$python" -m venv .venv-stac-api || echo "stac-api.sh: could not make .venv-stac-api with $python" >&2
fi
if [ -x .venv-stac-api/bin/python ]; then
    uv=(uv)
    if [ -x .venv/bin/python ] && .venv/bin/python -m uv --version >/dev/null 2>&1; then uv=(.venv/bin/python -m uv); fi
    "${uv[@]}" pip install --quiet --python .venv-stac-api/bin/python --require-hashes --no-deps \
        -r requirements/stac-api.lock \
        || echo "stac-api.sh: could not install the STAC API server from requirements/stac-api.lock" >&2
fi

# what the publish tests need, checked whatever happened above
missing=()
[ -n "$(pg_major)" ] || missing+=("PostgreSQL's server (initdb)")
[ -z "$(pg_major)" ] || has_postgis || missing+=("PostGIS for PostgreSQL $(pg_major)")
.venv-stac-api/bin/python -c "import stac_fastapi.pgstac.app, pypgstac" >/dev/null 2>&1 \
    || missing+=("stac-fastapi-pgstac and pypgstac in .venv-stac-api")
if [ "${#missing[@]}" -gt 0 ]; then
    list=$(printf '%s, ' "${missing[@]}")
    case "${CI:-}" in
        true | TRUE | True | 1)
            echo "stac-api.sh: CI=${CI}: failing, as ${list%, } could not be installed: the publish tests would skip" >&2
            exit 1 ;;
    esac
    echo "stac-api.sh: ${list%, } not installed: the publish tests will skip, naming it" >&2
fi
exit 0
