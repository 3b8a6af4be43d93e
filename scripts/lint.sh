#!/usr/bin/env bash
# The lint gate: ruff, mypy and the import-linter contract over the srcube namespace. mypy and
# import-linter read packages from the file system, so they get a tree of links that lays the
# repository's folders out as they are installed (srcube/pipeline -> pipeline/, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
.venv/bin/ruff check pipeline models training flows cli srcube tests bench
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/srcube"
for f in srcube/*.py srcube/py.typed; do ln -s "$repo/$f" "$tree/$f"; done
for d in pipeline models training flows cli; do ln -s "$repo/$d" "$tree/srcube/$d"; done
(cd "$tree" && MYPYPATH="$tree" "$repo/.venv/bin/mypy" --config-file "$repo/pyproject.toml" -p srcube)
(cd "$tree" && PYTHONPATH="$tree" "$repo/.venv/bin/lint-imports" "$repo/pyproject.toml")
