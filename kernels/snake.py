"""The anti-aliased SnakeBeta in one pass: x2 upsampling with the 12-tap filter, SnakeBeta, low-pass and x2
downsampling, each output reading inputs j-5 .. j+5 straight from memory.

The upsampling is done in polyphase form: upsampled sample 2c is `even . x[c-3 .. c+2]`, 2c+1 is
`odd . x[c-2 .. c+3]`. Output j is `sum_k down[k] * s[2j + k - 5]` with `s = snake(upsampled)`. The
published replicate paddings clamp x to the signal and s to the upsampled signal.

One entry serves offline and streaming: `x [B, C, W]` is a window of the signal whose index i is signal
position `first[b] + i`, the signal of row b is `length[b]` long (clamps happen there), and the outputs are
the positions `first[b] + start + i` for i < count. Offline: first = 0, start = 0, count = W = length.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_R, BLOCK_T = 8, 128  # rows (batch x channel) and outputs per program


@triton.jit
def _snake_kernel(
    x_ptr, y_ptr, alpha_ptr, inv_beta_ptr, even_ptr, odd_ptr, down_ptr, first_ptr, length_ptr,
    R, C, W, start, count, BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # b * C + c
    mask_r = rows < R
    j = start + tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)  # window index of each output's centre
    mask = mask_r[:, None] & (j < start + count)[None, :]
    batch = rows // C
    first = tl.load(first_ptr + batch, mask=mask_r, other=0)[:, None]
    length = tl.load(length_ptr + batch, mask=mask_r, other=1)[:, None]
    alpha = tl.load(alpha_ptr + rows % C, mask=mask_r, other=0.0).to(tl.float32)[:, None]
    inv_beta = tl.load(inv_beta_ptr + rows % C, mask=mask_r, other=0.0).to(tl.float32)[:, None]
    x_rows = x_ptr + rows[:, None] * W
    acc = tl.zeros([BLOCK_R, BLOCK_T], tl.float32)
    for k in tl.static_range(12):
        # Upsampled position read by tap k, clamped to the upsampled signal [0, 2 * length).
        q = tl.minimum(tl.maximum(2 * (first + j[None, :]) + k - 5, 0), 2 * length - 1)
        parity = q % 2
        base = q // 2 - 3 + parity  # first input of the phase's 6 taps
        u = tl.zeros([BLOCK_R, BLOCK_T], tl.float32)
        for t in tl.static_range(6):
            pos = tl.minimum(tl.maximum(base + t, 0), length - 1) - first  # clamp to the signal, then window
            pos = tl.minimum(tl.maximum(pos, 0), W - 1)  # outputs that are not handed out stay in bounds
            xv = tl.load(x_rows + pos, mask=mask, other=0.0).to(tl.float32)
            tap = tl.where(parity == 1, tl.load(odd_ptr + t), tl.load(even_ptr + t))
            u += tap * xv
        sv = tl.sin(u * alpha)
        acc += tl.load(down_ptr + k) * (u + inv_beta * sv * sv)
    out = y_ptr + rows[:, None] * count + (j - start)[None, :]
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=mask)


def _check(x, alpha, inv_beta, filters, first, length) -> None:
    if x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f"x must be floating-point [B, C, W], got {x.dtype} {tuple(x.shape)}")
    b, c, _ = x.shape
    if tuple(alpha.shape) != (c,) or tuple(inv_beta.shape) != (c,):
        raise ValueError(f"alpha and inv_beta must be shaped ({c},)")
    even, odd, down = filters
    if even.numel() != 6 or odd.numel() != 6 or down.numel() != 12:
        raise ValueError("filters must be (even [6], odd [6], down [12])")
    if tuple(first.shape) != (b,) or tuple(length.shape) != (b,):
        raise ValueError(f"first and length must be shaped ({b},)")


def anti_aliased_snake(
    x: torch.Tensor,
    alpha: torch.Tensor,
    inv_beta: torch.Tensor,
    filters: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    first: torch.Tensor | None = None,
    length: torch.Tensor | None = None,
    start: int = 0,
    count: int | None = None,
) -> torch.Tensor:
    """`[B, C, count]` outputs (see the module doc); defaults are the offline form."""
    b, c, w = x.shape
    first = torch.zeros(b, dtype=torch.int64, device=x.device) if first is None else first
    length = torch.full((b,), w, dtype=torch.int64, device=x.device) if length is None else length
    count = w - start if count is None else count
    _check(x, alpha, inv_beta, filters, first, length)
    if start < 0 or start + count > w:
        raise ValueError(f"outputs {start} .. {start + count} fall outside the window of {w}")
    y = torch.empty(b, c, count, device=x.device, dtype=x.dtype)
    if y.numel():
        even, odd, down = (f.float().contiguous() for f in filters)
        grid = (triton.cdiv(b * c, BLOCK_R), triton.cdiv(count, BLOCK_T))
        _snake_kernel[grid](
            x.contiguous(), y, alpha.float().contiguous(), inv_beta.float().contiguous(), even, odd, down,
            first.to(torch.int64).contiguous(), length.to(torch.int64).contiguous(), b * c, c, w, start, count,
            BLOCK_R=BLOCK_R, BLOCK_T=BLOCK_T,
        )  # fmt: skip
    return y


def anti_aliased_snake_reference(x, alpha, inv_beta, filters, first=None, length=None, start=0, count=None):
    """The same computation with torch gathers (clamps as above), in fp32."""
    b, c, w = x.shape
    first = torch.zeros(b, dtype=torch.int64, device=x.device) if first is None else first.long()
    length = torch.full((b,), w, dtype=torch.int64, device=x.device) if length is None else length.long()
    count = w - start if count is None else count
    _check(x, alpha, inv_beta, filters, first, length)
    even, odd, down = (f.float().flatten() for f in filters)
    xf = x.float()
    j = (start + torch.arange(count, device=x.device))[None, :] + first[:, None]  # signal positions [B, count]
    y = torch.zeros(b, c, count, device=x.device)
    for k in range(12):
        q = torch.minimum((2 * j + k - 5).clamp_min(0), 2 * length[:, None] - 1)
        parity = q % 2
        base = q // 2 - 3 + parity
        u = torch.zeros(b, c, count, device=x.device)
        for t in range(6):
            pos = torch.minimum((base + t).clamp_min(0), length[:, None] - 1) - first[:, None]
            xv = xf.gather(2, pos.clamp(0, w - 1)[:, None, :].expand(b, c, count))
            u += torch.where(parity == 1, odd[t], even[t])[:, None, :] * xv
        s = u + inv_beta.float()[None, :, None] * torch.sin(u * alpha.float()[None, :, None]) ** 2
        y += down[k] * s
    return y.to(x.dtype)
