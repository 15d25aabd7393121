"""The FACodec decoders: quantization, the speaker (timbre) embedding, and speaker-conditioned synthesis."""

from __future__ import annotations

import torch
from torch import nn

from . import kernels, validation
from .checkpoint import PublishedCheckpointMixin
from .config import DecoderConfig
from .layers.blocks import decoder_stack
from .layers.norm import timbre_norm
from .layers.transformer import TransformerEncoder
from .quantize import ResidualVQ
from .streaming import DecoderStream, StreamOptions, decode_offline, takes_fast_path

# Frames quantized at once: every frame is quantized on its own, and a long clip's distances to 1024 codewords
# in one piece would take gigabytes.
QUANTIZE_FRAMES = 2048
TRAINING_PATH = (
    "the vq=False / get_vq=True paths of the published decoder feed its training-only predictors; "
    "rtcodec is for inference: use decoder.inference(vq_post_emb, spk_embs)"
)


class SpeakerConditionedDecoder(PublishedCheckpointMixin, nn.Module):
    """What every decoder shares: `inference(x, spk)`, the timbre-normalized synthesis stack (`model`)."""

    # The submodules that decide the codes. Codeword choices among 1024 neighbours flip under half-precision
    # rounding, so `set_synthesis_dtype` keeps these in fp32 and quantization runs in the input's precision.
    CODE_PATH: tuple[str, ...] = ()

    def __init__(self, in_channels: int, initial_channels: int, up_ratios: tuple[int, ...]) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.timbre_linear = nn.Linear(in_channels, 2 * in_channels)
        self.model = decoder_stack(in_channels, initial_channels, up_ratios)

    @property
    def dtype(self) -> torch.dtype:
        return self.timbre_linear.weight.dtype

    def _frames(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return validation.frames(x, channels=self.in_channels, dtype=self.dtype, name=name)

    def _speaker(self, spk: torch.Tensor, batch: int) -> torch.Tensor:
        return validation.speaker(spk, batch=batch, channels=self.in_channels, dtype=self.dtype)

    def inference(self, x: torch.Tensor, speaker_embedding: torch.Tensor) -> torch.Tensor:
        """Latent frames `[B, 256, T]` and speaker embeddings `[B, 256]` to audio `[B, 1, hop * T]`."""
        x = self._frames(x, "latent frames")
        spk = self._speaker(speaker_embedding, x.shape[0])
        if takes_fast_path(self):
            return decode_offline(self, x, spk)
        gamma, beta = self.timbre_linear(spk).chunk(2, dim=1)
        return self.model(timbre_norm(x, gamma, beta))

    def set_synthesis_dtype(self, dtype: torch.dtype) -> SpeakerConditionedDecoder:
        """Run the speaker encoder and the synthesis in `dtype` (e.g. bf16), the code path in fp32."""
        for name, child in self.named_children():
            child.to(torch.float32 if name in self.CODE_PATH else dtype)
        return self

    def stream(
        self, speaker_embedding: torch.Tensor, options: StreamOptions | None = None, **settings
    ) -> DecoderStream:
        """A stream of `inference`: pushed latent frames in, final audio samples out (see `rtcodec.streaming`);
        `options` or its settings as keywords, e.g. `decoder.stream(spk, batch_size=4, lookahead=3000)`."""
        return DecoderStream(self, speaker_embedding, options, **settings)


class FACodecDecoder(SpeakerConditionedDecoder):
    """`decoder(enc_out)` gives `(vq_post_emb, vq_id, None, quantized, spk_embs)`; see `inference` and `vq2emb`.

    Takes the published constructor arguments or a `DecoderConfig`.
    """

    CODE_PATH = ("quantizer",)

    def __init__(self, config: DecoderConfig | None = None, **kwargs) -> None:
        cfg = config or DecoderConfig(**kwargs)
        super().__init__(cfg.in_channels, cfg.upsample_initial_channel, cfg.up_ratios)
        self.config = cfg
        self.hop_length = cfg.hop_length
        groups = [
            (cfg.vq_num_q_p, cfg.codebook_size_prosody),
            (cfg.vq_num_q_c, cfg.codebook_size_content),
            (cfg.vq_num_q_r, cfg.codebook_size_residual),
        ]
        self.quantizer = nn.ModuleList(ResidualVQ(n, cfg.vq_dim, bits, cfg.codebook_dim) for n, bits in groups if n > 0)
        self.timbre_encoder = TransformerEncoder(cfg.transformer)

    @property
    def codebook_sizes(self) -> list[int]:
        return [layer.codebook_size for group in self.quantizer for layer in group.layers]

    def speaker_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The mean over time of the timbre encoder's output, `[B, 256]`: attends over the whole utterance."""
        x = self._frames(x, "encoder output")
        return self.timbre_encoder(x.transpose(1, 2)).mean(dim=1)

    def _quantize(self, x: torch.Tensor, prosody_source: torch.Tensor, n_quantizers: int | None):
        """(the summed output, the codes, each group's output) of `x` (prosody codes of `prosody_source`)."""
        if x.shape[2] <= QUANTIZE_FRAMES:
            return self._quantize_piece(x, prosody_source, n_quantizers)
        total, codes, groups = None, None, None
        for start in range(0, x.shape[2], QUANTIZE_FRAMES):
            piece = x[..., start : start + QUANTIZE_FRAMES]
            source = piece if prosody_source is x else prosody_source[..., start : start + QUANTIZE_FRAMES]
            outs = self._quantize_piece(piece, source, n_quantizers)
            if total is None:  # filled in place: a list of pieces to concatenate would double the peak
                total, codes = (t.new_empty(*t.shape[:2], x.shape[2]) for t in outs[:2])
                groups = [g.new_empty(x.shape) for g in outs[2]]
            for whole, part in zip((total, codes, *groups), (outs[0], outs[1], *outs[2])):
                whole[..., start : start + QUANTIZE_FRAMES] = part
        return total, codes, groups

    def _quantize_piece(self, x: torch.Tensor, prosody_source: torch.Tensor, n_quantizers: int | None):
        if prosody_source is x and n_quantizers is None and len(self.quantizer) == 3 and kernels.enabled(x):
            return self._quantize_fused(x)
        qp, codes_p = self.quantizer[0](prosody_source, n_quantizers)
        qc, codes_c = self.quantizer[1](x, n_quantizers)
        quantized, codes = [qp, qc], [codes_p, codes_c]
        if len(self.quantizer) > 2:
            qr, codes_r = self.quantizer[2](x - (qp + qc), n_quantizers)
            quantized.append(qr)
            codes.append(codes_r)
        return sum(quantized), torch.cat(codes), quantized

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """The codes `[6, B, T]` of encoder frames `[B, 256, T]` (T may be 0): frame by frame, no state."""
        if isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[2] == 0:
            return torch.zeros(self.config.num_codebooks, x.shape[0], 0, dtype=torch.long, device=x.device)
        x = validation.frames(x, channels=self.in_channels, dtype=None, name="encoder output")
        with torch.inference_mode():
            return self._quantize(x, x, None)[1]

    def _quantize_fused(self, x: torch.Tensor):
        """The V1 chain (prosody and content of x, residual of x - both) in one kernel launch."""
        from .kernels.rvq import rvq_chain

        stacked = zip(*(group.stacked() for group in self.quantizer))
        frames = x.transpose(1, 2)
        groups = tuple(len(group.layers) for group in self.quantizer)
        outs, codes = rvq_chain(frames.reshape(-1, x.shape[1]), *map(torch.cat, stacked), groups=groups)
        quantized = [out.view(frames.shape).transpose(1, 2) for out in outs]
        return sum(quantized), codes.view(-1, *frames.shape[:2]), quantized

    def forward(
        self,
        x: torch.Tensor,
        vq: bool = True,
        get_vq: bool = False,
        eval_vq: bool = True,
        speaker_embedding: torch.Tensor | None = None,
        n_quantizers: int | None = None,
        quantized: list[torch.Tensor] | None = None,
    ):
        """Quantize the encoder output `[B, 256, T]`.

        Returns `(vq_post_emb [B, 256, T], vq_id [6, B, T], None, [prosody, content, residual] each
        [B, 256, T], spk_embs [B, 256])`. The third item is the commitment loss in the published code,
        which is only defined in training.
        """
        if get_vq or not vq:
            raise NotImplementedError(TRAINING_PATH)
        x = validation.frames(x, channels=self.in_channels, dtype=None, name="encoder output")
        speaker = self.speaker_embedding(x)  # first: its intermediates are freed before quantization's outputs exist
        vq_post_emb, vq_id, groups = self._quantize(x, x, n_quantizers)
        return vq_post_emb, vq_id, None, groups, speaker

    def _vq2emb(self, vq: torch.Tensor, use_residual: bool) -> torch.Tensor:
        cfg = self.config
        vq = validation.codes(vq, min_codebooks=cfg.codes_needed(use_residual), codebook_sizes=self.codebook_sizes)
        return self._embed(vq, use_residual)

    def _embed(self, vq: torch.Tensor, use_residual: bool) -> torch.Tensor:
        """`_vq2emb` of codes that are known to be valid."""
        cfg = self.config
        bounds = [0, cfg.vq_num_q_p, cfg.vq_num_q_p + cfg.vq_num_q_c, cfg.num_codebooks]
        groups = self.quantizer if use_residual else self.quantizer[:2]
        return sum(group.vq2emb(vq[lo:hi]) for group, lo, hi in zip(groups, bounds, bounds[1:]))

    def vq2emb(self, vq: torch.Tensor, use_residual_code: bool = True) -> torch.Tensor:
        """Codes `[6, B, T]` to the quantized latent `[B, 256, T]`, with or without the residual codes."""
        return self._vq2emb(vq, use_residual_code)


class FACodecDecoderV2(FACodecDecoder):
    """As V1, but the prosody codes come from the mel prosody feature: `decoder(enc_out, prosody)`."""

    CODE_PATH = ("quantizer", "melspec_linear", "melspec_encoder")

    def __init__(self, config: DecoderConfig | None = None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.melspec_linear = nn.Linear(20, self.in_channels)
        self.melspec_encoder = TransformerEncoder(self.config.transformer)

    def forward(
        self,
        x: torch.Tensor,
        prosody_feature: torch.Tensor,
        vq: bool = True,
        get_vq: bool = False,
        eval_vq: bool = True,
        speaker_embedding: torch.Tensor | None = None,
        n_quantizers: int | None = None,
        quantized: list[torch.Tensor] | None = None,
    ):
        """Quantize the encoder output `[B, 256, T]` given the prosody feature `[B, 20, T']`.

        The codes cover min(T, T') frames (the published code cuts to T'; the two differ by at most a
        frame); the speaker embedding uses all T frames.
        """
        if get_vq or not vq:
            raise NotImplementedError(TRAINING_PATH)
        x = validation.frames(x, channels=self.in_channels, dtype=None, name="encoder output")
        prosody_dtype = self.melspec_linear.weight.dtype
        prosody = validation.frames(prosody_feature, channels=20, dtype=prosody_dtype, name="prosody feature")
        if prosody.shape[0] != x.shape[0]:
            raise ValueError(f"prosody feature has batch {prosody.shape[0]}, encoder output has {x.shape[0]}")
        speaker = self.speaker_embedding(x)  # first, as in V1
        prosody = self.melspec_encoder(self.melspec_linear(prosody.transpose(1, 2))).transpose(1, 2)
        frames = min(prosody.shape[2], x.shape[2])
        vq_post_emb, vq_id, groups = self._quantize(x[..., :frames], prosody[..., :frames], n_quantizers)
        return vq_post_emb, vq_id, None, groups, speaker

    def vq2emb(self, vq: torch.Tensor, use_residual: bool = True) -> torch.Tensor:
        """Codes `[6, B, T]` to the quantized latent `[B, 256, T]`, with or without the residual codes."""
        return self._vq2emb(vq, use_residual)
