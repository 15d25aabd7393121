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
from .live import _sounddevice, check_devices

DEFAULT_PORT = 50555
ENROLL_SECONDS = 3.0  # microphone audio taken for the speaker embedding before the stream starts
RECEIVE_BYTES = 2048  # larger than any valid packet: a longer datagram is cut, then fails its CRC


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
        "--loss",
        type=_percent,
        default=0.0,
        metavar="PERCENT",
        help="drop this share of the packets at random, to hear and measure the receiver's concealment (default: 0)",
    )
    add_model_options(c)
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


def _microphone(seconds: float, block: int):
    """Blocks `[1, 1, block]` from the microphone for `seconds` (blocking reads)."""
    with _sounddevice().InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", blocksize=block) as mic:
        for _ in range(int(seconds * SAMPLE_RATE) // block):
            data, _ = mic.read(block)
            yield torch.from_numpy(data.copy()).view(1, 1, -1)


def run_send(args: argparse.Namespace, drop: Callable[[int], bool] = lambda seq: False) -> None:
    """`drop(seq)` discards chosen packets instead of sending them (tests use it to lose packets)."""
    if not 1 <= args.frames_per_packet <= MAX_FRAMES_PER_PACKET:
        raise CommandError(
            f"--frames-per-packet must be within 1..{MAX_FRAMES_PER_PACKET}, got {args.frames_per_packet}"
        )
    receiver = _resolve(args.host, args.port)
    block = HOP_LENGTH * args.frames_per_packet
    if args.input is None:  # the speaker embedding comes from the first seconds, the stream from what follows
        check_devices(_sounddevice(), needs_output=False)
        print(f"enrolling: speak for {ENROLL_SECONDS:g} s", file=sys.stderr)
        enrollment = torch.cat(list(_microphone(ENROLL_SECONDS, block)), dim=2)
        blocks, paced = _microphone(args.seconds, block), False
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
    start = time.monotonic()
    for i, chunk in enumerate(blocks):
        sender.push(codec.push(chunk))
        _answer_requests(sock, sender)
        # A file goes out in real time, as if spoken; unpaced, a short pause lets the receiver's socket drain.
        time.sleep(max(0.0, start + i * block / SAMPLE_RATE - time.monotonic()) if paced else 0.001)
    sender.push(codec.flush())
    sender.end(codec.padding, END_SPACING_S)
    print(
        f"sent {sender.frames} frames in {sender.seq} packets to {args.host}:{args.port}; "
        f"{sender.requests} speaker requests answered",
        file=sys.stderr,
    )
    if args.loss:
        print(f"--loss {args.loss:g}: dropped {lost} of the packets on purpose", file=sys.stderr)
    if refused:
        print(
            f"warning: {refused} packets were refused: nothing was listening on {args.host}:{args.port} then "
            "(start `rtcodec receive` first)",
            file=sys.stderr,
        )


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
    player = _Player() if play else None  # first: a device that fails to open leaves no file behind
    writer = audio.AudioWriter(args.output) if args.output else None
    sinks = [sink for sink in (writer, player) if sink is not None]
    receiver = Receiver(
        start=lambda speaker: CodecReceiver(models.decoder, speaker[None]),
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
        print(f"received {frames} frames: {receiver.counts.summary(frames)}", file=sys.stderr)
        if receiver.origin:
            missed = receiver.origin * HOP_LENGTH / SAMPLE_RATE
            print(
                f"joined mid-stream: the first {receiver.origin} frames ({missed:.2f} s) were sent before the first "
                "packet that came, and are not in the output",
                file=sys.stderr,
            )
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
        if receiver.handle(data, source):
            last_valid = time.monotonic()


class _Player:
    """Plays decoded chunks as they come, through a blocking sounddevice output stream."""

    def __init__(self) -> None:
        self.stream = _sounddevice().OutputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32")
        self.stream.start()

    def write(self, chunk: torch.Tensor) -> None:
        if chunk.numel():
            self.stream.write(chunk.reshape(-1, 1).cpu().numpy())

    def __enter__(self) -> _Player:
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()
