"""Many callers over one batched stream: every caller is a row of one encoder stream and one decoder stream,
and each tick advances every row by the same hops in one batched push.

A caller `join`s with a speaker embedding and a mode, and takes a free row: its encoder row restarts with its
first block (a caller is part of the ticks from then on), and its decoder row restarts when its encoder row
hands out its first frame (until then the decoder row is ended,
so the frames of a row still filling its lookahead never reach it). A caller that `leave`s ends its rows at
once, without their tail; its row is free for the next caller. Every caller's output is what its own
single-caller pipeline gives (tested), whoever else joins or leaves.

Modes share the batch: "convert" decodes the prosody and content codes in the target's voice (the published
voice-conversion recipe), "codec" decodes all six codes (what a receiver of the caller's codes hears).

Each tick takes one block of `hops_per_tick` hops from every caller. A caller whose block has not come by its
tick is not waited for: its row gets silence, which is counted as a late block, and it hears that silence
later; the other callers are unaffected. Blocks that pile up beyond `max_queued_blocks` (a caller sending
faster than real time) are dropped, oldest first, and counted, so memory per caller is bounded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from .config import HOP_LENGTH
from .decoder import FACodecDecoder
from .encoder import FACodecEncoder
from .pipelines import _check_models
from .streaming import StreamOptions

MODES = ("convert", "codec")


class SlotsFullError(RuntimeError):
    """Every row of the batch has a caller."""


@dataclass(eq=False)  # a caller is itself: hashed and compared by identity
class Caller:
    """A caller's row and counters; `inbox` holds its blocks not yet pushed."""

    row: int
    mode: str
    speaker: torch.Tensor
    inbox: deque = field(default_factory=deque)  # (tag, block)
    consumed: object = None  # the tag of the block the last tick used (None: silence stood in)
    started: bool = False  # its first block has come: its encoder row started then
    decoding: bool = False  # its decoder row has started (its first frame came out of the encoder)
    blocks: int = 0  # blocks pushed for it
    late_blocks: int = 0  # ticks its block had not come: silence pushed
    dropped_blocks: int = 0  # blocks dropped because too many waited


class CallerScheduler:
    """`slots` callers over one batched encoder stream and decoder stream (V1 models)."""

    def __init__(
        self,
        encoder: FACodecEncoder,
        decoder: FACodecDecoder,
        slots: int,
        hops_per_tick: int = 1,
        options: StreamOptions | None = None,
        max_queued_blocks: int = 80,
    ) -> None:
        """`options` (lookahead, CUDA graphs, compile) for the two streams; their batch size is `slots`."""
        _check_models(encoder, decoder)
        if not isinstance(hops_per_tick, int) or hops_per_tick < 1:
            raise ValueError(f"hops_per_tick must be an integer of at least 1, got {hops_per_tick!r}")
        self.decoder, self.slots, self.hops_per_tick = decoder, slots, hops_per_tick
        self.block = hops_per_tick * HOP_LENGTH
        self.max_queued_blocks = max_queued_blocks
        options = StreamOptions.of(options, {"batch_size": slots})
        self.encoder_stream = encoder.stream(options)
        self.device = self.encoder_stream.parameter.device
        self.decoder_stream = decoder.stream(torch.zeros(slots, decoder.in_channels), options)
        self.encoder_stream.end(range(slots))  # no caller yet: every row ended
        self.decoder_stream.end(range(slots))
        self.callers: dict[int, Caller] = {}

    @property
    def latency_samples(self) -> int:
        """Lookahead of the two streams plus the tick's block: how long a sample waits for its output."""
        return self.encoder_stream.lookahead_samples + self.decoder_stream.lookahead_samples + self.block

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.callers)

    def join(self, speaker: torch.Tensor, mode: str = "convert") -> Caller:
        """A new caller in a free row (SlotsFullError if none): `speaker` `[256]` is the voice it is decoded in."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        speaker = self._checked(speaker)
        free = [row for row in range(self.slots) if row not in self.callers]
        if not free:
            raise SlotsFullError(f"all {self.slots} slots are taken")
        caller = Caller(free[0], mode, speaker)
        self.callers[caller.row] = caller
        return caller

    def set_speaker(self, caller: Caller, speaker: torch.Tensor) -> None:
        """Another voice for a caller whose decoder row has not started (its first frame has not come out)."""
        if caller.decoding:
            raise ValueError("the caller's voice is set until its decoder row starts")
        caller.speaker = self._checked(speaker)

    def _checked(self, speaker: torch.Tensor) -> torch.Tensor:
        if tuple(speaker.shape) != (self.decoder.in_channels,) or not torch.isfinite(speaker).all():
            raise ValueError(f"speaker embedding must be {self.decoder.in_channels} finite values")
        return speaker.to(self.device)

    def leave(self, caller: Caller) -> None:
        """The caller is gone: its rows end now and its row is free."""
        if self.callers.get(caller.row) is not caller:
            return
        del self.callers[caller.row]
        for stream in (self.encoder_stream, self.decoder_stream):
            # Restarted, then ended at once: an ended row would hand out its signal's tail, to the next caller.
            stream.reset([caller.row])
            stream.end([caller.row])

    def put(self, caller: Caller, block: torch.Tensor, tag: object = None) -> None:
        """The caller's next block of `self.block` samples (float, `[block]`); `tag` names it in `consumed`."""
        if block.shape != (self.block,):
            raise ValueError(f"a block is {self.block} samples, got shape {tuple(block.shape)}")
        if not caller.started:  # its signal starts with its first block, not when it joined
            self.encoder_stream.reset([caller.row])
            caller.started = True
        if len(caller.inbox) >= self.max_queued_blocks:
            caller.inbox.popleft()
            caller.dropped_blocks += 1
        caller.inbox.append((tag, block))

    @torch.inference_mode()
    def tick(self) -> dict[Caller, torch.Tensor]:
        """Push one block of every caller (silence for the late ones); each caller's new output samples."""
        x = torch.zeros(self.slots, 1, self.block)
        callers = [caller for caller in self.callers.values() if caller.started]
        for caller in callers:
            if caller.inbox:
                caller.consumed, x[caller.row, 0] = caller.inbox.popleft()
            else:
                caller.consumed = None
                caller.late_blocks += 1
            caller.blocks += 1
        frames = self.encoder_stream.push(x)
        valid = self.encoder_stream.valid
        codes = self.decoder.quantize(frames)
        emb = self._embeddings(codes)
        outs, out_valid = [], []
        # A caller's decoder row starts at its first frame: split the push there, so it gets no earlier column.
        starts = {}
        for caller in callers:
            if not caller.decoding and valid[caller.row].any():
                starts.setdefault(int(valid[caller.row].nonzero()[0]), []).append(caller)
        edges = sorted({0, *starts, emb.shape[2]})
        for lo, hi in zip(edges, edges[1:]):
            for caller in starts.get(lo, []):
                self.decoder_stream.reset([caller.row])
                self.decoder_stream.set_speaker([caller.row], caller.speaker[None])
                caller.decoding = True
            outs.append(self.decoder_stream.push(emb[..., lo:hi]))
            out_valid.append(self.decoder_stream.valid)
        if not outs:  # no column at all this tick
            outs.append(self.decoder_stream.push(emb))
            out_valid.append(self.decoder_stream.valid)
        audio, ok = torch.cat(outs, dim=2), torch.cat(out_valid, dim=1)
        return {caller: audio[caller.row, 0, ok[caller.row].to(audio.device)].cpu() for caller in callers}

    def _embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        """Per row: without the residual codes ("convert"), or with them ("codec")."""
        convert = self.decoder.vq2emb(codes, False) if codes.shape[2] else self._empty(codes)
        codec_rows = [c.row for c in self.callers.values() if c.mode == "codec"]
        if codec_rows and codes.shape[2]:
            full = self.decoder.vq2emb(codes, True)
            convert[codec_rows] = full[codec_rows]
        return convert

    def _empty(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self.slots, self.decoder.in_channels, 0, device=codes.device)
