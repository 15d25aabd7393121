"""CPU benchmarks with pytest-benchmark: `python -m pytest bench -q` (full size, random weights, 10 s of speech).

Each offline case runs on both paths, so the ratio of fast to reference shows in one run.
"""

from __future__ import annotations

import pytest
import torch

from rtcodec.streaming import decode_offline, encode_offline

from .common import latency, models, realtime_factor, round_trip, speech, stream_push_times, voice_conversion


@pytest.fixture(scope="module")
def setup():
    encoder, decoder = models()
    wav = speech(10.0)
    with torch.inference_mode():
        enc = encoder(wav)
        emb, _, _, _, spk = decoder(enc)
    return encoder, decoder, wav, emb, spk


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_encode_10s(benchmark, setup, path):
    encoder, _, wav, _, _ = setup
    run = encode_offline if path == "fast" else (lambda e, w: e(w))
    with torch.inference_mode():
        benchmark.pedantic(run, args=(encoder, wav), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_decode_10s(benchmark, setup, path):
    _, decoder, _, emb, spk = setup
    run = decode_offline if path == "fast" else (lambda d, e, s: d.inference(e, s))
    with torch.inference_mode():
        benchmark.pedantic(run, args=(decoder, emb, spk), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_round_trip_10s(benchmark, setup, path):
    encoder, decoder, wav, _, _ = setup
    benchmark.pedantic(round_trip, args=(encoder, decoder, wav, path == "fast"), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("backend", ["eager", "compile", "onnxruntime"])
@pytest.mark.parametrize("hops", [1, 2, 4, 8])
def test_streaming_voice_conversion(benchmark, setup, hops, backend):
    """One round streams 2 s (after a warm-up, which compiles or exports); `extra_info` has the per-push p50/p99
    (ms) and the real-time factor."""
    encoder, decoder, wav, _, _ = setup
    pipeline = voice_conversion(encoder, decoder, wav, hops, backend)
    times = benchmark.pedantic(stream_push_times, args=(pipeline, wav[..., :32000], hops), rounds=1)
    benchmark.extra_info.update(**latency(times), rtf=realtime_factor(times, hops))
