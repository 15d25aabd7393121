"""`rtcodec send` / `rtcodec receive`: codes over UDP, decoded live on the other side.

Packets (big-endian): magic `RTFP`, kind (1 byte), sequence number (4), then
- kind 1, speaker: the embedding, 256 fp16 values;
- kind 2, codes: first frame index (4), frame count (1), the frames' codes packed at 10 bits as in `.fac`;
- kind 3, speaker request (receiver to sender): nothing;
- kind 4, end: the total frame count (4);
and a CRC32 of all of it. The speaker embedding goes first and again whenever the receiver asks (it asks
while it has codes but no speaker). A gap in frame indices is a loss: the receiver repeats the last frame
it has for each missing one and counts them; a packet older than what was decoded is late and dropped.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import audio
from ..bitstream import CODEBOOKS, BitstreamError, pack_frames, pack_speaker, unpack_frames, unpack_speaker
from ..config import HOP_LENGTH, SAMPLE_RATE
from ..pipelines import CodecReceiver, CodecSender, speaker_embedding
from .common import CommandError, add_model_options, load

MAGIC = b"RTFP"
SPEAKER, CODES, REQUEST, END = 1, 2, 3, 4
HEAD = struct.Struct(">4sBI")
CODES_HEAD = struct.Struct(">IB")
CRC = struct.Struct(">I")
DEFAULT_PORT = 50555
END_REPEATS = 3  # the end packet goes out this often: losing it would leave the receiver waiting
ENROLL_SECONDS = 3.0  # microphone audio taken for the speaker embedding before the stream starts


def packet(kind: int, seq: int, payload: bytes = b"") -> bytes:
    body = HEAD.pack(MAGIC, kind, seq) + payload
    return body + CRC.pack(zlib.crc32(body))


def parse(data: bytes) -> tuple[int, int, bytes]:
    """(kind, sequence number, payload) of a packet; BitstreamError if it is damaged."""
    if len(data) < HEAD.size + CRC.size or zlib.crc32(data[:-4]) != CRC.unpack_from(data, len(data) - 4)[0]:
        raise BitstreamError("damaged packet")
    magic, kind, seq = HEAD.unpack_from(data)
    if magic != MAGIC or kind not in (SPEAKER, CODES, REQUEST, END):
        raise BitstreamError("not an rtcodec packet")
    return kind, seq, data[HEAD.size : -4]


def codes_payload(first: int, codes: torch.Tensor) -> bytes:
    """Codes `[6, k]` of frames first .. first + k - 1."""
    return CODES_HEAD.pack(first, codes.shape[1]) + pack_frames(codes)


class Sender:
    """Packs the codes of a `CodecSender` into packets; `send` is any callable taking bytes (a socket's)."""

    def __init__(self, send: Callable[[bytes], None], speaker: torch.Tensor, frames_per_packet: int = 4) -> None:
        self.send, self.speaker, self.frames_per_packet = send, speaker, frames_per_packet
        self.seq = self.frames = 0
        self.pending = torch.zeros(CODEBOOKS, 0, dtype=torch.long)
        self.send_speaker()

    def _next(self) -> int:
        self.seq += 1
        return self.seq - 1

    def send_speaker(self) -> None:
        self.send(packet(SPEAKER, self._next(), pack_speaker(self.speaker)))

    def push(self, codes: torch.Tensor) -> None:
        """Codes `[6, 1, k]` of the next frames."""
        self.pending = torch.cat([self.pending, codes[:, 0].cpu()], dim=1)
        while self.pending.shape[1] >= self.frames_per_packet:
            self._send_codes(self.frames_per_packet)

    def _send_codes(self, count: int) -> None:
        self.send(packet(CODES, self._next(), codes_payload(self.frames, self.pending[:, :count])))
        self.frames += count
        self.pending = self.pending[:, count:]

    def end(self) -> None:
        if self.pending.shape[1]:
            self._send_codes(self.pending.shape[1])
        end = packet(END, self._next(), struct.pack(">I", self.frames))
        for _ in range(END_REPEATS):
            self.send(end)


@dataclass
class Receiver:
    """Decodes packets as they come: conceals lost frames by repeating the last one, drops late ones."""

    decoder: torch.nn.Module
    request: Callable[[], None] = lambda: None
    codec: CodecReceiver | None = None  # once the speaker embedding has come
    next_frame: int = 0
    last: torch.Tensor | None = None
    lost_frames: int = 0
    late_packets: int = 0
    damaged_packets: int = 0
    ended: bool = False
    waiting: list = field(default_factory=list)  # codes that came before the speaker
    out: list = field(default_factory=list)

    def handle(self, data: bytes) -> None:
        try:
            kind, _, payload = parse(data)
        except BitstreamError:
            self.damaged_packets += 1
            return
        if kind == SPEAKER and self.codec is None:
            self.codec = CodecReceiver(self.decoder, unpack_speaker(payload)[None])
            for first, codes in self.waiting:
                self._codes(first, codes)
            self.waiting.clear()
        elif kind == CODES:
            first, count = CODES_HEAD.unpack_from(payload)
            codes = unpack_frames(payload[CODES_HEAD.size :], count)
            if self.codec is None:
                self.waiting.append((first, codes))
                self.request()
            else:
                self._codes(first, codes)
        elif kind == END:
            self.finish(struct.unpack(">I", payload)[0])

    def finish(self, total: int | None = None) -> None:
        """The signal ended after `total` frames (None: as many as arrived); decode what is left."""
        if self.ended:
            return
        if self.codec is not None:
            self._conceal(0 if total is None else total - self.next_frame)
            self.out.append(self.codec.flush())
        self.ended = True

    def _codes(self, first: int, codes: torch.Tensor) -> None:
        if first < self.next_frame:
            self.late_packets += 1
            return
        self._conceal(first - self.next_frame)
        self._decode(codes)

    def _conceal(self, missing: int) -> None:
        if missing <= 0:
            return
        self.lost_frames += missing
        filler = self.last if self.last is not None else torch.zeros(CODEBOOKS, 1, dtype=torch.long)
        self._decode(filler.expand(-1, missing))

    def _decode(self, codes: torch.Tensor) -> None:
        self.out.append(self.codec.push(codes[:, None]))
        self.next_frame += codes.shape[1]
        self.last = codes[:, -1:]

    def audio(self) -> torch.Tensor:
        return torch.cat(self.out, dim=2) if self.out else torch.zeros(1, 1, 0)


def register(commands) -> None:
    c = commands.add_parser("send", help="stream the codes of a file or the microphone over UDP")
    c.add_argument("input", nargs="?", help="audio file to send (default: the microphone)")
    c.add_argument("--host", default="127.0.0.1", help="receiver address (default: 127.0.0.1)")
    c.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"receiver port (default: {DEFAULT_PORT})")
    c.add_argument("--frames-per-packet", type=int, default=4, help="12.5 ms frames per packet (default: 4)")
    c.add_argument("--seconds", type=float, default=10.0, help="how long to send from the microphone")
    c.add_argument("--no-pacing", action="store_true", help="send a file as fast as possible, not in real time")
    add_model_options(c)
    c.set_defaults(run=run_send)

    c = commands.add_parser("receive", help="receive codes over UDP, decode them, play them or write a file")
    c.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default: {DEFAULT_PORT})")
    c.add_argument("--output", help="audio file to write (default: play on the speakers)")
    c.add_argument("--timeout", type=float, default=10.0, help="seconds without packets before giving up")
    add_model_options(c)
    c.set_defaults(run=run_receive)


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    return sock


def _microphone(seconds: float, block: int):
    """Blocks `[1, 1, block]` from the microphone for `seconds` (blocking reads)."""
    from .live import _sounddevice

    with _sounddevice().InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", blocksize=block) as mic:
        for _ in range(int(seconds * SAMPLE_RATE) // block):
            data, _ = mic.read(block)
            yield torch.from_numpy(data.copy()).view(1, 1, -1)


def run_send(args: argparse.Namespace, drop: Callable[[int], bool] = lambda seq: False) -> None:
    """`drop(seq)` discards chosen packets instead of sending them (tests use it to lose packets)."""
    if not 1 <= args.frames_per_packet <= 255:
        raise CommandError(f"--frames-per-packet must be within 1..255, got {args.frames_per_packet}")
    block = HOP_LENGTH * args.frames_per_packet
    if args.input is None:  # the speaker embedding comes from the first seconds, the stream from what follows
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

    def send(data: bytes) -> None:
        if not drop(HEAD.unpack_from(data)[2]):
            sock.sendto(data, (args.host, args.port))

    sender = Sender(send, speaker_embedding(models.encoder, models.decoder, enrollment)[0], args.frames_per_packet)
    codec = CodecSender(models.encoder, models.decoder)
    start = time.monotonic()
    for i, chunk in enumerate(blocks):
        sender.push(codec.push(chunk))
        _answer_requests(sock, sender)
        # A file goes out in real time, as if spoken; unpaced, a short pause lets the receiver's socket drain.
        time.sleep(max(0.0, start + i * block / SAMPLE_RATE - time.monotonic()) if paced else 0.001)
    sender.push(codec.flush())
    sender.end()
    print(f"sent {sender.frames} frames in {sender.seq} packets to {args.host}:{args.port}", file=sys.stderr)


def _answer_requests(sock: socket.socket, sender: Sender) -> None:
    while True:
        try:
            data = sock.recv(2048)
        except (BlockingIOError, OSError):
            return
        try:
            if parse(data)[0] == REQUEST:
                sender.send_speaker()
        except BitstreamError:
            pass


def run_receive(args: argparse.Namespace, ready: Callable[[], None] = lambda: None) -> None:
    """`ready()` is called once the socket listens (tests start the sender then)."""
    models = load(args, "v1")
    sock = _socket()
    sock.bind(("0.0.0.0", args.port))
    sock.settimeout(args.timeout)
    sender_address = None
    receiver = Receiver(models.decoder, request=lambda: sock.sendto(packet(REQUEST, 0), sender_address))
    print(f"listening on UDP port {args.port}", file=sys.stderr)
    ready()
    player = None if args.output else _Player()
    try:
        while not receiver.ended:
            before = len(receiver.out)
            try:
                data, sender_address = sock.recvfrom(65536)
            except TimeoutError:
                if receiver.codec is None:
                    raise CommandError(f"no packet for {args.timeout:g} s; is the sender running?") from None
                print(f"no packet for {args.timeout:g} s: ending the signal here", file=sys.stderr)
                receiver.finish()
            else:
                receiver.handle(data)
            if player:  # what the timeout's finish decoded is played too
                player.play(receiver.out[before:])
    finally:
        sock.close()
    print(
        f"received {receiver.next_frame} frames: {receiver.lost_frames} lost and concealed, "
        f"{receiver.late_packets} late packets, {receiver.damaged_packets} damaged",
        file=sys.stderr,
    )
    if args.output:
        audio.write(args.output, receiver.audio())


class _Player:
    """Plays decoded chunks as they come, through a blocking sounddevice output stream."""

    def __init__(self) -> None:
        from .live import _sounddevice

        self.stream = _sounddevice().OutputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32")
        self.stream.start()

    def play(self, chunks: list[torch.Tensor]) -> None:
        for chunk in chunks:
            if chunk.numel():
                self.stream.write(chunk.reshape(-1, 1).cpu().numpy())
