"""Checks of the tensors handed to the models: a clear ValueError instead of an error from deep inside torch."""

from __future__ import annotations

import torch


def floating(x: torch.Tensor, name: str, dtype: torch.dtype | None) -> torch.Tensor:
    """A finite floating-point tensor, cast to `dtype` (None keeps the input's)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.numel() and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x if dtype is None else x.to(dtype)


def audio(wav: torch.Tensor, *, min_samples: int, dtype: torch.dtype, name: str = "wav") -> torch.Tensor:
    """A mono batch `[B, 1, L]` with at least `min_samples` samples, cast to the model's dtype."""
    if isinstance(wav, torch.Tensor) and (wav.dim() != 3 or wav.shape[1] != 1):
        hint = " (mix it to mono first)" if wav.dim() == 3 else ""
        raise ValueError(f"{name} must be mono audio shaped [batch, 1, samples], got shape {tuple(wav.shape)}{hint}")
    wav = floating(wav, name, dtype)
    if wav.shape[0] == 0 or wav.shape[2] < min_samples:
        raise ValueError(f"{name} is too short: {wav.shape[2]} samples, at least {min_samples} are needed")
    return wav


def frames(x: torch.Tensor, *, channels: int, dtype: torch.dtype | None, name: str) -> torch.Tensor:
    """Latent frames `[B, channels, T]` with T >= 1, cast to `dtype` (None keeps the input's)."""
    if isinstance(x, torch.Tensor) and (x.dim() != 3 or x.shape[1] != channels):
        raise ValueError(f"{name} must be shaped [batch, {channels}, frames], got shape {tuple(x.shape)}")
    x = floating(x, name, dtype)
    if x.shape[0] == 0 or x.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    return x


def speaker(spk: torch.Tensor, *, batch: int, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """A speaker embedding `[batch, channels]`."""
    if isinstance(spk, torch.Tensor) and tuple(spk.shape) != (batch, channels):
        raise ValueError(f"speaker embedding must be shaped [{batch}, {channels}], got shape {tuple(spk.shape)}")
    return floating(spk, "speaker embedding", dtype)


def codes(vq: torch.Tensor, *, min_codebooks: int, codebook_sizes: list[int]) -> torch.Tensor:
    """Codes `[n, B, T]`, min_codebooks <= n <= len(codebook_sizes), integers within each codebook."""
    if not isinstance(vq, torch.Tensor):
        raise ValueError(f"codes must be a torch.Tensor, got {type(vq).__name__}")
    rows = f"{min_codebooks}" if min_codebooks == len(codebook_sizes) else f"{min_codebooks}..{len(codebook_sizes)}"
    if vq.dim() != 3 or not min_codebooks <= vq.shape[0] <= len(codebook_sizes):
        raise ValueError(f"codes must be shaped [{rows}, batch, frames], got shape {tuple(vq.shape)}")
    if vq.is_floating_point() or vq.is_complex() or vq.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got {vq.dtype}")
    if vq.shape[1] == 0 or vq.shape[2] == 0:
        raise ValueError(f"codes are empty: shape {tuple(vq.shape)}")
    vq = vq.long()  # compared as they are, a uint8 1024 wraps to 0 and every uint8 code is out of range
    for i, (row, size) in enumerate(zip(vq, codebook_sizes)):
        if (row < 0).any() or (row >= size).any():
            raise ValueError(f"codes of codebook {i} must lie in [0, {size}), got values {row.min()}..{row.max()}")
    return vq
