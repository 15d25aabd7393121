"""What the commands share: model options and loading, speaker embeddings, encoding and decoding."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from .. import audio
from ..bitstream import Bitstream
from ..config import HOP_LENGTH, SAMPLE_RATE
from ..hub import REPO_ID, CheckpointNotFoundError, Pretrained, from_pretrained
from ..streaming import decode_offline, encode_offline
from .progress import ProgressBar

LONG_CLIP_SECONDS = 120.0  # longer clips are told why the speaker embedding takes a while


class CommandError(Exception):
    """A problem with what the user asked for, reported as one line."""


# The synthesis precisions: the speaker encoder and the synthesis run in it, the encoder and the quantizers in fp32
# (the codes never change). What each costs in fidelity and speed is in the README.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_model_options(command: argparse.ArgumentParser, synthesis: bool = True) -> None:
    """--checkpoint-dir and --device; and --precision where the command synthesizes audio (`synthesis`)."""
    command.add_argument(
        "--checkpoint-dir", metavar="DIR", help="folder with the published .bin files (default: the hub cache)"
    )
    command.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    if synthesis:
        command.add_argument(
            "--precision",
            choices=list(PRECISIONS),
            default="fp32",
            help="of the synthesis; the codes stay fp32 and never change. bf16 is faster only on CPUs with bf16 "
            "instructions (AVX-512 BF16, AMX) and GPUs (default: fp32)",
        )


def port_number(value: str) -> int:
    """An argparse type: a TCP or UDP port, 1..65535."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is within 1..65535, got {port}")
    return port


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
    try:
        dtype = PRECISIONS[getattr(args, "precision", "fp32")]
        return from_pretrained(version, device, dtype, checkpoint_dir=args.checkpoint_dir, redecoder=redecoder)
    except CheckpointNotFoundError as err:
        if not err.names:  # a file missing from --checkpoint-dir: the error names it
            raise
        raise CommandError(weights_missing(err, "this command needs")) from None


def weights_missing(err: CheckpointNotFoundError, needed: str) -> str:
    """What to do when the published files cannot be had, in the command's terms."""
    return (
        f"{needed} {', '.join(err.names)}, which are not in the Hugging Face cache, and the hub cannot be reached "
        f"({err.reason}). On a machine with network access run `rtcodec download --checkpoint-dir DIR` (or fetch "
        f"the files from https://huggingface.co/{REPO_ID}), copy DIR here, and pass --checkpoint-dir DIR"
    )


def device_of(models: Pretrained) -> torch.device:
    return models.decoder.timbre_linear.weight.device


def whole_frames(wav: torch.Tensor) -> torch.Tensor:
    """The clip padded with silence to whole frames, so that its last partial frame is coded too."""
    return torch.nn.functional.pad(wav, (0, -wav.shape[2] % HOP_LENGTH))


@torch.inference_mode()
def encode(models: Pretrained, wav: torch.Tensor, version: str, name: str) -> Bitstream:
    """Codes and speaker embedding of a `[1, 1, L]` clip read from `name`; the bitstream keeps L to cut the
    decoded audio to the clip's length."""
    padded = whole_frames(wav).to(device_of(models))
    bar = ProgressBar(f"encoding {name}")
    try:
        enc = encode_offline(models.encoder, padded, progress=bar)
    except ValueError as err:  # too short for the encoder
        raise CommandError(f"{name}: {err}") from None
    finally:
        bar.close()
    return bitstream(models, enc, padded, version, name, wav.shape[2])


@torch.inference_mode()
def bitstream(
    models: Pretrained, enc: torch.Tensor, padded: torch.Tensor, version: str, name: str, samples: int
) -> Bitstream:
    """The bitstream of a clip of `samples` samples from its encoder output `enc` (`padded`: the clip as
    encoded, for the V2 prosody feature)."""
    if enc.shape[2] * HOP_LENGTH > LONG_CLIP_SECONDS * SAMPLE_RATE:  # no bar can follow one attention: say why it waits
        print(
            f"{name}: the speaker embedding attends over all {enc.shape[2] * HOP_LENGTH / SAMPLE_RATE / 60:.1f} min "
            "of the clip at once (its time grows with the square of the length)...",
            file=sys.stderr,
            flush=True,
        )
    try:
        if version == "v2":
            _, codes, _, _, speaker = models.decoder(enc, models.encoder.get_prosody_feature(padded))
        else:
            _, codes, _, _, speaker = models.decoder(enc)
    except ValueError as err:  # too short for the V2 prosody feature
        raise CommandError(f"{name}: {err}") from None
    samples = min(samples, HOP_LENGTH * codes.shape[2])  # V2 codes may cover a frame less
    return Bitstream(codes[:, 0], speaker[0].float(), model_version=int(version[1]), samples=samples)


@torch.inference_mode()
def synthesize(decoder, emb: torch.Tensor, speaker: torch.Tensor, samples: int) -> torch.Tensor:
    """Audio `[1, 1, samples]` of latent frames `[1, 256, T]` in the voice of `speaker` `[1, 256]`."""
    bar = ProgressBar("decoding")
    try:
        return decode_offline(decoder, emb, speaker.to(emb.device), progress=bar)[..., :samples]
    finally:
        bar.close()


@torch.inference_mode()
def decode(models: Pretrained, bits: Bitstream) -> torch.Tensor:
    """The audio of a bitstream, as long as the clip it was encoded from, in the voice of its speaker."""
    emb = models.decoder.vq2emb(bits.codes[:, None].to(device_of(models)))
    return synthesize(models.decoder, emb, bits.speaker[None], bits.samples)


def wrote(path: str, wav: torch.Tensor) -> None:
    """The closing line of a command that wrote audio."""
    print(f"wrote {path}: {wav.shape[-1] / SAMPLE_RATE:.2f} s of audio")
