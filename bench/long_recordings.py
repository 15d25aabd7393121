"""Peak memory and time of the file commands on long clips: `python -m bench.long_recordings`.

Each command runs as its own process (`rtcodec encode | reconstruct | convert`) on speech repeated to length,
with full-size models of random weights (V1 for encode and reconstruct, V2 for convert, the commands' defaults);
its peak resident memory comes from the kernel (`os.wait4`). Writes `bench/results/long-recordings-cpu-DATE.md`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

from rtcodec import OFFICIAL, SAMPLE_RATE, FACodecDecoder, FACodecDecoderV2, FACodecEncoder, FACodecEncoderV2
from rtcodec.checkpoint import PUBLISHED_FILES

from .common import results_stem, speech
from .report import cpu_isa, cpu_name

COMMANDS = ("encode", "reconstruct", "convert")
REFERENCE_SECONDS = 5.0


def write_checkpoints(folder: Path) -> None:
    """The four files the commands load, with seeded random weights (time and memory do not depend on them)."""
    torch.manual_seed(0)
    for cls, config in (
        (FACodecEncoder, OFFICIAL.encoder),
        (FACodecDecoder, OFFICIAL.decoder),
        (FACodecEncoderV2, OFFICIAL.encoder),
        (FACodecDecoderV2, OFFICIAL.decoder),
    ):
        model = cls(config)
        for p in model.parameters():
            p.data.normal_(0, 0.02)
        torch.save(model.state_dict(), folder / PUBLISHED_FILES[cls.__name__])


def measure(argv: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of one command run as a child process."""
    start = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - start
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{' '.join(argv)} failed: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1e6  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1 / 6, 1, 3, 10], help="clip lengths")
    parser.add_argument("--commands", nargs="+", choices=COMMANDS, default=list(COMMANDS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_checkpoints(tmp)
        sf.write(tmp / "reference.wav", speech(REFERENCE_SECONDS)[0, 0].numpy(), SAMPLE_RATE)
        for minutes in args.minutes:
            clip = tmp / "clip.wav"
            sf.write(clip, speech(60 * minutes)[0, 0].numpy(), SAMPLE_RATE)
            for command in args.commands:
                inputs = [clip, tmp / "reference.wav"] if command == "convert" else [clip]
                output = tmp / ("out.fac" if command == "encode" else "out.wav")
                argv = ["rtcodec", command, *map(str, inputs), str(output), "--checkpoint-dir", str(tmp)]
                seconds, gigabytes = measure(argv)
                rows.append((command, minutes, seconds, gigabytes))
                print(f"{command} {minutes:g} min: {seconds:.1f} s, {gigabytes:.2f} GB", flush=True)
    write_report(rows)


def write_report(rows: list[tuple[str, float, float, float]]) -> None:
    date = datetime.date.today().isoformat()
    lines = [
        f"# Long recordings: peak memory and time ({date})",
        "",
        f"`python -m bench.long_recordings {' '.join(sys.argv[1:])}`: {cpu_name()} ({cpu_isa()}), "
        f"{os.cpu_count()} cores, torch {torch.__version__}, "
        f"Python {platform.python_version()}; full-size models with random weights, speech repeated to length, "
        f"a {REFERENCE_SECONDS:g} s reference for convert. One run each.",
        "",
        "| command | clip | time | time per minute of audio | peak RSS |",
        "|---|---|---|---|---|",
    ]
    for command, minutes, seconds, gigabytes in rows:
        length = f"{60 * minutes:.0f} s" if minutes < 1 else f"{minutes:g} min"
        lines.append(f"| {command} | {length} | {seconds:.1f} s | {seconds / minutes:.1f} s | {gigabytes:.2f} GB |")
    path = results_stem("long-recordings-cpu").with_suffix(".md")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
