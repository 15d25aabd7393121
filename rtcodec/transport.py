"""Codes over a lossy datagram network: the packet format, a sender that packs codes into packets, and a
receiver that decodes them as they come, conceals losses, and treats every byte it is given as hostile.

Packets (big-endian): magic `RTFP`, kind (1 byte), sequence number (4), the payload, and a CRC32 of all
before it (4). The payload of each kind, checked to the byte:
- SPEAKER (1): the speaker embedding, 256 finite fp16 values (512 bytes);
- CODES (2): first frame index (4), frame count 1..255 (1), the frames' codes packed at 10 bits as in
  `.fac` (exactly ceil(60 * count / 8) bytes);
- REQUEST (3, receiver to sender): empty; asks for the speaker embedding again;
- END (4): the signal's total frame count (4), and the samples of silence that completed its last frame
  (1, below 200: the receiver drops them, so the audio is as long as the sender's).

The speaker embedding goes first and again whenever the receiver asks (it asks while it holds codes but no
speaker, at most every `REQUEST_INTERVAL_S`). A gap in frame indices is a loss: the receiver repeats the last
frame it has for each missing one and counts them; a packet older than what was decoded is late and dropped.

What a `Receiver` accepts (its threat model):
- only packets from one peer: the address given, or else the source of the first valid SPEAKER or CODES
  packet (an END or REQUEST chooses no peer, and a REQUEST, which only receivers send, is never taken); the
  rest are counted as foreign and dropped, so a stranger can neither inject codes, set the voice, nor end the
  signal, before the sender's first packet or after (UDP source addresses can be forged by a host on the
  path: the codes are not authenticated);
- only well-formed packets: a wrong size, count, kind or value, or a NaN speaker, is counted as damaged;
- only frame indices within `max_gap_frames` of the last frame received (a jump beyond is damage, not a
  gap to conceal), so no packet makes it decode more than that many frames of concealment;
- at most `max_waiting_frames` frames of codes held while the speaker embedding has not come.
Every packet costs bounded work and memory; none can raise. Frames taken with `handle(..., decode=False)` wait
for `decode()`, which pushes them to the stream at once (a receiver catching up: a longer push costs less per
frame).
"""

from __future__ import annotations

import math
import struct
import time
import zlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

from .bitstream import BITS, CODEBOOKS, SPEAKER_BYTES, pack_frames, pack_speaker, packed_size, unpack_frames
from .bitstream import unpack_speaker as _unpack_speaker
from .config import HOP_LENGTH

MAGIC = b"RTFP"
SPEAKER, CODES, REQUEST, END = 1, 2, 3, 4
HEAD = struct.Struct(">4sBI")
CODES_HEAD = struct.Struct(">IB")
END_BODY = struct.Struct(">IB")
CRC = struct.Struct(">I")
MAX_FRAMES_PER_PACKET = 255  # the count is one byte
MAX_PACKET_BYTES = HEAD.size + CODES_HEAD.size + packed_size(MAX_FRAMES_PER_PACKET * CODEBOOKS * BITS) + CRC.size
END_REPEATS = 3  # the end packet goes out this often: losing it would leave the receiver waiting
MAX_GAP_FRAMES = 400  # 5 s: a longer jump in frame indices is damage, not a loss to conceal
MAX_WAITING_FRAMES = 800  # 10 s of codes held until the speaker embedding comes
REQUEST_INTERVAL_S = 0.2  # at most five speaker requests a second


class PacketError(ValueError):
    """A datagram that is not a well-formed rtcodec packet; the message says what is wrong."""


@dataclass(frozen=True)
class Packet:
    """A parsed packet; the fields that its kind does not carry stay at their defaults."""

    kind: int
    seq: int
    speaker: torch.Tensor | None = None  # SPEAKER: [256]
    first: int = 0  # CODES: index of the first frame
    codes: torch.Tensor | None = None  # CODES: [6, count]
    total: int = 0  # END: frames in the whole signal
    padding: int = 0  # END: samples of silence at the end of the last frame


def packet(kind: int, seq: int, payload: bytes = b"") -> bytes:
    body = HEAD.pack(MAGIC, kind, seq) + payload
    return body + CRC.pack(zlib.crc32(body))


def speaker_packet(seq: int, speaker: torch.Tensor) -> bytes:
    return packet(SPEAKER, seq, pack_speaker(speaker))


def codes_packet(seq: int, first: int, codes: torch.Tensor) -> bytes:
    """Codes `[6, k]` of frames first .. first + k - 1, 1 <= k <= 255."""
    return packet(CODES, seq, CODES_HEAD.pack(first, codes.shape[1]) + pack_frames(codes))


def end_packet(seq: int, total: int, padding: int = 0) -> bytes:
    return packet(END, seq, END_BODY.pack(total, padding))


def sequence_number(data: bytes) -> int:
    """The sequence number of a packet this module built (no checks)."""
    return HEAD.unpack_from(data)[2]


def parse(data: bytes) -> Packet:
    """Every field of a datagram checked; PacketError says what is wrong with it."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PacketError(f"a packet is bytes, not {type(data).__name__}")
    data = bytes(data)
    if not HEAD.size + CRC.size <= len(data) <= MAX_PACKET_BYTES:
        raise PacketError(f"{len(data)} bytes: a packet has {HEAD.size + CRC.size} to {MAX_PACKET_BYTES}")
    if zlib.crc32(data[: -CRC.size]) != CRC.unpack_from(data, len(data) - CRC.size)[0]:
        raise PacketError("CRC32 mismatch")
    magic, kind, seq = HEAD.unpack_from(data)
    if magic != MAGIC:
        raise PacketError(f"magic {magic!r}, expected {MAGIC!r}")
    payload = data[HEAD.size : -CRC.size]
    if kind == SPEAKER:
        _size(payload, SPEAKER_BYTES, "speaker")
        speaker = _unpack_speaker(payload)
        if not torch.isfinite(speaker).all():
            raise PacketError("speaker embedding with NaN or infinite values")
        return Packet(kind, seq, speaker=speaker)
    if kind == CODES:
        if len(payload) < CODES_HEAD.size:
            raise PacketError(f"codes payload of {len(payload)} bytes, shorter than its header")
        first, count = CODES_HEAD.unpack_from(payload)
        if count == 0:
            raise PacketError("codes packet with no frame")
        _size(payload, CODES_HEAD.size + packed_size(count * CODEBOOKS * BITS), f"codes of {count} frames")
        return Packet(kind, seq, first=first, codes=unpack_frames(payload[CODES_HEAD.size :], count))
    if kind == REQUEST:
        _size(payload, 0, "request")
        return Packet(kind, seq)
    if kind == END:
        _size(payload, END_BODY.size, "end")
        total, padding = END_BODY.unpack(payload)
        if padding >= HOP_LENGTH:
            raise PacketError(f"end packet with {padding} samples of padding, more than a frame less one")
        return Packet(kind, seq, total=total, padding=padding)
    raise PacketError(f"unknown packet kind {kind}")


def _size(payload: bytes, expected: int, what: str) -> None:
    if len(payload) != expected:
        raise PacketError(f"{what} payload of {len(payload)} bytes, expected {expected}")


class Sender:
    """Packs codes into packets; `send` is any callable taking bytes (a socket's `send`)."""

    def __init__(self, send: Callable[[bytes], None], speaker: torch.Tensor, frames_per_packet: int = 4) -> None:
        if not 1 <= frames_per_packet <= MAX_FRAMES_PER_PACKET:
            raise ValueError(f"frames_per_packet must be within 1..{MAX_FRAMES_PER_PACKET}, got {frames_per_packet}")
        self.send, self.speaker, self.frames_per_packet = send, speaker, frames_per_packet
        self.seq = self.frames = self.requests = 0
        self.pending = torch.zeros(CODEBOOKS, 0, dtype=torch.long)
        self.send_speaker()

    def _next(self) -> int:
        self.seq += 1
        return self.seq - 1

    def send_speaker(self) -> None:
        self.send(speaker_packet(self._next(), self.speaker))

    def handle(self, data: bytes) -> None:
        """A datagram from the receiver: a REQUEST gets the speaker embedding again; anything else is ignored."""
        try:
            if parse(data).kind == REQUEST:
                self.requests += 1
                self.send_speaker()
        except PacketError:
            pass

    def push(self, codes: torch.Tensor) -> None:
        """Codes `[6, 1, k]` of the next frames."""
        self.pending = torch.cat([self.pending, codes[:, 0].cpu()], dim=1)
        while self.pending.shape[1] >= self.frames_per_packet:
            self._send_codes(self.frames_per_packet)

    def _send_codes(self, count: int) -> None:
        self.send(codes_packet(self._next(), self.frames, self.pending[:, :count]))
        self.frames += count
        self.pending = self.pending[:, count:]

    def end(self, padding: int = 0, spacing_s: float = 0.0) -> None:
        """Send the last codes, then the END packet `END_REPEATS` times, `spacing_s` apart (spaced out, a burst of
        other traffic that fills the receiver's socket buffer at one moment does not take every copy).
        `padding`: the samples of silence that completed the last frame (`CodecSender.padding`)."""
        if self.pending.shape[1]:
            self._send_codes(self.pending.shape[1])
        end = end_packet(self._next(), self.frames, padding)
        for i in range(END_REPEATS):
            if i and spacing_s:
                time.sleep(spacing_s)
            self.send(end)


@dataclass
class ReceiverCounts:
    """What a receiver did with the datagrams it was given."""

    accepted: int = 0  # well-formed packets from the peer
    foreign: int = 0  # well-formed packets from another address: dropped
    damaged: int = 0  # malformed packets, and frame indices beyond the window: dropped
    late: int = 0  # codes older than what was decoded: dropped
    lost_frames: int = 0  # frames missing from the stream, concealed
    dropped_waiting: int = 0  # codes packets dropped because too much waited for the speaker embedding
    requests: int = 0  # speaker requests sent

    def summary(self, frames: int = 0) -> str:
        """What happened, with the share concealed of `frames` decoded where given."""
        share = f" ({100 * self.lost_frames / frames:.1f}% of the frames)" if frames and self.lost_frames else ""
        return (
            f"{self.lost_frames} lost and concealed{share}, {self.late} late packets, {self.damaged} damaged, "
            f"{self.foreign} from other senders"
        )


Decoder = Callable[[torch.Tensor], torch.Tensor]  # codes [6, 1, k] -> audio [1, 1, m]


@dataclass
class Receiver:
    """Decodes packets as they come (see the module docstring for what it accepts).

    `start(speaker)` is called with the first speaker embedding and returns the decoding stream (a
    `CodecReceiver`, or anything with its `push(codes)` and `flush(padding)`); decoded audio goes to `on_audio`.
    `peer` is an address, or `(host, None)` for any port of a host; None locks onto the first valid packet's
    source. `request(peer)` sends a speaker request. `clock` is a monotonic clock in seconds. Codes at or above
    `codebook_sizes` (per codebook; the published decoders take all 1024) are damage.
    """

    start: Callable[[torch.Tensor], object]
    on_audio: Callable[[torch.Tensor], None]
    peer: tuple | None = None
    request: Callable[[Hashable], None] = lambda peer: None
    clock: Callable[[], float] = time.monotonic
    codebook_sizes: tuple[int, ...] = (1 << BITS,) * CODEBOOKS  # codes beyond the decoder's are damage
    max_gap_frames: int = MAX_GAP_FRAMES
    max_waiting_frames: int = MAX_WAITING_FRAMES
    counts: ReceiverCounts = field(default_factory=ReceiverCounts)
    stream: object | None = None  # the decoding stream, once the speaker embedding has come
    origin: int | None = None  # the first frame index received: the signal starts there
    next_frame: int = 0  # the next frame to decode
    frontier: int = 0  # one past the last frame received (at least next_frame)
    ended: bool = False
    last: torch.Tensor | None = None  # the last frame taken, which stands in for lost ones
    undecoded: list[torch.Tensor] = field(default_factory=list)  # frames taken, not yet pushed to the stream
    waiting: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # codes before the speaker
    last_request: float = -math.inf

    def __post_init__(self) -> None:
        if len(self.codebook_sizes) != CODEBOOKS:
            raise ValueError(f"codebook_sizes must name {CODEBOOKS} codebooks, got {len(self.codebook_sizes)}")
        self._sizes = torch.tensor(self.codebook_sizes)[:, None]

    @property
    def decoded_frames(self) -> int:
        return 0 if self.origin is None else self.next_frame - self.origin

    def handle(self, data: bytes, source: Hashable = None, decode: bool = True) -> bool:
        """Take one datagram from `source`; True if it was a well-formed packet from the peer (the only kind
        that should keep a receiver waiting for more). `decode=False` holds its frames for the next `decode()`:
        a receiver that fell behind decodes what waits in one longer push, which costs less per frame."""
        try:
            return self._take(data, source)
        finally:
            if decode:
                self.decode()

    def decode(self) -> None:
        """Push the frames taken so far to the stream, in one push."""
        if self.undecoded:
            codes, self.undecoded = torch.cat(self.undecoded, dim=1), []
            self.on_audio(self.stream.push(codes[:, None]))

    def _take(self, data: bytes, source: Hashable) -> bool:
        if self.ended:
            return False
        try:
            packet = parse(data)
        except PacketError:
            self.counts.damaged += 1
            return False
        if not self._from_peer(source, packet.kind):
            self.counts.foreign += 1
            return False
        if packet.kind == SPEAKER:
            self._speaker(packet.speaker)
        elif packet.kind == CODES:
            if (packet.codes >= self._sizes).any() or not self._codes(packet.first, packet.codes):
                self.counts.damaged += 1
                return False
        elif packet.kind == END:
            if self.origin is None:  # no codes came: nothing to conceal up to the total
                self.finish()
            elif 0 <= packet.total - self.frontier <= self.max_gap_frames:
                self.finish(packet.total, packet.padding)
            else:
                self.counts.damaged += 1
                return False
        self.counts.accepted += 1
        return True

    def finish(self, total: int | None = None, padding: int = 0) -> None:
        """The signal ended after frame `total` (None: after the frames that arrived), the last `padding` samples
        of which are silence to drop; decode what is left."""
        if self.ended:
            return
        self.ended = True
        if self.stream is not None:
            if total is not None:
                self._conceal(total - self.next_frame)
            self.decode()
            self.on_audio(self.stream.flush(padding if total is not None else 0))

    def _from_peer(self, source: Hashable, kind: int) -> bool:
        """Whether a packet of `kind` from `source` is the peer's. Only a sender's own kinds (SPEAKER, CODES)
        choose the peer, so a stranger's END before the first packet cannot end the signal; a REQUEST is a
        receiver's kind, never taken from anyone."""
        if kind == REQUEST:
            return False
        if self.peer == source:
            return True
        if kind not in (SPEAKER, CODES):
            return False
        if self.peer is None:
            self.peer = source
            return True
        host, port = self.peer
        if port is None and isinstance(source, tuple) and source[0] == host:
            self.peer = source  # the first packet from the named host fixes the port
            return True
        return False

    def _speaker(self, speaker: torch.Tensor) -> None:
        if self.stream is not None:  # a repeat, answering a request that crossed it
            return
        self.stream = self.start(speaker)
        waiting, self.waiting = self.waiting, []
        for first, codes in waiting:
            self._decode_from(first, codes)

    def _codes(self, first: int, codes: torch.Tensor) -> bool:
        """Decode, hold or drop codes; False where their frame index is damage."""
        if self.origin is None:
            self.origin = self.next_frame = self.frontier = first
        if first < self.next_frame:
            self.counts.late += 1
            return True
        if self.stream is None:
            self._request()
            if first + codes.shape[1] - self.origin > self.max_waiting_frames:
                self.counts.dropped_waiting += 1
                return True
        if first - self.frontier > self.max_gap_frames:
            return False
        if self.stream is None:
            self.waiting.append((first, codes))
            self.frontier = max(self.frontier, first + codes.shape[1])
        else:
            self._decode_from(first, codes)
        return True

    def _decode_from(self, first: int, codes: torch.Tensor) -> None:
        if first < self.next_frame:  # out of order while waiting for the speaker
            self.counts.late += 1
            return
        self._conceal(first - self.next_frame)
        self._hold(codes)
        self.frontier = max(self.frontier, self.next_frame)

    def _request(self) -> None:
        now = self.clock()
        if now - self.last_request >= REQUEST_INTERVAL_S:
            self.last_request = now
            self.counts.requests += 1
            self.request(self.peer)

    def _conceal(self, missing: int) -> None:
        if missing <= 0:
            return
        self.counts.lost_frames += missing
        filler = self.last if self.last is not None else torch.zeros(CODEBOOKS, 1, dtype=torch.long)
        self._hold(filler.expand(-1, missing))

    def _hold(self, codes: torch.Tensor) -> None:
        self.undecoded.append(codes)
        self.next_frame += codes.shape[1]
        self.last = codes[:, -1:]
