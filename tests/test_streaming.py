"""Exact streaming: the concatenated stream output equals the offline output for any chunking."""

from __future__ import annotations

import pytest
import torch

from rtcodec import OFFICIAL, FACodecDecoder, FACodecEncoder, FACodecRedecoder, stream_ops
from rtcodec.layers.activation import AntiAliasedSnake

from .conftest import golden_kwargs, golden_model, needs_golden, rel_err

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
    """Lookahead and context follow from the kernels, strides and paddings (see the README).

    A frame depends on 5078 samples after it; the encoder works in whole hops, so it waits 26 hops."""
    encoder = golden_model("encoder").stream()
    decoder = golden_model("decoder").stream(torch.zeros(1, 256))
    assert (encoder.lookahead_samples, encoder.left_context_samples) == (5200, 5126)
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
    with pytest.raises(ValueError, match="batch_size must be an integer of at least 1"):
        encoder.stream(batch_size=0)


def collect_rows(stream, pushes: list[torch.Tensor], actions: dict[int, tuple[str, list[int]]]) -> list[list]:
    """Push `pushes` in turn, calling `reset(rows)` / `end(rows)` before push i where `actions` says; return
    each row's handed-out outputs (the entries `valid` marks) in order."""
    got = [[] for _ in range(stream.batch_size)]
    for i, x in enumerate(pushes):
        if i in actions:
            name, rows = actions[i]
            getattr(stream, name)(rows)
            if name == "reset":
                for b in rows:
                    got[b].append("restart")
        y = stream.push(x)
        for b in range(stream.batch_size):
            got[b].append(y[b][:, stream.valid[b]])
    return got


def signals(got_row: list) -> list[torch.Tensor]:
    """Split a row's outputs at its restarts."""
    out = [[]]
    for item in got_row:
        if isinstance(item, str):
            out.append([])
        else:
            out[-1].append(item)
    return [torch.cat(parts, dim=1) for parts in out if parts]


@needs_golden
def test_rows_start_end_and_restart_independently(vectors):
    """Three callers share one stream: row 1 joins late, row 2 leaves and a new caller takes its row."""
    encoder = golden_model("encoder")
    stream = encoder.stream(batch_size=3)
    hop = stream.hop_length
    wav_a, wav_b = vectors["wav_a"][0], vectors["wav_b"][0]
    hops = 90
    audio = torch.stack([wav_a[:, : hops * hop], wav_b[:, : hops * hop], wav_b[:, 1000 : 1000 + hops * hop]])
    pushes = [audio[..., i * hop : (i + 1) * hop] for i in range(hops)]
    got = collect_rows(stream, pushes, {7: ("reset", [1]), 20: ("end", [2]), 47: ("reset", [2])})
    with torch.no_grad():
        # Row 0 is still open: everything more than the lookahead old is out, and equals offline.
        row0 = signals(got[0])[0]
        offline = encoder(audio[0:1])[0]
        assert row0.shape[1] == hops - stream.lookahead_samples // hop
        assert rel_err(row0, offline[:, : row0.shape[1]]) < TOL
        row1 = signals(got[1])[-1]
        offline = encoder(audio[1:2, :, 7 * hop :])[0]
        assert rel_err(row1, offline[:, : row1.shape[1]]) < TOL
        first, second = signals(got[2])
        ended = encoder(audio[2:3, :, : 20 * hop])[0]
        assert first.shape == ended.shape and rel_err(first, ended) < TOL
        restarted = encoder(audio[2:3, :, 47 * hop :])[0]
        assert second.shape[1] == hops - 47 - stream.lookahead_samples // hop
        assert rel_err(second, restarted[:, : second.shape[1]]) < TOL


@needs_golden
def test_decoder_rows_take_new_speakers(vectors):
    decoder = golden_model("decoder")
    emb = vectors["v1.vq_post_emb_a"][..., :40]
    spk_a, spk_b = vectors["v1.spk_embs_a"], vectors["v1.spk_embs_b"]
    stream = decoder.stream(torch.cat([spk_a, spk_a]), batch_size=2)
    pushes = [torch.cat([emb, emb])[..., i : i + 1] for i in range(40)]
    stream.push(pushes[0])
    stream.reset([1])
    stream.set_speaker([1], spk_b)
    got = collect_rows(stream, pushes[1:], {})
    with torch.no_grad():
        row1 = signals(got[1])[0]
        offline = decoder.inference(emb[..., 1:], spk_b)[0]
        assert rel_err(row1, offline[:, : row1.shape[1]]) < TOL


@needs_golden
@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_settled_ticks_reach_no_edge(monkeypatch, which):
    """From `settled_hops` on, no window reaches before a signal's start (so a CUDA graph can replay the tick);
    one hop earlier some window still does, and after a restart they do again."""
    crossings = []

    def crosses(first, length, width):
        crossed = stream_ops_crosses(first, length, width)
        crossings[-1] |= crossed
        return crossed

    stream_ops_crosses = stream_ops._crosses
    monkeypatch.setattr(stream_ops, "_crosses", crosses)
    if which == "encoder":
        stream, hop = FACodecEncoder(ngf=4, out_channels=256).stream(), torch.zeros(1, 1, 200)
    else:
        stream, hop = FACodecDecoder(**golden_kwargs("decoder")).stream(torch.zeros(1, 256)), torch.zeros(1, 256, 1)
    settled = stream.settled_hops
    assert settled > 10
    stream.settled_hops = 1 << 30  # settled ticks skip the edge checks: check every window here
    for _signal in range(2):  # the first signal, then one after a restart
        ticks = []
        for _ in range(settled + 5):
            crossings.append(False)
            ticks.append(stream.clock.hops[0])
            stream.push(hop)
        reached = dict(zip(ticks, crossings[-len(ticks) :]))
        assert reached[settled - 1] and not any(reached[h] for h in ticks if h >= settled)
        stream.reset()
    stream.settled_hops = settled
    settled_ticks = []
    for _ in range(settled + 2):
        stream.push(hop)
        settled_ticks.append(stream.clock.settled)
    assert settled_ticks == [False] * settled + [True] * 2


@pytest.mark.parametrize("tick", [1, 6, 36, 200, 512])  # blocks (up, down): 6, 1; 11, 6; 41, 36; 41, 40; 47, 32
def test_short_tick_activation_blocks(tick):
    """The anti-aliased activation on short ticks (filters as matmuls over blocks of outputs, the block a divisor
    of the tick's length) equals the offline activation, ticks whose n + 5 upsampling positions are prime too."""
    torch.manual_seed(tick)
    module = AntiAliasedSnake(8)
    with torch.no_grad():
        module.act.alpha.normal_(0, 0.5)
        module.act.beta.normal_(0, 0.5)
        x = torch.randn(2, 8, max(4, 20 // tick) * tick)
        offline = module(x)
        op = stream_ops.AntiAliased(module)
        op.plan(tick, 0, lambda n: n)
        op.allocate(2, x.device, x.dtype)
        clock = stream_ops.Clock(2)
        outs = []
        for i in range(0, x.shape[2], tick):
            outs.append(op.step(x[..., i : i + tick], clock))
            clock.hops = [h + 1 for h in clock.hops]
    assert stream_ops._small(tick, x.device)
    got = torch.cat(outs, dim=2)[..., op.REACH :]  # outputs lag the inputs by the filters' reach
    assert rel_err(got, offline[..., : got.shape[2]]) < TOL


def _one_block_encoder(compile: bool):
    """An encoder of one block (small, so quick to compile) and its stream."""
    torch.manual_seed(0)
    encoder = FACodecEncoder(ngf=4, up_ratios=(2,), out_channels=8).eval()
    return encoder, encoder.stream(backend="compile" if compile else None)


def _stream_hops(stream, wav: torch.Tensor) -> torch.Tensor:
    hop = stream.hop_length
    return torch.cat([*(stream.push(wav[..., i : i + hop]) for i in range(0, wav.shape[2], hop)), stream.flush()], 2)


def test_compiled_ticks_equal_offline():
    encoder, stream = _one_block_encoder(compile=True)
    compiled, ticks = stream.settled_ticks.step, []
    stream.settled_ticks.step = lambda *args: ticks.append(args[0].shape[2]) or compiled(*args)
    wav = 0.1 * torch.randn(1, 1, 1437, generator=torch.Generator().manual_seed(3))
    got = _stream_hops(stream, wav)
    with torch.no_grad():
        offline = encoder(wav)
    # Of the 7 one-hop ticks, the first is not settled and the second compiles nothing (a size compiles when it
    # comes again); the last partial hop and the flush run op by op.
    assert ticks == [200] * 5
    assert got.shape == offline.shape and rel_err(got, offline) < TOL


@pytest.mark.parametrize("when", ["compiling", "wrapping"])
def test_compile_failure_falls_back_to_op_by_op(monkeypatch, when):
    """No C++ compiler fails the first compiled tick; a Python that torch cannot compile for fails at once."""

    def no_compiler(fn, **kwargs):
        if when == "wrapping":
            raise RuntimeError("no C++ compiler: Dynamo is not supported here")

        def fails(*args):
            raise torch._dynamo.exc.BackendCompilerFailed(no_compiler, RuntimeError("no C++ compiler"), None)

        return fails

    monkeypatch.setattr(torch, "compile", no_compiler)
    wav = 0.1 * torch.randn(1, 1, 1437, generator=torch.Generator().manual_seed(4))
    with pytest.warns(RuntimeWarning, match="(?s)torch.compile failed, the stream runs op by op: .*no C.. compiler"):
        encoder, stream = _one_block_encoder(compile=True)
        got = _stream_hops(stream, wav)
    assert stream.settled_ticks.step is None
    with torch.no_grad():
        assert rel_err(got, encoder(wav)) < TOL


def test_backends_are_checked():
    encoder = FACodecEncoder(ngf=4, out_channels=256)
    with pytest.raises(ValueError, match="backend 'cuda-graph' needs the model on a CUDA device, not cpu"):
        encoder.stream(backend="cuda-graph")
    with pytest.raises(ValueError, match="backend must be one of eager, compile, cuda-graph, onnxruntime"):
        encoder.stream(backend="tensorrt")
    stream = encoder.stream()
    assert stream.backend == "eager" and stream.settled_ticks is None


def test_per_row_reset_needs_a_hop_boundary():
    stream = FACodecEncoder(ngf=4, out_channels=256).stream(batch_size=2)
    stream.push(torch.zeros(2, 1, 250))
    with pytest.raises(ValueError, match="50 samples pending"):
        stream.reset([0])
    with pytest.raises(ValueError, match="row 2 is out of range"):
        stream.end([2])


@needs_golden
@pytest.mark.parametrize("lookahead", [0, 1000, 3999])
def test_lookahead_treats_the_missing_future_as_padding(vectors, lookahead):
    """With lookahead N, frame j comes out once N samples after it arrived, and equals the offline frame of
    the signal cut where the stream was then; the frames flush returns are exact."""
    encoder = golden_model("encoder")
    wav = vectors["wav_a"][..., :6000]
    stream = encoder.stream(lookahead=lookahead)
    assert stream.lookahead_samples == lookahead
    hop = stream.hop_length
    outs = []
    with torch.no_grad():
        ends = [*range(137, wav.shape[2], 137), wav.shape[2]]
        for start, end in zip([0, *ends], ends):
            frames = stream.push(wav[..., start:end])
            assert stream.valid.shape == (1, frames.shape[2]) and stream.valid.all()
            for frame in frames.unbind(2):
                j = len(outs)
                assert (j + 1) * hop + lookahead <= end, "a frame came out before its lookahead arrived"
                assert (j + 1) * hop + lookahead > start, "a frame came out later than its lookahead"
                cut = encoder(wav[..., :end])[..., j]
                assert rel_err(frame, cut) < TOL
                outs.append(frame)
        rest = stream.flush()
        offline = encoder(wav)
        assert len(outs) + rest.shape[2] == offline.shape[2]
        assert rest.shape[2] == 0 or rel_err(rest, offline[..., len(outs) :]) < TOL


@needs_golden
def test_decoder_lookahead(vectors):
    decoder = golden_model("decoder")
    emb, spk = vectors["v1.vq_post_emb_a"][..., :30], vectors["v1.spk_embs_a"]
    stream = decoder.stream(spk, lookahead=1000)
    assert stream.lookahead_samples == 1000
    with torch.no_grad():
        got = stream.push(emb[..., :10])
        # Sample t is out once the frames up to sample t + 1000 are: 10 frames give 2000 - 1000 + 199 samples.
        assert got.shape[2] == 10 * 200 - 1000 + 199
        cut = decoder.inference(emb[..., :10], spk)[..., : got.shape[2]]
        assert rel_err(got, cut) < TOL
        rest = torch.cat([stream.push(emb[..., 10:]), stream.flush()], dim=2)
        assert got.shape[2] + rest.shape[2] == 30 * 200


@needs_golden
@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_lookahead_rows_out_of_step(vectors, which):
    """A drain computes only what reaches the outputs not handed out yet, for rows at different positions: every
    speculative output still equals the offline output of that row's signal cut where the row was then."""
    gen = torch.Generator().manual_seed(5)
    if which == "encoder":
        model, lookahead, unit = golden_model("encoder"), 1600, 200
        x = torch.cat([vectors["wav_a"][..., :5000], vectors["wav_b"][..., :5000]])

        def offline(signal):
            return model(signal)

        stream = model.stream(batch_size=2, lookahead=lookahead)
    else:
        model, lookahead, unit = golden_model("decoder"), 1000, 1
        spk = vectors["v1.spk_embs_a"].expand(2, -1)
        x = torch.cat([vectors["v1.vq_post_emb_a"][..., :25], vectors["v1.vq_post_emb_b"][..., :25]])

        def offline(signal):
            return model.inference(signal, spk[:1])

        stream = model.stream(spk, batch_size=2, lookahead=lookahead)
    starts, received, handed_out = [0, 0], 0, [0, 0]
    with torch.no_grad():
        for size in [unit * int(n) for n in torch.randint(1, 3, (12,), generator=gen)]:
            chunk = torch.zeros(2, x.shape[1], size)
            for b in range(2):
                chunk[b] = x[b, :, received - starts[b] : received - starts[b] + size]
            out = stream.push(chunk)
            received += size
            for b in range(2):
                new, n = out[b][:, stream.valid[b]], received - starts[b]
                handed_out[b] += new.shape[1]
                assert handed_out[b] == max(0, (n - lookahead) // 200 if unit == 200 else n * 200 + 199 - lookahead)
                if new.shape[1]:  # this push's outputs are those of the signal cut here
                    cut = offline(x[b : b + 1, :, :n])[0]
                    assert rel_err(new, cut[:, handed_out[b] - new.shape[1] : handed_out[b]]) < TOL
            if received == 4 * unit:  # row 1 starts a new signal: the rows are out of step from here
                stream.reset([1])
                starts[1], handed_out[1] = received, 0


def test_one_options_object_for_every_stream():
    from rtcodec import StreamOptions
    from rtcodec.pipelines import LATENCY_PRESETS, CodecReceiver

    encoder, decoder = FACodecEncoder(ngf=4, out_channels=256), FACodecDecoder(**golden_kwargs("decoder"))
    options = StreamOptions(batch_size=2, lookahead=LATENCY_PRESETS["balanced"])
    enc, dec = encoder.stream(options), decoder.stream(torch.zeros(2, 256), options)
    assert (enc.batch_size, enc.lookahead_samples, dec.lookahead_samples) == (2, 2400, 3000)
    assert encoder.stream(batch_size=2, lookahead=2400).lookahead_samples == 2400  # the same settings as keywords
    assert encoder.stream(options, lookahead=800).lookahead_samples == 800  # keywords on top of options
    assert CodecReceiver(decoder, torch.zeros(1, 256), lookahead=1000).latency_samples == 1000
    with pytest.raises(TypeError, match=r"unknown stream settings \['batch'\]"):
        encoder.stream(batch=2)
    for bad in ({"lookahead": -1}, {"lookahead": (1, 2, 3)}, {"lookahead": 1.5}, {"backend": "yes"}):
        with pytest.raises(ValueError):
            StreamOptions(**bad)


@needs_golden
def test_encode_many_gives_each_clip_what_it_gives_alone(vectors):
    from rtcodec.streaming import encode_many

    encoder, decoder = golden_model("encoder"), golden_model("decoder")
    wav = torch.cat([vectors["wav_a"], vectors["wav_b"]], dim=2)
    clips = [wav[..., s : s + n] for s, n in [(0, 4000), (5000, 1211), (9000, 6399), (100, 4000), (20000, 3333)]]
    done = []
    got = encode_many(encoder, clips, batch_size=3, progress=lambda d, t: done.append((d, t)))
    assert done == [(3, 5), (5, 5)]
    with torch.inference_mode():
        for clip, frames in zip(clips, got):
            alone = encoder(clip)
            assert frames.shape == alone.shape and rel_err(frames, alone) < TOL
            assert torch.equal(decoder.quantize(frames), decoder.quantize(alone))  # the codes, bit for bit
    with pytest.raises(ValueError, match="too short"):
        encode_many(encoder, [torch.zeros(1, 1, 10)])
