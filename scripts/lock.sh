#!/usr/bin/env bash
# Regenerate the hashed lock files from pyproject.toml and constraints.txt (torch is installed apart:
# it is left out of the locks, the CPU/CUDA wheel being the machine's choice).
set -euo pipefail
cd "$(dirname "$0")/.."
uv="${UV:-uv}"
common=(-c constraints.txt --generate-hashes --no-emit-package torch --python-version 3.11
        --python-platform x86_64-manylinux_2_28 -q)
if [ -n "${PIP_FIND_LINKS:-}" ]; then common+=(--find-links "$PIP_FIND_LINKS"); fi
"$uv" pip compile pyproject.toml "${common[@]}" -o requirements/base.lock
"$uv" pip compile pyproject.toml --extra test "${common[@]}" -o requirements/test.lock
"$uv" pip compile requirements/stac-api.in --generate-hashes --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 -q -o requirements/stac-api.lock
"$uv" pip compile requirements/geozarr.in --generate-hashes --python-version 3.12 \
    --python-platform x86_64-manylinux_2_28 -q -o requirements/geozarr.lock
