"""Each Triton kernel against its torch reference (under TRITON_INTERPRET=1 on the CPU), and the models with
the kernels switched on against the models without."""

from __future__ import annotations

import os

import pytest
import torch

from rtcodec import FACodecDecoder, kernels
from rtcodec.layers.activation import AntiAliasedSnake
from rtcodec.layers.blocks import ResidualUnit
from rtcodec.layers.norm import timbre_norm
from rtcodec.stream_ops import Clock, build

from .conftest import SMALL_TRANSFORMER, rel_err

runs = kernels.triton_available() and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")
pytestmark = pytest.mark.skipif(not runs, reason="Triton kernels need a CUDA GPU or TRITON_INTERPRET=1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Relative L2 tolerance of the float outputs per storage dtype (accumulation is fp32 in both paths).
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def layers(count: int, dim: int = 256, size: int = 1024, k: int = 8, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(count, k, dim), (count, k), (count, size, k), (count, dim, k), (count, dim)]
    scales = [0.1, 0.1, 1.0, 0.1, 0.1]
    return [s * torch.randn(shape, generator=gen).to(DEVICE) for s, shape in zip(scales, shapes)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n, count, dim, size, k", [(1, 1, 256, 1024, 8), (37, 3, 256, 1024, 8), (19, 2, 96, 10, 5)])
def test_rvq_group(dtype, n, count, dim, size, k):
    from rtcodec.kernels.rvq import rvq_group, rvq_group_reference

    params = layers(count, dim, size, k)
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(n)).to(DEVICE, dtype)
    out, codes = rvq_group(x, *params)
    ref_out, ref_codes = rvq_group_reference(x, *params)
    assert torch.equal(codes.cpu(), ref_codes.cpu())
    assert out.dtype == dtype and rel_err(out, ref_out) < TOL[dtype]


def test_rvq_ties_go_to_the_first_index():
    from rtcodec.kernels.rvq import rvq_group, rvq_group_reference

    in_w, in_b, codebook, out_w, out_b = layers(1)
    # Codeword 5 on an axis: each frame's distance to it and to its copies is then one product plus exact zeros,
    # the same whatever order a dot product sums in (the interpreter's matmul, OpenBLAS on an AMD EPYC, rounded
    # identical columns differently in the last bit, and the tie went to codeword 9 in about one run in four).
    codebook[0, 5] = 0
    codebook[0, 5, 0] = 0.5
    codebook[0, 700] = codebook[0, 5]  # an exact tie in another search block
    codebook[0, 9] = codebook[0, 5]  # and in the same block
    x = torch.randn(8, 256, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    # Steer every frame onto codeword 5's direction.
    in_b[0] = 0
    in_w[0] = torch.zeros(8, 256, device=DEVICE)
    in_w[0, :, 0] = codebook[0, 5]
    x[:, 0] = x[:, 0].abs() + 0.1
    _, codes = rvq_group(x, in_w, in_b, codebook, out_w, out_b)
    assert torch.equal(codes, rvq_group_reference(x, in_w, in_b, codebook, out_w, out_b)[1])
    assert (codes == 5).all()


def test_rvq_chain():
    from rtcodec.kernels.rvq import rvq_chain, rvq_chain_reference

    params = layers(6, seed=1)
    x = torch.randn(23, 256, device=DEVICE)
    out, codes = rvq_chain(x, *params)
    ref_out, ref_codes = rvq_chain_reference(x, *params)
    assert out.shape == (3, 23, 256) and torch.equal(codes, ref_codes)
    assert rel_err(out, ref_out) < TOL[torch.float32]


def test_rvq_checks_its_inputs():
    from rtcodec.kernels.rvq import rvq_group

    params = layers(2)
    with pytest.raises(ValueError, match="x has 100 channels"):
        rvq_group(torch.randn(4, 100, device=DEVICE), *params)
    with pytest.raises(ValueError, match="codebook must be shaped"):
        rvq_group(torch.randn(4, 256, device=DEVICE), params[0], params[1], params[2][:1], params[3], params[4])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 256, 1), (3, 37, 53), (2, 256, 77)])
def test_timbre_norm(dtype, shape):
    from rtcodec.kernels.timbre_norm import timbre_norm, timbre_norm_reference

    gen = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(shape, generator=gen) + 1).to(DEVICE, dtype)
    gamma, beta = (torch.randn(shape[:2], generator=gen).to(DEVICE, dtype) for _ in range(2))
    y = timbre_norm(x, gamma, beta)
    assert y.dtype == dtype and rel_err(y, timbre_norm_reference(x, gamma, beta)) < TOL[dtype]
    with pytest.raises(ValueError, match="gamma must be shaped"):
        timbre_norm(x, gamma[:, :3], beta)


def snake_module(channels: int) -> AntiAliasedSnake:
    module = AntiAliasedSnake(channels).to(DEVICE)
    gen = torch.Generator().manual_seed(channels)
    module.act.alpha.data = torch.randn(channels, generator=gen).to(DEVICE)
    module.act.beta.data = torch.randn(channels, generator=gen).to(DEVICE)
    return module


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 3, 1), (2, 5, 41), (1, 7, 130)])
def test_snake_offline(dtype, shape):
    from rtcodec.kernels.snake import anti_aliased_snake, anti_aliased_snake_reference

    module = snake_module(shape[1])
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    alpha, inv_beta = (t.flatten().detach() for t in module.act.prepared())
    with torch.no_grad():
        y = anti_aliased_snake(x, alpha, inv_beta, module.filters())
        assert y.dtype == dtype
        assert rel_err(y, anti_aliased_snake_reference(x, alpha, inv_beta, module.filters())) < TOL[dtype]
        if dtype == torch.float32:  # and the published form (pad, transposed conv, snake, pad, conv)
            kernels.use("torch")
            try:
                assert rel_err(y, module(x)) < TOL[dtype]
            finally:
                kernels.use("auto")


def test_snake_streaming_window():
    """A window of a signal (with its edges) gives the same outputs as the whole signal offline."""
    from rtcodec.kernels.snake import anti_aliased_snake

    module = snake_module(4)
    signal = torch.randn(2, 4, 60, device=DEVICE)
    alpha, inv_beta = (t.flatten().detach() for t in module.act.prepared())
    with torch.no_grad():
        whole = anti_aliased_snake(signal, alpha, inv_beta, module.filters())
        for first in (-7, 0, 21, 45):  # windows crossing the start, inside, crossing the end
            lo, hi = max(first, 0), min(first + 25, 60)
            window = torch.zeros(2, 4, 25, device=DEVICE)
            window[..., lo - first : hi - first] = signal[..., lo:hi]
            firsts, lengths = torch.full((2,), first), torch.full((2,), 60)
            got = anti_aliased_snake(window, alpha, inv_beta, module.filters(), firsts, lengths, 5, 15)
            centre = torch.arange(first + 5, first + 20)
            valid = (centre >= 0) & (centre < 60)
            assert rel_err(got[..., valid], whole[..., centre[valid]]) < 1e-5


def test_the_models_call_the_kernels():
    """Each place the models use a kernel, switched on against switched off: the V1 quantizer chain and a
    single group, the timbre norm, the anti-aliased activation offline and inside a stream (kept small: the
    interpreter runs a program in tens of milliseconds)."""
    torch.manual_seed(0)
    decoder = FACodecDecoder(upsample_initial_channel=16, vq_dim=256, **SMALL_TRANSFORMER).to(DEVICE).eval()
    unit = ResidualUnit(3, dilation=3).to(DEVICE).eval()
    for p in [*decoder.parameters(), *unit.parameters()]:
        p.data.normal_(0, 0.1)
    frames = torch.randn(2, 256, 7, device=DEVICE)
    gamma, beta = torch.randn(2, 256, device=DEVICE), torch.randn(2, 256, device=DEVICE)
    x = torch.randn(2, 3, 45, device=DEVICE)

    def run():
        quantized, codes, _ = decoder._quantize(frames, frames, None)
        group, group_codes = decoder.quantizer[1](frames)
        stream = build(unit)
        delay = -stream.plan(1, 0, lambda n: n)[1]
        stream.allocate(2, DEVICE, torch.float32)
        clock = Clock(2)
        clock.ends = [45, 45]  # one tick holds the whole signal and enough silence after it
        streamed = stream.step(torch.cat([x, torch.zeros(2, 3, 40, device=DEVICE)], dim=2), clock)
        streamed = streamed[..., delay : delay + 45]
        return quantized, codes, group, group_codes, timbre_norm(frames, gamma, beta), unit(x), streamed

    with torch.no_grad():
        kernels.use("torch")
        expected = run()
        kernels.use("triton")
        try:
            got = run()
        finally:
            kernels.use("auto")
    assert torch.equal(got[1], expected[1]) and torch.equal(got[3], expected[3])
    for g, e in zip(got, expected):
        assert rel_err(g.float(), e.float()) < 1e-5
    assert rel_err(got[6], expected[5]) < 1e-5  # the stream equals offline


def test_the_switch():
    with pytest.raises(ValueError, match="kernel mode must be one of"):
        kernels.use("fast")
    kernels.use("torch")
    try:
        assert not kernels.enabled(torch.zeros(1, device=DEVICE))
    finally:
        kernels.use("auto")
    assert kernels.enabled(torch.zeros(1, device=DEVICE)) == (DEVICE == "cuda")
