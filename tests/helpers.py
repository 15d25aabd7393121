"""Random-weight checkpoints in the published layout, for tests that need full-size models."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rtcodec.layers.activation import kaiser_sinc_filter
from rtcodec.layers.mel import slaney_mel_filterbank

from .conftest import OFFICIAL_KEYS

PUBLISHED = {
    "encoder": "ns3_facodec_encoder.bin",
    "decoder": "ns3_facodec_decoder.bin",
    "encoder_v2": "ns3_facodec_encoder_v2.bin",
    "decoder_v2": "ns3_facodec_decoder_v2.bin",
    "redecoder": "ns3_facodec_redecoder.bin",
}


def official_layout(file_name: str) -> dict:
    return json.loads(OFFICIAL_KEYS.read_text())[file_name]


def _random_tensor(key: str, shape: list[int], gen: torch.Generator) -> torch.Tensor:
    """Values of a plausible scale for each kind of key, so that a full-size model gives finite audio."""
    if key.endswith("filter"):
        return kaiser_sinc_filter()
    if key.endswith("mel_basis"):
        return slaney_mel_filterbank(16000, 1024, 80, 0.0, 8000.0)
    if key.endswith("hann_window"):
        return torch.hann_window(shape[0])
    if key.endswith(".pe"):
        return torch.zeros(shape)  # never read beyond row 0, which the model builds itself
    if key.endswith("weight_g"):
        return 0.5 + torch.rand(shape, generator=gen)  # the norm of each output row of the folded weight
    if key.endswith(("act.alpha", "act.beta")):
        return 0.1 * torch.randn(shape, generator=gen)
    if "_codebook" in key or "_embs" in key:
        return torch.randn(shape, generator=gen)
    if ("ln" in key.split(".")[-2]) and key.endswith("weight"):
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    return 0.02 * torch.randn(shape, generator=gen)


def random_official_state_dict(file_name: str, *, training_keys: bool = True, seed: int = 0) -> dict:
    """Every key of a published file (official_keys.json), random values; optionally without training-only keys."""
    layout = official_layout(file_name)
    prefixes = tuple(layout["training_only_prefixes"])
    gen = torch.Generator().manual_seed(seed)
    return {
        key: _random_tensor(key, shape, gen)
        for key, shape in layout["keys"].items()
        if training_keys or not key.startswith(prefixes)
    }


def write_checkpoint_dir(folder: Path, names=("encoder", "decoder"), seed: int = 0) -> Path:
    """Full-size random checkpoints under the published file names (training-only keys left out to save disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        file_name = PUBLISHED[name]
        torch.save(random_official_state_dict(file_name, training_keys=False, seed=seed + i), folder / file_name)
    return folder
