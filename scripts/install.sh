#!/usr/bin/env bash
# Install srcube into ./.venv: torch first (pinned), then srcube with the extras given as $1.
# GPU machines: TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${pip[@]}" --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
else
    "${pip[@]}" -c constraints.txt "torch==2.13.0"
fi
if [ -n "$extras" ]; then
    "${pip[@]}" -c constraints.txt -e ".[$extras]"
else
    "${pip[@]}" -c constraints.txt -e .
fi
