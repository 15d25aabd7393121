"""Shared fixtures: the golden models and vectors of ../shared/facodec (tests skip where it is absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from rtcodec import FACodecDecoder, FACodecDecoderV2, FACodecEncoder, FACodecEncoderV2, FACodecRedecoder

# RTCODEC_SHARED points elsewhere, e.g. at a copy carried to a GPU machine.
SHARED = Path(os.environ.get("RTCODEC_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
GOLDEN = SHARED / "facodec" / "golden"
AUDIO = SHARED / "audio"
OFFICIAL_KEYS = SHARED / "facodec" / "official_keys.json"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share two cores (the README's test command): a second torch thread per worker would wait on a
    # busy core at every one of a hop's hundreds of small operations.
    torch.set_num_threads(1)

needs_golden = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden vectors not found at {GOLDEN}")
needs_audio = pytest.mark.skipif(not AUDIO.is_dir(), reason=f"speech clips not found at {AUDIO}")

# The golden transformers have 2 layers and an FFN of 256 (the official ones 4 and 1024).
SMALL_TRANSFORMER = {"transformer_layers": 2, "transformer_ffn_channels": 256}
_CLASSES = {
    "encoder": FACodecEncoder,
    "encoder_full": FACodecEncoder,
    "encoder_v2": FACodecEncoderV2,
    "decoder": FACodecDecoder,
    "decoder_v2": FACodecDecoderV2,
    "redecoder": FACodecRedecoder,
}


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Relative L2 error."""
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


def golden_kwargs(name: str) -> dict:
    kwargs = json.loads((GOLDEN / "configs.json").read_text())[name]
    return kwargs if name.startswith("encoder") else {**kwargs, **SMALL_TRANSFORMER}


def golden_model(name: str):
    """A golden model built from configs.json and loaded with plain load_state_dict(torch.load(path))."""
    model = _CLASSES[name](**golden_kwargs(name))
    model.load_state_dict(torch.load(GOLDEN / f"{name}.pt"))
    return model.eval()


@pytest.fixture(scope="session")
def vectors() -> dict[str, torch.Tensor]:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden vectors not found at {GOLDEN}")
    return torch.load(GOLDEN / "vectors.pt")


@pytest.fixture(scope="session")
def golden():
    if not GOLDEN.is_dir():
        pytest.skip(f"golden vectors not found at {GOLDEN}")
    return {name: golden_model(name) for name in _CLASSES}
