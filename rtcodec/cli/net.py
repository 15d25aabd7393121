"""`rtcodec send` / `rtcodec receive`: codes over UDP (the packets of `rtcodec.transport`), decoded live.

The receiver binds 127.0.0.1 unless told otherwise, takes packets from one sender only (`--peer`, or the
first that sends a valid packet), and writes the audio as it decodes it: whatever stops it, the output file
holds what was received.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import sys
import time
from collections.abc import Callable

import torch

from .. import audio
from ..config import HOP_LENGTH, SAMPLE_RATE
from ..pipelines import CodecReceiver, CodecSender, speaker_embedding
from ..transport import MAX_FRAMES_PER_PACKET, REQUEST, Receiver, Sender, packet, sequence_number
from .common import CommandError, add_model_options, check_output, load, port_number
from .live import _sounddevice, check_devices, device_latency
from .playback import PlaybackBuffer

DEFAULT_PORT = 50555
JITTER_SECONDS = 0.1  # a lost packet of 4 frames and as much again of lateness
ENROLL_SECONDS = 3.0  # microphone audio taken for the speaker embedding before the stream starts
RECEIVE_BYTES = 2048  # larger than any valid packet: a longer datagram is cut, then fails its CRC
MAX_BATCH = 32  # datagrams decoded in one push where they wait together (a receiver behind catches up)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {value}")
    return seconds


def _percent(value: str) -> float:
    try:
        percent = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {value!r}") from None
    if not 0 <= percent < 100:
        raise argparse.ArgumentTypeError(f"a loss is within [0, 100) percent, got {value}")
    return percent


def register(commands) -> None:
    c = commands.add_parser("send", help="stream the codes of a file or the microphone over UDP")
    c.add_argument("input", nargs="?", help="audio file to send (default: the microphone)")
    c.add_argument("--host", default="127.0.0.1", help="receiver address (default: 127.0.0.1)")
    c.add_argument("--port", type=port_number, default=DEFAULT_PORT, help=f"receiver port (default: {DEFAULT_PORT})")
    c.add_argument("--frames-per-packet", type=int, default=4, help="12.5 ms frames per packet (default: 4)")
    c.add_argument("--seconds", type=_seconds, default=10.0, help="how long to send from the microphone")
    c.add_argument("--no-pacing", action="store_true", help="send a file as fast as possible, not in real time")
    c.add_argument(
        "--save-input",
        metavar="PATH",
        help="write what the microphone gave, the enrollment first, to PATH (32-bit float in a .wav): the library's "
        "coding of it is what was sent, to replay a session or measure its delay",
    )
    c.add_argument(
        "--loss",
        type=_percent,
        default=0.0,
        metavar="PERCENT",
        help="drop this share of the packets at random, to hear and measure the receiver's concealment (default: 0)",
    )
    add_model_options(c, synthesis=False)
    c.set_defaults(run=run_send)

    c = commands.add_parser("receive", help="receive codes over UDP, decode them, play them or write a file")
    c.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"port to listen on (default: {DEFAULT_PORT})"
    )
    c.add_argument(
        "--bind",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every network)",
    )
    c.add_argument(
        "--peer",
        metavar="HOST[:PORT]",
        help="take packets only from this sender (default: the first that sends a valid packet)",
    )
    c.add_argument("--output", help="audio file to write as it is decoded (default: play on the speakers)")
    c.add_argument("--play", action="store_true", help="play on the speakers, also with --output")
    c.add_argument(
        "--jitter",
        type=_seconds,
        default=JITTER_SECONDS,
        metavar="SECONDS",
        help="audio held ahead when playing, so a late or lost packet plays without a gap, at that much more delay "
        f"(default: {JITTER_SECONDS:g})",
    )
    c.add_argument(
        "--device-latency",
        type=device_latency,
        default="high",
        metavar="low|high|SECONDS",
        help="the speakers' buffering, as PortAudio takes it (default: high)",
    )
    c.add_argument(
        "--wait",
        type=_seconds,
        help="seconds to wait for the first packet (default: no limit; start the receiver first, Ctrl-C stops it)",
    )
    c.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        help="once packets come, seconds without a valid one that end the signal (default: 10)",
    )
    add_model_options(c)
    c.set_defaults(run=run_receive)


RECEIVE_BUFFER = 8 << 20  # seconds of a stranger's flood while decoding stalls, before the sender's packets drop
SO_RCVBUFFORCE = 33  # Linux's; Python does not name it
END_SPACING_S = 0.02


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if sys.platform == "linux":  # beyond the system's cap (net.core.rmem_max) where the process may (CAP_NET_ADMIN)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            return sock
        except OSError:
            pass
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    return sock


def _resolve(host: str, port: int | None) -> tuple[str, int | None]:
    """An IPv4 address as socket.recvfrom reports it; CommandError for a name that does not resolve."""
    try:
        return socket.gethostbyname(host), port
    except OSError as err:
        raise CommandError(f"cannot resolve {host!r}: {err}") from None


def _peer(value: str) -> tuple[str, int | None]:
    host, _, port = value.rpartition(":") if ":" in value else (value, "", "")
    try:
        return _resolve(host, port_number(port) if port else None)
    except argparse.ArgumentTypeError as err:
        raise CommandError(f"--peer {value}: {err}") from None


def enrollment_blocks(block: int) -> int:
    """The microphone blocks of `block` samples that the sender takes for the speaker embedding."""
    return int(ENROLL_SECONDS * SAMPLE_RATE) // block


class _Microphone:
    """Blocks `[1, 1, block]` read from the microphone (blocking reads), each also written to `saved` if given;
    `overflows` counts the reads that found audio lost (the sender fell behind)."""

    def __init__(self, block: int, saved: audio.AudioWriter | None) -> None:
        self.block, self.saved, self.overflows = block, saved, 0
        self.latency: float | None = None  # the device's buffering in seconds, once open

    def blocks(self, count: int):
        sd = _sounddevice()
        with sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", blocksize=self.block) as mic:
            if self.latency is None:
                self.latency = mic.latency
                print(f"microphone: {1000 * mic.latency:.0f} ms of device buffering", file=sys.stderr)
            for _ in range(count):
                data, overflowed = mic.read(self.block)
                self.overflows += bool(overflowed)
                chunk = torch.from_numpy(data.copy()).view(1, 1, -1)
                if self.saved is not None:
                    self.saved.write(chunk)
                yield chunk


def run_send(args: argparse.Namespace, drop: Callable[[int], bool] = lambda seq: False) -> None:
    """`drop(seq)` discards chosen packets instead of sending them (tests use it to lose packets)."""
    if not 1 <= args.frames_per_packet <= MAX_FRAMES_PER_PACKET:
        raise CommandError(
            f"--frames-per-packet must be within 1..{MAX_FRAMES_PER_PACKET}, got {args.frames_per_packet}"
        )
    if args.save_input and args.input is not None:
        raise CommandError("--save-input keeps what the microphone gave; with an input file, that file is it")
    receiver = _resolve(args.host, args.port)
    block = HOP_LENGTH * args.frames_per_packet
    if args.save_input:
        check_output(args.save_input)
    with contextlib.ExitStack() as stack:  # the saved input holds what was sent, whatever stopped the sender
        saved = stack.enter_context(audio.AudioWriter(args.save_input, exact=True)) if args.save_input else None
        _send(args, receiver, _Microphone(block, saved), drop)
    if saved is not None and saved.samples:
        print(f"wrote {args.save_input}: {saved.samples / SAMPLE_RATE:.1f} s of the microphone", file=sys.stderr)


def _send(args: argparse.Namespace, receiver: tuple, microphone: _Microphone, drop: Callable[[int], bool]) -> None:
    block = microphone.block
    if args.input is None:  # the speaker embedding comes from the first seconds, the stream from what follows
        check_devices(_sounddevice(), needs_output=False)
        print(f"enrolling: speak for {ENROLL_SECONDS:g} s", file=sys.stderr)
        enrollment = torch.cat(list(microphone.blocks(enrollment_blocks(block))), dim=2)
        blocks, paced = microphone.blocks(int(args.seconds * SAMPLE_RATE) // block), False
    else:
        enrollment = audio.read(args.input)
        blocks = (enrollment[..., i : i + block] for i in range(0, enrollment.shape[2], block))
        paced = not args.no_pacing
    models = load(args, "v1")
    sock = _socket()
    sock.setblocking(False)
    # Connected, the socket takes datagrams from the receiver's address only, and reports the ICMP "port
    # unreachable" that answers a packet sent where nothing listens (as an error on the next call).
    sock.connect(receiver)
    refused = lost = 0
    chance = random.Random()

    def send(data: bytes) -> None:
        nonlocal refused, lost
        if drop(sequence_number(data)) or chance.random() * 100 < args.loss:
            lost += 1
            return
        try:
            sock.send(data)
        except ConnectionRefusedError:
            refused += 1

    sender = Sender(send, speaker_embedding(models.encoder, models.decoder, enrollment)[0], args.frames_per_packet)
    codec = CodecSender(models.encoder, models.decoder)
    print(f"sending to {args.host}:{args.port}", file=sys.stderr, flush=True)
    start, coding = time.monotonic(), 0.0
    for i, chunk in enumerate(blocks):
        began = time.perf_counter()
        codes = codec.push(chunk)
        coding += time.perf_counter() - began
        sender.push(codes)
        _answer_requests(sock, sender)
        # A file goes out in real time, as if spoken; unpaced, a short pause lets the receiver's socket drain.
        time.sleep(max(0.0, start + i * block / SAMPLE_RATE - time.monotonic()) if paced else 0.001)
    sender.push(codec.flush())
    sender.end(codec.padding, END_SPACING_S)
    print(
        f"sent {sender.frames} frames in {sender.seq} packets to {args.host}:{args.port}; "
        f"{sender.requests} speaker requests answered; {_compute(coding, sender.frames)}",
        file=sys.stderr,
    )
    if args.loss:
        print(f"--loss {args.loss:g}: dropped {lost} of the packets on purpose", file=sys.stderr)
    if microphone.overflows:
        lost_input = f"warning: the microphone overflowed {microphone.overflows} times (the sender fell behind)"
        print(lost_input, file=sys.stderr)
    if refused:
        print(
            f"warning: {refused} packets were refused: nothing was listening on {args.host}:{args.port} then "
            "(start `rtcodec receive` first)",
            file=sys.stderr,
        )


def _compute(seconds: float, frames: int) -> str:
    """The compute spent on `frames`, against their length: over 1 (RTF), the machine does not keep up."""
    audio_s = frames * HOP_LENGTH / SAMPLE_RATE
    return f"compute {seconds:.1f} s for {audio_s:.1f} s of audio (RTF {seconds / max(audio_s, 1e-9):.2f})"


def _answer_requests(sock: socket.socket, sender: Sender) -> None:
    """Speaker requests from the receiver (the socket is connected to it: nobody else's datagrams come)."""
    while True:
        try:
            data = sock.recv(RECEIVE_BYTES)
        except OSError:  # nothing more (BlockingIOError), or an ICMP error from a receiver not yet listening
            return
        sender.handle(data)


def run_receive(args: argparse.Namespace, ready: Callable[[], None] = lambda: None) -> None:
    """`ready()` is called once the socket listens (tests start the sender then)."""
    peer = _peer(args.peer) if args.peer else None
    play = args.play or not args.output
    if args.output:
        check_output(args.output)
    if play:
        check_devices(_sounddevice(), needs_input=False)
    models = load(args, "v1")
    sock = _socket()
    try:
        sock.bind((args.bind, args.port))
    except OSError as err:
        raise CommandError(f"cannot listen on {args.bind}:{args.port}: {err.strerror or err}") from None
    # The player first: a device that fails to open leaves no file behind.
    player = _Player(args.jitter, args.device_latency) if play else None
    writer = audio.AudioWriter(args.output) if args.output else None
    sinks = [sink for sink in (writer, player) if sink is not None]
    receiver = Receiver(
        start=lambda speaker: _Timed(CodecReceiver(models.decoder, speaker[None])),
        on_audio=lambda chunk: [sink.write(chunk) for sink in sinks],
        peer=peer,
        request=lambda address: sock.sendto(packet(REQUEST, 0), address),
        codebook_sizes=tuple(models.decoder.codebook_sizes),
    )
    print(f"listening on UDP {args.bind}:{args.port}", file=sys.stderr)
    ready()
    try:
        with sock, contextlib.ExitStack() as stack:
            for sink in sinks:
                stack.enter_context(sink)
            _receive(sock, receiver, args.wait, args.timeout)
    finally:  # the output holds what came, whatever stopped the receiver
        frames = receiver.decoded_frames
        compute = f"; {_compute(receiver.stream.seconds, frames)}" if receiver.stream is not None else ""
        print(f"received {frames} frames: {receiver.counts.summary(frames)}{compute}", file=sys.stderr)
        if receiver.origin:
            missed = receiver.origin * HOP_LENGTH / SAMPLE_RATE
            print(
                f"joined mid-stream: the first {receiver.origin} frames ({missed:.2f} s) were sent before the first "
                "packet that came, and are not in the output",
                file=sys.stderr,
            )
        if player is not None:
            skipped = player.buffer.skipped / SAMPLE_RATE
            print(f"played with {player.xruns} xruns, {skipped:.2f} s skipped to catch up", file=sys.stderr)
        if writer is not None and writer.samples:
            print(f"wrote {args.output}: {writer.samples / SAMPLE_RATE:.2f} s of audio")


def _receive(sock: socket.socket, receiver: Receiver, wait: float | None, timeout: float) -> None:
    """Hand datagrams to the receiver until the signal ends, `wait` seconds pass before the first valid packet
    (None: no limit), or `timeout` seconds pass without a valid packet from the peer after it (junk and
    strangers' packets keep it waiting no longer)."""
    last_valid = None  # when the last valid packet came
    start = time.monotonic()
    while not receiver.ended:
        limit, since = (wait, start) if last_valid is None else (timeout, last_valid)
        left = None if limit is None else since + limit - time.monotonic()
        if left is not None and left <= 0:
            if receiver.stream is None:
                what = "packet" if last_valid is None else "packet with a speaker embedding"
                raise CommandError(f"no {what} for {limit:g} s; is the sender running?")
            print(f"no packet for {timeout:g} s: ending the signal here", file=sys.stderr)
            receiver.finish()
            return
        sock.settimeout(left)
        try:
            data, source = sock.recvfrom(RECEIVE_BYTES)
        except TimeoutError:
            continue
        except OSError:  # e.g. an ICMP error for a REQUEST sent to a sender that has gone
            continue
        valid = receiver.handle(data, source, decode=False)
        for data, source in _waiting(sock):  # decoded with it, in one longer push: how a receiver catches up
            valid = receiver.handle(data, source, decode=False) or valid
        receiver.decode()
        if valid:
            last_valid = time.monotonic()


def _waiting(sock: socket.socket):
    """The datagrams that already wait in the socket, up to `MAX_BATCH - 1`, without waiting for more."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)  # not blocking (a socket with a timeout would wait that long for each)
    try:
        for _ in range(MAX_BATCH - 1):
            try:
                yield sock.recvfrom(RECEIVE_BYTES)
            except OSError:  # nothing waits (BlockingIOError), or an ICMP error
                return
    finally:
        sock.settimeout(timeout)


class _Timed:
    """A decoding stream that keeps the time its pushes took (`seconds`)."""

    def __init__(self, stream: CodecReceiver) -> None:
        self.stream, self.seconds = stream, 0.0

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        began = time.perf_counter()
        try:
            return self.stream.push(codes)
        finally:
            self.seconds += time.perf_counter() - began

    def flush(self, padding: int = 0) -> torch.Tensor:
        return self.stream.flush(padding)


class _Player:
    """Plays decoded chunks as they come: a device callback drains a `PlaybackBuffer` that holds `jitter` seconds
    ahead (a late packet or a lost one's concealment plays without a gap; a burst after a stall is skipped)."""

    def __init__(self, jitter: float, device_latency: str | float) -> None:
        sd = _sounddevice()
        slack = round(jitter * SAMPLE_RATE)
        self.buffer = PlaybackBuffer(start=max(slack, 1), slack=slack)
        try:
            self.stream = sd.OutputStream(
                samplerate=SAMPLE_RATE, channels=1, dtype="float32", latency=device_latency, callback=self._play
            )
        except sd.PortAudioError as err:
            raise CommandError(f"cannot open the speakers: {err}") from None
        self.stream.start()
        self.xruns = 0
        print(
            f"playing with {1000 * self.stream.latency:.0f} ms of device buffering and a {1000 * jitter:.0f} ms "
            "jitter buffer",
            file=sys.stderr,
        )

    def _play(self, outdata, frames, time_info, status) -> None:
        self.buffer.take(outdata[:, 0])

    def write(self, chunk: torch.Tensor) -> None:
        if chunk.numel():
            self.buffer.put(chunk.reshape(-1).float().cpu().numpy())

    def __enter__(self) -> _Player:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.xruns = self.buffer.xruns  # from here on, an empty buffer is the end, not an xrun
        if exc_type is None:  # what waits plays out first
            self.buffer.finish()
            deadline = time.monotonic() + self.buffer.samples.size / SAMPLE_RATE + 1.0
            while self.buffer.samples.size and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(self.stream.latency)
        self.stream.close()
