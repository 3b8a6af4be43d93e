#!/usr/bin/env bash
# The GPU checks in one call, for a machine with a CUDA device: the gpu-marked tests (exact fp32 tiling with
# TF32 off, autocast fidelity, a real out-of-memory error split around, batched pass tiles sized from the free
# memory; a few training steps under AMP, bf16 and fp16 with loss scaling, and `srcube train` under torchrun on
# every GPU with NCCL: tests/training/test_distributed.py), then the inference bench on CUDA
# (pipeline vs bare forward vs the SEN2SR- and CESBIO-style loops, projected full Sentinel-2 tile). The
# bench's JSON line is the last line printed. Installs the CUDA build of torch unless the venv has one.
#   scripts/gpu-check.sh [--size 2048]      (bench arguments)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}" scripts/install.sh test
fi
.venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: torch sees no CUDA device')"
.venv/bin/python -c "import torch; print('device:', torch.cuda.get_device_name(), torch.version.cuda)"
export PREFECT_HOME="${PREFECT_HOME:-$(mktemp -d)}" DO_NOT_TRACK=1
.venv/bin/python -m pytest -m gpu -q -s -p no:cacheprovider tests
if [ $# -eq 0 ]; then set -- --size 2048; fi
exec .venv/bin/python bench/inference.py "$@"
