"""On an NVIDIA GPU: the streams replayed from CUDA graphs equal the streams run op by op and the offline models.

Skipped without CUDA (CI has none); `bash bench/gpu_run.sh` runs these on a GPU machine.
"""

from __future__ import annotations

import pytest
import torch

from rtcodec import kernels
from rtcodec.pipelines import VoiceConversion

from .conftest import golden_model, needs_golden, rel_err
from .test_streaming import collect_rows, random_chunks, run_stream, signals

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    needs_golden,
]
TOL = 1e-5


@pytest.fixture(autouse=True)
def full_precision():
    """TF32 would put 1e-3 between the offline convolutions and the streamed matmuls."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("mode", ["triton", "torch"])
def test_encoder_graphs_equal_offline(vectors, mode):
    kernels.use(mode)
    try:
        encoder = golden_model("encoder").cuda()
        wav = vectors["wav_a"][..., :16000].cuda()
        with torch.no_grad():
            offline = encoder(wav)
        gen = torch.Generator().manual_seed(0)
        # One-hop pushes (one graph), then a mix of sizes: ticks of several hop counts, each its own graph.
        for sizes in ([200] * 80, [200] * 40 + random_chunks(8000, gen, 900)):
            stream = encoder.stream()
            got = run_stream(stream, wav, sizes)
            graphs = stream.settled_ticks.graphs
            assert graphs and all(graph.graph is not None for graph in graphs.values())
            eager = run_stream(encoder.stream(backend="eager"), wav, sizes)
            assert rel_err(got, eager) < 1e-6
            assert got.shape == offline.shape and rel_err(got, offline) < TOL
    finally:
        kernels.use("auto")


def test_decoder_graphs_equal_offline(vectors):
    decoder = golden_model("decoder").cuda()
    emb, spk = vectors["v1.vq_post_emb_a"].cuda(), vectors["v1.spk_embs_a"].cuda()
    with torch.no_grad():
        offline = decoder.inference(emb, spk)
    stream = decoder.stream(spk)
    got = run_stream(stream, emb, [1] * emb.shape[2])
    assert 1 in stream.settled_ticks.graphs  # one-frame ticks
    assert rel_err(got, offline) < TOL


def test_rows_restart_under_graphs(vectors):
    """A restarted row runs op by op until it settles again, while the graph stays valid for later ticks."""
    encoder = golden_model("encoder").cuda()
    hop = 200
    audio = torch.stack([vectors["wav_a"][0, :, : 90 * hop], vectors["wav_b"][0, :, : 90 * hop]]).cuda()
    pushes = [audio[..., i * hop : (i + 1) * hop] for i in range(90)]
    stream = encoder.stream(batch_size=2)
    got = collect_rows(stream, pushes, {40: ("reset", [1])})
    assert 1 in stream.settled_ticks.graphs  # one-frame ticks
    with torch.no_grad():
        row0 = signals(got[0])[0]
        assert rel_err(row0, encoder(audio[0:1])[0, :, : row0.shape[1]]) < TOL
        row1 = signals(got[1])[-1]
        assert rel_err(row1, encoder(audio[1:2, :, 40 * hop :])[0, :, : row1.shape[1]]) < TOL


def test_voice_conversion_with_and_without_graphs(vectors):
    encoder, decoder = golden_model("encoder").cuda(), golden_model("decoder").cuda()
    source, reference = vectors["wav_a"][..., :12000].cuda(), vectors["wav_b"].cuda()
    outs = []
    for graphs in (True, False):
        pipeline = VoiceConversion(
            encoder, decoder, reference, lookahead=(1600, 2000), backend="cuda-graph" if graphs else "eager"
        )
        pushes = [pipeline.push(source[..., i : i + 200]) for i in range(0, source.shape[2], 200)]
        outs.append(torch.cat([*pushes, pipeline.flush()], dim=2))
    assert outs[0].shape == outs[1].shape and rel_err(outs[0], outs[1]) < 1e-6


def test_pipeline_takes_cpu_inputs_and_warms_up_graphs(vectors):
    """Microphone blocks and reference clips arrive on the CPU; `warm_up` captures the graphs before a signal."""
    encoder, decoder = golden_model("encoder").cuda(), golden_model("decoder").cuda()
    source, reference = vectors["wav_a"][..., :12000], vectors["wav_b"]  # on the CPU
    pipeline = VoiceConversion(encoder, decoder, reference)
    pipeline.warm_up(400)
    graphs = [stage.settled_ticks.graphs for stage in pipeline.stages]
    assert all(g and all(graph.graph is not None for graph in g.values()) for g in graphs)
    got = run_stream(pipeline, source, [400] * 30)
    eager = run_stream(VoiceConversion(encoder, decoder, reference.cuda(), backend="eager"), source.cuda(), [400] * 30)
    assert got.is_cuda and got.shape == eager.shape and rel_err(got, eager) < 1e-6


def test_compile_is_for_the_cpu():
    with pytest.raises(ValueError, match="backend 'compile' is for streams on the CPU"):
        golden_model("encoder").cuda().stream(backend="compile")
