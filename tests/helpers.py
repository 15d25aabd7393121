"""Random-weight checkpoints in the published layout, for tests that need full-size models."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.common import plausible_value

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


def random_official_state_dict(file_name: str, *, training_keys: bool = True, seed: int = 0) -> dict:
    """Every key of a published file (official_keys.json), random values; optionally without training-only keys."""
    layout = official_layout(file_name)
    prefixes = tuple(layout["training_only_prefixes"])
    gen = torch.Generator().manual_seed(seed)
    return {
        key: plausible_value(key, shape, gen)
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
