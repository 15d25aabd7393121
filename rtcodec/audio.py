"""Audio files in and out: any format soundfile reads, any rate and channel count, written atomically.

An output appears at its path only once it is whole: it is written to a temporary file beside it, which is
renamed into place, with the permissions a plain write would give it (the umask, or the mode of the file it
replaces). A failed write (a full disk, a read-only folder) is an `AudioError` naming the path.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .config import SAMPLE_RATE

# Rates outside this range are a damaged header, not audio: a wav that says 1 Hz would resample to hours.
MIN_RATE, MAX_RATE = 4000, 768000


class AudioError(ValueError):
    """An audio file that cannot be used: missing, not audio, empty, with NaN/inf samples, or not writable."""


def _notice(message: str) -> None:
    print(f"rtcodec: {message}", file=sys.stderr)


def to_model_rate(audio: np.ndarray, rate: int, name: str, notice: Callable[[str], None] = _notice) -> torch.Tensor:
    """`[frames, channels]` float audio at `rate` to a 16 kHz mono `[1, 1, L]` float32 tensor."""
    if audio.ndim == 2 and audio.shape[1] > 1:
        notice(f"{name}: mixing {audio.shape[1]} channels to mono")
        audio = audio.mean(axis=1)
    audio = audio.reshape(-1).astype(np.float32)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{name} says its sample rate is {rate} Hz; rtcodec reads {MIN_RATE} to {MAX_RATE} Hz")
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


def check_output(path: str | Path, audio: bool = True) -> None:
    """Refuse an output that cannot be written before any work is done: an unknown audio format (`audio`), a
    folder that does not exist or cannot be written in, or a path that is a folder."""
    path = Path(path)
    if audio:
        _format(path)
    if not path.parent.is_dir():
        raise AudioError(f"{path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise AudioError(f"{path} is a folder, not a file")
    check_writable(path.parent, path)


def check_writable(folder: str | Path, output: str | Path | None = None) -> None:
    """Refuse a folder in which a file cannot be created (permissions, a read-only disk), naming `output`.
    It is tried for real: `os.access` says yes to root on a read-only mount."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".rtcodec-probe."):
            pass
    except OSError as err:
        raise AudioError(f"cannot write {output or folder}: {err.strerror or err}") from None


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary path)` next to `path`, then rename it into place: no half-written file ever."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        write(tmp)
        _place(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        _raise_write_error(path, err)
        raise


class AudioWriter:
    """Audio written to `path` as it comes (`write(wav)`), for a signal of unknown length. `close()` (or
    leaving the `with` block, for whatever reason: an error, Ctrl-C) puts what was written in place, so a
    stopped receiver keeps what it had; nothing written, no file. `exact`: 32-bit float samples where the
    format holds them (WAV), so that the file gives back exactly what was written."""

    def __init__(self, path: str | Path, rate: int = SAMPLE_RATE, exact: bool = False) -> None:
        self.path, self.samples = Path(path), 0
        fmt = _format(path)
        subtype = "FLOAT" if exact and sf.check_format(fmt, "FLOAT") else _subtype(fmt)
        self.tmp = _temporary(self.path)
        try:
            self.file = sf.SoundFile(self.tmp, "w", rate, 1, subtype, format=fmt)
        except BaseException as err:
            self.tmp.unlink(missing_ok=True)
            _raise_write_error(self.path, err)
            raise

    def write(self, wav: torch.Tensor) -> None:
        samples = _samples(wav)
        try:
            self.file.write(samples)
        except BaseException as err:
            _raise_write_error(self.path, err)
            raise
        self.samples += samples.size

    def close(self) -> None:
        if self.file.closed:
            return
        try:
            self.file.close()
            if self.samples:
                _place(self.tmp, self.path)
        except BaseException as err:
            _raise_write_error(self.path, err)
            raise
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write(path: str | Path, wav: torch.Tensor, rate: int = SAMPLE_RATE) -> None:
    """Write `[1, 1, L]` (or `[L]`) audio as 16-bit PCM in the format the suffix names (wav, flac, ...)."""
    audio = _samples(wav)
    fmt = _format(path)
    atomic_write(path, lambda tmp: sf.write(tmp, audio, rate, subtype=_subtype(fmt), format=fmt))


def _samples(wav: torch.Tensor) -> np.ndarray:
    return wav.detach().float().cpu().reshape(-1).clamp(-1, 1).numpy()


def _format(path: str | Path) -> str:
    suffix = Path(path).suffix.lstrip(".").upper()
    if suffix not in sf.available_formats() or _subtype(suffix) is None:
        raise AudioError(f"{path}: unknown audio format {suffix or '(no suffix)'}; use .wav, .flac, .ogg or .mp3")
    return suffix


def _subtype(fmt: str) -> str | None:
    """16-bit PCM where the format holds it, else its own coding (Vorbis for OGG, layer III for MP3)."""
    return "PCM_16" if sf.check_format(fmt, "PCM_16") else sf.default_subtype(fmt)


def _temporary(path: Path) -> Path:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    except OSError as err:
        raise AudioError(f"cannot write {path}: {err.strerror or err}") from None
    os.close(fd)
    return Path(tmp)


def _place(tmp: Path, path: Path) -> None:
    """Rename the finished temporary file to `path`, with the mode a plain write would give it (mkstemp makes
    it 0600 whatever the umask)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)  # an overwritten file keeps its mode
    except FileNotFoundError:
        mode = 0o666 & ~umask()
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def umask() -> int:
    try:  # Linux says it without changing it; os.umask can only read it by setting it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _raise_write_error(path: Path, err: BaseException) -> None:
    """A write that failed for a reason outside the program (disk full, read-only, gone) as one line."""
    if isinstance(err, OSError | sf.SoundFileError):
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise AudioError(f"cannot write {path}: {reason}") from None
