"""What the benchmarks share: full-size models with random weights, 10 s of speech, the two offline paths."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from rtcodec import HOP_LENGTH, OFFICIAL, SAMPLE_RATE, FACodecDecoder, FACodecEncoder
from rtcodec.pipelines import VoiceConversion
from rtcodec.streaming import decode_offline, encode_offline, plain_computation

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
HOP_SECONDS = HOP_LENGTH / SAMPLE_RATE  # 12.5 ms: the real-time budget of a one-hop push


def models() -> tuple[FACodecEncoder, FACodecDecoder]:
    """The official architectures with seeded random weights (speed does not depend on the values)."""
    torch.manual_seed(0)
    encoder, decoder = FACodecEncoder(OFFICIAL.encoder).eval(), FACodecDecoder(OFFICIAL.decoder).eval()
    for module in (encoder, decoder):
        for p in module.parameters():
            p.data.normal_(0, 0.02)
    return encoder, decoder


def speech(seconds: float = 10.0) -> torch.Tensor:
    """`[1, 1, seconds * 16000]`: the shared speech clips repeated, or seeded noise where they are absent."""
    import soundfile as sf  # here: the GPU machines run bench.gpu without it

    n = int(seconds * SAMPLE_RATE)
    clips = sorted(AUDIO.glob("*.wav"))
    if not clips:
        return 0.1 * torch.randn(1, 1, n, generator=torch.Generator().manual_seed(0))
    audio = np.concatenate([sf.read(c, dtype="float32")[0] for c in clips])
    return torch.from_numpy(np.resize(audio, n)).view(1, 1, n)


def round_trip(encoder, decoder, wav: torch.Tensor, fast: bool) -> torch.Tensor:
    """Encode, quantize and decode: the reference path is the plain transcription of the published code."""
    with torch.inference_mode():
        if fast:
            enc = encode_offline(encoder, wav)
            emb, _, _, _, spk = decoder(enc)
            return decode_offline(decoder, emb, spk)
        with plain_computation():
            enc = encoder(wav)
            emb, _, _, _, spk = decoder(enc)
            return decoder.inference(emb, spk)


def voice_conversion(
    encoder, decoder, wav: torch.Tensor, hops_per_push: int, backend=None, lookahead=None, pipelined=False
):
    """The streaming voice conversion of `wav` (its first 3 s the reference), warmed up for pushes of
    `hops_per_push` hops (that is where a backend compiles or exports the hop step); `lookahead` (encoder,
    decoder)."""
    lookahead = lookahead or (None, None)
    reference = wav[..., : 3 * SAMPLE_RATE]
    pipeline = VoiceConversion(encoder, decoder, reference, lookahead=lookahead, backend=backend, pipelined=pipelined)
    pipeline.warm_up(hops_per_push * encoder.hop_length)
    return pipeline


def stream_push_times(pipeline: VoiceConversion, wav: torch.Tensor, hops_per_push: int) -> list[float]:
    """Stream `wav` through `pipeline` (reset first) in pushes of `hops_per_push` hops: seconds per push."""
    pipeline.reset()
    step = hops_per_push * HOP_LENGTH
    times = []
    for i in range(0, wav.shape[2] - step + 1, step):
        start = time.perf_counter()
        pipeline.push(wav[..., i : i + step])
        times.append(time.perf_counter() - start)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(times: list[float]) -> dict:
    """p50 and p99 of per-push times in seconds, in milliseconds."""
    return {"p50_ms": 1000 * percentile(times, 0.5), "p99_ms": 1000 * percentile(times, 0.99)}


def realtime_factor(times: list[float], hops_per_push: int) -> float:
    """Compute time over audio time, for pushes of `hops_per_push` hops: below 1 keeps up with a live signal."""
    return sum(times) / (len(times) * hops_per_push * HOP_SECONDS)
