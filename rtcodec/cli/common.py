"""What the commands share: model options and loading, speaker embeddings, encoding and decoding."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from .. import audio
from ..bitstream import Bitstream
from ..hub import Pretrained, from_pretrained
from ..streaming import decode_offline, encode_offline
from .progress import ProgressBar


class CommandError(Exception):
    """A problem with what the user asked for, reported as one line."""


def add_model_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--checkpoint-dir", metavar="DIR", help="folder with the published .bin files (default: the hub cache)"
    )
    command.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")


def check_output(output: str, *inputs: str, audio_file: bool = True) -> None:
    """Refuse, before any work, an output that cannot be written or that is one of the inputs."""
    audio.check_output(output, audio=audio_file)
    for source in inputs:
        if Path(output).exists() and Path(source).exists() and os.path.samefile(output, source):
            raise CommandError(f"{output} is also an input: writing it would destroy it; choose another output")


def load(args: argparse.Namespace, version: str, redecoder: bool = False) -> Pretrained:
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise CommandError(f"unknown device {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda was asked for, but torch sees no CUDA GPU")
    return from_pretrained(version, device, checkpoint_dir=args.checkpoint_dir, redecoder=redecoder)


def device_of(models: Pretrained) -> torch.device:
    return models.decoder.timbre_linear.weight.device


@torch.inference_mode()
def encode(models: Pretrained, wav: torch.Tensor, version: str) -> Bitstream:
    """Codes and speaker embedding of a `[1, 1, L]` clip."""
    wav = wav.to(device_of(models))
    bar = ProgressBar("encoding")
    enc = encode_offline(models.encoder, wav, progress=bar)
    bar.close()
    if version == "v2":
        _, codes, _, _, speaker = models.decoder(enc, models.encoder.get_prosody_feature(wav))
    else:
        _, codes, _, _, speaker = models.decoder(enc)
    return Bitstream(codes[:, 0], speaker[0].float(), model_version=int(version[1]))


@torch.inference_mode()
def decode(models: Pretrained, bits: Bitstream) -> torch.Tensor:
    """Audio `[1, 1, 200 * T]` of a bitstream, in the voice of its speaker embedding."""
    device = device_of(models)
    emb = models.decoder.vq2emb(bits.codes[:, None].to(device))
    bar = ProgressBar("decoding")
    wav = decode_offline(models.decoder, emb, bits.speaker[None].to(device), progress=bar)
    bar.close()
    return wav
