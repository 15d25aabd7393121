"""The packet format and the receiver under hostile input: strangers, malformed payloads, huge indices, floods."""

from __future__ import annotations

import random
import struct
import tracemalloc
import zlib

import pytest
import torch

from rtcodec.transport import (
    CODES,
    CODES_HEAD,
    END,
    MAX_GAP_FRAMES,
    MAX_WAITING_FRAMES,
    REQUEST,
    SPEAKER,
    PacketError,
    Receiver,
    Sender,
    codes_packet,
    end_packet,
    packet,
    parse,
    speaker_packet,
)

PEER, STRANGER = ("127.0.0.1", 40000), ("127.0.0.1", 40001)


class FakeStream:
    """Stands in for a CodecReceiver: checks what it is given as the real one would and counts the frames."""

    def __init__(self, speaker: torch.Tensor) -> None:
        assert speaker.shape == (256,) and torch.isfinite(speaker).all()
        self.speaker, self.frames, self.largest_push, self.flushed = speaker, 0, 0, False

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        assert codes.dim() == 3 and codes.shape[:2] == (6, 1) and codes.shape[2] >= 1
        assert codes.dtype == torch.long and 0 <= codes.min() and codes.max() < 1024
        self.frames += codes.shape[2]
        self.largest_push = max(self.largest_push, codes.shape[2])
        return torch.zeros(1, 1, 200 * codes.shape[2])

    def flush(self, padding: int = 0) -> torch.Tensor:
        self.flushed, self.padding = True, padding
        return torch.zeros(1, 1, 0)


def receiver(**kwargs) -> Receiver:
    kwargs.setdefault("start", FakeStream)
    kwargs.setdefault("on_audio", lambda wav: None)
    kwargs.setdefault("clock", lambda: 0.0)
    return Receiver(**kwargs)


def codes(count: int, value: int = 7) -> torch.Tensor:
    return torch.full((6, count), value, dtype=torch.long)


def signed(kind: int, payload: bytes, seq: int = 0) -> bytes:
    """A packet with a valid CRC whatever its payload: only the payload checks can reject it."""
    return packet(kind, seq, payload)


SPEAKER_PACKET = speaker_packet(0, torch.ones(256))


def test_a_packet_round_trips():
    c = torch.randint(0, 1024, (6, 5))
    p = parse(codes_packet(3, 1000, c))
    assert (p.kind, p.seq, p.first) == (CODES, 3, 1000) and torch.equal(p.codes, c)
    assert parse(end_packet(4, 99)).total == 99 and parse(packet(REQUEST, 5)).kind == REQUEST
    assert torch.equal(parse(SPEAKER_PACKET).speaker, torch.ones(256))


@pytest.mark.parametrize(
    "data, reason",
    [
        (signed(CODES, b"\x00\x02"), "shorter than its header"),  # was struct.error
        (signed(END, b""), "end payload of 0 bytes"),  # was struct.error
        (signed(CODES, CODES_HEAD.pack(0, 255) + bytes(8)), "codes of 255 frames"),  # count 255, one frame's bytes
        (signed(CODES, CODES_HEAD.pack(0, 0)), "no frame"),
        (signed(SPEAKER, bytes(100)), "speaker payload of 100 bytes"),
        (signed(SPEAKER, struct.pack(">256e", *([float("nan")] * 256))), "NaN"),
        (signed(9, b""), "unknown packet kind 9"),
        (signed(REQUEST, b"x"), "request payload"),
        (b"RTFP" + bytes(20), "CRC32"),
        (b"xx", "2 bytes"),
        (bytes(5000), "5000 bytes"),
    ],
)
def test_malformed_packets_are_damage_never_an_exception(data, reason):
    with pytest.raises(ValueError, match=reason):
        parse(data)
    r = receiver()
    r.handle(SPEAKER_PACKET, PEER)
    r.handle(codes_packet(1, 0, codes(4)), PEER)
    assert r.handle(data, PEER) is False
    assert r.counts.damaged == 1 and not r.ended
    r.handle(codes_packet(2, 4, codes(4)), PEER)
    assert r.stream.frames == 8  # the stream goes on as if the damaged packet had never come


def test_a_stranger_can_neither_inject_set_the_voice_nor_end_the_stream():
    r = receiver()
    assert r.handle(codes_packet(1, 0, codes(4)), PEER)  # the first valid packet locks the peer
    for data in (speaker_packet(0, torch.full((256,), 9.0)), codes_packet(1, 4, codes(4, 1)), end_packet(2, 8)):
        assert r.handle(data, STRANGER) is False
    assert r.counts.foreign == 3 and r.stream is None and not r.ended
    r.handle(SPEAKER_PACKET, PEER)
    assert torch.equal(r.stream.speaker, torch.ones(256)) and r.stream.frames == 4
    r.handle(end_packet(3, 4), PEER)
    assert r.ended and r.stream.flushed


def test_a_strangers_end_or_request_before_the_sender_starts_neither_ends_nor_locks_the_receiver():
    r = receiver()
    assert r.handle(end_packet(0, 0), STRANGER) is False  # once ended the signal with nothing received
    assert r.handle(packet(REQUEST, 0), STRANGER) is False  # once locked the receiver onto the stranger
    assert r.peer is None and not r.ended and r.counts.foreign == 2
    assert r.handle(SPEAKER_PACKET, PEER) and r.handle(codes_packet(1, 0, codes(4)), PEER)
    assert r.peer == PEER and r.stream.frames == 4
    assert r.handle(packet(REQUEST, 2), PEER) is False  # a receiver's kind, even from the peer
    assert r.handle(end_packet(3, 4), PEER) and r.ended


def test_a_named_peer_is_the_only_sender_and_its_port_is_fixed_by_its_first_packet():
    named = receiver(peer=("127.0.0.1", None))
    assert named.handle(SPEAKER_PACKET, ("10.0.0.9", 40000)) is False  # another host
    assert named.handle(SPEAKER_PACKET, PEER) and named.peer == PEER
    assert named.handle(codes_packet(1, 0, codes(1)), STRANGER) is False  # same host, another port


@pytest.mark.parametrize(
    "data", [codes_packet(9, 2**32 - 5, codes(4)), end_packet(9, 2**32 - 1), codes_packet(9, 20_000, codes(4))]
)
def test_huge_frame_indices_are_damage_not_gaps_to_conceal(data):
    r = receiver()
    r.handle(SPEAKER_PACKET, PEER)
    r.handle(codes_packet(1, 0, codes(4)), PEER)
    assert r.handle(data, PEER) is False
    assert r.counts.damaged == 1 and r.counts.lost_frames == 0 and r.stream.frames == 4 and not r.ended


def test_gaps_within_the_window_are_concealed_with_the_last_frame():
    seen = []
    r = receiver(on_audio=seen.append)
    r.handle(SPEAKER_PACKET, PEER)
    r.handle(codes_packet(1, 100, codes(4)), PEER)  # a receiver that joins late starts where it joined
    assert r.origin == 100 and r.counts.lost_frames == 0
    r.handle(codes_packet(2, 104 + MAX_GAP_FRAMES, codes(4)), PEER)
    assert r.counts.lost_frames == MAX_GAP_FRAMES and r.stream.frames == 8 + MAX_GAP_FRAMES
    r.handle(codes_packet(3, 104, codes(4)), PEER)
    assert r.counts.late == 1
    r.handle(end_packet(4, 108 + MAX_GAP_FRAMES + 3), PEER)
    assert r.counts.lost_frames == MAX_GAP_FRAMES + 3 and r.ended and r.decoded_frames == 8 + MAX_GAP_FRAMES + 3
    assert sum(w.shape[2] for w in seen) == 200 * r.decoded_frames


def test_codes_before_the_speaker_are_bounded_and_requests_rate_limited():
    now = [0.0]
    requests = []
    r = receiver(clock=lambda: now[0], request=requests.append)
    for i in range(20_000):  # 5 frames each: far beyond what may wait
        r.handle(codes_packet(i, 5 * i, codes(5)), PEER)
        now[0] += 0.001  # 20 s of packets
    assert sum(c.shape[1] for _, c in r.waiting) <= MAX_WAITING_FRAMES
    assert r.counts.dropped_waiting == 20_000 - MAX_WAITING_FRAMES // 5
    assert 90 <= len(requests) <= 101 and set(requests) == {PEER}  # five a second, to the peer only
    r.handle(SPEAKER_PACKET, PEER)
    assert r.stream.frames == MAX_WAITING_FRAMES and not r.waiting


def test_codes_beyond_the_decoders_codebooks_are_damage():
    r = receiver(codebook_sizes=(10,) * 6)
    r.handle(SPEAKER_PACKET, PEER)
    assert r.handle(codes_packet(1, 0, codes(4, 10)), PEER) is False and r.counts.damaged == 1
    assert r.handle(codes_packet(1, 0, codes(4, 9)), PEER) and r.stream.frames == 4


def test_the_sender_answers_requests_and_ignores_junk():
    sent = []
    sender = Sender(sent.append, torch.ones(256), frames_per_packet=3)
    sender.push(codes(7)[:, None])
    sender.handle(packet(REQUEST, 0))
    sender.handle(b"junk")
    sender.end(padding=120)
    kinds = [parse(p).kind for p in sent]
    assert kinds == [SPEAKER, CODES, CODES, SPEAKER, CODES, END, END, END]
    assert [parse(p).first for p in sent if parse(p).kind == CODES] == [0, 3, 6] and parse(sent[-1]).total == 7
    assert parse(sent[-1]).padding == 120 and sender.requests == 1
    with pytest.raises(ValueError, match="frames_per_packet"):
        Sender(sent.append, torch.ones(256), frames_per_packet=256)


def test_the_end_packets_padding_reaches_the_stream_and_is_checked():
    """The silence that completed the sender's last frame is dropped by the receiver's stream; 200 or more
    samples of it (a frame or more) is damage."""
    r = receiver()
    r.handle(SPEAKER_PACKET, PEER)
    r.handle(codes_packet(1, 0, codes(4)), PEER)
    with pytest.raises(PacketError, match="200 samples of padding"):
        parse(end_packet(2, 4, 200))
    assert r.handle(end_packet(2, 4, 200), PEER) is False and r.counts.damaged == 1 and not r.ended
    assert r.handle(end_packet(2, 4, 199), PEER) and r.stream.padding == 199


def _mutations(rng: random.Random, valid: list[bytes]):
    """Random datagrams: junk, bit flips of valid packets, and packets with a valid CRC around random fields."""
    while True:
        choice = rng.random()
        if choice < 0.2:
            yield rng.randbytes(rng.randrange(0, 700))
        elif choice < 0.4:
            data = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            yield bytes(data)
        elif choice < 0.7:
            body = bytearray(rng.choice(valid)[:-4])
            for _ in range(rng.randrange(1, 4)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            body = body[: rng.randrange(len(body) + 1)] if rng.random() < 0.3 else body
            yield bytes(body) + zlib.crc32(bytes(body)).to_bytes(4, "big")
        else:
            kind = rng.choice([SPEAKER, CODES, REQUEST, END, 0, 5, 255])
            payload = rng.randbytes(rng.choice([0, 1, 4, 5, 7, 13, 512, rng.randrange(0, 2000)]))
            if kind in (CODES, END) and rng.random() < 0.5:  # frame indices near the stream's, so some are taken
                head = struct.pack(">I", max(0, rng.randrange(-50, 600)))
                payload = head + payload[4:] if kind == CODES else head
            yield packet(kind, rng.randrange(2**32), payload)


def test_fuzzed_packets_never_raise_and_memory_stays_bounded():
    """10 000 datagrams, 1 in 50 from a stranger; a receiver that ends is replaced (an ended one takes nothing)."""
    rng = random.Random(1234)
    valid = [SPEAKER_PACKET, codes_packet(1, 0, codes(4)), codes_packet(2, 4, codes(255)), end_packet(3, 300)]
    valid += [packet(REQUEST, 4)]
    counts = {"accepted": 0, "damaged": 0, "foreign": 0, "receivers": 0}

    def fresh() -> Receiver:
        counts["receivers"] += 1
        r = receiver()
        r.handle(SPEAKER_PACKET if counts["receivers"] % 2 else codes_packet(0, 0, codes(1)), PEER)
        return r

    tracemalloc.start()
    try:
        r = fresh()
        baseline = tracemalloc.get_traced_memory()[0]
        for i, data in zip(range(10_000), _mutations(rng, valid)):
            frames_before = r.stream.frames if r.stream else 0
            r.handle(data, STRANGER if i % 50 == 0 else PEER)
            # One packet decodes at most the window of concealment, its own frames and what was waiting.
            assert (r.stream.frames if r.stream else 0) - frames_before <= MAX_GAP_FRAMES + 255 + MAX_WAITING_FRAMES
            assert sum(c.shape[1] for _, c in r.waiting) <= MAX_WAITING_FRAMES
            if r.ended or i == 9_999:
                for key in ("accepted", "damaged", "foreign"):
                    counts[key] += getattr(r.counts, key)
                r = fresh()
        # The Python heap does not grow with the packets: what a receiver keeps is bounded.
        assert tracemalloc.get_traced_memory()[0] - baseline < 1 << 20
    finally:
        tracemalloc.stop()
    # The fuzzer reached every path: packets accepted, damaged, foreign, and signals ended.
    assert counts["receivers"] > 5 and counts["damaged"] > 1000 and counts["accepted"] > 100 and counts["foreign"]


def test_frames_taken_without_decoding_go_to_the_stream_in_one_push():
    """A receiver that fell behind takes what waits with `decode=False`, then decodes it in one longer push: the
    same frames, losses concealed, in order; the end decodes what is held before flushing."""
    heard = []
    r = receiver(on_audio=lambda wav: heard.append(wav.shape[2]))
    assert r.handle(SPEAKER_PACKET, PEER, decode=False)
    for seq, first in ((1, 0), (2, 4), (4, 12)):  # frames 8 to 11 lost
        assert r.handle(codes_packet(seq, first, codes(4, seq)), PEER, decode=False)
    assert heard == [] and r.stream.frames == 0 and r.decoded_frames == 16
    r.decode()
    assert heard == [16 * 200] and r.stream.largest_push == 16 and r.counts.lost_frames == 4
    r.decode()  # nothing held: nothing pushed
    assert heard == [16 * 200]
    assert r.handle(codes_packet(5, 16, codes(4)), PEER, decode=False)
    assert r.handle(end_packet(6, 22, 50), PEER, decode=False)  # 2 frames lost before the end, then flushed
    assert r.ended and r.stream.flushed and heard == [16 * 200, 6 * 200, 0] and r.stream.frames == 22
