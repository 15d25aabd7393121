"""The codebook search keeps the normalized codebooks between calls, and notices when they change."""

from __future__ import annotations

import torch

from rtcodec.quantize import FactorizedVQ


def _layer(seed: int) -> FactorizedVQ:
    torch.manual_seed(seed)
    return FactorizedVQ(dim=16, codebook_size=64, codebook_dim=4)


def test_codes_follow_a_codebook_changed_in_place():
    layer, other = _layer(0), _layer(1)
    z = torch.randn(2, 50, 16)
    with torch.inference_mode():
        before = layer.encode(z)  # fills the cache, inside inference mode
    layer.load_state_dict(other.state_dict())  # in place: same tensors, new values
    assert torch.equal(layer.encode(z), other.encode(z))
    assert not torch.equal(layer.encode(z), before)


def test_codes_follow_a_codebook_changed_elsewhere_and_moved_back():
    layer, other = _layer(4), _layer(5)
    z = torch.randn(1, 40, 16)
    layer.encode(z)  # fills the cache
    layer.to(torch.float64)  # new data (as .to("cuda") gives), changed there, then moved back
    layer._codebook.weight.data.copy_(other._codebook.weight.data.double())
    layer.to(torch.float32)
    other.in_proj.load_state_dict(layer.in_proj.state_dict())  # the same projection: only the codebooks differed
    assert torch.equal(layer.encode(z), other.encode(z))


def test_cache_made_in_inference_mode_serves_outside_it_with_grad():
    layer = _layer(2)
    z = torch.randn(1, 30, 16, requires_grad=True)
    with torch.inference_mode():
        expected = layer.encode(z.detach())
    assert torch.equal(layer.encode(z), expected)  # no "inference tensors cannot be saved for backward"


def test_model_made_in_inference_mode_is_searched_without_cache():
    with torch.inference_mode():
        layer = _layer(3)
        z = torch.randn(1, 30, 16)
        codes = layer.encode(z)
        layer._codebook.weight.mul_(-1)  # allowed in inference mode, and no version records it
        assert not torch.equal(layer.encode(z), codes)
    assert layer._unit_cache == ()
