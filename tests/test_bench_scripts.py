"""The GPU benchmark script runs (at tiny sizes on the CPU, under the Triton interpreter) and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtcodec import kernels

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not kernels.triton_available(), reason="triton is not installed")
def test_gpu_benchmark_script_smoke(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    # A hop budget of 0 s: as on the slowest machine, no batch is real time, and still every batch is measured.
    script = "import sys, bench.gpu as gpu; gpu.HOP_SECONDS = 0.0; sys.argv[1:] = sys.argv[2:]; gpu.main()"
    cmd = [sys.executable, "-c", script, "--", "--smoke", "--output", str(out)]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    report = json.loads(out.read_text())
    assert {"card", "torch", "triton", "date", "kernels", "realtime_streams", "hop_by_batch"} <= set(report)
    assert report["hop_batch1_torch_eager"]["p99_ms"] >= report["hop_batch1_torch_eager"]["p50_ms"] > 0
    assert set(report["hop_by_batch"]["matmul"]) == {"1", "2"} and set(report["hop_by_batch"]["cudnn"]) == {"1"}
    assert report["realtime_streams"] == 0
    names = [k["kernel"] for k in report["kernels"]]
    assert any("rvq" in n for n in names) and any("timbre" in n for n in names) and any("snake" in n for n in names)
    assert all(k["speedup"] > 0 for k in report["kernels"])
