"""The live pipelines equal their offline recipes, and report their latency."""

from __future__ import annotations

import pytest
import torch

from rtcodec import FACodecEncoder
from rtcodec.pipelines import CodecReceiver, CodecSender, VoiceConversion, speaker_embedding

from .conftest import golden_model, needs_golden, rel_err
from .test_streaming import TOL, random_chunks, run_stream


@needs_golden
def test_voice_conversion_streams_like_the_offline_recipe(vectors):
    encoder, decoder = golden_model("encoder"), golden_model("decoder")
    source, reference = vectors["wav_a"][..., :9000], vectors["wav_b"]
    with torch.no_grad():
        codes = decoder(encoder(source))[1]
        target = speaker_embedding(encoder, decoder, reference)
        expected = decoder.inference(decoder.vq2emb(codes, use_residual_code=False), target)
    pipeline = VoiceConversion(encoder, decoder, reference)
    gen = torch.Generator().manual_seed(3)
    for sizes in ([200] * 45, random_chunks(9000, gen, 900)):
        pipeline.reset()
        got = run_stream(pipeline, source, sizes)
        assert got.shape == expected.shape
        assert rel_err(got, expected) < TOL


@needs_golden
def test_warm_up_runs_settled_ticks_then_starts_afresh(vectors):
    """`warm_up` runs both streams into settled ticks of the push size (where compiling or capturing happens)
    and leaves the pipeline as new."""
    encoder, decoder = golden_model("encoder"), golden_model("decoder")
    source, reference = vectors["wav_a"][..., :4000], vectors["wav_b"]
    fresh = run_stream(VoiceConversion(encoder, decoder, reference), source, [400] * 10)
    pipeline = VoiceConversion(encoder, decoder, reference)
    settled_ticks = {stage: [] for stage in pipeline.stages}

    def spy(stage, step):
        def spied(x):
            y = step(x)
            settled_ticks[stage].append(stage.clock.settled)
            return y

        return spied

    for stage in pipeline.stages:
        stage._step = spy(stage, stage._step)
    pipeline.warm_up(400)
    assert all(any(ticks) for ticks in settled_ticks.values())
    assert torch.equal(run_stream(pipeline, source, [400] * 10), fresh)


@needs_golden
def test_codec_sender_gives_the_offline_codes(vectors):
    encoder, decoder = golden_model("encoder"), golden_model("decoder")
    wav = vectors["wav_b"][..., :7777]
    with torch.no_grad():
        codes = decoder(encoder(wav))[1]
        speaker = speaker_embedding(encoder, decoder, vectors["wav_b"])
        expected = decoder.inference(decoder.vq2emb(codes), speaker)
    sender = CodecSender(encoder, decoder)
    sent = run_stream(sender, wav, random_chunks(7777, torch.Generator().manual_seed(4), 1000))
    assert torch.equal(sent, codes)
    receiver = CodecReceiver(decoder, speaker)
    got = run_stream(receiver, sent, random_chunks(sent.shape[2], torch.Generator().manual_seed(5), 4))
    assert rel_err(got, expected) < TOL


@needs_golden
def test_latency_is_what_the_output_lags(vectors):
    """After each hop pushed, the output holds every sample at least `latency_samples` old."""
    encoder, decoder = golden_model("encoder"), golden_model("decoder")
    pipeline = VoiceConversion(encoder, decoder, vectors["wav_b"][..., :4000])
    assert pipeline.latency_samples == 5200 + 5725
    assert pipeline.latency_ms == pytest.approx(682.8125)
    wav, out = vectors["wav_a"], 0
    for hop in range(wav.shape[2] // 200):
        out += pipeline.push(wav[..., hop * 200 : (hop + 1) * 200]).shape[2]
        received = (hop + 1) * 200
        assert out >= received - pipeline.latency_samples
        assert out <= max(0, received - pipeline.latency_samples + 199)
    fast = VoiceConversion(encoder, decoder, vectors["wav_b"][..., :4000], lookahead=(1000, 500))
    assert fast.latency_samples == 1500


def test_pipelines_refuse_decoders_that_do_not_stream():
    from rtcodec import FACodecDecoderV2, FACodecRedecoder

    encoder = FACodecEncoder(ngf=4, out_channels=256)
    for decoder in (FACodecDecoderV2(upsample_initial_channel=16), FACodecRedecoder(upsample_initial_channel=16)):
        with pytest.raises(TypeError, match="streaming needs the V1 FACodecDecoder"):
            CodecSender(encoder, decoder)
