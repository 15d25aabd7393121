"""The `rtcodec` command (also `python -m rtcodec`): a thin layer over the library.

Every command reports bad input as one line on stderr and exits with status 1; no traceback, no partial file.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..audio import AudioError
from ..bitstream import BitstreamError
from ..checkpoint import CheckpointError
from . import export, files, live, net, serve
from .common import CommandError


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="rtcodec",
        description="Streaming FACodec: speech to 4.8 kbit/s codes and back, and zero-shot voice conversion.",
    )
    top.add_argument("--version", action="version", version=f"rtcodec {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (files, live, net, serve, export):
        module.register(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        print("rtcodec: interrupted", file=sys.stderr)
        return 130
    except (CommandError, AudioError, BitstreamError, CheckpointError, FileNotFoundError, ValueError, OSError) as err:
        print(f"rtcodec: error: {err}", file=sys.stderr)
        return 1
    return 0
