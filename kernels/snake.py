"""The anti-aliased SnakeBeta: x2 upsampling with the 12-tap filter, SnakeBeta, low-pass and x2 downsampling,
in two launches (upsampling and snake, then the low-pass), each output reading inputs j-5 .. j+5.

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

BLOCK = 1024  # elements per program: rows x positions, the positions a power of two up to 128


@triton.jit
def _up_snake_kernel(
    x_ptr, s_ptr, alpha_ptr, inv_beta_ptr, even_ptr, odd_ptr, first_ptr, length_ptr,
    R, C, W, start, S, BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    """s[r, i] = SnakeBeta of the upsampled signal at position 2 * (first + start) - 5 + i, clamped to it."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # b * C + c
    mask_r = rows < R
    i = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    mask = mask_r[:, None] & (i < S)[None, :]
    batch = rows // C
    first = tl.load(first_ptr + batch, mask=mask_r, other=0)[:, None]
    length = tl.load(length_ptr + batch, mask=mask_r, other=1)[:, None]
    alpha = tl.load(alpha_ptr + rows % C, mask=mask_r, other=0.0).to(tl.float32)[:, None]
    inv_beta = tl.load(inv_beta_ptr + rows % C, mask=mask_r, other=0.0).to(tl.float32)[:, None]
    q = tl.minimum(tl.maximum(2 * (first + start) - 5 + i[None, :], 0), 2 * length - 1)
    parity = q % 2
    base = q // 2 - 3 + parity  # first input of the phase's 6 taps
    x_rows = x_ptr + rows[:, None] * W
    u = tl.zeros([BLOCK_R, BLOCK_T], tl.float32)
    for t in tl.static_range(6):
        pos = tl.minimum(tl.maximum(base + t, 0), length - 1) - first  # clamp to the signal, then window
        pos = tl.minimum(tl.maximum(pos, 0), W - 1)  # positions no output reads stay in bounds
        xv = tl.load(x_rows + pos, mask=mask, other=0.0).to(tl.float32)
        u += tl.where(parity == 1, tl.load(odd_ptr + t), tl.load(even_ptr + t)) * xv
    sv = tl.sin(u * alpha)
    tl.store(s_ptr + rows[:, None] * S + i[None, :], u + inv_beta * sv * sv, mask=mask)


@triton.jit
def _lowpass_kernel(s_ptr, y_ptr, down_ptr, R, S, count, BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr):
    """y[r, j] = sum_k down[k] * s[r, 2j + k]: the 12-tap low-pass at every other position."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    j = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    mask = (rows < R)[:, None] & (j < count)[None, :]
    s_rows = s_ptr + rows[:, None] * S + 2 * j[None, :]
    acc = tl.zeros([BLOCK_R, BLOCK_T], tl.float32)
    for k in tl.static_range(12):
        acc += tl.load(down_ptr + k) * tl.load(s_rows + k, mask=mask, other=0.0)
    tl.store(y_ptr + rows[:, None] * count + j[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


def _blocks(rows: int, positions: int) -> tuple[int, int, tuple[int, int]]:
    """Tile shape and grid: short windows (one hop of many streams) take many rows per program."""
    block_t = min(128, triton.next_power_of_2(positions))
    block_r = BLOCK // block_t
    return block_r, block_t, (triton.cdiv(rows, block_r), triton.cdiv(positions, block_t))


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
        first, length = (t.to(device=x.device, dtype=torch.int64).contiguous() for t in (first, length))
        # Two passes: the snake of the upsampled signal (2 * count + 10 positions, each computed once), then
        # the low-pass. One pass would recompute each upsampled value for the 6 outputs that read it.
        span = 2 * count + 10
        s = torch.empty(b * c, span, device=x.device, dtype=torch.float32)
        block_r, block_t, grid = _blocks(b * c, span)
        _up_snake_kernel[grid](
            x.contiguous(), s, alpha.float().contiguous(), inv_beta.float().contiguous(), even, odd, first, length,
            b * c, c, w, start, span, BLOCK_R=block_r, BLOCK_T=block_t,
        )  # fmt: skip
        block_r, block_t, grid = _blocks(b * c, count)
        _lowpass_kernel[grid](s, y, down, b * c, span, count, BLOCK_R=block_r, BLOCK_T=block_t)
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
