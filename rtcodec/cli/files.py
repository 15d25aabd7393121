"""File commands: download, encode, decode, reconstruct, convert."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from .. import audio
from ..bitstream import Bitstream
from ..config import SAMPLE_RATE
from ..hub import CheckpointNotFoundError, download
from ..pipelines import check_reference
from . import bulk
from .common import (
    CommandError,
    add_model_options,
    check_output,
    decode,
    device_of,
    encode,
    load,
    synthesize,
    weights_missing,
    wrote,
)


def register(commands) -> None:
    c = commands.add_parser("download", help="fetch the published checkpoints into the Hugging Face cache")
    c.add_argument("--version", choices=["v1", "v2", "all"], default="all", help="which models (default: all)")
    c.add_argument("--cache-dir", help="hub cache folder (default: huggingface_hub's)")
    c.add_argument("--checkpoint-dir", metavar="DIR", help="also copy the files here, for --checkpoint-dir elsewhere")
    c.set_defaults(run=run_download)

    c = commands.add_parser("encode", help="audio file (or a folder or list of them) to .fac bitstreams (4.8 kbit/s)")
    c.add_argument(
        "input", help="audio file (wav, flac, ogg, mp3; any rate and channel count), or a folder or a .txt list of them"
    )
    c.add_argument("output", help=".fac file to write (a folder, for a folder or a list)")
    c.add_argument("--model", choices=["v1", "v2"], default="v1", help="FACodec version of the codes (default: v1)")
    c.add_argument("--batch-size", type=int, default=8, help="clips encoded at once, for a folder or list (8)")
    add_model_options(c, synthesis=False)
    c.set_defaults(run=run_encode)

    c = commands.add_parser("decode", help=".fac bitstream to an audio file")
    c.add_argument("input", help=".fac file")
    c.add_argument("output", help="audio file to write (16 kHz; .wav, .flac, .ogg or .mp3)")
    add_model_options(c)
    c.set_defaults(run=run_decode)

    c = commands.add_parser("reconstruct", help="audio through the codec and back (encode + decode)")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--model", choices=["v1", "v2"], default="v1")
    add_model_options(c)
    c.set_defaults(run=run_reconstruct)

    c = commands.add_parser("convert", help="zero-shot voice conversion of a file to the voice of a reference")
    c.add_argument("source", help="speech to convert")
    c.add_argument("reference", help="a few seconds of the target voice")
    c.add_argument("output")
    c.add_argument(
        "--model", choices=["v1", "v2", "redecoder"], default="v2", help="converter (default: v2, the better one)"
    )
    add_model_options(c)
    c.set_defaults(run=run_convert)


def run_download(args: argparse.Namespace) -> None:
    versions = ["v1", "v2"] if args.version == "all" else [args.version]
    for version in versions:
        try:
            paths = download(version, redecoder=version == "v1", cache_dir=args.cache_dir)
        except CheckpointNotFoundError as err:
            raise CommandError(weights_missing(err, "cannot download")) from None
        for name, path in paths.items():
            if args.checkpoint_dir:
                target = Path(args.checkpoint_dir) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                audio.atomic_write(target, lambda tmp, source=path: shutil.copyfile(source, tmp))
                path = target
            print(f"{name}: {path}")


def run_encode(args: argparse.Namespace) -> None:
    if bulk.is_bulk(args.input):
        return bulk.run(args)
    check_output(args.output, args.input, audio_file=False)
    wav = audio.read(args.input)
    bits = encode(load(args, args.model), wav, args.model, args.input)
    bits.save(args.output)
    seconds = wav.shape[2] / SAMPLE_RATE
    print(f"wrote {args.output}: {bits.frames} frames, {len(bits.to_bytes())} bytes ({seconds:.2f} s of audio)")


def run_decode(args: argparse.Namespace) -> None:
    check_output(args.output, args.input)
    bits = Bitstream.load(args.input)
    wav = decode(load(args, f"v{bits.model_version}"), bits)
    audio.write(args.output, wav)
    wrote(args.output, wav)


def run_reconstruct(args: argparse.Namespace) -> None:
    check_output(args.output, args.input)
    wav = audio.read(args.input)
    models = load(args, args.model)
    bits = encode(models, wav, args.model, args.input)
    # Through the bytes, so the result is what `encode` then `decode` give (fp16 speaker embedding included).
    out = decode(models, Bitstream.from_bytes(bits.to_bytes()))
    audio.write(args.output, out)
    wrote(args.output, out)


@torch.inference_mode()
def run_convert(args: argparse.Namespace) -> None:
    check_output(args.output, args.source, args.reference)
    source, reference = audio.read(args.source), audio.read(args.reference)
    check_reference(reference, args.reference)
    version = "v1" if args.model == "redecoder" else args.model
    models = load(args, version, redecoder=args.model == "redecoder")
    src, ref = encode(models, source, version, args.source), encode(models, reference, version, args.reference)
    device = device_of(models)
    codes, speaker = src.codes[:, None].to(device), ref.speaker[None].to(device)
    if args.model == "redecoder":
        decoder, emb = models.redecoder, models.redecoder.vq2emb(codes, speaker, use_residual=False)
    else:
        decoder, emb = models.decoder, models.decoder.vq2emb(codes, False)
    out = synthesize(decoder, emb, speaker, src.samples)
    audio.write(args.output, out)
    wrote(args.output, out)
