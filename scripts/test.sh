#!/usr/bin/env bash
# Install srcube with its test extras (hashed lock), run the lint gate, then the test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m slow, scripts/test.sh -k catalog).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
scripts/stac-api.sh   # the STAC API the publish tests start (where it cannot be installed they skip, naming it; CI=true fails)
scripts/geozarr.sh    # the GeoZarr conventions validator (Python 3.12, a venv of its own; as above)
scripts/browser.sh    # Chromium for the map page's browser test (the same: it skips, naming it; CI=true fails)
scripts/lint.sh   # ruff, mypy, the import-linter layer contract
export PREFECT_HOME="${PREFECT_HOME:-$(mktemp -d)}"
export DO_NOT_TRACK=1
# on SRCUBE_TEST_WORKERS worker processes (pytest-xdist; default 2; 0 runs in this process), tests handed
# out one at a time and stolen by an idle worker; the 25 slowest steps are listed (where the run's time goes)
exec .venv/bin/python -m pytest -n "${SRCUBE_TEST_WORKERS:-2}" --dist worksteal --durations=25 "$@"
