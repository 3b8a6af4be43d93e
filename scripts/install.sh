#!/usr/bin/env bash
# Install srcube into ./.venv from the hashed lock files: requirements/base.lock (the package) or
# requirements/test.lock (every extra the tests need, given as $1 = test), torch pinned apart.
#   scripts/install.sh          the package
#   scripts/install.sh test     the package and its test extras
# torch comes from TORCH_INDEX_URL when set (GPU machines: https://download.pytorch.org/whl/cu128), else from
# the local wheel folder pip is configured with ($PIP_FIND_LINKS), else from PyTorch's CPU index.
# The locks are resolved by `uv` (bootstrapped into the venv from PyPI); no resolver runs at install time.
# Regenerate them after changing pyproject.toml: scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
case "$extras" in
    "") lock=requirements/base.lock ;;
    test) lock=requirements/test.lock ;;
    *) echo "install.sh: extras '$extras' have no lock file (use nothing or 'test')" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
if ! .venv/bin/python -m uv --version >/dev/null 2>&1; then
    if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
        .venv/bin/python -m ensurepip --upgrade >/dev/null   # a venv made without pip (e.g. by uv)
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
fi
uv=(.venv/bin/python -m uv pip install --quiet --python .venv/bin/python)
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${uv[@]}" --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
elif [ -n "${PIP_FIND_LINKS:-}" ]; then
    "${uv[@]}" --find-links "$PIP_FIND_LINKS" "torch==2.13.0"
else
    "${uv[@]}" --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
fi
"${uv[@]}" --require-hashes --no-deps -r "$lock"   # exactly the locked versions, hash-checked
"${uv[@]}" --no-deps -e .
