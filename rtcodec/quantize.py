"""Factorized vector quantization: residual groups of low-dimensional cosine-similarity codebooks.

Every step is per frame: quantization has no context at all, so streaming needs no state here.
The codeword search runs in fp32 whatever the model's dtype: it is cheap, and it keeps the codes of a
half-precision model as close as possible to fp32's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels


class FactorizedVQ(nn.Module):
    """One codebook layer. Keys `in_proj`, `out_proj` (linear, weight norm folded) and `_codebook`."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(dim, codebook_dim)
        self.out_proj = nn.Linear(codebook_dim, dim)
        self._codebook = nn.Embedding(codebook_size, codebook_dim)
        self._unit_cache: tuple = ()  # (key, the codebook it was made from, transposed, squared norms)

    @property
    def codebook_size(self) -> int:
        return self._codebook.num_embeddings

    # The parameters under the names the fused kernel uses.
    in_w = property(lambda self: self.in_proj.weight)
    in_b = property(lambda self: self.in_proj.bias)
    codebook = property(lambda self: self._codebook.weight)
    out_w = property(lambda self: self.out_proj.weight)
    out_b = property(lambda self: self.out_proj.bias)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """`z [B, T, dim]` to the codeword indices `[B, T]`: the highest cosine similarity, first index on ties."""
        e = F.linear(z.float(), self.in_proj.weight.float(), self.in_proj.bias.float())
        e = F.normalize(e.flatten(0, 1), eps=1e-12)
        codebook_t, codebook_sq = self._unit_codebook()
        # The squared distance of unit vectors, written out as the published code does, so that
        # near-ties resolve to the same index.
        dist = e.pow(2).sum(1, keepdim=True) - 2 * e @ codebook_t + codebook_sq
        return dist.neg().argmax(dim=1).view(z.shape[:2])

    def _unit_codebook(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalized codebook, transposed `[codebook_dim, size]`, and its squared norms `[1, size]`: kept
        until the codebook changes (normalizing it took 60 % of a streamed frame's quantization)."""
        weight = self._codebook.weight
        # Made under inference mode there is no version to tell a change by; an export traces fake tensors.
        if weight.is_inference() or torch.compiler.is_exporting():
            return self._normalized(weight)
        # In-place changes (load_state_dict) bump the version; .to() and new data change the pointer, which
        # cannot come back to the old address: the cache holds the old codebook.
        key = (weight.data_ptr(), weight.device, weight.dtype, weight._version)
        if not self._unit_cache or self._unit_cache[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # a plain tensor: usable in and out of inference mode
                self._unit_cache = (key, weight.detach(), *self._normalized(weight))
        return self._unit_cache[2], self._unit_cache[3]

    @staticmethod
    def _normalized(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codebook = F.normalize(weight.float(), eps=1e-12)
        return codebook.t(), codebook.pow(2).sum(1, keepdim=True).t()

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices `[B, T]` to `out_proj` of the raw (not normalized) codewords, `[B, T, dim]`."""
        return self.out_proj(F.embedding(indices, self._codebook.weight))


class ResidualVQ(nn.Module):
    """A residual chain of `FactorizedVQ` layers (key `layers.i`): layer i+1 quantizes what 0..i left over."""

    def __init__(self, num_layers: int, dim: int, codebook_bits: int, codebook_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(FactorizedVQ(dim, 2**codebook_bits, codebook_dim) for _ in range(num_layers))

    def stacked(self, num_layers: int | None = None) -> list[torch.Tensor]:
        """The layers' parameters stacked as the fused kernel takes them (in_w, in_b, codebook, out_w, out_b)."""
        layers = self.layers[:num_layers]
        return [
            torch.stack([getattr(layer, name) for layer in layers])
            for name in ("in_w", "in_b", "codebook", "out_w", "out_b")
        ]

    def forward(self, x: torch.Tensor, num_layers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`x [B, dim, T]` to (the group's summed output `[B, dim, T]`, codes `[num_layers, B, T]`)."""
        if kernels.enabled(x):
            from .kernels.rvq import rvq_group

            frames = x.transpose(1, 2)
            total, codes = rvq_group(frames.reshape(-1, x.shape[1]), *self.stacked(num_layers))
            return total.view(frames.shape).transpose(1, 2), codes.view(-1, *frames.shape[:2])
        residual = x.transpose(1, 2)
        total = torch.zeros_like(residual)
        codes = []
        for layer in self.layers[:num_layers]:
            indices = layer.encode(residual)
            out = layer.decode(indices).to(residual.dtype)
            residual = residual - out
            total = total + out
            codes.append(indices)
        return total.transpose(1, 2), torch.stack(codes)

    def vq2emb(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[n, B, T]` (n up to the group's layers) to the summed output `[B, dim, T]`."""
        total = sum(layer.decode(c) for layer, c in zip(self.layers, codes))
        return total.transpose(1, 2)
