"""The FACodec redecoder: zero-shot voice conversion from codes and a target speaker embedding."""

from __future__ import annotations

import torch
from torch import nn

from . import validation
from .config import RedecoderConfig
from .decoder import SpeakerConditionedDecoder
from .layers.transformer import TransformerEncoder


class FACodecRedecoder(SpeakerConditionedDecoder):
    """`redecoder.vq2emb(vq_id, spk)` then `redecoder.inference(emb, spk)`; `redecoder(vq_id, spk)` does both.

    The prosody codes pass through a transformer whose norms are conditioned on the target speaker;
    content and residual codes are plain embedding tables.
    """

    def __init__(self, config: RedecoderConfig | None = None, **kwargs) -> None:
        cfg = config or RedecoderConfig(**kwargs)
        super().__init__(cfg.in_channels, cfg.upsample_initial_channel, cfg.up_ratios)
        self.config = cfg
        self.hop_length = cfg.hop_length

        def tables(count: int, bits: int) -> nn.ModuleList:
            return nn.ModuleList(nn.Embedding(2**bits, cfg.vq_dim) for _ in range(count))

        self.prosody_embs = tables(cfg.vq_num_q_p, cfg.codebook_size_prosody)
        self.content_embs = tables(cfg.vq_num_q_c, cfg.codebook_size_content)
        self.residual_embs = tables(cfg.vq_num_q_r, cfg.codebook_size_residual)
        self.timbre_cond_prosody_enc = TransformerEncoder(cfg.transformer, speaker_conditioned=True)

    @property
    def codebook_sizes(self) -> list[int]:
        tables = [*self.prosody_embs, *self.content_embs, *self.residual_embs]
        return [t.num_embeddings for t in tables]

    def vq2emb(self, vq: torch.Tensor, speaker_embedding: torch.Tensor, use_residual: bool = True) -> torch.Tensor:
        """Codes `[6, B, T]` and the target speaker `[B, 256]` to the latent `[B, 256, T]`."""
        cfg = self.config
        vq = validation.codes(vq, min_codebooks=cfg.codes_needed(use_residual), codebook_sizes=self.codebook_sizes)
        spk = self._speaker(speaker_embedding, vq.shape[1])
        rows = iter(vq)
        prosody = sum(table(next(rows)) for table in self.prosody_embs)
        out = self.timbre_cond_prosody_enc(prosody, spk)
        for table in self.content_embs:
            out = out + table(next(rows))
        if use_residual:
            for table in self.residual_embs:
                out = out + table(next(rows))
        return out.transpose(1, 2)

    def forward(
        self, vq: torch.Tensor, speaker_embedding: torch.Tensor, use_residual_code: bool = False
    ) -> torch.Tensor:
        """Codes and target speaker to audio `[B, 1, 200 * T]` (the published `forward` of this class crashes)."""
        return self.inference(self.vq2emb(vq, speaker_embedding, use_residual_code), speaker_embedding)
