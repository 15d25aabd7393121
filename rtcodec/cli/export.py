"""`rtcodec export --onnx DIR`: the streams as ONNX graphs for onnxruntime (see `rtcodec.export`)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from .. import audio
from .common import CommandError, load


def register(commands) -> None:
    c = commands.add_parser(
        "export",
        help="export the streams as ONNX graphs with explicit states, for onnxruntime without torch",
        description="Writes the one-hop ticks of the encoder and decoder streams (settled, and with edges), the "
        "quantizer, the decoder's front and the timbre projection as ONNX, and manifest.json. "
        "rtcodec.onnx_stream streams with them using onnxruntime and numpy alone.",
    )
    c.add_argument("--onnx", required=True, metavar="DIR", type=Path, help="a new folder for the graphs")
    c.add_argument("--voice", metavar="REF.wav", help="also write the speaker embedding of this voice (speaker.npy)")
    c.add_argument("--batch-size", type=int, default=1, help="rows per stream, fixed in the graphs (default: 1)")
    c.add_argument(
        "--checkpoint-dir", metavar="DIR", help="folder with the published .bin files (default: the hub cache)"
    )
    c.set_defaults(run=run_export, device="cpu")  # graphs are exported from the CPU models


def run_export(args: argparse.Namespace) -> None:
    from ..export import GRAPHS, export_onnx
    from ..onnx_stream import require_onnxruntime

    target: Path = args.onnx
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CommandError(f"{target} exists and is not an empty folder: give a new folder")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not target.resolve().parent.is_dir():
        raise CommandError(f"the folder {target.resolve().parent} does not exist")
    audio.check_writable(target.resolve().parent, target)
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)

        require_onnxruntime()
    except ImportError:
        raise CommandError("export needs onnx, onnxscript and onnxruntime: pip install 'rtcodec[onnx]'") from None
    reference = audio.read(args.voice) if args.voice else None
    models = load(args, "v1")
    speaker = None
    if reference is not None:
        from ..pipelines import speaker_embedding

        speaker = speaker_embedding(models.encoder, models.decoder, reference)[0]
    done = []

    def progress(name: str) -> None:
        done.append(name)
        print(f"[{len(done)}/{GRAPHS}] {name}", file=sys.stderr, flush=True)

    # Into a temporary folder beside the target, renamed when complete: an interrupted export leaves nothing.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.resolve().parent))
    try:
        export_onnx(models.encoder, models.decoder, staging, args.batch_size, speaker, progress)
        staging.chmod(0o777 & ~audio.umask())  # mkdtemp makes it 0700: the mode a plain mkdir would give
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"wrote {target} ({len(done)} graphs and manifest.json)")
