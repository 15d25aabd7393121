"""`rtcodec encode FOLDER_OR_LIST OUT_FOLDER`: a corpus to one `.fac` per clip, the encoder run in batches.

Clips are sorted by duration and encoded `--batch-size` at a time (`rtcodec.streaming.encode_many`: each clip's
codes are those it gives alone). A clip that cannot be read or is too short is reported and skipped; the
command then ends with status 1, after writing every other file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import soundfile as sf
import torch

from .. import audio
from ..hub import Pretrained
from ..streaming import encode_many
from .common import CommandError, bitstream, device_of, load, whole_frames
from .progress import ProgressBar

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au"}


def is_bulk(path: str) -> bool:
    return Path(path).is_dir() or Path(path).suffix == ".txt"


def clips_of(source: Path) -> dict[Path, Path]:
    """Each clip's path and its `.fac` path relative to the output folder: a folder's audio files (the same
    tree), or a list's lines (one path a line; '#' starts a comment; each name once)."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        names = {p: p.relative_to(source).with_suffix(".fac") for p in files}
    elif source.is_file():
        lines = (line.split("#")[0].strip() for line in source.read_text().splitlines())
        files = [Path(line) if Path(line).is_absolute() else source.parent / line for line in lines if line]
        names = {p: Path(p.stem + ".fac") for p in files}
    else:
        raise CommandError(f"{source}: no such file list")
    _refuse_collisions(source, names)
    return names


def _refuse_collisions(source: Path, names: dict[Path, Path]) -> None:
    """Two clips that would be written to one `.fac` (a.wav and a.flac; b.wav and b.WAV, which are one file
    where names ignore case): refused before anything is encoded, so no clip's codes silently replace another's."""
    taken: dict[str, Path] = {}
    for clip, name in names.items():
        other = taken.setdefault(str(name).casefold(), clip)
        if other != clip:
            raise CommandError(
                f"{source}: {other} and {clip} would both be written to {name}; rename one, or list the clips in a "
                ".txt file by their own names"
            )


def run(args: argparse.Namespace) -> None:
    clips = clips_of(Path(args.input))
    if not clips:
        raise CommandError(f"{args.input} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CommandError(f"{out} is a file: with a folder or a list to encode, the output is a folder")
    existing = next(folder for folder in (out, *out.absolute().parents) if folder.exists())
    audio.check_writable(existing, out)  # before the models load
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}")
    models = load(args, args.model)
    written, failed = 0, []
    order = sorted(clips, key=_duration)
    bar = ProgressBar(f"encoding {len(order)} clips", min_seconds=0)  # a corpus: the bar from the start
    for first in range(0, len(order), args.batch_size):
        batch_written, batch_failed = _encode_batch(
            models, order[first : first + args.batch_size], clips, out, args.model
        )
        written, failed = written + batch_written, failed + batch_failed
        bar(min(first + args.batch_size, len(order)), len(order))
    bar.close()
    print(f"wrote {written} .fac files to {out}")
    if failed:
        raise CommandError(f"{len(failed)} of {len(order)} clips were skipped: {', '.join(map(str, failed[:5]))}")


def _duration(path: Path) -> float:
    try:
        info = sf.info(path)
        return info.frames / info.samplerate
    except Exception:  # unreadable: reported when it is read
        return 0.0


@torch.inference_mode()
def _encode_batch(
    models: Pretrained, paths: list[Path], names: dict[Path, Path], out: Path, version: str
) -> tuple[int, list[Path]]:
    """Encode and write `paths`: how many were written, and the ones that failed, each reported on stderr."""
    written, failed, wavs = 0, [], {}
    for path in paths:
        try:
            wavs[path] = audio.read(path, notice=lambda message: None)
        except audio.AudioError as err:
            failed.append(_skip(path, err))
    clips = [whole_frames(wav).to(device_of(models)) for wav in wavs.values()]  # as they are encoded
    try:
        encoded = encode_many(models.encoder, clips)
    except ValueError:  # a clip too short in the batch: one by one, to name it
        encoded = [None] * len(wavs)
    for (path, wav), padded, enc in zip(wavs.items(), clips, encoded):
        try:
            if enc is None:
                enc = encode_many(models.encoder, [padded])[0]
            bits = bitstream(models, enc, padded, version, str(path), wav.shape[2])
            target = out / names[path]
            target.parent.mkdir(parents=True, exist_ok=True)
            bits.save(target)
            written += 1
        except (ValueError, CommandError, OSError) as err:
            failed.append(_skip(path, err))
    return written, failed


def _skip(path: Path, err: Exception) -> Path:
    print(f"\nrtcodec: skipping {path}: {err}", file=sys.stderr)
    return path
