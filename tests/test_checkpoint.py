"""Loading the published layout: every official key, weight norm folding, training-only keys, clear errors."""

from __future__ import annotations

import pytest
import torch

from rtcodec import (
    OFFICIAL,
    CheckpointError,
    FACodecDecoder,
    FACodecDecoderV2,
    FACodecEncoder,
    FACodecEncoderV2,
    FACodecRedecoder,
)
from rtcodec.checkpoint import fold_weight_norm, to_inference_layout

from .conftest import GOLDEN, OFFICIAL_KEYS, golden_kwargs, needs_golden
from .helpers import official_layout, random_official_state_dict

needs_keys = pytest.mark.skipif(not OFFICIAL_KEYS.is_file(), reason=f"{OFFICIAL_KEYS} not found")

FULL_SIZE = [
    ("ns3_facodec_encoder.bin", FACodecEncoder, OFFICIAL.encoder),
    ("ns3_facodec_decoder.bin", FACodecDecoder, OFFICIAL.decoder),
    ("ns3_facodec_encoder_v2.bin", FACodecEncoderV2, OFFICIAL.encoder),
    ("ns3_facodec_decoder_v2.bin", FACodecDecoderV2, OFFICIAL.decoder),
    ("ns3_facodec_redecoder.bin", FACodecRedecoder, OFFICIAL.redecoder),
]


@needs_keys
@pytest.mark.parametrize(("file_name", "cls", "config"), FULL_SIZE, ids=[f[0] for f in FULL_SIZE])
def test_every_official_key_loads_strictly(file_name, cls, config):
    layout = official_layout(file_name)
    state = random_official_state_dict(file_name)
    assert set(state) == set(layout["keys"])
    model = cls(config)
    model.load_state_dict(state, strict=True)
    # Nothing training-only is allocated: the resident parameters are the inference ones, with the
    # weight-norm gains folded and the positional table (only its first row is used) dropped.
    resident = sum(p.numel() for p in model.parameters())
    prefixes = tuple(layout["training_only_prefixes"])
    keys = {k: torch.Size(s).numel() for k, s in layout["keys"].items() if not k.startswith(prefixes)}
    folded = sum(n for k, n in keys.items() if k.endswith("weight_g"))
    tables = sum(n for k, n in keys.items() if k.endswith("position_emb.pe"))
    buffers = sum(b.numel() for b in model.buffers(recurse=True)) - sum(
        b.numel() for name, b in model.named_buffers() if name.endswith("position")
    )
    assert resident + buffers == layout["inference_params"] - folded - tables
    if prefixes:
        assert resident < 0.4 * layout["all_params"]
    print(
        f"{cls.__name__}: {resident / 1e6:.2f} M resident parameters ({layout['all_params'] / 1e6:.1f} M in the file)"
    )


@needs_keys
def test_decoder_holds_no_training_heads():
    model = FACodecDecoder(OFFICIAL.decoder)
    model.load_state_dict(random_official_state_dict("ns3_facodec_decoder.bin"))
    resident = sum(p.numel() for p in model.parameters())
    assert 24.0e6 < resident < 26.0e6  # the 99.4 M of the file include 73.5 M training-only parameters
    assert not any(name.startswith(("f0_predictor", "phone_predictor")) for name, _ in model.named_parameters())


def test_weight_norm_folding_matches_torch():
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.ConvTranspose1d(6, 4, 10, stride=5))
    folded = to_inference_layout(torch.nn.Sequential(conv).state_dict())
    assert set(folded) == {"0.bias", "0.weight"}
    assert torch.allclose(folded["0.weight"], conv.weight, atol=1e-6)
    g = torch.rand(4, 1)
    v = torch.randn(4, 3)
    assert torch.allclose(fold_weight_norm(g, v), g * v / v.norm(dim=1, keepdim=True))


@needs_golden
def test_parametrization_keys_load_like_weight_g_v():
    state = torch.load(GOLDEN / "encoder.pt")
    renamed = {}
    for key, value in state.items():
        key = key.replace(".weight_g", ".parametrizations.weight.original0")
        renamed[key.replace(".weight_v", ".parametrizations.weight.original1")] = value
    a = FACodecEncoder(**golden_kwargs("encoder"))
    a.load_state_dict(state)
    b = FACodecEncoder(**golden_kwargs("encoder"))
    b.load_state_dict(renamed)
    wav = torch.randn(1, 1, 4000) * 0.1
    with torch.no_grad():
        assert torch.equal(a(wav), b(wav))


@needs_golden
def test_own_state_dict_round_trips():
    model = FACodecDecoder(**golden_kwargs("decoder"))
    model.load_state_dict(torch.load(GOLDEN / "decoder.pt"))
    again = FACodecDecoder(**golden_kwargs("decoder"))
    again.load_state_dict(model.state_dict())
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@needs_golden
def test_wrong_model_names_the_file_and_keys():
    model = FACodecDecoder(**golden_kwargs("decoder"))
    with pytest.raises(CheckpointError) as err:
        model.load_state_dict(torch.load(GOLDEN / "encoder.pt"))
    message = str(err.value)
    assert "FACodecEncoder (published as ns3_facodec_encoder.bin)" in message
    assert "missing from the checkpoint" in message and "model.0.weight" in message


@needs_golden
def test_wrong_config_lists_the_shape_mismatches():
    model = FACodecDecoder(OFFICIAL.decoder)  # full size, the golden file is small
    with pytest.raises(CheckpointError) as err:
        model.load_state_dict(torch.load(GOLDEN / "decoder.pt"))
    message = str(err.value)
    assert "it holds FACodecDecoder" in message and "other constructor arguments" in message
    assert "model.0.weight: checkpoint (64, 256, 7), model (1024, 256, 7)" in message


def test_not_a_state_dict():
    with pytest.raises(CheckpointError, match="expected a state dict"):
        FACodecEncoder().load_state_dict([1, 2, 3])


def test_half_a_weight_norm_pair():
    state = dict(FACodecEncoder(ngf=4, out_channels=16).state_dict())
    state["block.0.weight_g"] = torch.ones(4, 1, 1)
    del state["block.0.weight"]
    with pytest.raises(CheckpointError, match="'block.0' has no weight_v"):
        FACodecEncoder(ngf=4, out_channels=16).load_state_dict(state)
