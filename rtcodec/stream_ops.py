"""The stream operations: each convolution, transposed convolution and activation with its cached state.

A stack becomes a tree of stream operations. A stream advances in ticks of whole hops (200 samples of audio,
one latent frame). In a tick every operation takes a fixed number of new input samples per hop and returns
a fixed number of outputs per hop, computed from the new samples and its cached input (`state`, allocated
once per stream, updated in place). An operation's outputs therefore lag its inputs by a fixed number of
samples, fixed by the layer list in `plan`: the first outputs of a signal lie before its start and are
never handed out.

Each row of the batch is its own signal with its own position (`Clock`), so rows start, end and restart
independently. Where a window crosses a row's start or end, `_fix_edges` writes what the offline model's
zero or replicate padding puts there; so the streamed output equals the offline output for any chunking,
and the stale state of a restarted row never reaches an output that is handed out. In a tick where every row
is settled (`Clock.settled`: no window can reach an edge) the operations skip these checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .layers.activation import AntiAliasedSnake, snake_
from .layers.blocks import DecoderBlock, EncoderBlock, ResidualUnit

Length = Callable[[int], int]  # a signal's length (top-level input units) to an operation's input length
Needed = list[tuple[int, int]]  # per row, the positions [lo, hi) a drain tick must compute


@dataclass(frozen=True)
class Drain:
    """What a windowed op computes in a drain tick, as indices into the whole tick: outputs [skip, skip + count)
    from the window [start, start + width) of cat(state, input); the input it gets is [skip_in, skip_in +
    count_in) of the tick's input."""

    skip: int
    count: int
    start: int
    width: int
    skip_in: int
    count_in: int


# Up to this many new input samples per tick, convolutions run as unfold + matmul: torch's CPU convolutions
# cost 0.1 ms or more per call whatever the size, which dominates a one-hop tick; above it they win. On an
# H100, cuDNN won at one-hop ticks for every batch tried (bench/results/gpu-*.json: 256 real-time streams
# against 192).
SMALL_TICK = {"cpu": 512, "cuda": 0}


def _small(samples: int, device: torch.device) -> bool:
    """Whether a tick of this many new input samples counts as small (never in an exported graph: there, one
    convolution node is one fast kernel call, while unfold and blocked matmuls become thousands of nodes)."""
    return samples <= SMALL_TICK.get(device.type, 0) and not torch.compiler.is_exporting()


# Short FIR filters on short ticks run as matmuls over blocks of outputs: a block of `b` outputs reads one slice
# of the input, so the copy that lays the slices out is only a little larger than the input (one slice per
# output would copy it 6 to 12 times), and the matmul gets a useful shape. Blocks up to this many outputs.
FIR_BLOCK = 48


def _fir_block(outputs: int) -> int:
    """The largest block of outputs that divides `outputs` evenly, up to `FIR_BLOCK`."""
    return max(b for b in range(1, min(outputs, FIR_BLOCK) + 1) if outputs % b == 0)


def _banded(taps: torch.Tensor, block: int, step: int) -> torch.Tensor:
    """The matrix of a block of `block` outputs of the filters `taps [k, p]` (p filters, interleaved in the
    output) applied every `step` inputs: `[(block - 1) * step + k, block * p]`."""
    k, p = taps.shape
    matrix = taps.new_zeros((block - 1) * step + k, block * p)
    for j in range(block):
        matrix[j * step : j * step + k, j * p : (j + 1) * p] = taps
    return matrix


class Clock:
    """Per row: hops processed since its signal started, and its length (top-level units) once it has ended.

    An exported tick takes these as int64 tensors `[B]` instead, an open row's end being `OPEN_END`."""

    def __init__(self, batch_size: int) -> None:
        self.hops = [0] * batch_size
        self.ends: list[int | None] = [None] * batch_size
        #: every row is `settled_hops` past its start and open: no window reaches an edge this tick
        self.settled = False

    def restart(self, rows: Sequence[int]) -> None:
        for b in rows:
            self.hops[b], self.ends[b] = 0, None


def _sized(x: torch.Tensor, need: int) -> torch.Tensor:
    """A drain tick's input cut, or padded with zeros (past the signal's end: the edges get fixed), to `need`."""
    if x.shape[2] == need:
        return x
    return x[..., :need] if x.shape[2] > need else F.pad(x, (0, need - x.shape[2]))


def _drain_slice(state: torch.Tensor, x: torch.Tensor, skip_in: int, start: int, width: int) -> torch.Tensor:
    """In a drain, [start, start + width) of cat(state, the tick's whole input), where `x` is that input from
    `skip_in` on: the state is read only when the input is whole (then the slice may reach into it)."""
    whole = torch.cat([state, x], dim=2) if skip_in == 0 else x
    first = 0 if skip_in == 0 else state.shape[2] + skip_in  # the whole tick's index of `whole`'s first sample
    return _sized(whole[..., start - first :], width)


OPEN_END = 1 << 40  # an exported tick's end of a row that has not ended


def _crosses(first: int, length: int | None, width: int) -> bool:
    """Whether a window of `width` positions from `first` reaches before a signal's start or past its end."""
    return first < 0 or (length is not None and first + width > length)


def _fix_edges(window: torch.Tensor, firsts: list[int], lengths: list[int | None], replicate: bool) -> torch.Tensor:
    """Row b of `window` holds the positions `firsts[b] + i` of its signal: outside [0, length) put zeros, or
    the first / last sample (replicate padding). Only rows that cross an edge are touched."""
    if isinstance(firsts, torch.Tensor):
        return _fix_edges_exported(window, firsts, lengths, replicate)
    width = window.shape[2]
    out = window
    for b, (first, length) in enumerate(zip(firsts, lengths)):
        if not _crosses(first, length, width):
            continue
        start = -first  # index of position 0
        stop = width if length is None else length - first  # index of the position just past the end
        if out is window:
            out = window.clone()
        row = out[b]
        if not replicate:
            row[:, : max(0, min(start, width))] = 0
            row[:, max(0, stop) :] = 0
            continue
        if 0 < start < width:
            row[:, :start] = row[:, start : start + 1]
        if 0 < stop < width:
            row[:, stop:] = row[:, stop - 1 : stop]
    return out


def _fix_edges_exported(window: torch.Tensor, firsts: torch.Tensor, lengths: torch.Tensor, replicate: bool):
    """`_fix_edges` with the positions as tensors, in tensor operations only (an exported graph has no branches):
    a mask for zeros, a gather of the clamped positions for replicate padding. Where an edge lies outside the
    window the values differ from `_fix_edges`, but only at positions whose outputs lie outside the signal."""
    index = torch.arange(window.shape[2], device=window.device)
    positions = firsts[:, None] + index  # [B, W]
    if not replicate:
        inside = (positions >= 0) & (positions < lengths[:, None])
        return window * inside[:, None, :].to(window.dtype)
    source = torch.minimum(positions.clamp(min=0), lengths[:, None] - 1) - firsts[:, None]
    source = source.clamp(0, window.shape[2] - 1)
    return torch.gather(window, 2, source[:, None, :].expand(-1, window.shape[1], -1))


class StreamOp:
    """One operation: `plan` fixes its rates and delay, `allocate` its state, `step` runs one tick."""

    def plan(self, rate: int, offset: int, length: Length) -> tuple[int, int, Length]:
        """Input samples per hop, the position of a tick's first input sample at hop 0, and the input's length:
        returns the same three for the output."""
        return rate, offset, length

    def allocate(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        return []

    def slots(self) -> list[tuple[StreamOp, str]]:
        """Where the states live, in `allocate`'s order: (op, attribute) pairs (an export binds its own tensors)."""
        return []

    def step(self, x: torch.Tensor, clock: Clock) -> torch.Tensor:
        raise NotImplementedError

    def input_range(self, j: int) -> tuple[int, int]:
        """The first and last input position that output `j` reads (far from the edges)."""
        return j, j

    def settled_hops(self) -> int:
        """Hops after a signal's start from which no window reaches before the start: from then until the signal
        ends, a tick does the same work on the same buffers every time (what a CUDA graph can replay)."""
        return 0

    def limit(self, needed: Needed | None, clock: Clock) -> Needed | None:
        """Before a drain tick (every row has ended): per row, the output positions [lo, hi) it must compute;
        returns the same for the op's input. The op then computes only those, and leaves its state alone (a
        drain's state is never used again). None: whole ticks again."""
        return needed


class _Windowed(StreamOp):
    """An operation reading a window of its input: `context` cached samples, then the tick's new samples."""

    replicate = False  # what lies beyond the edges: zeros, or the edge sample
    fixes_edges = True

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.context = 0
        self.state: torch.Tensor | None = None

    def _plan_window(self, rate: int, offset: int, length: Length, context: int) -> None:
        self.rate, self.offset, self.length, self.context = rate, offset, length, context
        self._length_cache: dict[int, int] = {}
        self.drain: Drain | None = None

    def _planned(self, rate: int, offset: int, length: Length) -> tuple[int, int, Length]:
        """Keep the output's plan (for `limit`) and return it."""
        self.out_rate, self.out_offset, self.out_length = rate, offset, length
        return rate, offset, length

    def limit(self, needed, clock):
        if needed is None:
            self.drain = None
            return None
        # A drain runs from the stream's exact frontier past the signal's end. Most of it is not needed: outputs
        # past the op's own end (the next op pads there itself), and outputs that only lead to outputs handed out
        # before. On a short lookahead these are most of a drain's samples.
        firsts = [hops * self.out_rate + self.out_offset for hops in clock.hops]
        skip = max(0, min(lo - first for (lo, _), first in zip(needed, firsts)))
        stop = max(min(hi, self.out_length(end)) - first for (_, hi), end, first in zip(needed, clock.ends, firsts))
        count = max(stop - skip, 1)
        start, width = self._reads(skip, count)
        skip_in = max(0, start - self.context)
        count_in = max(0, start + width - self.context - skip_in)
        self.drain = Drain(skip, count, start, width, skip_in, count_in)
        return [(f + skip_in, f + skip_in + count_in) for f in (h * self.rate + self.offset for h in clock.hops)]

    def _reads(self, skip: int, count: int) -> tuple[int, int]:
        """The window [start, start + width) of cat(state, tick input) that outputs [skip, skip + count) read."""
        raise NotImplementedError

    def allocate(self, batch_size, device, dtype):
        self.state = torch.zeros(batch_size, self.channels, self.context, device=device, dtype=dtype)
        return [self.state]

    def slots(self):
        return [(self, "state")]

    def _lengths(self, clock: Clock) -> list[int | None] | torch.Tensor:
        if isinstance(clock.ends, torch.Tensor):
            return self.length(clock.ends)
        out = []
        for end in clock.ends:
            if end is not None and end not in self._length_cache:
                self._length_cache[end] = self.length(end)
            out.append(None if end is None else self._length_cache[end])
        return out

    def _firsts(self, clock: Clock) -> list[int] | torch.Tensor:
        """Per row, the position of the window's first sample."""
        offset = self.offset - self.context + (self.drain.start if self.drain else 0)
        if isinstance(clock.hops, torch.Tensor):
            return clock.hops * self.rate + offset
        return [hops * self.rate + offset for hops in clock.hops]

    def settled_hops(self):
        # The window starts at hops * rate + offset - context: not before position 0.
        return max(0, -(-(self.context - self.offset) // self.rate))

    def _window(self, x: torch.Tensor, clock: Clock) -> torch.Tensor:
        """What the tick's outputs read: the cached context, then `x`; in a drain, the part of it `Drain` says."""
        drain = self.drain
        if drain is None:
            window = torch.cat([self.state, x], dim=2) if self.context else x
            if self.context:
                self.state.copy_(window[..., -self.context :])
        else:  # x is the tick's input from skip_in; past what came, zeros (the edges are fixed below)
            x = _sized(x, drain.count_in)
            window = _drain_slice(self.state, x, drain.skip_in, drain.start, drain.width)
        if self.fixes_edges and not clock.settled:
            window = _fix_edges(window, self._firsts(clock), self._lengths(clock), self.replicate)
        return window


class Conv(_Windowed):
    """A convolution with the offline zero padding `padding = (left, right)` applied at the edges only."""

    def __init__(self, weight, bias, stride=1, dilation=1, padding=(0, 0)) -> None:
        super().__init__(weight.shape[1])
        self.weight, self.bias = weight, bias
        self.matrix = weight.detach().flatten(1)  # [out, in * kernel], as unfolded windows are laid out
        self.stride, self.dilation, self.padding = stride, dilation, padding
        self.span = (weight.shape[-1] - 1) * dilation + 1
        self.fixes_edges = padding != (0, 0)  # unpadded: a valid output reads valid inputs only

    def plan(self, rate, offset, length):
        if rate % self.stride:
            raise ValueError(f"{rate} samples per hop do not divide by the stride {self.stride}")
        left, right = self.padding
        # The window must hold span - stride past samples, and start where an output's reach starts.
        context = self.span - self.stride + (offset + left - (self.span - self.stride)) % self.stride
        self._plan_window(rate, offset, length, context)
        return self._planned(
            rate // self.stride,
            (offset + left - context) // self.stride,
            lambda n: (length(n) + left + right - self.span) // self.stride + 1,
        )

    def _reads(self, skip, count):
        return skip * self.stride, (count - 1) * self.stride + self.span

    def step(self, x, clock):
        window = self._window(x, clock)
        count = self.drain.count if self.drain else x.shape[2] // self.stride
        window = window[..., : (count - 1) * self.stride + self.span]
        if not _small(count * self.stride, x.device):
            return F.conv1d(window, self.weight, self.bias, self.stride, 0, self.dilation)
        cols = window.unfold(2, self.span, self.stride)[..., :: self.dilation]  # [B, in, count, kernel]
        return F.linear(cols.transpose(1, 2).flatten(2), self.matrix, self.bias).transpose(1, 2)

    def input_range(self, j):
        first = j * self.stride - self.padding[0]
        return first, first + self.span - 1


class TransposedConv(_Windowed):
    """A transposed convolution whose output is cropped by `crop = (left, right)` (its padding)."""

    def __init__(self, weight, bias, stride: int, crop: tuple[int, int]) -> None:
        super().__init__(weight.shape[0])
        self.stride, self.crop, self.kernel = stride, crop, weight.shape[-1]
        # Output q * stride + r sums weight[:, :, r + a * stride] . x[q - a] over the taps a: one matmul.
        taps = -(-self.kernel // stride)
        w = F.pad(weight.detach(), (0, taps * stride - self.kernel))  # [in, out, taps * stride]
        w = w.unflatten(2, (taps, stride)).permute(3, 1, 2, 0)  # [r, out, a, in]
        self.matrix = w.reshape(stride * weight.shape[1], taps * weight.shape[0])
        self.bias = bias.detach().repeat(stride)

    def plan(self, rate, offset, length):
        # Past inputs that still overlap the tick's outputs; beyond the edges there is no input at all.
        self._plan_window(rate, offset, length, (self.kernel - 1) // self.stride)
        left, right = self.crop
        return self._planned(
            rate * self.stride,
            offset * self.stride - left,
            lambda n: (length(n) - 1) * self.stride + self.kernel - left - right,
        )

    def _reads(self, skip, count):
        # Whole input steps: from the one holding output `skip` to the one holding the last output.
        first, last = skip // self.stride, (skip + count - 1) // self.stride
        return first, self.context + last - first + 1

    def step(self, x, clock):
        window = self._window(x, clock).transpose(1, 2)  # [B, context + n, in]
        n = window.shape[1] - self.context
        cols = torch.cat([window[:, self.context - a : self.context - a + n] for a in range(self.context + 1)], 2)
        y = F.linear(cols, self.matrix, self.bias)  # [B, n, stride * out]
        y = y.unflatten(2, (self.stride, -1)).flatten(1, 2).transpose(1, 2)
        if self.drain:  # the input steps hold whole groups of `stride` outputs: cut to the ones asked for
            skip = self.drain.skip - self.drain.start * self.stride
            y = y[..., skip : skip + self.drain.count]
        return y

    def input_range(self, j):
        t = j + self.crop[0]
        return -((self.kernel - 1 - t) // self.stride), t // self.stride


class AntiAliased(_Windowed):
    """The anti-aliased SnakeBeta in polyphase form: output j reads inputs j-5 .. j+5.

    The two upsampling phases are two 6-tap convolutions, SnakeBeta runs in place on the interleaved phases,
    and the strided low-pass brings the rate back; the replicate paddings of the offline form are applied at
    the edges only, on the input and on the upsampled signal, as offline.
    """

    replicate = True
    REACH = 5  # inputs on each side of the output position

    def __init__(self, module: AntiAliasedSnake) -> None:
        channels = module.act.alpha.shape[0]
        super().__init__(channels)
        self.even, self.odd, self.lowpass = module.filters()  # the filters are buffers: no gradient to detach
        self.phases = torch.stack([self.odd, self.even], dim=1)  # [6, 2]: both phases, interleaved in the output
        self._matrices: dict[int, tuple[int, torch.Tensor, int, torch.Tensor]] = {}  # by tick length
        with torch.no_grad():
            self.alpha, self.inv_beta = module.act.prepared()

    def plan(self, rate, offset, length):
        self._plan_window(rate, offset, length, 2 * self.REACH)
        return self._planned(rate, offset - self.REACH, length)

    def _reads(self, skip, count):
        return skip, count + 2 * self.REACH

    def step(self, x, clock):
        if kernels.enabled(x) and self.drain is None:
            return self._fused(x, clock)
        window = self._window(x, clock)
        n = window.shape[2] - 2 * self.REACH  # outputs
        small = _small(n, x.device)
        # Window position i is x[first + i]; the phases cover upsampled positions 2 * first + 5 onwards.
        if small:
            up_block, up, down_block, down = self._blocked(n)
            up = _blocked_fir(window, up, up_block + 5, up_block)
        else:
            odd = F.conv1d(window, self._depthwise(self.odd), groups=self.channels)
            even = F.conv1d(window, self._depthwise(self.even), groups=self.channels)
            up = torch.stack([odd, even], dim=-1).flatten(2)
        up = snake_(up, self.alpha, self.inv_beta)
        if not clock.settled:
            firsts, lengths = self._firsts(clock), self._lengths(clock)
            if isinstance(firsts, torch.Tensor):
                firsts, lengths = 2 * firsts + 5, 2 * lengths
            else:
                firsts = [2 * first + 5 for first in firsts]
                lengths = [None if n is None else 2 * n for n in lengths]
            up = _fix_edges(up, firsts, lengths, replicate=True)
        if small:
            return _blocked_fir(up, down, 2 * down_block + 10, 2 * down_block)
        return F.conv1d(up, self._depthwise(self.lowpass), stride=2, groups=self.channels)

    def _blocked(self, n: int) -> tuple[int, torch.Tensor, int, torch.Tensor]:
        """For a tick of n new samples: the block and matrix of the upsampling phases (over the n + 5 positions
        the window gives them), and of the low-pass (over the n outputs)."""
        if n not in self._matrices:
            up, down = _fir_block(n + 5), _fir_block(n)
            self._matrices[n] = (up, _banded(self.phases, up, 1), down, _banded(self.lowpass[:, None], down, 2))
        return self._matrices[n]

    def _depthwise(self, taps: torch.Tensor) -> torch.Tensor:
        return taps.expand(self.channels, 1, -1)  # one filter for every channel

    def _fused(self, x, clock):
        """The Triton kernel clamps at the edges itself: the window goes in as it is."""
        from .kernels.snake import anti_aliased_snake

        window = torch.cat([self.state, x], dim=2)
        self.state.copy_(window[..., -self.context :])
        # Where no clamp reaches an output (always in a settled tick), the kernel's offline defaults do, with no
        # copy from the host (which a CUDA graph could not replay).
        first = length = None
        if not clock.settled:
            firsts, lengths = self._firsts(clock), self._lengths(clock)
            if any(_crosses(f, n, window.shape[2]) for f, n in zip(firsts, lengths)):
                first = torch.tensor(firsts).to(x.device)
                length = torch.tensor([1 << 40 if n is None else n for n in lengths]).to(x.device)
        filters = (self.even, self.odd, self.lowpass)
        return anti_aliased_snake(
            window, self.alpha.flatten(), self.inv_beta.flatten(), filters, first, length, self.REACH, x.shape[2]
        )

    def input_range(self, j):
        return j - self.REACH, j + self.REACH


def _blocked_fir(x: torch.Tensor, matrix: torch.Tensor, reads: int, stride: int) -> torch.Tensor:
    """Per channel of `x [B, C, T]`: blocks of `reads` samples every `stride` samples, each times `matrix`."""
    cols = x.unfold(2, reads, stride).reshape(-1, reads)
    return (cols @ matrix).view(x.shape[0], x.shape[1], -1)


class Pointwise(StreamOp):
    def __init__(self, fn) -> None:
        self.fn = fn

    def step(self, x, clock):
        return self.fn(x)


class Chain(StreamOp):
    def __init__(self, ops: list[StreamOp]) -> None:
        self.ops = ops

    def plan(self, rate, offset, length):
        for op in self.ops:
            rate, offset, length = op.plan(rate, offset, length)
        return rate, offset, length

    def allocate(self, batch_size, device, dtype):
        return [state for op in self.ops for state in op.allocate(batch_size, device, dtype)]

    def slots(self):
        return [slot for op in self.ops for slot in op.slots()]

    def step(self, x, clock):
        for op in self.ops:
            x = op.step(x, clock)
        return x

    def input_range(self, j):
        first, last = j, j
        for op in reversed(self.ops):
            first, last = op.input_range(first)[0], op.input_range(last)[1]
        return first, last

    def settled_hops(self):
        return max(op.settled_hops() for op in self.ops)

    def limit(self, needed, clock):
        for op in reversed(self.ops):
            needed = op.limit(needed, clock)
        return needed


class Residual(StreamOp):
    """`x + inner(x)`: x is delayed by inner's delay in a fixed-length line."""

    def __init__(self, inner: StreamOp, channels: int) -> None:
        self.inner, self.channels = inner, channels

    def plan(self, rate, offset, length):
        inner_rate, inner_offset, _ = self.inner.plan(rate, offset, length)
        assert inner_rate == rate, "a residual branch keeps the rate"
        self.rate, self.offset, self.delay = rate, offset, offset - inner_offset
        self.drain: tuple[int, int, int, int] | None = None  # a drain's output skip, input skip and count, inner skip
        return rate, inner_offset, length

    def allocate(self, batch_size, device, dtype):
        self.line = torch.zeros(batch_size, self.channels, self.delay, device=device, dtype=dtype)
        return [self.line, *self.inner.allocate(batch_size, device, dtype)]

    def slots(self):
        return [(self, "line"), *self.inner.slots()]

    def limit(self, needed, clock):
        inner = self.inner.limit(needed, clock)
        if needed is None:
            self.drain = None
            return None
        # Output position p adds input position p (the tick's output starts `delay` samples earlier than its
        # input): the input is needed where the inner ops need it and where the output is.
        firsts = [hops * self.rate + self.offset for hops in clock.hops]
        skip = max(0, min(lo - first + self.delay for (lo, _), first in zip(needed, firsts)))
        inner_skip = inner[0][0] - firsts[0]  # the inner ops' input starts at the same index in every row
        skip_in = max(0, min(inner_skip, *(lo - first for (lo, _), first in zip(needed, firsts))))
        stop = max(max(a, b) - first for (_, a), (_, b), first in zip(inner, needed, firsts))
        self.drain = (skip, skip_in, max(0, stop - skip_in), inner_skip)
        return [(first + skip_in, first + stop) for first in firsts]

    def step(self, x, clock):
        if self.drain is not None:
            return self._drained(x, clock)
        y = self.inner.step(x, clock)
        if not self.delay:
            return x + y
        line = torch.cat([self.line, x], dim=2)
        self.line.copy_(line[..., x.shape[2] :])
        return y.add_(line[..., : x.shape[2]])

    def _drained(self, x, clock):
        skip, skip_in, count_in, inner_skip = self.drain
        x = _sized(x, count_in)  # the tick's input from skip_in
        y = self.inner.step(x[..., inner_skip - skip_in :], clock)
        return y + _drain_slice(self.line, x, skip_in, skip, y.shape[2])  # the delay line is its own window

    def input_range(self, j):
        first, last = self.inner.input_range(j)
        return min(first, j), max(last, j)

    def settled_hops(self):
        return self.inner.settled_hops()


def build(module: nn.Module) -> StreamOp:
    """The stream operations of a convolutional stack (`encoder.block` or a decoder's `model`)."""
    if isinstance(module, nn.Sequential):
        return Chain([build(m) for m in module])
    if isinstance(module, (EncoderBlock, DecoderBlock)):
        return build(module.block)
    if isinstance(module, ResidualUnit):
        return Residual(build(module.block), module.block[0].act.alpha.shape[0])
    if isinstance(module, AntiAliasedSnake):
        return AntiAliased(module)
    if isinstance(module, nn.Conv1d):
        pad = module.padding[0]
        return Conv(module.weight, module.bias, module.stride[0], module.dilation[0], (pad, pad))
    if isinstance(module, nn.ConvTranspose1d):
        pad = module.padding[0]
        crop = (pad, pad - module.output_padding[0])
        return TransposedConv(module.weight, module.bias, module.stride[0], crop)
    if isinstance(module, nn.Tanh):
        return Pointwise(torch.tanh)
    raise TypeError(f"no streaming form for {type(module).__name__}")
