#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, from the repository root: the GPU tests, then the GPU benchmark, which
# writes bench/results/gpu-<card>-<date>.json (commit it). Arguments go to the benchmark (e.g. --output).
set -euo pipefail
unset TRITON_INTERPRET
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_cuda.py
"$PYTHON" -m bench.gpu "$@"
