"""The live pipelines equal their offline recipes, and report their latency."""

from __future__ import annotations

import pytest
import torch

from rtcodec import FACodecEncoder, backends
from rtcodec.pipelines import LATENCY_PRESETS, CodecReceiver, CodecSender, VoiceConversion, speaker_embedding

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
@pytest.mark.parametrize("lookahead", [(None, None), LATENCY_PRESETS["low"]])
def test_voice_conversion_output_is_as_long_as_its_input(vectors, lookahead):
    """The last partial frame is coded (padded with silence, as the file commands do) and the padding dropped."""
    encoder, decoder = golden_model("encoder"), golden_model("decoder")
    source, reference = vectors["wav_a"][..., :4321], vectors["wav_b"]
    pipeline = VoiceConversion(encoder, decoder, reference, lookahead=lookahead)
    got = run_stream(pipeline, source, random_chunks(4321, torch.Generator().manual_seed(6), 500))
    assert got.shape == (1, 1, 4321)
    if lookahead == (None, None):
        with torch.no_grad():
            codes = decoder(encoder(torch.nn.functional.pad(source, (0, 79))))[1]
            target = speaker_embedding(encoder, decoder, reference)
            expected = decoder.inference(decoder.vq2emb(codes, use_residual_code=False), target)
        assert rel_err(got, expected[..., :4321]) < TOL
    pipeline.reset()  # a second signal after reset: counted afresh
    assert run_stream(pipeline, source[..., :1000], [1000]).shape == (1, 1, 1000)


@needs_golden
@pytest.mark.parametrize("push", [200, 400, 800])
def test_warm_up_runs_settled_ticks_then_starts_afresh(vectors, push):
    """`warm_up` runs both streams into settled ticks of the push size, as many as a backend needs before it
    compiles or exports (so that happens in the warm-up, not in the first seconds of a live signal), and leaves
    the pipeline as new."""
    encoder, decoder = golden_model("encoder"), golden_model("decoder")
    source, reference = vectors["wav_a"][..., :4000], vectors["wav_b"]
    fresh = run_stream(VoiceConversion(encoder, decoder, reference), source, [push] * (4000 // push))
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
    pipeline.warm_up(push)
    assert all(sum(ticks) >= backends.FIRST_SETTLED_TICKS for ticks in settled_ticks.values())
    assert torch.equal(run_stream(pipeline, source, [push] * (4000 // push)), fresh)


@needs_golden
@pytest.mark.parametrize("lookahead", [(None, None), LATENCY_PRESETS["low"]])
def test_pipelined_conversion_gives_each_push_one_push_later(vectors, lookahead):
    """With the encoder on its own thread, push i returns what push i - 1 returns unpipelined, flush the rest:
    the same audio, sample for sample, for any chunking, across a reset in the middle of a signal."""
    encoder, decoder = golden_model("encoder"), golden_model("decoder")
    source, reference = vectors["wav_a"][..., :6000], vectors["wav_b"]
    serial = VoiceConversion(encoder, decoder, reference, lookahead=lookahead)
    pipelined = VoiceConversion(encoder, decoder, reference, lookahead=lookahead, pipelined=True)
    pipelined.push(source[..., :1000])
    pipelined.reset()  # mid-signal: nothing of it may come out after
    sizes = random_chunks(6000, torch.Generator().manual_seed(8), 900)
    outs, start = [], 0
    for size in sizes:
        chunk = source[..., start : start + size]
        start += size
        outs.append((serial.push(chunk), pipelined.push(chunk)))
    assert outs[0][1].shape == (1, 1, 0)
    for (before, _), (_, after) in zip(outs, outs[1:]):
        assert torch.equal(before, after)
    assert torch.equal(torch.cat([outs[-1][0], serial.flush()], 2), pipelined.flush())


@needs_golden
def test_pipelined_conversion_refuses_a_bad_push_at_once(vectors):
    encoder, decoder = golden_model("encoder"), golden_model("decoder")
    pipeline = VoiceConversion(encoder, decoder, vectors["wav_b"], pipelined=True)
    pipeline.push(vectors["wav_a"][..., :400])
    with pytest.raises(ValueError, match=r"push takes audio shaped \[1, 1, n\]"):
        pipeline.push(vectors["wav_a"][0])
    with pytest.raises(ValueError, match="NaN"):
        pipeline.push(torch.full((1, 1, 400), float("nan")))
    assert pipeline.push(vectors["wav_a"][..., 400:800]).shape[:2] == (1, 1)  # the stream goes on


@needs_golden
def test_codec_sender_gives_the_offline_codes(vectors):
    encoder, decoder = golden_model("encoder"), golden_model("decoder")
    wav = vectors["wav_b"][..., :7777]
    padded = torch.nn.functional.pad(wav, (0, 23))  # the last partial frame is coded, padded with silence
    with torch.no_grad():
        codes = decoder(encoder(padded))[1]
        speaker = speaker_embedding(encoder, decoder, vectors["wav_b"])
        expected = decoder.inference(decoder.vq2emb(codes), speaker)[..., :7777]
    sender = CodecSender(encoder, decoder)
    sent = run_stream(sender, wav, random_chunks(7777, torch.Generator().manual_seed(4), 1000))
    assert torch.equal(sent, codes) and sender.padding == 23
    receiver = CodecReceiver(decoder, speaker)
    sizes = random_chunks(sent.shape[2], torch.Generator().manual_seed(5), 4)
    got = torch.cat(
        [
            *(receiver.push(sent[..., sum(sizes[:i]) : sum(sizes[: i + 1])]) for i in range(len(sizes))),
            receiver.flush(sender.padding),
        ],
        dim=2,
    )
    assert got.shape == (1, 1, 7777)  # as long as the input
    assert rel_err(got, expected) < TOL


@needs_golden
def test_latency_is_what_the_output_lags(vectors):
    """After each hop pushed, the output holds every sample at least `latency_samples` old."""
    encoder, decoder = golden_model("encoder"), golden_model("decoder")
    pipeline = VoiceConversion(encoder, decoder, vectors["wav_b"])
    assert pipeline.latency_samples == 5200 + 5725
    assert pipeline.latency_ms == pytest.approx(682.8125)
    wav, out = vectors["wav_a"], 0
    for hop in range(wav.shape[2] // 200):
        out += pipeline.push(wav[..., hop * 200 : (hop + 1) * 200]).shape[2]
        received = (hop + 1) * 200
        assert out >= received - pipeline.latency_samples
        assert out <= max(0, received - pipeline.latency_samples + 199)
    fast = VoiceConversion(encoder, decoder, vectors["wav_b"], lookahead=(1000, 500))
    assert fast.latency_samples == 1500


def test_pipelines_refuse_decoders_that_do_not_stream():
    from rtcodec import FACodecDecoderV2, FACodecRedecoder

    encoder = FACodecEncoder(ngf=4, out_channels=256)
    for decoder in (FACodecDecoderV2(upsample_initial_channel=16), FACodecRedecoder(upsample_initial_channel=16)):
        with pytest.raises(TypeError, match="streaming needs the V1 FACodecDecoder"):
            CodecSender(encoder, decoder)
