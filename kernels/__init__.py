"""Triton kernels for FACodec's hot paths, each with a torch reference of the same signature.

- `rvq`: a residual group of factorized VQ layers (or the whole V1 chain) in one launch.
- `timbre_norm`: LayerNorm over channels, then per-item gamma and beta, in one pass.
- `snake`: the anti-aliased SnakeBeta (x2 upsampling, SnakeBeta, low-pass, x2 downsampling) in two launches.

Installed as `rtcodec.kernels`; nothing here imports rtcodec. Which implementation the models use is decided
by `use()` (or the environment variable RTCODEC_KERNELS): "auto" (the default) runs Triton on CUDA tensors
and torch elsewhere, "triton" runs Triton everywhere (on the CPU only under TRITON_INTERPRET=1, which is
how CI tests the kernels), "torch" never runs Triton.
"""

from __future__ import annotations

import os

import torch

MODES = ("auto", "triton", "torch")
_mode = os.environ.get("RTCODEC_KERNELS", "auto")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use(mode: str) -> None:
    """Choose the implementation: "auto", "triton" or "torch"."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"kernel mode must be one of {MODES}, got {mode!r}")
    _mode = mode


def mode() -> str:
    return _mode


def enabled(x: torch.Tensor) -> bool:
    """Whether a kernel should run on `x`."""
    if _mode == "torch" or (_mode == "auto" and not x.is_cuda):
        return False
    if not triton_available():
        if _mode == "triton":
            raise RuntimeError("RTCODEC_KERNELS=triton, but triton is not installed")
        return False
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("Triton kernels run on CUDA tensors, or on the CPU with TRITON_INTERPRET=1")
    return True
