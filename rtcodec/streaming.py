"""Exact streaming of the convolutional stacks: each operation keeps its own cached state.

A stack is turned into a tree of stream operations, one per convolution, transposed convolution, padding
and pointwise function. Each operation takes the next samples of its input and returns every output
sample that is final now; `flush()` returns the rest once the signal has ended. Zero and replicate
padding happen at the signal's start and at flush only, exactly as offline, so the concatenated stream
output equals the offline output for any chunking.

Latency and context come from the same operations: each says which input samples one output sample
reads (`input_range`), and the tree composes that, so lookahead is derived from the layer list in one place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import validation
from .layers.activation import (
    DOWN_PAD_LEFT,
    DOWN_PAD_RIGHT,
    UP_CROP,
    UP_PAD,
    AntiAliasedSnake,
)
from .layers.blocks import DecoderBlock, EncoderBlock, ResidualUnit
from .layers.norm import timbre_norm


def _has(x: torch.Tensor | None) -> bool:
    return x is not None and x.shape[2] > 0


class StreamOp:
    """One operation of a stream: `step` takes `[B, C, n]` and returns the outputs that are final now."""

    def step(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def flush(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """The last input (None if there is none) and the signal's end: every remaining output, or None."""
        return self.step(x) if _has(x) else None

    def reset(self) -> None:
        pass

    def input_range(self, j: int) -> tuple[int, int]:
        """The first and last input index that output `j` reads (in steady state, far from the edges)."""
        return j, j


class EdgePad(StreamOp):
    """Zero or replicate padding at the signal's start (before the first sample) and its end (at flush)."""

    def __init__(self, left: int, right: int, replicate: bool) -> None:
        self.left, self.right, self.replicate = left, right, replicate
        self.reset()

    def reset(self) -> None:
        self.started = False
        self.last: torch.Tensor | None = None

    def _edge(self, sample: torch.Tensor, count: int) -> torch.Tensor:
        return sample.expand(-1, -1, count) if self.replicate else torch.zeros_like(sample).expand(-1, -1, count)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] == 0:
            return x
        self.last = x[..., -1:]
        if not self.started:
            self.started = True
            if self.left:
                x = torch.cat([self._edge(x[..., :1], self.left), x], dim=2)
        return x

    def flush(self, x: torch.Tensor | None) -> torch.Tensor | None:
        x = self.step(x) if _has(x) else None
        if self.last is None or not self.right:
            return x
        edge = self._edge(self.last, self.right)
        return edge if x is None else torch.cat([x, edge], dim=2)

    def input_range(self, j: int) -> tuple[int, int]:
        return j - self.left, j - self.left


class Conv(StreamOp):
    """A convolution without padding (see `EdgePad`), keeping the input samples its next outputs need."""

    def __init__(self, weight, bias, stride: int = 1, dilation: int = 1, groups: int = 1) -> None:
        self.weight, self.bias = weight, bias
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.span = (weight.shape[-1] - 1) * dilation + 1
        self.reset()

    def reset(self) -> None:
        self.buffer: torch.Tensor | None = None

    def step(self, x: torch.Tensor) -> torch.Tensor:
        buffer = x if self.buffer is None else torch.cat([self.buffer, x], dim=2)
        count = (buffer.shape[2] - self.span) // self.stride + 1 if buffer.shape[2] >= self.span else 0
        if count == 0:
            self.buffer = buffer
            return x.new_zeros(x.shape[0], self.weight.shape[0], 0)
        used = (count - 1) * self.stride + self.span
        y = F.conv1d(buffer[..., :used], self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        self.buffer = buffer[..., count * self.stride :]
        return y

    def input_range(self, j: int) -> tuple[int, int]:
        return j * self.stride, j * self.stride + self.span - 1


class TransposedConv(StreamOp):
    """A transposed convolution whose output is cropped by `crop_left` / `crop_right` samples, times `scale`.

    Output sample t of the uncropped result is final once the input frame t // stride has arrived; the
    overlapping tail waits for the next input. The right crop falls inside that tail when it is no longer
    than the tail plus what the preceding `EdgePad` appends at flush (`padded_right` input samples);
    otherwise the difference is held back until flush, since it is dropped if the signal ends there.
    """

    def __init__(self, weight, bias, stride: int, crop_left: int, crop_right: int, groups=1, scale=1.0, padded_right=0):
        self.weight, self.bias, self.stride, self.groups, self.scale = weight, bias, stride, groups, scale
        self.crop_left, self.crop_right = crop_left, crop_right
        self.overlap = weight.shape[-1] - stride
        self.out_channels = weight.shape[1] * groups
        self.hold = max(0, crop_right - self.overlap - padded_right * stride)
        self.reset()

    def reset(self) -> None:
        self.pending: torch.Tensor | None = None  # final samples held back, then the partial tail
        self.to_drop = self.crop_left

    def _emit(self, y: torch.Tensor) -> torch.Tensor:
        drop = min(self.to_drop, y.shape[2])
        self.to_drop -= drop
        y = y[..., drop:] * self.scale
        return y if self.bias is None else y + self.bias[:, None]

    def step(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] == 0:
            return x.new_zeros(x.shape[0], self.out_channels, 0)
        y = self._accumulate(x)
        ready = max(0, y.shape[2] - self.overlap - self.hold)
        self.pending = y[..., ready:]
        return self._emit(y[..., :ready])

    def _accumulate(self, x: torch.Tensor) -> torch.Tensor:
        """Every output sample not emitted yet: the held ones, then the tail plus x's contribution."""
        y = F.conv_transpose1d(x, self.weight, None, self.stride, 0, 0, self.groups)
        if self.pending is not None:
            held = self.pending.shape[2] - self.overlap
            y[..., : self.overlap] += self.pending[..., held:]
            y = torch.cat([self.pending[..., :held], y], dim=2)
        return y

    def flush(self, x: torch.Tensor | None) -> torch.Tensor | None:
        y = self._accumulate(x) if _has(x) else self.pending
        if y is None:
            return None
        self.pending = None
        return self._emit(y[..., : max(0, y.shape[2] - self.crop_right)])

    def input_range(self, j: int) -> tuple[int, int]:
        t = j + self.crop_left
        k = self.weight.shape[-1]
        return -((k - 1 - t) // self.stride), (t + self.hold) // self.stride


class Pointwise(StreamOp):
    def __init__(self, fn) -> None:
        self.fn = fn

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class Sequence(StreamOp):
    def __init__(self, ops: list[StreamOp]) -> None:
        self.ops = ops

    def step(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            if x.shape[2] == 0:  # nothing new is final: later ops have nothing to do (channels may differ)
                return x
            x = op.step(x)
        return x

    def flush(self, x: torch.Tensor | None) -> torch.Tensor | None:
        for op in self.ops:
            x = op.flush(x if _has(x) else None)
        return x

    def reset(self) -> None:
        for op in self.ops:
            op.reset()

    def input_range(self, j: int) -> tuple[int, int]:
        first, last = j, j
        for op in reversed(self.ops):
            first, last = op.input_range(first)[0], op.input_range(last)[1]
        return first, last


class Residual(StreamOp):
    """`x + inner(x)` for a length-preserving `inner`: x waits until inner's matching outputs are final."""

    def __init__(self, inner: StreamOp) -> None:
        self.inner = inner
        self.reset()

    def reset(self) -> None:
        self.inner.reset()
        self.skip: torch.Tensor | None = None

    def _add(self, x: torch.Tensor | None, fx: torch.Tensor | None) -> torch.Tensor | None:
        if x is not None and x.shape[2]:
            self.skip = x if self.skip is None else torch.cat([self.skip, x], dim=2)
        if fx is None or fx.shape[2] == 0:
            return fx
        out = self.skip[..., : fx.shape[2]] + fx
        self.skip = self.skip[..., fx.shape[2] :]
        return out

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return self._add(x, self.inner.step(x))

    def flush(self, x: torch.Tensor | None) -> torch.Tensor | None:
        return self._add(x, self.inner.flush(x))

    def input_range(self, j: int) -> tuple[int, int]:
        first, last = self.inner.input_range(j)
        return min(first, j), max(last, j)


def _conv(module: nn.Conv1d) -> StreamOp:
    pad = module.padding[0]
    conv = Conv(module.weight, module.bias, module.stride[0], module.dilation[0], module.groups)
    return Sequence([EdgePad(pad, pad, replicate=False), conv]) if pad else conv


def _anti_aliased(module: AntiAliasedSnake) -> StreamOp:
    channels = module.act.alpha.shape[0]
    up = module.up_filter.expand(channels, 1, -1)
    down = module.down_filter.expand(channels, 1, -1)
    return Sequence(
        [
            EdgePad(UP_PAD, UP_PAD, replicate=True),
            TransposedConv(up, None, 2, UP_CROP, UP_CROP, groups=channels, scale=2.0, padded_right=UP_PAD),
            Pointwise(module.act),
            EdgePad(DOWN_PAD_LEFT, DOWN_PAD_RIGHT, replicate=True),
            Conv(down, None, stride=2, groups=channels),
        ]
    )


def build(module: nn.Module) -> StreamOp:
    """The stream operations of a convolutional stack (`encoder.block` or a decoder's `model`)."""
    if isinstance(module, nn.Sequential):
        return Sequence([build(m) for m in module])
    if isinstance(module, (EncoderBlock, DecoderBlock)):
        return build(module.block)
    if isinstance(module, ResidualUnit):
        return Residual(build(module.block))
    if isinstance(module, AntiAliasedSnake):
        return _anti_aliased(module)
    if isinstance(module, nn.Conv1d):
        return _conv(module)
    if isinstance(module, nn.ConvTranspose1d):
        pad, extra = module.padding[0], module.output_padding[0]
        return TransposedConv(module.weight, module.bias, module.stride[0], pad, pad - extra, module.groups)
    if isinstance(module, nn.Tanh):
        return Pointwise(torch.tanh)
    raise TypeError(f"no streaming form for {type(module).__name__}")


def frame_latency(op: StreamOp, hop: int) -> tuple[int, int]:
    """Samples in, frames out: (lookahead beyond a frame's last sample, context before its first)."""
    lookahead = context = 0
    for j in range(1000, 1000 + hop):  # steady state, far from the signal's start
        first, last = op.input_range(j)
        lookahead = max(lookahead, last - ((j + 1) * hop - 1))
        context = max(context, j * hop - first)
    return lookahead, context


def sample_latency(op: StreamOp, hop: int) -> tuple[int, int]:
    """Frames in, samples out: (lookahead and left context in samples, from the frames an output sample reads)."""
    lookahead = context = 0
    for t in range(1000 * hop, 1001 * hop):
        first, last = op.input_range(t)
        lookahead = max(lookahead, (last + 1) * hop - 1 - t)
        context = max(context, t - first * hop)
    return lookahead, context


class _Stream:
    """What the encoder and decoder streams share: the op tree, input checks, flush and reset."""

    def __init__(self, stack: nn.Module, batch_size: int, in_channels: int, out_channels: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.op = build(stack)
        self.batch_size, self.in_channels, self.out_channels = batch_size, in_channels, out_channels
        self.parameter = next(stack.parameters())
        self.finished = False

    def _empty(self) -> torch.Tensor:
        return self.parameter.new_zeros(self.batch_size, self.out_channels, 0)

    def _check(self, x: torch.Tensor, what: str) -> torch.Tensor:
        expected = (self.batch_size, self.in_channels)
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or tuple(x.shape[:2]) != expected:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"push takes {what} shaped [{expected[0]}, {expected[1]}, n], got {shape}")
        if self.finished:
            raise RuntimeError("this stream was flushed: call reset() to start a new signal")
        return validation.floating(x, f"pushed {what}", self.parameter.dtype)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            y = self.op.step(x) if x.shape[2] else x
        return y if y.shape[2] else self._empty()

    def flush(self) -> torch.Tensor:
        """The outputs that wait for the signal's end (its zero and replicate padding); then reset() to reuse."""
        self.finished = True
        with torch.inference_mode():
            y = self.op.flush(None)
        return y if _has(y) else self._empty()

    def reset(self) -> None:
        """Start a new signal."""
        self.op.reset()
        self.finished = False


class EncoderStream(_Stream):
    """`push(wav [B, 1, n])` for any n >= 0 returns the encoder frames `[B, 256, k]` that are final now."""

    def __init__(self, encoder: nn.Module, batch_size: int = 1) -> None:
        super().__init__(encoder.block, batch_size, 1, encoder.config.out_channels)
        self.hop_length = encoder.hop_length
        #: samples after a frame's last sample that must arrive before the frame is final
        self.lookahead_samples, self.left_context_samples = frame_latency(self.op, self.hop_length)

    def push(self, wav: torch.Tensor) -> torch.Tensor:
        return self._run(self._check(wav, "audio"))


class DecoderStream(_Stream):
    """`push(emb [B, 256, k])` for any k >= 0 returns the audio samples `[B, 1, m]` that are final now."""

    def __init__(self, decoder: nn.Module, speaker_embedding: torch.Tensor, batch_size: int = 1) -> None:
        super().__init__(decoder.model, batch_size, decoder.in_channels, 1)
        self.hop_length = decoder.hop_length
        spk = decoder._speaker(speaker_embedding, batch_size)
        with torch.inference_mode():
            self.gamma, self.beta = decoder.timbre_linear(spk).chunk(2, dim=1)
        #: samples of audio after an output sample that must be encoded before it is final
        self.lookahead_samples, self.left_context_samples = sample_latency(self.op, self.hop_length)

    def push(self, emb: torch.Tensor) -> torch.Tensor:
        emb = self._check(emb, "latent frames")
        return self._run(timbre_norm(emb, self.gamma, self.beta))
