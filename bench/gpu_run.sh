#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, from the repository root: the GPU tests, then the GPU benchmark, which
# writes bench/results/gpu-<card>-<date>.json (commit it).
set -euo pipefail
unset TRITON_INTERPRET
python -m pytest -q tests/test_kernels.py tests/test_golden.py tests/test_streaming.py
python -m bench.gpu "$@"
