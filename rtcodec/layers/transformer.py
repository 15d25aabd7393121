"""The pre-LayerNorm transformer of the timbre encoder, the V2 mel prosody encoder and the redecoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TransformerConfig
from .norm import StyleAdaptiveLayerNorm

# Frames computed at once in a long clip's attention and feed-forward. A frame's output depends on the others
# only through the keys and values (and the feed-forward's few neighbours), so pieces give the same result
# while the memory of the intermediates stays bounded whatever the length.
PIECE_FRAMES = 1024


class FeedForward(nn.Module):
    """`ffn_2(relu(ffn_1(x)))`, ffn_1 a conv along time, ffn_2 a linear."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        k = cfg.ffn_kernel_size
        self.ffn_1 = nn.Conv1d(cfg.hidden, cfg.ffn_channels, k, padding=k // 2)
        self.ffn_2 = nn.Linear(cfg.ffn_channels, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_2(F.relu(self.ffn_1(x.transpose(1, 2)).transpose(1, 2)))

    def in_pieces(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` over pieces of PIECE_FRAMES frames, each with the neighbours its convolution reads."""
        halo, frames = self.ffn_1.kernel_size[0] // 2, x.shape[1]
        out = x.new_empty(x.shape)
        for start in range(0, frames, PIECE_FRAMES):
            stop = min(start + PIECE_FRAMES, frames)
            lo, hi = max(start - halo, 0), min(stop + halo, frames)
            piece = self.ffn_1(x[:, lo:hi].transpose(1, 2))[..., start - lo : stop - lo]
            out[:, start:stop] = self.ffn_2(F.relu(piece.transpose(1, 2)))
        return out


class TransformerLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig, speaker_conditioned: bool) -> None:
        super().__init__()
        norm = (
            (lambda: StyleAdaptiveLayerNorm(cfg.hidden)) if speaker_conditioned else (lambda: nn.LayerNorm(cfg.hidden))
        )
        self.speaker_conditioned = speaker_conditioned
        self.ln_1 = norm()
        self.ln_2 = norm()
        self.self_attn = nn.MultiheadAttention(cfg.hidden, cfg.heads, batch_first=True)
        self.ffn = FeedForward(cfg)

    def _norm(self, ln: nn.Module, x: torch.Tensor, speaker: torch.Tensor | None) -> torch.Tensor:
        return ln(x, speaker) if self.speaker_conditioned else ln(x)

    def forward(self, x: torch.Tensor, speaker: torch.Tensor | None = None) -> torch.Tensor:
        h = self._norm(self.ln_1, x, speaker)
        x = x + self_attention(self.self_attn, h)
        h = self._norm(self.ln_2, x, speaker)
        return x + (self.ffn(h) if x.shape[1] <= PIECE_FRAMES else self.ffn.in_pieces(h))


def self_attention(mha: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """`mha(x, x, x)` (no mask, no dropout: inference) through `scaled_dot_product_attention`, whose fused
    kernels work block by block, for queries in pieces of PIECE_FRAMES frames: memory grows with the clip's
    length, not its square (the timbre encoder attends over a whole clip, and `nn.MultiheadAttention` built the
    T x T weights: 9.6 GB for 5 minutes)."""
    if mha.training and mha.dropout > 0:
        return mha(x, x, x, need_weights=False)[0]
    batch, frames, channels = x.shape

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(batch, t.shape[1], mha.num_heads, -1).transpose(1, 2)

    w_q, w_kv = mha.in_proj_weight.split([channels, 2 * channels])
    b_q, b_kv = mha.in_proj_bias.split([channels, 2 * channels])
    k, v = map(heads, F.linear(x, w_kv, b_kv).chunk(2, dim=-1))
    out = x.new_empty(x.shape)
    for start in range(0, frames, PIECE_FRAMES):
        q = heads(F.linear(x[:, start : start + PIECE_FRAMES], w_q, b_q))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, q.shape[2], channels)
        out[:, start : start + PIECE_FRAMES] = mha.out_proj(y)
    return out


class TransformerEncoder(nn.Module):
    """`x [B, T, C]` to `[B, T, C]`; with `speaker_conditioned`, every norm takes its gamma and beta from `speaker`.

    Positional encoding: the published code adds row *b* of its sinusoidal table to batch item *b* (it indexes
    the table by batch position), so a clip alone gets row 0 on every frame: 0 at even channels, 1 at odd.
    We add row 0 to every item, which is the published batch-size-1 answer and makes the result independent
    of a clip's place in the batch. The table itself (`position_emb.pe`) is accepted at load and not stored.
    """

    def __init__(self, cfg: TransformerConfig, speaker_conditioned: bool = False) -> None:
        super().__init__()
        self.speaker_conditioned = speaker_conditioned
        self.layers = nn.ModuleList(TransformerLayer(cfg, speaker_conditioned) for _ in range(cfg.num_layers))
        self.last_ln = StyleAdaptiveLayerNorm(cfg.hidden) if speaker_conditioned else nn.LayerNorm(cfg.hidden)
        position = torch.zeros(cfg.hidden)
        position[1::2] = 1.0  # sin(0) at even channels, cos(0) at odd
        self.register_buffer("position", position, persistent=False)

    def forward(self, x: torch.Tensor, speaker: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.position.to(x.dtype)
        for layer in self.layers:
            x = layer(x, speaker)
        return self.last_ln(x, speaker) if self.speaker_conditioned else self.last_ln(x)
