"""Speaker-conditioned normalizations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels

EPS = 1e-5


def timbre_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of `x [B, C, T]` (no affine), then `* gamma + beta`, both `[B, C]`."""
    if kernels.enabled(x):
        from ..kernels.timbre_norm import timbre_norm as fused

        return fused(x, gamma, beta)
    normed = F.layer_norm(x.transpose(1, 2), (x.shape[1],), eps=EPS).transpose(1, 2)
    return normed * gamma[:, :, None] + beta[:, :, None]


class StyleAdaptiveLayerNorm(nn.Module):
    """LayerNorm without affine whose gamma and beta come from a speaker embedding (key `style`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.style = nn.Linear(channels, 2 * channels)

    def forward(self, x: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """`x [B, T, C]`, `speaker [B, C]`."""
        gamma, beta = self.style(speaker)[:, None, :].chunk(2, dim=-1)
        return F.layer_norm(x, (self.channels,), eps=EPS) * gamma + beta
