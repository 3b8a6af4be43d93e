#!/usr/bin/env bash
# Install the GeoZarr conventions validator that the cube tests run (tests/pipeline/write/test_geozarr.py):
# geozarr-toolkit (its pydantic models of the multiscales, geo-proj and spatial conventions) needs Python >= 3.12,
# srcube runs on 3.11, so it gets a venv of its own, ./.venv-geozarr, from the hashed requirements/geozarr.lock.
# Python 3.12: $PYTHON312, else python3.12 on PATH, else pyenv's (its shim need not be active).
# What cannot be installed is said here. On a workstation that is all (exit 0): the tests that need it skip,
# naming it. Under CI=true it fails (exit 1): CI must not go green without those tests.
set -uo pipefail
cd "$(dirname "$0")/.."
find_python() {  # the first candidate that runs and is 3.12 (an inactive pyenv shim on PATH does not run)
    local root="${PYENV_ROOT:-$HOME/.pyenv}" cand
    for cand in ${PYTHON312:-} "$(command -v python3.12)" $(ls -d "$root"/versions/3.12.*/bin/python3.12 2>/dev/null | sort -rV); do
        if [ -n "$cand" ] && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
            echo "$cand"; return
        fi
    done
}
if ! .venv-geozarr/bin/python -c "import geozarr_toolkit" >/dev/null 2>&1; then
    python=$(find_python)
    if [ -z "$python" ]; then
        echo "geozarr.sh: no Python 3.12 found (set PYTHON312, or install it: pyenv install 3.12)" >&2
    else
        uv=(uv)
        if [ -x .venv/bin/python ] && .venv/bin/python -m uv --version >/dev/null 2>&1; then uv=(.venv/bin/python -m uv); fi
        # uv would download an interpreter for "-p 3.12": it is handed the one found
        "${uv[@]}" venv -q --allow-existing -p "$python" .venv-geozarr \
            && "${uv[@]}" pip install --quiet --python .venv-geozarr/bin/python --require-hashes --no-deps \
                -r requirements/geozarr.lock \
            || echo "geozarr.sh: could not install geozarr-toolkit from requirements/geozarr.lock with $python" >&2
    fi
fi
if ! .venv-geozarr/bin/python -c "import geozarr_toolkit" >/dev/null 2>&1; then
    case "${CI:-}" in
        true | TRUE | True | 1)
            echo "geozarr.sh: CI=${CI}: failing, as geozarr-toolkit could not be installed: the GeoZarr tests would skip" >&2
            exit 1 ;;
    esac
    echo "geozarr.sh: geozarr-toolkit not installed in .venv-geozarr: the GeoZarr validation tests will skip, naming it" >&2
fi
exit 0
