"""Audio files in and out: any format soundfile reads, any rate and channel count, written atomically."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .config import SAMPLE_RATE


class AudioError(ValueError):
    """An audio file that cannot be used: missing, not audio, empty, or with NaN/inf samples."""


def _notice(message: str) -> None:
    print(f"rtcodec: {message}", file=sys.stderr)


def to_model_rate(audio: np.ndarray, rate: int, name: str, notice: Callable[[str], None] = _notice) -> torch.Tensor:
    """`[frames, channels]` float audio at `rate` to a 16 kHz mono `[1, 1, L]` float32 tensor."""
    if audio.ndim == 2 and audio.shape[1] > 1:
        notice(f"{name}: mixing {audio.shape[1]} channels to mono")
        audio = audio.mean(axis=1)
    audio = audio.reshape(-1).astype(np.float32)
    if audio.size == 0:
        raise AudioError(f"{name} holds no samples")
    if not np.isfinite(audio).all():
        raise AudioError(f"{name} has NaN or infinite samples")
    if rate != SAMPLE_RATE:
        import soxr

        notice(f"{name}: resampling {rate} Hz to {SAMPLE_RATE} Hz")
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(audio)).view(1, 1, -1)


def read(path: str | Path, notice: Callable[[str], None] = _notice) -> torch.Tensor:
    """A file (wav, flac, ogg, ...) as 16 kHz mono `[1, 1, L]` float32, resampled with soxr where needed."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"{path} is not an audio file soundfile can read ({err})") from None
    return to_model_rate(audio, rate, str(path), notice)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary path)` next to `path`, then rename it into place: no half-written file ever."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(path: str | Path, wav: torch.Tensor, rate: int = SAMPLE_RATE) -> None:
    """Write `[1, 1, L]` (or `[L]`) audio as 16-bit PCM in the format the suffix names (wav, flac, ...)."""
    audio = wav.detach().float().cpu().reshape(-1).clamp(-1, 1).numpy()
    fmt = _format(path)
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    atomic_write(path, lambda tmp: sf.write(tmp, audio, rate, subtype=subtype, format=fmt))


def _format(path: str | Path) -> str:
    suffix = Path(path).suffix.lstrip(".").upper()
    if suffix not in sf.available_formats():
        raise AudioError(f"{path}: unknown audio format {suffix or '(no suffix)'}; use .wav, .flac or .ogg")
    return suffix
