"""`rtcodec live`: microphone -> streaming voice conversion -> speakers, with sounddevice."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from .. import audio
from ..config import HOP_LENGTH, SAMPLE_RATE
from ..pipelines import VoiceConversion
from .common import CommandError, add_model_options, load


def register(commands) -> None:
    c = commands.add_parser("live", help="live voice conversion from the microphone to the speakers")
    c.add_argument("--reference", help="a few seconds of the target voice (audio file)")
    c.add_argument("--list-devices", action="store_true", help="list the audio devices and exit")
    c.add_argument("--input-device", help="input device number or name (default: the system's)")
    c.add_argument("--output-device", help="output device number or name (default: the system's)")
    c.add_argument(
        "--lookahead",
        type=int,
        metavar="SAMPLES",
        help="lookahead of the encoder and of the decoder stream, in samples (default: exact, about 680 ms in all)",
    )
    c.add_argument("--hops-per-block", type=int, default=4, help="12.5 ms hops per audio block (default: 4)")
    c.add_argument(
        "--compile",
        action="store_true",
        help="compile the steady hop step with torch.compile (CPU, needs a C++ compiler; about a minute the first "
        "time): about 20%% less compute per block, for small blocks on a slow CPU",
    )
    add_model_options(c)
    c.set_defaults(run=run_live)


class LiveConverter:
    """The audio callback's work: a block of input samples in, a block of converted samples out.

    Converted audio goes through a FIFO: silence until a whole block is ready, then a block per callback.
    A callback that finds the FIFO short after that (the computer did not keep up) counts an xrun.
    """

    def __init__(self, pipeline: VoiceConversion, block: int) -> None:
        self.pipeline, self.block = pipeline, block
        self.fifo = np.zeros(0, dtype=np.float32)
        self.blocks = self.xruns = 0
        self.started_block: int | None = None
        self.compute_s = 0.0

    def process(self, block_in: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        converted = self.pipeline.push(torch.from_numpy(np.ascontiguousarray(block_in, np.float32)).view(1, 1, -1))
        self.fifo = np.concatenate([self.fifo, converted.reshape(-1).cpu().numpy()])
        self.compute_s += time.perf_counter() - start
        if self.started_block is None and self.fifo.size >= self.block:
            self.started_block = self.blocks
        out = np.zeros(self.block, dtype=np.float32)
        if self.started_block is not None:
            take = min(self.block, self.fifo.size)
            out[:take], self.fifo = self.fifo[:take], self.fifo[take:]
            self.xruns += take < self.block
        self.blocks += 1
        return out

    def callback(self, indata, outdata, frames, time_info, status) -> None:
        """A sounddevice Stream callback (mono)."""
        if status:  # the device dropped input or ran out of output
            self.xruns += 1
        outdata[:, 0] = self.process(indata[:, 0])

    def status_line(self, algorithmic_ms: float) -> str:
        block_ms = 1000 * self.block / SAMPLE_RATE
        compute_ms = 1000 * self.compute_s / max(self.blocks, 1)
        return (
            f"latency {algorithmic_ms + block_ms:.0f} ms ({algorithmic_ms:.0f} lookahead + {block_ms:.1f} block) | "
            f"compute {compute_ms:.1f} ms per block (RTF {compute_ms / block_ms:.2f}) | xruns {self.xruns}"
        )


def _sounddevice():
    try:
        import sounddevice
    except OSError as err:  # the module is there but the PortAudio library is not
        raise CommandError(f"no audio I/O: {err} (on Debian/Ubuntu: apt install libportaudio2)") from None
    return sounddevice


def _device(value: str | None):
    return int(value) if value is not None and value.isdigit() else value


def run_live(args: argparse.Namespace) -> None:
    sd = _sounddevice()
    if args.list_devices:
        print(sd.query_devices())
        return
    if not args.reference:
        raise CommandError("live needs --reference REF.wav (the target voice)")
    if args.hops_per_block < 1:
        raise CommandError(f"--hops-per-block must be at least 1, got {args.hops_per_block}")
    reference = audio.read(args.reference)
    models = load(args, "v1")
    lookahead = (args.lookahead, args.lookahead)
    pipeline = VoiceConversion(models.encoder, models.decoder, reference, lookahead=lookahead, compile=args.compile)
    block = args.hops_per_block * HOP_LENGTH
    if args.compile:
        print("compiling the hop step (about a minute the first time, seconds once cached)...", file=sys.stderr)
    pipeline.warm_up(block)  # compiles or captures before the audio starts, not in its callback
    converter = LiveConverter(pipeline, block)
    print(f"converting to the voice of {args.reference}; Ctrl-C stops", file=sys.stderr)
    stream = sd.Stream(
        samplerate=SAMPLE_RATE,
        blocksize=block,
        channels=1,
        dtype="float32",
        device=(_device(args.input_device), _device(args.output_device)),
        callback=converter.callback,
    )
    try:
        with stream:
            while True:
                time.sleep(0.5)
                print("\r" + converter.status_line(pipeline.latency_ms), end="", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    print(f"\nstopped after {converter.blocks * block / SAMPLE_RATE:.1f} s, {converter.xruns} xruns", file=sys.stderr)
