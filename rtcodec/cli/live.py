"""`rtcodec live`: microphone -> streaming voice conversion -> speakers, with sounddevice.

The audio callback never computes: it gathers the microphone's audio into blocks for a worker thread and plays
what the worker has converted, silence until the first converted block is ready. From then on, a callback that
finds less than a block ready is an xrun (the computer did not keep up: a gap of silence is played). Whatever
falls behind is dropped rather than waited for, so the delay stays what the status line says: the oldest
microphone block when more than `MAX_BACKLOG_SECONDS` of them wait for the worker, and converted audio beyond a
block when the worker catches up in a burst. Both are counted and shown while it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import queue
import signal
import sys
import threading
import time

import numpy as np
import torch

from .. import audio, realtime
from ..backends import BACKENDS, default_threads
from ..config import HOP_LENGTH, SAMPLE_RATE
from ..pipelines import LATENCY_PRESETS, VoiceConversion, check_reference
from ..streaming import StreamOptions
from .common import CommandError, add_model_options, check_output, load
from .playback import PlaybackBuffer
from .virtual_mic import DEFAULT_NAME, VirtualMic, VirtualMicError

MAX_BACKLOG_SECONDS = 0.2  # of microphone blocks waiting for the worker (at least two blocks)
DEFAULT_HOPS_PER_BLOCK = 4  # a preset named without --hops-per-block: 50 ms blocks
# What each preset costs: python -m bench.latency_presets, 4 hops per block, 2-core Intel Xeon (README).
PRESET_HELP = {
    "exact": "683 ms of lookahead, the offline output exactly, the least compute",
    "balanced": "338 ms, no measurable change with test weights, 2.2x the compute of exact at 4-hop blocks",
    "low": "113 ms, about a fifth of the codes change, 2.4x the compute of exact at 4-hop blocks",
}


def register(commands) -> None:
    c = commands.add_parser("live", help="live voice conversion from the microphone to the speakers")
    c.add_argument("--reference", help="a few seconds of the target voice (audio file)")
    c.add_argument("--list-devices", action="store_true", help="list the audio devices and exit")
    c.add_argument("--input-device", help="input device number or name (default: the system's)")
    c.add_argument("--output-device", help="output device number or name (default: the system's)")
    c.add_argument(
        "--latency",
        choices=["auto", *LATENCY_PRESETS],
        default="auto",
        help="; ".join(f"{name}: {text}" for name, text in PRESET_HELP.items())
        + "; auto (the default): times this machine for a few seconds and takes the lowest of these that keeps up",
    )
    c.add_argument(
        "--lookahead",
        type=int,
        metavar="SAMPLES",
        help="lookahead of the encoder and of the decoder stream in samples, instead of a --latency preset",
    )
    c.add_argument(
        "--hops-per-block",
        type=int,
        help="12.5 ms hops per audio block (default: with --latency auto the fewest that keep up, else 4)",
    )
    c.add_argument(
        "--device-latency",
        type=device_latency,
        default="high",
        metavar="low|high|SECONDS",
        help="the audio devices' buffering, as PortAudio takes it: low risks device errors on a busy machine; the "
        "status line shows what the devices gave (default: high)",
    )
    c.add_argument(
        "--virtual-mic",
        nargs="?",
        const=DEFAULT_NAME,
        metavar="NAME",
        help=f"play the converted voice into a new microphone, NAME_mic (default name: {DEFAULT_NAME}), that other "
        "programs can pick, instead of the speakers; PulseAudio or PipeWire, removed on exit",
    )
    c.add_argument(
        "--pipelined",
        action=argparse.BooleanOptionalAction,
        help="encode each block on a thread of its own while the block before is decoded: two cores do a block's "
        "work, which comes out a block later (default: with --latency auto, where a preset keeps up only so; "
        "else off)",
    )
    c.add_argument(
        "--save-input",
        metavar="PATH",
        help="write what the microphone gave, block by block as converted, to PATH (32-bit float in a .wav): the "
        "library's conversion of it is what live played, to replay a session or measure its delay",
    )
    c.add_argument(
        "--threads",
        type=int,
        help="CPU threads for the conversion, for each stage when pipelined (default: one fewer than the machine's "
        "cores). All of them help only "
        "on an idle machine: beside other work, each of a hop's hundreds of small operations waits for a "
        "descheduled thread (2 cores and one busy process: 575 ms a hop on 2 threads, 21 ms on 1)",
    )
    c.add_argument(
        "--backend",
        choices=BACKENDS,
        help="how the steady hop step runs: eager (op by op; the CPU default), compile (torch.compile: needs a C++ "
        "compiler, about a minute the first time), onnxruntime (pip install 'rtcodec[onnx]'), cuda-graph (the "
        "CUDA default)",
    )
    add_model_options(c)
    c.set_defaults(run=run_live)


def device_latency(value: str) -> str | float:
    """An argparse type: PortAudio's "low" or "high", or seconds."""
    if value in ("low", "high"):
        return value
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"low, high or a number of seconds, got {value!r}") from None
    if not 0 < seconds <= 2:
        raise argparse.ArgumentTypeError(f"a device latency is within (0, 2] seconds, got {value}")
    return seconds


class LiveConverter:
    """Gathers the microphone's audio into blocks and converts them on a worker thread; `callback` (sounddevice's)
    only moves audio. The devices run in periods of a block: in one-hop periods PortAudio states less buffering
    (88 ms against 250 at 50 ms blocks), but the delay measured through PulseAudio was 2.1 to 2.6 s longer
    (bench/README.md)."""

    def __init__(self, pipeline: VoiceConversion, block: int, saved: audio.AudioWriter | None = None) -> None:
        self.pipeline, self.block, self.saved = pipeline, block, saved
        backlog = max(2, math.ceil(MAX_BACKLOG_SECONDS * SAMPLE_RATE / block))
        self.inbox: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=backlog)
        self.gathered = np.zeros(0, dtype=np.float32)  # microphone samples short of a block
        self.playback = PlaybackBuffer(start=block)  # converted audio not played yet: from a whole block, no slack
        self.blocks = self.converted = self.dropped_input = self.device_errors = 0
        self.compute_s = 0.0
        self.worker = threading.Thread(target=self._work, name="rtcodec-live-worker", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.inbox.put(None)
        self.worker.join()

    def wait_idle(self) -> None:
        """Until every block handed over so far is converted (tests drive the callback with it)."""
        self.inbox.join()

    def callback(self, indata, outdata, frames, time_info, status) -> None:
        """A sounddevice Stream callback (mono): never waits and never computes."""
        if status:  # the device itself dropped input or ran out of output
            self.device_errors += 1
        self.gathered = np.concatenate([self.gathered, indata[:, 0]])  # a copy: the device reuses its buffer
        while self.gathered.size >= self.block:
            block, self.gathered = self.gathered[: self.block], self.gathered[self.block :]
            self.blocks += 1
            if self.inbox.full():  # the oldest goes: the newest is what keeps the delay where it was
                with contextlib.suppress(queue.Empty):
                    self.inbox.get_nowait()
                    self.inbox.task_done()
                    self.dropped_input += 1
            with contextlib.suppress(queue.Full):  # only the worker takes from it, so there is room now
                self.inbox.put_nowait(block)
        self.playback.take(outdata[:, 0])

    def _work(self) -> None:
        while (block := self.inbox.get()) is not None:
            if self.error is not None:  # the main thread stops; drain until it does
                self.inbox.task_done()
                continue
            try:
                if self.saved is not None:
                    self.saved.write(torch.from_numpy(block))
                start = time.perf_counter()
                converted = self.pipeline.push(torch.from_numpy(block).view(1, 1, -1)).reshape(-1).float().cpu().numpy()
                self.compute_s += time.perf_counter() - start
                self.converted += 1
                self.playback.put(converted)  # a worker catching up: the blocks before this one are skipped
            except BaseException as err:  # shown by the main thread, which stops
                self.error = err
            finally:
                self.inbox.task_done()
        self.inbox.task_done()

    @property
    def xruns(self) -> int:
        return self.playback.xruns

    @property
    def dropped(self) -> int:
        """Blocks dropped: microphone blocks that waited too long, converted ones skipped to catch up."""
        return self.dropped_input + self.playback.skipped // self.block

    @property
    def blocks_held(self) -> int:
        """Blocks between a block's arrival and its output: its own, and the one before where pipelined."""
        return 1 + self.pipeline.pipelined

    def latency_ms(self, algorithmic_ms: float, device_ms: float) -> float:
        """The whole latency: the pipeline's lookahead, the blocks held, and the devices' buffers."""
        return algorithmic_ms + 1000 * self.blocks_held * self.block / SAMPLE_RATE + device_ms

    @property
    def queued_ms(self) -> float:
        """The delay now beyond the latency stated: microphone blocks waiting for the worker, and converted audio
        waiting to play beyond the block held (at most `MAX_BACKLOG_SECONDS` and a block: the rest is dropped)."""
        beyond = self.inbox.qsize() * self.block + max(0, self.playback.samples.size - self.block)
        return 1000 * beyond / SAMPLE_RATE

    def status_line(self, algorithmic_ms: float, device_ms: float = 0.0) -> str:
        block_ms = 1000 * self.block / SAMPLE_RATE
        compute_ms = 1000 * self.compute_s / max(self.converted, 1)
        latency = self.latency_ms(algorithmic_ms, device_ms)
        blocks = f"{self.blocks_held} x {block_ms:.1f} blocks" if self.blocks_held > 1 else f"{block_ms:.1f} block"
        return (
            f"latency {latency:.0f} ms ({algorithmic_ms:.0f} lookahead + {blocks} + {device_ms:.0f} devices) | "
            f"queued {self.queued_ms:.0f} ms | compute {compute_ms:.1f} ms per block (RTF {compute_ms / block_ms:.2f}) "
            f"| xruns {self.xruns} | dropped {self.dropped} | device errors {self.device_errors}"
        )


def _sounddevice():
    try:
        import sounddevice
    except OSError as err:  # the module is there but the PortAudio library is not
        raise CommandError(f"no audio I/O: {err} (on Debian/Ubuntu: apt install libportaudio2)") from None
    return sounddevice


def _device(value: str | None):
    return int(value) if value is not None and value.isdigit() else value


def check_devices(sd, input_device=None, output_device=None, *, needs_input=True, needs_output=True) -> None:
    """The devices a command needs exist and take 16 kHz mono float32: one line if not, before any loading."""
    if not len(sd.query_devices()):
        raise CommandError("no audio devices found (is a sound card or an audio server such as PulseAudio there?)")
    settings = {"channels": 1, "dtype": "float32", "samplerate": SAMPLE_RATE}
    try:
        if needs_input:
            sd.check_input_settings(device=_device(input_device), **settings)
        if needs_output:
            sd.check_output_settings(device=_device(output_device), **settings)
    except (sd.PortAudioError, ValueError) as err:
        raise CommandError(f"audio device: {err} (rtcodec live --list-devices shows them)") from None


def run_live(args: argparse.Namespace) -> None:
    wants_mic = args.virtual_mic is not None and not args.list_devices
    # SIGTERM ends the session as Ctrl-C does, so the devices are closed and a virtual microphone removed; and so
    # does SIGINT where it came in ignored (a job a shell script started in the background).
    main = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        with VirtualMic(args.virtual_mic) if wants_mic else contextlib.nullcontext():  # before PortAudio starts
            _run_live(args)
    except VirtualMicError as err:
        raise CommandError(str(err)) from None
    finally:
        if main:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _run_live(args: argparse.Namespace) -> None:
    sd = _sounddevice()
    if args.list_devices:
        devices = sd.query_devices()
        print(devices if len(devices) else "no audio devices found")
        return
    _check_options(args)
    torch.set_num_threads(args.threads or default_threads())
    reference = audio.read(args.reference)
    check_reference(reference, args.reference)
    check_devices(sd, args.input_device, args.output_device)
    models = load(args, "v1")
    setting, hops = realtime.LiveSetting(args.latency, bool(args.pipelined)), args.hops_per_block
    if args.lookahead is not None:  # the status line's label names it in place of the preset
        setting = realtime.LiveSetting(f"lookahead {args.lookahead}", setting.pipelined)
    elif args.latency == "auto":
        cost = " and compiling or exporting each (minutes)" if args.backend in ("compile", "onnxruntime") else ""
        print(f"--latency auto: timing the presets on this machine{cost}...", file=sys.stderr, flush=True)
        tried = realtime.auto_settings(args.pipelined, os.cpu_count() or 1)
        fit = realtime.choose_latency(models.encoder, models.decoder, reference, tried, args.backend, hops)
        print(realtime.describe_latency(fit, tried), file=sys.stderr, flush=True)
        setting, hops = fit.setting, fit.hops
    lookahead = LATENCY_PRESETS[setting.preset] if args.lookahead is None else (args.lookahead, args.lookahead)
    options = StreamOptions(lookahead=lookahead, backend=args.backend)
    pipeline = VoiceConversion(models.encoder, models.decoder, reference, options, pipelined=setting.pipelined)
    block = (hops or DEFAULT_HOPS_PER_BLOCK) * HOP_LENGTH
    slow = {"compile": "compiling", "onnxruntime": "exporting"}
    note = f" and {slow[args.backend]} the hop step (up to a minute)" if args.backend in slow else ""
    print(f"warming up{note}...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    pipeline.warm_up(block)  # compiles or captures before the audio starts, not while it plays
    print(f"warmed up in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    saved = audio.AudioWriter(args.save_input, exact=True) if args.save_input else None
    try:
        _converse(sd, args, LiveConverter(pipeline, block, saved), f"{setting}")
    finally:
        if saved is not None:
            saved.close()  # what was converted so far, whatever stopped it
            print(f"wrote {args.save_input}: {saved.samples / SAMPLE_RATE:.1f} s of the microphone", file=sys.stderr)


def _check_options(args: argparse.Namespace) -> None:
    if not args.reference:
        raise CommandError("live needs --reference REF.wav (the target voice)")
    if args.hops_per_block is not None and args.hops_per_block < 1:
        raise CommandError(f"--hops-per-block must be at least 1, got {args.hops_per_block}")
    if args.threads is not None and args.threads < 1:
        raise CommandError(f"--threads must be at least 1, got {args.threads}")
    if args.save_input:
        check_output(args.save_input, args.reference)


def _converse(sd, args: argparse.Namespace, converter: LiveConverter, label: str) -> None:
    """Runs the devices and the converter until Ctrl-C (or an error), showing the status line labelled `label`."""
    pipeline, block = converter.pipeline, converter.block
    print(f"converting to the voice of {args.reference}; Ctrl-C stops", file=sys.stderr)
    try:
        stream = sd.Stream(
            samplerate=SAMPLE_RATE,
            blocksize=block,
            channels=1,
            dtype="float32",
            device=(_device(args.input_device), _device(args.output_device)),
            latency=args.device_latency,
            callback=converter.callback,
        )
    except sd.PortAudioError as err:
        raise CommandError(f"cannot open the audio devices: {err}") from None
    converter.start()
    latency_in, latency_out = stream.latency  # the devices' buffering, as PortAudio reports it
    device_ms = 1000 * (latency_in + latency_out)
    print(
        f"audio devices: {1000 * latency_in:.0f} ms in + {1000 * latency_out:.0f} ms out of buffering "
        f"(--device-latency {args.device_latency}); latency in all "
        f"{converter.latency_ms(pipeline.latency_ms, device_ms):.0f} ms",
        file=sys.stderr,
    )
    try:
        with stream:
            while converter.error is None:
                time.sleep(0.5)
                line = converter.status_line(pipeline.latency_ms, device_ms)
                print(f"\r{label} | {line}", end="", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    except sd.PortAudioError as err:
        raise CommandError(f"audio device failed: {err}") from None
    finally:
        converter.stop()
    if converter.error is not None:
        raise converter.error
    seconds = converter.blocks * block / SAMPLE_RATE
    print(
        f"\nstopped after {seconds:.1f} s, {converter.xruns} xruns, {converter.dropped} dropped blocks",
        file=sys.stderr,
    )
