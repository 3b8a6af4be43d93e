#!/usr/bin/env bash
# Install srcube and run the main job on the embedded default: the sample archive behind a local
# STAC API, a Dask LocalCluster, and a local zarr cube (./srcube-demo.zarr).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/srcube demo "$@"
