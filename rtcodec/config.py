"""Model configurations, with the constructor argument names of the published FACodec."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SAMPLE_RATE = 16000
HOP_LENGTH = 200  # samples per frame: 12.5 ms at 16 kHz
LATENT_CHANNELS = 256  # width of the encoder output, the quantized latent and every transformer


@dataclass
class EncoderConfig:
    """`FACodecEncoder` / `FACodecEncoderV2`. Defaults are the published constructor's."""

    ngf: int = 32
    up_ratios: tuple[int, ...] = (2, 4, 5, 5)
    out_channels: int = 1024

    def __post_init__(self) -> None:
        self.up_ratios = tuple(int(r) for r in self.up_ratios)

    @property
    def channels(self) -> list[int]:
        """Channel count entering each encoder block, then leaving the last one."""
        return [self.ngf * 2**i for i in range(len(self.up_ratios) + 1)]

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for `num_samples` input samples, following each strided conv's arithmetic."""
        n = num_samples
        for s in self.up_ratios:
            pad = s // 2 + s % 2
            n = (n + 2 * pad - 2 * s) // s + 1
            if n <= 0:
                return 0
        return n

    @property
    def min_samples(self) -> int:
        """The shortest input that yields one frame."""
        n = 1
        while self.num_frames(n) < 1:
            n += 1
        return n


@dataclass
class TransformerConfig:
    """The pre-LayerNorm transformers of the decoders (timbre, mel prosody, redecoder prosody)."""

    num_layers: int = 4
    hidden: int = LATENT_CHANNELS
    heads: int = 4
    ffn_channels: int = 1024
    ffn_kernel_size: int = 5


class _SynthesisConfig:
    """What the decoder and redecoder configs derive from their fields."""

    up_ratios: tuple[int, ...]
    transformer_layers: int
    transformer_ffn_channels: int
    vq_num_q_p: int
    vq_num_q_c: int
    vq_num_q_r: int

    def __post_init__(self) -> None:
        self.up_ratios = tuple(int(r) for r in self.up_ratios)

    @property
    def transformer(self) -> TransformerConfig:
        return TransformerConfig(num_layers=self.transformer_layers, ffn_channels=self.transformer_ffn_channels)

    @property
    def hop_length(self) -> int:
        return math.prod(self.up_ratios)

    @property
    def num_codebooks(self) -> int:
        return self.vq_num_q_p + self.vq_num_q_c + self.vq_num_q_r

    def codes_needed(self, use_residual: bool) -> int:
        """Rows of codes that `vq2emb` reads: prosody and content, and the residual ones if asked."""
        return self.vq_num_q_p + self.vq_num_q_c + (self.vq_num_q_r if use_residual else 0)


@dataclass
class DecoderConfig(_SynthesisConfig):
    """`FACodecDecoder` / `FACodecDecoderV2`. Defaults are the published constructor's.

    `transformer_layers` and `transformer_ffn_channels` are ours: they size every transformer of the
    model (the published checkpoints use 4 and 1024). The training-only arguments are accepted so
    that published code runs unchanged; inference never uses them.
    """

    in_channels: int = 256
    upsample_initial_channel: int = 1536
    ngf: int = 32
    up_ratios: tuple[int, ...] = (5, 5, 4, 2)
    vq_num_q_c: int = 2
    vq_num_q_p: int = 1
    vq_num_q_r: int = 3
    vq_dim: int = 1024
    codebook_dim: int = 8
    codebook_size_prosody: int = 10  # log2 of the number of codewords
    codebook_size_content: int = 10
    codebook_size_residual: int = 10
    transformer_layers: int = 4
    transformer_ffn_channels: int = 1024
    # Training-only, accepted and ignored.
    vq_commit_weight: float = 0.005
    vq_weight_init: bool = False
    vq_full_commit_loss: bool = False
    quantizer_dropout: float = 0.0
    dropout_type: str = "linear"
    use_gr_content_f0: bool = False
    use_gr_prosody_phone: bool = False
    use_gr_residual_f0: bool = False
    use_gr_residual_phone: bool = False
    use_gr_x_timbre: bool = False
    use_random_mask_residual: bool = True
    prob_random_mask_residual: float = 0.75


@dataclass
class RedecoderConfig(_SynthesisConfig):
    """`FACodecRedecoder`. Defaults are the published constructor's (which are the official checkpoint's)."""

    in_channels: int = 256
    upsample_initial_channel: int = 1280
    up_ratios: tuple[int, ...] = (5, 5, 4, 2)
    vq_num_q_c: int = 2
    vq_num_q_p: int = 1
    vq_num_q_r: int = 3
    vq_dim: int = 256
    codebook_size_prosody: int = 10
    codebook_size_content: int = 10
    codebook_size_residual: int = 10
    transformer_layers: int = 4
    transformer_ffn_channels: int = 1024


@dataclass
class OfficialConfigs:
    """The constructor arguments of the five files in `amphion/naturalspeech3_facodec`."""

    encoder: EncoderConfig = field(
        default_factory=lambda: EncoderConfig(ngf=32, up_ratios=(2, 4, 5, 5), out_channels=256)
    )
    decoder: DecoderConfig = field(
        default_factory=lambda: DecoderConfig(
            upsample_initial_channel=1024,
            vq_dim=256,
            use_gr_x_timbre=True,
            use_gr_residual_f0=True,
            use_gr_residual_phone=True,
        )
    )
    redecoder: RedecoderConfig = field(default_factory=RedecoderConfig)


OFFICIAL = OfficialConfigs()
