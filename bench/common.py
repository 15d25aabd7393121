"""What the benchmarks share: full-size models with random weights, 10 s of speech, the two offline paths."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import numpy as np
import torch

from rtcodec import HOP_LENGTH, OFFICIAL, SAMPLE_RATE, FACodecDecoder, FACodecEncoder
from rtcodec.layers.activation import kaiser_sinc_filter
from rtcodec.layers.mel import slaney_mel_filterbank
from rtcodec.pipelines import VoiceConversion
from rtcodec.streaming import decode_offline, encode_offline, plain_computation

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
RESULTS = Path(__file__).resolve().parent / "results"
HOP_SECONDS = HOP_LENGTH / SAMPLE_RATE  # 12.5 ms: the real-time budget of a one-hop push


def results_stem(name: str) -> Path:
    """`bench/results/NAME-DATE`, or `NAME-DATE-2` and on where an earlier run of the day wrote that (its files
    stay): add the suffixes."""
    RESULTS.mkdir(exist_ok=True)
    stem = f"{name}-{datetime.date.today().isoformat()}"
    for run in range(2, 1000):
        if not any(RESULTS.glob(f"{stem}.*")):
            break
        stem = f"{name}-{datetime.date.today().isoformat()}-{run}"
    return RESULTS / stem


def plausible_value(key: str, shape: list[int], gen: torch.Generator) -> torch.Tensor:
    """Random values of a plausible scale for the state-dict key `key`: a full-size model gives finite audio
    that depends on its input (with every weight N(0, 0.02), as in `models`, the output hardly does)."""
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


def plausible_state_dict(model: torch.nn.Module, seed: int = 0) -> dict:
    """`model`'s state dict with `plausible_value`s."""
    gen = torch.Generator().manual_seed(seed)
    return {key: plausible_value(key, list(value.shape), gen) for key, value in model.state_dict().items()}


@torch.no_grad()
def speech_codebooks(encoder: FACodecEncoder, decoder: FACodecDecoder, wav: torch.Tensor, seed: int = 0) -> None:
    """Draws, in place, each quantizer's first codebook from the encoder's frames of `wav` (projected as that
    quantizer projects them, a little noise added): then, as with trained weights, the codes follow the input, and
    so does the conversion. With random codebooks nearly every frame takes the same code, and the conversion is the
    same sound whatever is said."""
    gen = torch.Generator().manual_seed(seed)
    frames = encoder(wav)[0].T  # [T, 256]
    for group in decoder.quantizer:
        layer = group.layers[0]
        projected = layer.in_proj(frames)
        # Centred, the projections point every way (the frames share a large constant part): so do the codewords.
        layer.in_proj.bias -= projected.mean(0)
        projected -= projected.mean(0)
        pick = torch.randint(0, projected.shape[0], (layer.codebook_size,), generator=gen)
        noise = 0.01 * projected.std() * torch.randn(layer.codebook.shape, generator=gen)
        # Unit codewords: as small as the centred projections, they would vanish in the biases they are added to.
        layer.codebook.copy_(torch.nn.functional.normalize(projected[pick] + noise, dim=1))


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
