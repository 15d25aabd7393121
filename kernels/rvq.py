"""Residual factorized VQ in one launch: in_proj, L2 normalization, cosine-nearest codeword, out_proj,
residual update, for every layer of a group (or for the V1 chain of three groups).

Layer parameters are stacked: `in_w [L, K, D]`, `in_b [L, K]`, `codebook [L, S, K]`, `out_w [L, D, K]`,
`out_b [L, D]`. Frames are rows: `x [N, D]`. Distances are computed as the published code writes them,
`|e|^2 - 2 e.c + |c|^2` with fp32 accumulation, and ties go to the first index, like torch.argmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

BLOCK_N = 16  # frames per program
BLOCK_S = 128  # codewords per step of the search


@triton.jit
def _quantize_layer(
    residual, offs_d, mask_d, offs_k, mask_k, in_w_ptr, in_b_ptr, cb_norm_ptr, cb_raw_ptr, out_w_ptr, out_b_ptr,
    S, D, K, BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, KP: tl.constexpr,
):  # fmt: skip
    w_in = tl.load(in_w_ptr + offs_k[None, :] * D + offs_d[:, None], mask=mask_d[:, None] & mask_k[None, :], other=0.0)
    b_in = tl.load(in_b_ptr + offs_k, mask=mask_k, other=0.0)
    e = tl.dot(residual, w_in.to(tl.float32), input_precision="ieee") + b_in.to(tl.float32)[None, :]
    e = e / tl.maximum(tl.sqrt(tl.sum(e * e, axis=1)), 1e-12)[:, None]
    e2 = tl.sum(e * e, axis=1)
    best = tl.full([BLOCK_N], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_N], tl.int32)
    for s0 in range(0, S, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        mask_s = offs_s < S
        c = tl.load(
            cb_norm_ptr + offs_s[None, :] * K + offs_k[:, None], mask=mask_k[:, None] & mask_s[None, :], other=0.0
        )
        c2 = tl.sum(c * c, axis=0)
        score = -(e2[:, None] - 2 * tl.dot(e, c, input_precision="ieee") + c2[None, :])
        score = tl.where(mask_s[None, :], score, float("-inf"))
        top = tl.max(score, axis=1)
        where = tl.argmax(score, axis=1).to(tl.int32) + s0
        better = top > best  # strictly: an equal score later in the codebook keeps the first index
        best = tl.where(better, top, best)
        best_idx = tl.where(better, where, best_idx)
    codeword = tl.load(cb_raw_ptr + best_idx[:, None] * K + offs_k[None, :], mask=mask_k[None, :], other=0.0)
    w_out = tl.load(
        out_w_ptr + offs_d[None, :] * K + offs_k[:, None], mask=mask_k[:, None] & mask_d[None, :], other=0.0
    )
    b_out = tl.load(out_b_ptr + offs_d, mask=mask_d, other=0.0)
    out = tl.dot(codeword.to(tl.float32), w_out.to(tl.float32), input_precision="ieee") + b_out.to(tl.float32)[None, :]
    return out, best_idx


@triton.jit
def _group(
    residual, first, layers: tl.constexpr, codes_ptr, offs_n, mask_n, offs_d, mask_d, offs_k, mask_k,
    in_w_ptr, in_b_ptr, cb_norm_ptr, cb_raw_ptr, out_w_ptr, out_b_ptr, N, S, D, K,
    BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, KP: tl.constexpr,
):  # fmt: skip
    """Layers first .. first + layers - 1 on `residual`: returns their summed output."""
    total = tl.zeros_like(residual)
    for i in tl.static_range(layers):
        layer = first + i
        out, idx = _quantize_layer(
            residual, offs_d, mask_d, offs_k, mask_k, in_w_ptr + layer * K * D, in_b_ptr + layer * K,
            cb_norm_ptr + layer * S * K, cb_raw_ptr + layer * S * K, out_w_ptr + layer * D * K, out_b_ptr + layer * D,
            S, D, K, BLOCK_N, BLOCK_S, KP,
        )  # fmt: skip
        residual -= out
        total += out
        tl.store(codes_ptr + layer * N + offs_n, idx, mask=mask_n)
    return total


@triton.jit
def _rvq_kernel(
    x_ptr, in_w_ptr, in_b_ptr, cb_norm_ptr, cb_raw_ptr, out_w_ptr, out_b_ptr, out_ptr, codes_ptr,
    stride_xn, N, S, D, K,
    LAYERS_1: tl.constexpr, LAYERS_2: tl.constexpr, LAYERS_3: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, KP: tl.constexpr, D_BLOCK: tl.constexpr,
):  # fmt: skip
    """Up to three groups: groups 1 and 2 quantize x, group 3 quantizes x minus their outputs (the V1 chain).
    A single group is LAYERS_2 = LAYERS_3 = 0. Writes each group's output to out[g] and codes[layer]."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_d = tl.arange(0, D_BLOCK)
    mask_d = offs_d < D
    offs_k = tl.arange(0, KP)
    mask_k = offs_k < K
    tile = offs_n[:, None] * D + offs_d[None, :]
    mask = mask_n[:, None] & mask_d[None, :]
    x = tl.load(x_ptr + offs_n[:, None] * stride_xn + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    q1 = _group(
        x, 0, LAYERS_1, codes_ptr, offs_n, mask_n, offs_d, mask_d, offs_k, mask_k, in_w_ptr, in_b_ptr,
        cb_norm_ptr, cb_raw_ptr, out_w_ptr, out_b_ptr, N, S, D, K, BLOCK_N, BLOCK_S, KP,
    )  # fmt: skip
    tl.store(out_ptr + tile, q1.to(out_ptr.dtype.element_ty), mask=mask)
    if LAYERS_2 > 0:
        q2 = _group(
            x, LAYERS_1, LAYERS_2, codes_ptr, offs_n, mask_n, offs_d, mask_d, offs_k, mask_k, in_w_ptr, in_b_ptr,
            cb_norm_ptr, cb_raw_ptr, out_w_ptr, out_b_ptr, N, S, D, K, BLOCK_N, BLOCK_S, KP,
        )  # fmt: skip
        tl.store(out_ptr + N * D + tile, q2.to(out_ptr.dtype.element_ty), mask=mask)
        if LAYERS_3 > 0:
            q3 = _group(
                x - (q1 + q2), LAYERS_1 + LAYERS_2, LAYERS_3, codes_ptr, offs_n, mask_n, offs_d, mask_d, offs_k,
                mask_k, in_w_ptr, in_b_ptr, cb_norm_ptr, cb_raw_ptr, out_w_ptr, out_b_ptr, N, S, D, K,
                BLOCK_N, BLOCK_S, KP,
            )  # fmt: skip
            tl.store(out_ptr + 2 * N * D + tile, q3.to(out_ptr.dtype.element_ty), mask=mask)


def _check(x, in_w, in_b, codebook, out_w, out_b) -> None:
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"x must be floating-point frames [N, D], got {x.dtype} {tuple(x.shape)}")
    layers, k, d = in_w.shape
    expected = {
        "in_b": (layers, k),
        "codebook": (layers, codebook.shape[1], k),
        "out_w": (layers, d, k),
        "out_b": (layers, d),
    }
    for name, tensor in zip(expected, (in_b, codebook, out_w, out_b)):
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{name} must be shaped {expected[name]}, got {tuple(tensor.shape)}")
    if x.shape[1] != d:
        raise ValueError(f"x has {x.shape[1]} channels, the layers take {d}")
    if any(t.device != x.device for t in (in_w, in_b, codebook, out_w, out_b)):
        raise ValueError("x and the layer parameters must be on one device")


def _launch(x, in_w, in_b, codebook, out_w, out_b, groups: tuple[int, ...]):
    _check(x, in_w, in_b, codebook, out_w, out_b)
    layers, k, d = in_w.shape
    if sum(groups) != layers:
        raise ValueError(f"groups {groups} do not add up to the {layers} stacked layers")
    x = x.contiguous()
    n, s = x.shape[0], codebook.shape[1]
    cb_norm = F.normalize(codebook.float(), dim=-1, eps=1e-12).contiguous()
    out = torch.empty(len(groups), n, d, device=x.device, dtype=x.dtype)
    codes = torch.empty(layers, n, device=x.device, dtype=torch.int32)
    padded = (*groups, 0, 0)[:3]
    _rvq_kernel[(triton.cdiv(n, BLOCK_N),)](
        x, in_w.contiguous(), in_b.contiguous(), cb_norm, codebook.contiguous(), out_w.contiguous(),
        out_b.contiguous(), out, codes, x.stride(0), n, s, d, k, *padded,
        BLOCK_N=BLOCK_N, BLOCK_S=BLOCK_S, KP=max(16, triton.next_power_of_2(k)), D_BLOCK=triton.next_power_of_2(d),
    )  # fmt: skip
    return out, codes.long()


def rvq_group(x, in_w, in_b, codebook, out_w, out_b) -> tuple[torch.Tensor, torch.Tensor]:
    """One residual group: returns (the summed output `[N, D]`, codes `[L, N]`)."""
    out, codes = _launch(x, in_w, in_b, codebook, out_w, out_b, (in_w.shape[0],))
    return out[0], codes


def rvq_group_reference(x, in_w, in_b, codebook, out_w, out_b) -> tuple[torch.Tensor, torch.Tensor]:
    _check(x, in_w, in_b, codebook, out_w, out_b)
    residual = x.float()
    total = torch.zeros_like(residual)
    codes = []
    for layer in range(in_w.shape[0]):
        e = F.normalize(F.linear(residual, in_w[layer].float(), in_b[layer].float()), eps=1e-12)
        c = F.normalize(codebook[layer].float(), eps=1e-12)
        dist = e.pow(2).sum(1, keepdim=True) - 2 * e @ c.t() + c.pow(2).sum(1, keepdim=True).t()
        idx = dist.neg().argmax(dim=1)
        out = F.linear(codebook[layer].float()[idx], out_w[layer].float(), out_b[layer].float())
        residual, total = residual - out, total + out
        codes.append(idx)
    return total.to(x.dtype), torch.stack(codes)


def rvq_chain(x, in_w, in_b, codebook, out_w, out_b, groups=(1, 2, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    """The V1 chain in one launch: groups 1 and 2 quantize x, group 3 quantizes x minus their outputs.
    Returns (each group's output `[3, N, D]`, codes `[L, N]`)."""
    if len(groups) != 3:
        raise ValueError(f"the V1 chain has three groups, got {groups}")
    return _launch(x, in_w, in_b, codebook, out_w, out_b, tuple(groups))


def rvq_chain_reference(x, in_w, in_b, codebook, out_w, out_b, groups=(1, 2, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    bounds = [0, groups[0], groups[0] + groups[1], sum(groups)]
    params = (in_w, in_b, codebook, out_w, out_b)
    outs, codes = [], []
    for g, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        source = x if g < 2 else (x.float() - (outs[0].float() + outs[1].float())).to(x.dtype)
        out, c = rvq_group_reference(source, *(p[lo:hi] for p in params))
        outs.append(out)
        codes.append(c)
    return torch.stack(outs), torch.cat(codes)
