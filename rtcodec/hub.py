"""The published checkpoints: download from the Hugging Face hub (or a local folder) and build ready models."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

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
    """The published files are neither in the given folder nor in the hub cache, and cannot be downloaded.
    `names` are the files needed; `reason` says why they could not be had."""

    def __init__(self, message: str, names: list[str] = (), reason: str = "") -> None:
        super().__init__(message)
        self.names, self.reason = list(names), reason


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
    """Paths of the published files: from the hub cache, else downloaded into it. Where the hub cannot be
    reached (offline, no network) this fails at once, not after the hub client's retries."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    names = file_names(version, redecoder)
    paths, missing = {}, []
    for name in names:
        try:
            paths[name] = Path(hf_hub_download(REPO_ID, name, cache_dir=cache_dir, local_files_only=True))
        except LocalEntryNotFoundError:
            missing.append(name)
    if not missing:
        return paths
    if constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set"
    else:
        reason = _unreachable(constants.ENDPOINT)
    for name in missing if not reason else []:
        try:
            paths[name] = Path(hf_hub_download(REPO_ID, name, cache_dir=cache_dir))
        except (HfHubHTTPError, OSError) as err:  # LocalEntryNotFoundError too: the connection failed midway
            reason = f"{type(err).__name__}: {err}"
            break
    if reason:
        raise CheckpointNotFoundError(
            f"the published FACodec weights ({', '.join(missing)}) are not in the Hugging Face cache and cannot be "
            f"downloaded ({reason}). Download them from https://huggingface.co/{REPO_ID} on a machine with network "
            "access (`rtcodec download --checkpoint-dir DIR` does it) and pass checkpoint_dir=DIR.",
            missing,
            reason,
        )
    return paths


def _unreachable(endpoint: str, timeout: float = 5.0) -> str:
    """Why the hub cannot be reached ('' if it can): a TCP connection to it, tried once."""
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as err:
        return f"cannot connect to {url.hostname}: {err.strerror or err}"
    return ""


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
