"""The WebSocket protocol of `rtcodec serve`, for the bundled page and any other client.

1. The client opens `/ws` and sends a text message, the hello, in JSON:
   `{"version": 1, "mode": "convert" | "codec", "voice": NAME | "upload", "latency": PRESET}`
   (`GET /info` lists the voices and presets). With `"voice": "upload"` its next message is a REFERENCE.
2. The server answers with a text message `{"type": "ready", "block": samples per AUDIO message,
   "sample_rate": 16000, "latency_samples": ..., "bitrate": 4800, "slot": ..., "mode": ...}` (and "server",
   the host and process, where the server was started with --expose-host).
3. Then both sides send binary messages: a header of version (1 byte, 1), type (1 byte) and sequence number (4
   bytes, big-endian), then the payload:
   - AUDIO (1), client to server: exactly `block` samples of 16 kHz mono int16 PCM, little-endian, one message
     per block, in real time, sequence numbers counting up by one;
   - AUDIO (1), server to client: the input block this tick used (4 bytes: the client's sequence number, or
     0xFFFFFFFF where it had not come and silence stood in), then the new output samples, int16 PCM as above;
   - REFERENCE (2), client to server: an audio file of the target voice (any format soundfile reads), at
     most `MAX_REFERENCE_BYTES`, `MAX_REFERENCE_SECONDS` and `MAX_REFERENCE_SAMPLES` (frames x channels).
   The server also sends text `{"type": "stats", ...}` twice a second: its compute per tick (p50, p99), the
   caller's late and dropped blocks, and the slots in use.
4. The server ends a call with a WebSocket close code and a reason a person can read: 1008 for a protocol
   violation (a malformed message, a reference that is not usable audio, audio faster than real time, or far
   below it for a few seconds), 1009 for a message too large, 1013 when every slot is taken (or too many voice
   uploads are in decoding), 1011 for a server error.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import torch

VERSION = 1
AUDIO, REFERENCE = 1, 2
HEADER = struct.Struct(">BBI")
CONSUMED = struct.Struct(">I")
SILENCE = 0xFFFFFFFF  # no client block this tick
MAX_MESSAGE_BYTES = 4 << 20  # larger messages are refused before they are read whole
MAX_REFERENCE_BYTES = 2 << 20
MAX_REFERENCE_SECONDS = 30.0
# Decoded samples (frames x channels) of a reference, read from its header before it is decoded: 30 s of 48 kHz
# stereo. A header may declare any rate and channel count; this bounds the memory and time decoding takes.
MAX_REFERENCE_SAMPLES = 2_880_000
HELLO_BYTES = 1024
HEADER_TIMEOUT_S = 10.0  # an HTTP request's headers, WebSocket handshake included, must come within this

POLICY, TOO_BIG, SERVER_ERROR, TRY_LATER = 1008, 1009, 1011, 1013


class ProtocolError(ValueError):
    """A message that breaks the protocol; `code` is the WebSocket close code to end the call with."""

    def __init__(self, reason: str, code: int = POLICY) -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code

    def __reduce__(self):  # whole across processes (an upload's is raised in the upload worker)
        return type(self), (self.reason, self.code)


def parse_hello(text: str, voices: list[str], presets: list[str]) -> dict:
    """The hello's settings, each checked: ProtocolError naming the first that is wrong."""
    if len(text) > HELLO_BYTES:
        raise ProtocolError(f"the hello is {len(text)} characters; at most {HELLO_BYTES}")
    try:
        hello = json.loads(text)
    except json.JSONDecodeError:
        raise ProtocolError("the hello is not JSON") from None
    if not isinstance(hello, dict) or type(hello.get("version")) is not int or hello["version"] != VERSION:
        raise ProtocolError(f"the hello must be a JSON object with version {VERSION} (an integer)")
    settings = {"mode": hello.get("mode", "convert"), "voice": hello.get("voice", voices[0] if voices else "upload")}
    settings["latency"] = hello.get("latency", presets[0])
    if settings["mode"] not in ("convert", "codec"):
        raise ProtocolError(f"mode must be convert or codec, not {settings['mode']!r}")
    if settings["voice"] not in [*voices, "upload"]:
        raise ProtocolError(f"voice must be one of {[*voices, 'upload']}, not {settings['voice']!r}")
    if settings["latency"] not in presets:
        raise ProtocolError(f"latency must be one of {presets}, not {settings['latency']!r}")
    return settings


def check_reference_header(frames: int, rate: int, channels: int) -> None:
    """Refuse a reference clip from its header, before it is decoded: too long, or too many samples."""
    if rate <= 0 or frames > MAX_REFERENCE_SECONDS * rate:
        raise ProtocolError(f"the reference clip is longer than {MAX_REFERENCE_SECONDS:g} s")
    if frames * channels > MAX_REFERENCE_SAMPLES:
        raise ProtocolError(
            f"the reference clip holds {frames} x {channels} samples ({rate} Hz); at most {MAX_REFERENCE_SAMPLES} "
            "(30 s of 48 kHz stereo)"
        )


def parse(data: bytes) -> tuple[int, int, bytes]:
    """(type, sequence number, payload) of a binary message."""
    if len(data) < HEADER.size:
        raise ProtocolError(f"a binary message of {len(data)} bytes is shorter than its header")
    version, kind, seq = HEADER.unpack_from(data)
    if version != VERSION:
        raise ProtocolError(f"protocol version {version}; this server speaks {VERSION}")
    if kind not in (AUDIO, REFERENCE):
        raise ProtocolError(f"unknown message type {kind}")
    return kind, seq, data[HEADER.size :]


def audio_block(payload: bytes, block: int) -> torch.Tensor:
    """A client's AUDIO payload as `[block]` float samples."""
    if len(payload) != 2 * block:
        raise ProtocolError(f"an AUDIO message carries {block} int16 samples ({2 * block} bytes), not {len(payload)}")
    return torch.from_numpy(np.frombuffer(payload, "<i2").astype(np.float32) / 32768.0)


def audio_message(seq: int, consumed: int | None, samples: torch.Tensor) -> bytes:
    """A server AUDIO message: `samples` float `[n]`, the client block `consumed` (None: silence stood in)."""
    pcm = (samples.clamp(-1, 1) * 32767).round().to(torch.int16).numpy().astype("<i2").tobytes()
    return HEADER.pack(VERSION, AUDIO, seq) + CONSUMED.pack(SILENCE if consumed is None else consumed) + pcm
