"""The FACodec encoders: waveform to latent frames (and, for V2, the mel prosody feature)."""

from __future__ import annotations

import torch
from torch import nn

from . import validation
from .checkpoint import PublishedCheckpointMixin
from .config import HOP_LENGTH, SAMPLE_RATE, EncoderConfig
from .layers.blocks import encoder_stack
from .layers.mel import PROSODY_BINS, REFLECT_PAD, MelSpectrogram
from .streaming import EncoderStream, StreamOptions, encode_offline, takes_fast_path


class FACodecEncoder(PublishedCheckpointMixin, nn.Module):
    """`encoder(wav [B, 1, L])` gives the latent frames `[B, out_channels, T]`.

    Takes the published constructor arguments (`ngf`, `up_ratios`, `out_channels`) or an `EncoderConfig`.
    """

    def __init__(self, config: EncoderConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config or EncoderConfig(**kwargs)
        self.hop_length = HOP_LENGTH
        self.block = encoder_stack(self.config.ngf, self.config.up_ratios, self.config.out_channels)

    @property
    def dtype(self) -> torch.dtype:
        return self.block[0].weight.dtype

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        wav = validation.audio(wav, min_samples=self.config.min_samples, dtype=self.dtype)
        if takes_fast_path(self):
            return encode_offline(self, wav)
        return self.block(wav)

    def inference(self, wav: torch.Tensor) -> torch.Tensor:
        return self(wav)

    def stream(self, options: StreamOptions | None = None, **settings) -> EncoderStream:
        """Pushed audio in, final frames out (see `rtcodec.streaming`): `options` or its settings as keywords,
        e.g. `encoder.stream(batch_size=4, lookahead=2400)`."""
        return EncoderStream(self, options, **settings)


class FACodecEncoderV2(FACodecEncoder):
    """The V1 encoder plus `get_prosody_feature(wav)`: the lowest 20 log-mel bins, `[B, 20, L // 200]`."""

    def __init__(self, config: EncoderConfig | None = None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.mel_transform = MelSpectrogram(SAMPLE_RATE, HOP_LENGTH)

    def get_prosody_feature(self, wav: torch.Tensor) -> torch.Tensor:
        # The reflect padding of the STFT needs more samples than it pads.
        wav = validation.audio(wav, min_samples=REFLECT_PAD + 1, dtype=self.dtype)
        return self.mel_transform(wav[:, 0])[:, :PROSODY_BINS, :]
