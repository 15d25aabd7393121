"""Exact streaming: the concatenated stream output equals the offline output for any chunking."""

from __future__ import annotations

import pytest
import torch

from rtcodec import OFFICIAL, FACodecDecoder, FACodecEncoder, FACodecRedecoder

from .conftest import golden_model, needs_golden, rel_err

TOL = 1e-5


def random_chunks(total: int, gen: torch.Generator, largest: int) -> list[int]:
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(torch.randint(0, largest + 1, (1,), generator=gen)))
    return sizes


def run_stream(stream, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    outs, start = [], 0
    for size in sizes:
        outs.append(stream.push(x[..., start : start + size]))
        start += size
    outs.append(stream.flush())
    return torch.cat(outs, dim=2)


def assert_streams_like_offline(stream, offline: torch.Tensor, x: torch.Tensor, sizes: list[int]) -> None:
    stream.reset()
    got = run_stream(stream, x, sizes)
    assert got.shape == offline.shape
    assert rel_err(got, offline) < TOL


@needs_golden
@pytest.mark.parametrize("length", [1211, 4000, 6399])
def test_golden_encoder_any_chunking(vectors, length):
    encoder = golden_model("encoder")
    wav = vectors["wav_a"][..., :length]
    with torch.no_grad():
        offline = encoder(wav)
    stream = encoder.stream()
    gen = torch.Generator().manual_seed(length)
    for sizes in ([200] * (length // 200 + 1), random_chunks(length, gen, 700), [length]):
        assert_streams_like_offline(stream, offline, wav, sizes)


@needs_golden
def test_golden_encoder_one_sample_pushes(vectors):
    encoder = golden_model("encoder")
    wav = vectors["wav_b"][..., 3000:3617]
    with torch.no_grad():
        offline = encoder(wav)
    assert_streams_like_offline(encoder.stream(), offline, wav, [1] * wav.shape[2])


@needs_golden
@pytest.mark.parametrize("name", ["decoder", "decoder_v2", "redecoder"])
def test_golden_decoders_any_chunking(vectors, name):
    decoder = golden_model(name)
    emb = vectors["v1.vq_post_emb_a"][..., :37]
    spk = vectors["v1.spk_embs_b"]
    with torch.no_grad():
        offline = decoder.inference(emb, spk)
    stream = decoder.stream(spk)
    gen = torch.Generator().manual_seed(1)
    for sizes in ([1] * 37, random_chunks(37, gen, 6), [37]):
        assert_streams_like_offline(stream, offline, emb, sizes)


def test_full_size_random_weights_stream():
    torch.manual_seed(0)
    encoder = FACodecEncoder(OFFICIAL.encoder).eval()
    decoder = FACodecDecoder(OFFICIAL.decoder).eval()
    for module in (encoder, decoder):
        for p in module.parameters():
            p.data.normal_(0, 0.02)
    wav = 0.1 * torch.randn(2, 1, 2345)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        offline = encoder(wav)
        assert_streams_like_offline(encoder.stream(batch_size=2), offline, wav, random_chunks(2345, gen, 450))
        spk = torch.randn(2, 256)
        audio = decoder.inference(offline, spk)
        assert_streams_like_offline(decoder.stream(spk, batch_size=2), audio, offline, random_chunks(11, gen, 3))


@needs_golden
def test_latency_from_the_layer_list():
    """Lookahead and context follow from the kernels, strides and paddings (see the README)."""
    encoder = golden_model("encoder").stream()
    decoder = golden_model("decoder").stream(torch.zeros(1, 256))
    assert (encoder.lookahead_samples, encoder.left_context_samples) == (5078, 5126)
    assert (decoder.lookahead_samples, decoder.left_context_samples) == (5725, 5677)
    assert FACodecRedecoder().stream(torch.zeros(1, 256)).lookahead_samples == 5725


@needs_golden
def test_frames_come_out_once_their_lookahead_has_arrived(vectors):
    stream = golden_model("encoder").stream()
    wav = vectors["wav_a"]
    out = stream.push(wav[..., : 200 * 3 + stream.lookahead_samples])
    assert out.shape[2] == 3
    assert (
        stream.push(wav[..., 200 * 3 + stream.lookahead_samples : 200 * 4 + stream.lookahead_samples - 1]).shape[2] == 0
    )
    assert (
        stream.push(wav[..., 200 * 4 + stream.lookahead_samples - 1 : 200 * 4 + stream.lookahead_samples]).shape[2] == 1
    )


def test_push_rejects_bad_input():
    encoder = FACodecEncoder(ngf=4, out_channels=256)
    stream = encoder.stream(batch_size=2)
    with pytest.raises(ValueError, match=r"push takes audio shaped \[2, 1, n\], got \(1, 1, 10\)"):
        stream.push(torch.zeros(1, 1, 10))
    with pytest.raises(ValueError, match="floating-point"):
        stream.push(torch.zeros(2, 1, 10, dtype=torch.int16))
    with pytest.raises(ValueError, match="NaN"):
        stream.push(torch.full((2, 1, 10), float("nan")))
    assert stream.push(torch.zeros(2, 1, 0)).shape == (2, 256, 0)
    stream.flush()
    with pytest.raises(RuntimeError, match="reset"):
        stream.push(torch.zeros(2, 1, 10))
    stream.reset()
    assert stream.push(torch.zeros(2, 1, 10)).shape == (2, 256, 0)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        encoder.stream(batch_size=0)
