"""Streams over the models: push audio or latent frames as they arrive, get back what is final now.

`encoder.stream()` and `decoder.stream(spk)` run the convolutional stacks as fixed-shape stream operations
(`stream_ops`) in ticks of whole hops. Pushes of any length are buffered to whole hops.

Exact mode (the default) hands out an output once everything it depends on has arrived: the concatenated
outputs equal the offline output. `lookahead=N` hands out an output once N samples of audio after it
have arrived, computed as if the signal ended there (the offline padding stands in for the missing
future); the rest of the stream stays exact, so its error does not accumulate.

Rows of a batch are independent signals: `reset(rows)` starts new signals in some rows and `end(rows)` ends
them, while the other rows go on. Rows that started at different times hand out different positions in
one push; `valid` then says which entries of the returned tensor are real.

Ticks in which every row is settled (`settled_hops` after its start) and open always do the same work on the
same buffers: `StreamOptions.backend` says how they run (`backends`: op by op, CUDA graphs, torch.compile or
onnxruntime). The other ticks run op by op, with the same result.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from . import backends, validation
from .layers.norm import timbre_norm
from .stream_ops import Clock, build

# One second per tick keeps the intermediate tensors small enough for the CPU caches; no tick is longer.
MAX_TICK_HOPS = 80


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


Lookahead = int | None  # samples of audio; None: exact


@dataclass(frozen=True)
class StreamOptions:
    """How a stream, or the streams of a pipeline, run; every setting is checked here, once.

    - `batch_size`: rows, each an independent signal;
    - `lookahead`: samples of lookahead (None: exact), or a pair (encoder, decoder) for a pipeline's two streams;
    - `backend`: how settled ticks run, one of `backends.BACKENDS` (None: CUDA graphs on CUDA, else op by op).

    Everything that makes streams takes `options=StreamOptions(...)`, or the same settings as keywords.
    """

    batch_size: int = 1
    lookahead: Lookahead | tuple[Lookahead, Lookahead] = None
    backend: str | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer of at least 1, got {self.batch_size!r}")
        pair = self.lookahead if isinstance(self.lookahead, tuple) else (self.lookahead,)
        if len(pair) not in (1, 2) or any(n is not None and (not _is_int(n) or n < 0) for n in pair):
            raise ValueError(
                "lookahead must be a number of samples >= 0 (or None: exact), or a pair of them (encoder, decoder), "
                f"got {self.lookahead!r}"
            )
        if self.backend is not None and self.backend not in backends.BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(backends.BACKENDS)} or None, got {self.backend!r}")

    @classmethod
    def of(cls, options: StreamOptions | None, settings: dict) -> StreamOptions:
        """`options` (default: the defaults) with `settings` given as keywords on top."""
        unknown = set(settings) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(
                f"unknown stream settings {sorted(unknown)}; StreamOptions has {[f.name for f in fields(cls)]}"
            )
        return replace(options or cls(), **settings)

    @property
    def encoder_lookahead(self) -> Lookahead:
        return self.lookahead[0] if isinstance(self.lookahead, tuple) else self.lookahead

    @property
    def decoder_lookahead(self) -> Lookahead:
        return self.lookahead[1] if isinstance(self.lookahead, tuple) else self.lookahead


class _Stream:
    """What the encoder and decoder streams share: ticks, per-row positions, lookahead, flush and reset."""

    in_per_hop: int  # input samples (or frames) per hop

    def __init__(self, stack: nn.Module, in_channels: int, options: StreamOptions, lookahead: Lookahead) -> None:
        batch_size = options.batch_size
        self.op = build(stack)
        self.parameter = next(stack.parameters())
        self.backend = backends.resolve(options.backend, self.parameter.device)
        self.batch_size, self.in_channels = batch_size, in_channels
        self.out_per_hop, self.out_offset, self.out_length = self.op.plan(self.in_per_hop, 0, lambda n: n)
        self.settled_hops = self.op.settled_hops()
        self.states = self.op.allocate(batch_size, self.parameter.device, self.parameter.dtype)
        self.clock = Clock(batch_size)
        self.settled_ticks = backends.settled_ticks(self.backend, self.op, self.clock, self.states)
        #: the exact mode's lookahead, in samples of audio
        self.exact_lookahead_samples = self._exact_wait()
        self.speculative = lookahead is not None and lookahead < self.exact_lookahead_samples
        self.lookahead = lookahead if self.speculative else None
        self.emitted = [0] * batch_size  # per row, the next output position to hand out
        self.reset()

    @property
    def lookahead_samples(self) -> int:
        """How many samples of audio must follow a sample before the stream hands out its output."""
        return self._speculative_wait() if self.speculative else self.exact_lookahead_samples

    # -- the public calls ------------------------------------------------------------------------------

    def reset(self, rows: Sequence[int] | None = None) -> None:
        """Start a new signal in every row, or only in `rows` (at a hop boundary: no partial hop pending)."""
        if rows is None:
            rows = range(self.batch_size)
            self.pending = self.parameter.new_zeros(self.batch_size, self.in_channels, 0)
            self.finished = False
        elif self.pending.shape[2]:
            raise ValueError(f"reset(rows) needs whole hops pushed so far; {self.pending.shape[2]} samples pending")
        rows = self._rows(rows)
        self.clock.restart(rows)
        for b in rows:
            self.emitted[b] = 0
        self._nothing()

    def end(self, rows: Sequence[int]) -> None:
        """End the signals of `rows` now; their last outputs come out over the next pushes, then only invalid
        entries, until `reset(rows)`."""
        for b in self._rows(rows):
            if self.clock.ends[b] is None:
                self.clock.ends[b] = self._received(b)

    def flush(self) -> torch.Tensor:
        """End every signal and return every output not handed out yet; then `reset()` to reuse the stream."""
        self._check_open()
        self.end(range(self.batch_size))
        self.finished = True
        with torch.inference_mode():
            return self._drain(self._stops(final=True), trimmed=False)

    # -- ticks -----------------------------------------------------------------------------------------

    def _push(self, x: torch.Tensor) -> torch.Tensor:
        self._check_open()
        with torch.inference_mode():
            data = torch.cat([self.pending, x], dim=2)
            hops = data.shape[2] // self.in_per_hop
            self.pending = data[..., hops * self.in_per_hop :]
            # A long push runs as ticks of at most MAX_TICK_HOPS, so its memory does not grow with its length.
            outs, valids = [self._nothing()], [self.valid]
            for first in range(0, hops, MAX_TICK_HOPS):
                last = min(first + MAX_TICK_HOPS, hops)
                outs.append(self._tick(data[..., first * self.in_per_hop : last * self.in_per_hop]))
                valids.append(self.valid)
            if self.speculative:
                outs.append(self._speculate())
                valids.append(self.valid)
            self.valid = torch.cat(valids, dim=1)
        return torch.cat(outs, dim=2)

    def _starts(self) -> list[int]:
        return [hops * self.out_per_hop + self.out_offset for hops in self.clock.hops]

    def _tick(self, x: torch.Tensor) -> torch.Tensor:
        """Run whole hops: every row advances by the same number of hops."""
        starts = self._starts()
        y = self._step(x)
        hops = x.shape[2] // self.in_per_hop
        self.clock.hops = [h + hops for h in self.clock.hops]
        return self._emit(y, starts, self._stops(final=True))

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        """One tick: through the backend where every row is settled and open (then a tick of this size always
        does the same work on the same buffers), else op by op."""
        settled = min(self.clock.hops) >= self.settled_hops and all(end is None for end in self.clock.ends)
        self.clock.settled = settled
        if settled and self.settled_ticks is not None:
            return self.settled_ticks(x)
        return self.op.step(x, self.clock)

    def _drain(self, stops: list[int], trimmed: bool) -> torch.Tensor:
        """Feed the pending samples and then silence (beyond every row's end) until each row reaches `stops`.

        `trimmed` (a lookahead's drain, on every push): every op computes only what reaches the outputs not handed
        out yet, and leaves its state alone. Untrimmed (`flush`, once a signal): whole hops through every op,
        the same shapes whichever rows share the batch, so a row's result is what it gives alone up to the kernels'
        rounding of a batch (`encode_many` relies on it: the float rounding depends on the shapes too)."""
        starts = self._starts()
        needed = max(-(-(stop - start) // self.out_per_hop) for stop, start in zip(stops, starts))
        if needed <= 0:
            return self._nothing()
        x = self.pending.new_zeros(self.batch_size, self.in_channels, needed * self.in_per_hop)
        x[..., : self.pending.shape[2]] = self.pending
        self.pending = self.pending[..., :0]
        self.clock.settled = False  # the silence after the ends reaches them
        skip = 0  # outputs of the tick not computed (a trimmed drain starts at the first not handed out)
        if trimmed:
            inputs = self.op.limit(list(zip(self.emitted, stops)), self.clock)
            x = x[..., inputs[0][0] - self.clock.hops[0] * self.in_per_hop :]
            skip = max(0, min(emitted - start for emitted, start in zip(self.emitted, starts)))
        try:
            y = self.op.step(x, self.clock)
        finally:
            if trimmed:
                self.op.limit(None, self.clock)
        self.clock.hops = [h + needed for h in self.clock.hops]
        return self._emit(y, [start + skip for start in starts], stops)

    def _speculate(self) -> torch.Tensor:
        """Outputs up to the lookahead, computed as if every open signal ended now (a drain: the states stay)."""
        stops = self._stops(final=False)
        if all(stop <= emitted for stop, emitted in zip(stops, self.emitted)):
            return self._nothing()
        hops, ends, pending = list(self.clock.hops), list(self.clock.ends), self.pending
        self.clock.ends = [self._received(b) if end is None else end for b, end in enumerate(ends)]
        out = self._drain(stops, trimmed=True)  # leaves the states alone
        self.clock.hops, self.clock.ends, self.pending = hops, ends, pending
        return out

    def _stops(self, final: bool) -> list[int]:
        """Per row, the position where handing out stops: the signal's end if it has ended, else (exact mode or
        `final`) no limit, else the lookahead's limit."""
        stops = []
        for b, end in enumerate(self.clock.ends):
            if end is not None:
                stops.append(self.out_length(end))
            elif final:
                stops.append(1 << 62)
            else:
                stops.append(self._speculative_stop(self._received(b)))
        return stops

    def _emit(self, y: torch.Tensor, starts: list[int], stops: list[int]) -> torch.Tensor:
        """Hand out row b's positions from where it stopped last up to `stops[b]`; y's column 0 is `starts[b]`."""
        width = y.shape[2]
        lo = [min(max(e, 0, s) - s, width) for e, s in zip(self.emitted, starts)]
        hi = [max(min(stop - s, width), low) for stop, s, low in zip(stops, starts, lo)]
        self.emitted = [max(e, s + h) for e, s, h in zip(self.emitted, starts, hi)]
        first, last = min(lo), max(hi)
        out = y[..., first:last]
        if len(set(lo)) == 1 and len(set(hi)) == 1:  # rows in step (the usual case): all of it is valid
            self.valid = torch.ones(self.batch_size, last - first, dtype=torch.bool)
            return out
        self.valid = torch.zeros(self.batch_size, last - first, dtype=torch.bool)
        for b, (low, high) in enumerate(zip(lo, hi)):
            self.valid[b, low - first : high - first] = True
        return out * self.valid[:, None, :].to(out.device)  # zero what a row does not hand out

    # -- helpers ---------------------------------------------------------------------------------------

    def _received(self, row: int) -> int:
        return self.clock.hops[row] * self.in_per_hop + self.pending.shape[2]

    def _rows(self, rows: Sequence[int]) -> list[int]:
        rows = list(rows)
        for b in rows:
            if not 0 <= b < self.batch_size:
                raise ValueError(f"row {b} is out of range for a stream of batch size {self.batch_size}")
        return rows

    def _empty(self) -> torch.Tensor:
        return self.parameter.new_zeros(self.batch_size, self.out_channels, 0)

    def _nothing(self) -> torch.Tensor:
        """No output this time (and `valid` says so)."""
        self.valid = torch.zeros(self.batch_size, 0, dtype=torch.bool)
        return self._empty()

    def _check_open(self) -> None:
        if self.finished:
            raise RuntimeError("this stream was flushed: call reset() to start a new signal")

    def check(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """`x` as `push` takes it (on the stream's device), or a ValueError naming what is wrong."""
        expected = (self.batch_size, self.in_channels)
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or tuple(x.shape[:2]) != expected:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"push takes {what} shaped [{expected[0]}, {expected[1]}, n], got {shape}")
        # Pushes may come from wherever the audio is (a microphone gives CPU tensors): onto the model's device.
        return validation.floating(x, f"pushed {what}", self.parameter.dtype).to(self.parameter.device)


class EncoderStream(_Stream):
    """`push(wav [B, 1, n])` for any n >= 0 returns the encoder frames `[B, 256, k]` that are final now."""

    def __init__(self, encoder: nn.Module, options: StreamOptions | None = None, **settings) -> None:
        options = StreamOptions.of(options, settings)
        self.in_per_hop = self.hop_length = encoder.hop_length
        self.out_channels = encoder.config.out_channels
        super().__init__(encoder.block, 1, options, options.encoder_lookahead)
        #: samples of audio before a frame's first sample that it depends on
        self.left_context_samples = max(
            j * self.hop_length - self.op.input_range(j)[0] for j in range(1000, 1000 + self.hop_length)
        )

    def push(self, wav: torch.Tensor) -> torch.Tensor:
        return self._push(self.check(wav, "audio"))

    def _exact_wait(self) -> int:
        # Frame j comes out with hop j - out_offset.
        return -self.out_offset * self.hop_length

    def _speculative_stop(self, received: int) -> int:
        return (received - self.lookahead) // self.hop_length

    def _speculative_wait(self) -> int:
        return self.lookahead


class DecoderStream(_Stream):
    """`push(emb [B, 256, k])` for any k >= 0 returns the audio samples `[B, 1, m]` that are final now."""

    in_per_hop = 1
    out_channels = 1

    def __init__(
        self, decoder: nn.Module, speaker_embedding: torch.Tensor, options: StreamOptions | None = None, **settings
    ) -> None:
        options = StreamOptions.of(options, settings)
        self.decoder, self.hop_length = decoder, decoder.hop_length
        super().__init__(decoder.model, decoder.in_channels, options, options.decoder_lookahead)
        self.gamma, self.beta = self._timbre(speaker_embedding, options.batch_size)
        #: samples of audio before an output sample whose frames it depends on
        self.left_context_samples = max(
            t - self.op.input_range(t)[0] * self.hop_length
            for t in range(1000 * self.hop_length, 1001 * self.hop_length)
        )

    def _timbre(self, speaker_embedding: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        spk = self.decoder._speaker(speaker_embedding, batch).to(self.parameter.device)
        with torch.inference_mode():
            return self.decoder.timbre_linear(spk).chunk(2, dim=1)

    def set_speaker(self, rows: Sequence[int], speaker_embedding: torch.Tensor) -> None:
        """Give `rows` new speaker embeddings `[len(rows), 256]` (e.g. with `reset(rows)` for a new caller)."""
        rows = self._rows(rows)
        gamma, beta = self._timbre(speaker_embedding, len(rows))
        with torch.inference_mode():
            self.gamma[rows], self.beta[rows] = gamma, beta

    def push(self, emb: torch.Tensor) -> torch.Tensor:
        emb = self.check(emb, "latent frames")
        with torch.inference_mode():
            emb = timbre_norm(emb, self.gamma, self.beta)
        return self._push(emb)

    def _exact_wait(self) -> int:
        # Samples [h * hop + out_offset, (h + 1) * hop + out_offset) come out with frame h; the first waits most.
        return self.hop_length - 1 - self.out_offset

    def _speculative_stop(self, received: int) -> int:
        # Frames arrive whole: the sample that waits most waits `lookahead` samples (at least a frame's worth).
        return received * self.hop_length + min(self.hop_length - 1 - self.lookahead, 0)

    def _speculative_wait(self) -> int:
        return max(self.lookahead, self.hop_length - 1)


Progress = Callable[[int, int], None]  # (done, total) in input units


_plain = contextvars.ContextVar("plain_computation", default=False)


@contextlib.contextmanager
def plain_computation():
    """Within this, the drop-in calls run the plain transcription of the published computation (what the
    benchmarks compare the fast path with)."""
    token = _plain.set(True)
    try:
        yield
    finally:
        _plain.reset(token)


def takes_fast_path(model: nn.Module) -> bool:
    """Whether the drop-in calls (`encoder(wav)`, `decoder.inference`) run on the stream engine offline: for fp32
    models on the CPU (measured there: a third of the plain computation's cost on 10 s) when no gradient is being
    recorded (the engine runs without autograd), nothing is tracing and `plain_computation` is not in force.
    Elsewhere, the plain computation."""
    parameter = next(model.parameters())
    return (
        not _plain.get()
        and parameter.device.type == "cpu"
        and parameter.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


def _run_offline(stream: _Stream, x: torch.Tensor, step: int, progress: Progress | None) -> torch.Tensor:
    outs = []
    for i in range(0, x.shape[2], step):
        outs.append(stream.push(x[..., i : i + step]))
        if progress:
            progress(min(i + step, x.shape[2]), x.shape[2])
    return torch.cat([*outs, stream.flush()], dim=2)


def encode_offline(
    encoder: nn.Module, wav: torch.Tensor, tick_hops: int = MAX_TICK_HOPS, progress: Progress | None = None
) -> torch.Tensor:
    """`encoder(wav)` on the fast path: the stream engine over ticks of `tick_hops` hops."""
    wav = validation.audio(wav, min_samples=encoder.config.min_samples, dtype=encoder.dtype)
    stream = EncoderStream(encoder, batch_size=wav.shape[0])
    return _run_offline(stream, wav, tick_hops * stream.hop_length, progress)


def decode_offline(
    decoder: nn.Module,
    emb: torch.Tensor,
    speaker_embedding: torch.Tensor,
    tick_hops: int = MAX_TICK_HOPS,
    progress: Progress | None = None,
) -> torch.Tensor:
    """`decoder.inference(emb, spk)` on the fast path: the stream engine over ticks of `tick_hops` frames."""
    emb = decoder._frames(emb, "latent frames")
    return _run_offline(DecoderStream(decoder, speaker_embedding, batch_size=emb.shape[0]), emb, tick_hops, progress)


def encode_many(
    encoder: nn.Module, clips: Sequence[torch.Tensor], batch_size: int = 8, progress: Progress | None = None
) -> list[torch.Tensor]:
    """`encoder(clip)` of each clip `[1, 1, L]` (lengths may differ), in length-sorted batches: each row of a batch
    ends at its own length, so each output `[1, 256, T]` is what the clip alone gives. `progress(done, total)`
    counts clips."""
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}")
    clips = [validation.audio(c, min_samples=encoder.config.min_samples, dtype=encoder.dtype) for c in clips]
    for i, clip in enumerate(clips):
        if clip.shape[0] != 1:
            raise ValueError(f"clip {i} has batch {clip.shape[0]}; encode_many takes clips [1, 1, samples]")
    order = sorted(range(len(clips)), key=lambda i: clips[i].shape[2])
    outputs: list[torch.Tensor | None] = [None] * len(clips)
    for first in range(0, len(order), batch_size):
        batch = order[first : first + batch_size]
        for i, frames in zip(batch, _encode_batch(encoder, [clips[i] for i in batch])):
            outputs[i] = frames
        if progress:
            progress(min(first + batch_size, len(order)), len(order))
    return outputs


def _encode_batch(encoder: nn.Module, clips: list[torch.Tensor]) -> list[torch.Tensor]:
    lengths = [clip.shape[2] for clip in clips]
    x = clips[0].new_zeros(len(clips), 1, max(lengths))
    for b, clip in enumerate(clips):
        x[b, :, : lengths[b]] = clip[0]
    stream = EncoderStream(encoder, batch_size=len(clips))
    outs, valids, done = [], [], 0
    for stop in sorted(set(lengths)):  # push up to the next row's end, then end that row there
        outs.append(stream.push(x[..., done:stop]))
        valids.append(stream.valid)
        stream.end([b for b, length in enumerate(lengths) if length == stop])
        done = stop
    outs.append(stream.flush())
    valids.append(stream.valid)
    frames, valid = torch.cat(outs, dim=2), torch.cat(valids, dim=1)
    return [frames[b : b + 1, :, valid[b].to(frames.device)] for b in range(len(clips))]
