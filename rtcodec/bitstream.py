"""The `.fac` file: FACodec codes and a speaker embedding, 60 bits per frame (4.8 kbit/s at 80 frames/s).

Layout (big-endian):

| bytes        | field                                                                 |
|--------------|-----------------------------------------------------------------------|
| 4            | magic `RTFC`                                                          |
| 1            | format version (2; version 1 files, without the sample count, read)   |
| 1            | model version: 1 (FACodec V1 codes) or 2 (V2 codes)                   |
| 4            | sample rate (16000)                                                   |
| 4            | frame count T                                                         |
| 1            | codebooks per frame (6)                                               |
| 1            | bits per code (10)                                                    |
| 4            | sample count L, 200 (T - 1) < L <= 200 T: the decoded audio is cut to |
|              | L samples, as long as the input (format version 2 only)               |
| 512          | the speaker embedding: 256 values in fp16                             |
| ceil(60T/8)  | the codes, frame by frame, prosody, content, residual, 10 bits each,  |
|              | most significant bit first, zero bits up to the byte                  |
| 4            | CRC32 of everything before it                                         |

Reading checks every field, the exact size and the CRC, which detects every change of up to 32 bits in a row.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import HOP_LENGTH, LATENT_CHANNELS, SAMPLE_RATE

MAGIC = b"RTFC"
FORMAT_VERSION = 2
CODEBOOKS = 6
BITS = 10
HEADERS = {1: struct.Struct(">4sBBIIBB"), 2: struct.Struct(">4sBBIIBBI")}  # by format version
SPEAKER_BYTES = 2 * LATENT_CHANNELS
CRC = struct.Struct(">I")


class BitstreamError(ValueError):
    """A `.fac` file or packet that is truncated, corrupted or of another version."""


@dataclass
class Bitstream:
    """Codes `[6, T]` (ints below 1024), the speaker embedding `[256]`, the model version (1 or 2) and the
    length of the audio in samples (None: 200 T, whole frames)."""

    codes: torch.Tensor
    speaker: torch.Tensor
    model_version: int = 1
    samples: int | None = None

    def __post_init__(self) -> None:
        if self.model_version not in (1, 2):
            raise BitstreamError(f"model version must be 1 or 2, got {self.model_version}")
        if self.codes.dim() != 2 or self.codes.shape[0] != CODEBOOKS:
            raise BitstreamError(f"codes must be shaped [{CODEBOOKS}, frames], got {tuple(self.codes.shape)}")
        if self.codes.numel() and (self.codes.min() < 0 or self.codes.max() >= 1 << BITS):
            raise BitstreamError(f"codes must lie in [0, {1 << BITS})")
        if tuple(self.speaker.shape) != (LATENT_CHANNELS,):
            raise BitstreamError(f"the speaker embedding must be shaped [{LATENT_CHANNELS}]")
        if self.samples is None:
            self.samples = HOP_LENGTH * self.frames
        if not _fits(self.samples, self.frames):
            raise BitstreamError(
                f"{self.samples} samples do not fit {self.frames} frames of {HOP_LENGTH} (the last one partial)"
            )

    @property
    def frames(self) -> int:
        return self.codes.shape[1]

    def to_bytes(self) -> bytes:
        header = HEADERS[FORMAT_VERSION].pack(
            MAGIC, FORMAT_VERSION, self.model_version, SAMPLE_RATE, self.frames, CODEBOOKS, BITS, self.samples
        )
        body = header + pack_speaker(self.speaker) + pack_frames(self.codes)
        return body + CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "bitstream") -> Bitstream:
        version = data[4] if len(data) > 4 else FORMAT_VERSION
        header = HEADERS.get(version, HEADERS[FORMAT_VERSION])
        minimum = header.size + SPEAKER_BYTES + CRC.size
        if len(data) < minimum:
            raise BitstreamError(f"{name} is truncated: {len(data)} bytes, a .fac file has at least {minimum}")
        magic, version, model, rate, frames, books, bits, *samples = header.unpack_from(data)
        if magic != MAGIC:
            raise BitstreamError(f"{name} is not a .fac file (magic {magic!r}, expected {MAGIC!r})")
        expected = _file_size(header, frames)
        # The CRC first: a damaged field must read as damage, not as an unsupported version.
        if len(data) == expected and zlib.crc32(data[:-4]) != CRC.unpack_from(data, len(data) - 4)[0]:
            raise BitstreamError(f"{name} is corrupted (CRC32 mismatch)")
        if version not in HEADERS:
            raise BitstreamError(f"{name} has format version {version}; this rtcodec reads versions 1 and 2")
        if model not in (1, 2) or rate != SAMPLE_RATE or books != CODEBOOKS or bits != BITS:
            raise BitstreamError(
                f"{name} holds model {model}, {rate} Hz, {books} codebooks of {bits} bits; "
                f"expected model 1 or 2, {SAMPLE_RATE} Hz, {CODEBOOKS} codebooks of {BITS} bits"
            )
        if len(data) != expected:
            raise _size_error(name, len(data), frames, expected)
        samples = samples[0] if samples else HOP_LENGTH * frames
        if not _fits(samples, frames):
            raise BitstreamError(f"{name} says {samples} samples, which do not fit its {frames} frames")
        speaker = unpack_speaker(data[header.size : header.size + SPEAKER_BYTES])
        return cls(unpack_frames(data[header.size + SPEAKER_BYTES : -CRC.size], frames), speaker, model, samples)

    def save(self, path: str | Path) -> None:
        from .audio import atomic_write

        atomic_write(path, lambda tmp: tmp.write_bytes(self.to_bytes()))

    @classmethod
    def load(cls, path: str | Path) -> Bitstream:
        path = Path(path)
        if not path.is_file():
            raise BitstreamError(f"{path}: no such file")
        with path.open("rb") as file:
            head = file.read(max(h.size for h in HEADERS.values()))
            header = HEADERS.get(head[4] if len(head) > 4 else 0)
            if header and len(head) >= header.size and head[:4] == MAGIC:  # sized from its header before reading
                frames = header.unpack_from(head)[4]
                expected, size = _file_size(header, frames), path.stat().st_size
                if size != expected:
                    raise _size_error(str(path), size, frames, expected)
            return cls.from_bytes(head + file.read(), str(path))


def _file_size(header: struct.Struct, frames: int) -> int:
    return header.size + SPEAKER_BYTES + packed_size(frames * CODEBOOKS * BITS) + CRC.size


def _size_error(name: str, size: int, frames: int, expected: int) -> BitstreamError:
    return BitstreamError(
        f"{name} is {'truncated' if size < expected else 'too long'}: {size} bytes, {frames} frames need {expected}"
    )


def _fits(samples: int, frames: int) -> bool:
    return HOP_LENGTH * (frames - 1) < samples <= HOP_LENGTH * frames or samples == frames == 0


def packed_size(bits: int) -> int:
    return (bits + 7) // 8


def pack_frames(codes: torch.Tensor) -> bytes:
    """Codes `[6, T]` frame by frame as consecutive 10-bit fields, most significant bit first."""
    values = codes.T.reshape(-1).cpu().numpy().astype(np.int64)
    bits = (values[:, None] >> np.arange(BITS - 1, -1, -1)) & 1
    return np.packbits(bits.astype(np.uint8).reshape(-1)).tobytes()


def unpack_frames(data: bytes, frames: int) -> torch.Tensor:
    """The codes `[6, frames]` that `pack_frames` wrote."""
    count = frames * CODEBOOKS
    bits = np.unpackbits(np.frombuffer(data, np.uint8))[: count * BITS].reshape(count, BITS)
    values = (bits.astype(np.int64) << np.arange(BITS - 1, -1, -1)).sum(axis=1)
    return torch.from_numpy(values).view(frames, CODEBOOKS).T.contiguous()


def pack_speaker(speaker: torch.Tensor) -> bytes:
    """A speaker embedding `[256]` as big-endian fp16."""
    return speaker.detach().cpu().reshape(-1).to(torch.float16).numpy().astype(">f2").tobytes()


def unpack_speaker(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(data, ">f2", LATENT_CHANNELS).astype(np.float32))
