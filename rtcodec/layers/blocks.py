"""The convolutional stacks of FACodec: residual units, encoder and decoder blocks.

Module names mirror the published key layout (`block.N`, `model.N`), so checkpoints load without renaming.
Convolutions are plain `nn.Conv1d` / `nn.ConvTranspose1d`: weight norm is folded at load time.
"""

from __future__ import annotations

from torch import nn

from .activation import AntiAliasedSnake

DILATIONS = (1, 3, 9)


def strided_padding(stride: int) -> int:
    """Zero padding of the strided (transposed) convolutions of kernel 2 * stride."""
    return stride // 2 + stride % 2


class ResidualUnit(nn.Module):
    """`x + conv1x1(act(conv7_d(act(x))))`."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            AntiAliasedSnake(channels),
            nn.Conv1d(channels, channels, kernel_size=7, dilation=dilation, padding=3 * dilation),
            AntiAliasedSnake(channels),
            nn.Conv1d(channels, channels, kernel_size=1),
        )

    def forward(self, x):
        return x + self.block(x)


class EncoderBlock(nn.Module):
    """Residual units on `channels`, then a strided conv to `2 * channels`."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *(ResidualUnit(channels, d) for d in DILATIONS),
            AntiAliasedSnake(channels),
            nn.Conv1d(channels, 2 * channels, kernel_size=2 * stride, stride=stride, padding=strided_padding(stride)),
        )

    def forward(self, x):
        return self.block(x)


class DecoderBlock(nn.Module):
    """A transposed conv upsampling by `stride` from `in_channels` to `out_channels`, then residual units."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            AntiAliasedSnake(in_channels),
            nn.ConvTranspose1d(
                in_channels,
                out_channels,
                kernel_size=2 * stride,
                stride=stride,
                padding=strided_padding(stride),
                output_padding=stride % 2,
            ),
            *(ResidualUnit(out_channels, d) for d in DILATIONS),
        )

    def forward(self, x):
        return self.block(x)


def encoder_stack(ngf: int, up_ratios: tuple[int, ...], out_channels: int) -> nn.Sequential:
    """Waveform `[B, 1, L]` to latent frames `[B, out_channels, T]` (the published encoder's `block`)."""
    layers: list[nn.Module] = [nn.Conv1d(1, ngf, kernel_size=7, padding=3)]
    channels = ngf
    for stride in up_ratios:
        layers.append(EncoderBlock(channels, stride))
        channels *= 2
    layers += [AntiAliasedSnake(channels), nn.Conv1d(channels, out_channels, kernel_size=3, padding=1)]
    return nn.Sequential(*layers)


def decoder_stack(in_channels: int, initial_channels: int, up_ratios: tuple[int, ...]) -> nn.Sequential:
    """Latent frames `[B, in_channels, T]` to waveform `[B, 1, hop * T]` (the published decoders' `model`)."""
    layers: list[nn.Module] = [nn.Conv1d(in_channels, initial_channels, kernel_size=7, padding=3)]
    channels = initial_channels
    for stride in up_ratios:
        layers.append(DecoderBlock(channels, channels // 2, stride))
        channels //= 2
    layers += [AntiAliasedSnake(channels), nn.Conv1d(channels, 1, kernel_size=7, padding=3), nn.Tanh()]
    return nn.Sequential(*layers)
