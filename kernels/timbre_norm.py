"""The timbre-conditioned LayerNorm: LayerNorm over the channels of `x [B, C, T]` (no affine), then
`* gamma[b, c] + beta[b, c]`, in one pass over x in its natural layout (statistics in fp32)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

EPS = 1e-5
BLOCK_T = 32


@triton.jit
def _timbre_norm_kernel(
    x_ptr, gamma_ptr, beta_ptr, y_ptr, stride_xb, stride_xc, stride_xt, C, T, eps,
    BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    offs_t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_c = tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mask = mask_c[:, None] & (offs_t < T)[None, :]
    x = tl.load(x_ptr + b * stride_xb + offs_c[:, None] * stride_xc + offs_t[None, :] * stride_xt, mask=mask, other=0.0)
    x = x.to(tl.float32)
    mean = tl.sum(x, axis=0) / C
    centered = tl.where(mask, x - mean[None, :], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=0) / C + eps)
    gamma = tl.load(gamma_ptr + b * C + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    beta = tl.load(beta_ptr + b * C + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    y = centered * rstd[None, :] * gamma[:, None] + beta[:, None]
    tl.store(y_ptr + b * C * T + offs_c[:, None] * T + offs_t[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


def _check(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> None:
    if x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f"x must be floating-point [B, C, T], got {x.dtype} {tuple(x.shape)}")
    for name, t in (("gamma", gamma), ("beta", beta)):
        if tuple(t.shape) != tuple(x.shape[:2]):
            raise ValueError(f"{name} must be shaped {tuple(x.shape[:2])}, got {tuple(t.shape)}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, x on {x.device}")


def timbre_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    _check(x, gamma, beta)
    b, c, t = x.shape
    y = torch.empty(b, c, t, device=x.device, dtype=x.dtype)
    if y.numel():
        grid = (b, triton.cdiv(t, BLOCK_T))
        _timbre_norm_kernel[grid](
            x, gamma.contiguous(), beta.contiguous(), y, *x.stride(), c, t, EPS,
            BLOCK_C=triton.next_power_of_2(c), BLOCK_T=BLOCK_T,
        )  # fmt: skip
    return y


def timbre_norm_reference(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    _check(x, gamma, beta)
    normed = F.layer_norm(x.float().transpose(1, 2), (x.shape[1],), eps=EPS).transpose(1, 2)
    return (normed * gamma.float()[:, :, None] + beta.float()[:, :, None]).to(x.dtype)
