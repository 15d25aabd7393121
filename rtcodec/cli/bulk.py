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
        return {p: p.relative_to(source).with_suffix(".fac") for p in files}
    if not source.is_file():
        raise CommandError(f"{source}: no such file list")
    lines = (line.split("#")[0].strip() for line in source.read_text().splitlines())
    files = [Path(line) if Path(line).is_absolute() else source.parent / line for line in lines if line]
    names: dict[Path, Path] = {}
    for p in files:
        name = Path(p.stem + ".fac")
        if name in names.values():
            raise CommandError(f"{source}: two clips would both be written to {name}")
        names[p] = name
    return names


def run(args: argparse.Namespace) -> None:
    clips = clips_of(Path(args.input))
    if not clips:
        raise CommandError(f"{args.input} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CommandError(f"{out} is a file: with a folder or a list to encode, the output is a folder")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}")
    models = load(args, args.model)
    failed = []
    order = sorted(clips, key=_duration)
    bar = ProgressBar(f"encoding {len(order)} clips", min_seconds=0)  # a corpus: the bar from the start
    for first in range(0, len(order), args.batch_size):
        failed += _encode_batch(models, order[first : first + args.batch_size], clips, out, args.model)
        bar(min(first + args.batch_size, len(order)), len(order))
    bar.close()
    print(f"wrote {len(order) - len(failed)} .fac files to {out}")
    if failed:
        raise CommandError(f"{len(failed)} of {len(order)} clips were skipped: {', '.join(map(str, failed[:5]))}")


def _duration(path: Path) -> float:
    try:
        info = sf.info(path)
        return info.frames / info.samplerate
    except Exception:  # unreadable: reported when it is read
        return 0.0


@torch.inference_mode()
def _encode_batch(models: Pretrained, paths: list[Path], names: dict[Path, Path], out: Path, version: str) -> list:
    """Encode and write `paths`; the ones that failed, each reported on stderr."""
    failed, wavs = [], {}
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
        except (ValueError, CommandError, OSError) as err:
            failed.append(_skip(path, err))
    return failed


def _skip(path: Path, err: Exception) -> Path:
    print(f"\nrtcodec: skipping {path}: {err}", file=sys.stderr)
    return path
