"""SnakeBeta and its anti-aliased form (upsample x2, SnakeBeta, low-pass and downsample x2)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels

FILTER_TAPS = 12
# Replicate padding of the two resampling filters, at the signal's edges only.
UP_PAD = 5  # input samples added on each side before the transposed conv
UP_CROP = 15  # output samples dropped at each end of the transposed conv
DOWN_PAD_LEFT, DOWN_PAD_RIGHT = 5, 6


def kaiser_sinc_filter(cutoff: float = 0.25, half_width: float = 0.3, taps: int = FILTER_TAPS) -> torch.Tensor:
    """The 12-tap Kaiser-windowed sinc low-pass of the published checkpoints, `[1, 1, taps]`, summing to 1."""
    half = taps // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(taps, beta=beta, periodic=False, dtype=torch.float64)
    t = torch.arange(-half, half, dtype=torch.float64) + 0.5
    filt = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
    return (filt / filt.sum()).float().view(1, 1, taps)


def polyphase_filters(up_filter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The x2 upsampling (with its gain of 2) split into its two phases: 6 taps each, `[6]`.

    Upsampled sample 2c + 1 is `odd . x[c-2 .. c+3]` and 2c is `even . x[c-3 .. c+2]` (x replicate-padded),
    so the transposed convolution, its padding and its crop become two small convolutions on x.
    """
    taps = 2 * up_filter.flatten().flip(0)  # taps[i] is the published tap 11 - i
    return taps[1::2].clone(), taps[0::2].clone()


def snake_(x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor) -> torch.Tensor:
    """SnakeBeta in place with prepared `alpha = e^alpha` and `inv_beta = 1 / (e^beta + 1e-9)`, both `[C, 1]`."""
    t = x * alpha
    t.sin_()
    t.mul_(t)
    return x.addcmul_(t, inv_beta)


class SnakeBeta(nn.Module):
    """`y = x + sin(x * e^alpha)^2 / (e^beta + 1e-9)`, per channel; alpha and beta are stored in log scale."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def prepared(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`alpha` and `inv_beta` as `snake_` takes them."""
        return self.alpha.exp()[:, None], 1.0 / (self.beta.exp()[:, None] + 1e-9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha, inv_beta = self.prepared()
        return x + inv_beta * torch.sin(x * alpha).pow(2)


class FilterTaps(nn.Module):
    """Holds one resampling filter as the buffer `filter` (a module so that the key layout matches the checkpoints)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("filter", kaiser_sinc_filter())


class AntiAliasedSnake(nn.Module):
    """The published `Activation1d(SnakeBeta)`: the length is unchanged.

    Keys `act.alpha`, `act.beta`, `upsample.filter`, `downsample.lowpass.filter`.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = FilterTaps()
        self.downsample = nn.ModuleDict({"lowpass": FilterTaps()})

    @property
    def up_filter(self) -> torch.Tensor:
        return self.upsample.filter

    @property
    def down_filter(self) -> torch.Tensor:
        return self.downsample["lowpass"].filter

    def filters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(even phase, odd phase, low-pass): the form the fused kernel takes."""
        odd, even = polyphase_filters(self.up_filter)
        return even, odd, self.down_filter.flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernels.enabled(x):
            from ..kernels.snake import anti_aliased_snake

            alpha, inv_beta = self.act.prepared()
            return anti_aliased_snake(x, alpha.flatten(), inv_beta.flatten(), self.filters())
        channels = x.shape[1]
        up = F.pad(x, (UP_PAD, UP_PAD), mode="replicate")
        up = 2 * F.conv_transpose1d(up, self.up_filter.expand(channels, 1, -1), stride=2, groups=channels)
        up = self.act(up[..., UP_CROP:-UP_CROP])
        down = F.pad(up, (DOWN_PAD_LEFT, DOWN_PAD_RIGHT), mode="replicate")
        return F.conv1d(down, self.down_filter.expand(channels, 1, -1), stride=2, groups=channels)
