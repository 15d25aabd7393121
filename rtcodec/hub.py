"""The published checkpoints: download from the Hugging Face hub (or a local folder) and build ready models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import PUBLISHED_FILES, CheckpointError
from .config import OFFICIAL
from .decoder import FACodecDecoder, FACodecDecoderV2
from .encoder import FACodecEncoder, FACodecEncoderV2
from .redecoder import FACodecRedecoder

REPO_ID = "amphion/naturalspeech3_facodec"
VERSIONS = {
    "v1": (FACodecEncoder, FACodecDecoder),
    "v2": (FACodecEncoderV2, FACodecDecoderV2),
}


class CheckpointNotFoundError(FileNotFoundError):
    """The published files are neither in the given folder nor in the hub cache, and cannot be downloaded."""


@dataclass
class Pretrained:
    """The models of one published version, in eval mode."""

    encoder: FACodecEncoder
    decoder: FACodecDecoder
    redecoder: FACodecRedecoder | None = None


def file_names(version: str, redecoder: bool = False) -> list[str]:
    """The published file names a version needs."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {sorted(VERSIONS)}, got {version!r}")
    classes = [*VERSIONS[version], *([FACodecRedecoder] if redecoder else [])]
    return [PUBLISHED_FILES[c.__name__] for c in classes]


def download(version: str = "v1", redecoder: bool = False, cache_dir: str | Path | None = None) -> dict[str, Path]:
    """Paths of the published files, fetched into the hub cache if they are not there yet."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    paths = {}
    for name in file_names(version, redecoder):
        try:
            paths[name] = Path(hf_hub_download(REPO_ID, name, cache_dir=cache_dir))
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
            raise CheckpointNotFoundError(
                f"could not get {name} from the Hugging Face hub ({REPO_ID}): {type(err).__name__}. "
                "The hub is unreachable or offline (HF_HUB_OFFLINE=1) and the file is not in the cache. "
                "Run `rtcodec download` on a machine with network access, or download the files from "
                f"https://huggingface.co/{REPO_ID} and pass checkpoint_dir=<folder with {name}>."
            ) from None
    return paths


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a published (or rtcodec) state dict file into `model`, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file; all mean the same to the user
        raise CheckpointError(f"{path} is not a readable PyTorch state dict ({type(err).__name__}: {err})") from None
    try:
        model.load_state_dict(state)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None


def from_pretrained(
    version: str = "v1",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    checkpoint_dir: str | Path | None = None,
    redecoder: bool = False,
    cache_dir: str | Path | None = None,
) -> Pretrained:
    """The published FACodec models of `version` ("v1" or "v2"), ready for inference.

    Files come from `checkpoint_dir` when given (published file names), else from the Hugging Face hub
    cache, downloading them if needed. `dtype` is the precision of the synthesis (decoders); the encoder
    and the quantizers stay in fp32, because half precision changes codes (see the README).
    """
    names = file_names(version, redecoder)
    if checkpoint_dir is not None:
        paths = {name: Path(checkpoint_dir) / name for name in names}
    else:
        paths = download(version, redecoder, cache_dir)
    encoder_cls, decoder_cls = VERSIONS[version]
    models: list[nn.Module] = [encoder_cls(OFFICIAL.encoder), decoder_cls(OFFICIAL.decoder)]
    if redecoder:
        models.append(FACodecRedecoder(OFFICIAL.redecoder))
    for model, name in zip(models, names):
        load_checkpoint(model, paths[name])
        model.to(device=device).eval()
    for decoder in models[1:]:
        decoder.set_synthesis_dtype(dtype)
    return Pretrained(*models)
