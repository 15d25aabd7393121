"""The GPU benchmark: `bash bench/gpu_run.sh` on a machine with an NVIDIA GPU writes
bench/results/gpu-<card>-<date>.json with the card, torch and triton versions, each kernel's time and speedup
over its torch reference at full-size shapes (per call, and GPU time alone from graph replays), streaming
voice-conversion hop latency at batch 1 (with and without the kernels, with and without CUDA graphs, and where
a graphed hop's time goes), and how many real-time streams one card sustains (the largest batch tried whose
one-hop push stays under 12.5 ms at p99, with the short convolutions as unfold + matmul and through cuDNN).

`--smoke` runs the same code at tiny sizes on the CPU under TRITON_INTERPRET=1 (CI checks the script works;
its figures mean nothing).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import re
import statistics
import time
from pathlib import Path

import torch
from rtcodec.kernels.rvq import rvq_chain, rvq_chain_reference, rvq_group, rvq_group_reference
from rtcodec.kernels.snake import anti_aliased_snake, anti_aliased_snake_reference
from rtcodec.kernels.timbre_norm import timbre_norm, timbre_norm_reference

from rtcodec import kernels, stream_ops
from rtcodec.layers.activation import AntiAliasedSnake

from .common import HOP_SECONDS, latency, models, percentile

RESULTS = Path(__file__).resolve().parent / "results"
WARM_HOPS = 80  # the encoder settles after 30 hops, the decoder 28 frames after its first (hop 26)


def timed(fn, device: torch.device, repeat: int) -> list[float]:
    """Seconds per call, measured with CUDA events on a GPU."""
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return times


def replayed(fn, repeat: int, calls: int = 10) -> float | None:
    """Seconds of GPU time per call: `calls` calls captured in a CUDA graph, its replays timed with events (no
    launch overhead in it). None where the function cannot be captured."""
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
    except RuntimeError:
        return None
    return statistics.median(timed(graph.replay, torch.device("cuda"), repeat)) / calls


def compare(name: str, fused, reference, args, device, repeat) -> dict:
    """Each side's time per call as a caller sees it (launches included) and, on a GPU, its GPU time alone."""
    result = {"kernel": name}
    for side, fn in (("fused", fused), ("torch", reference)):
        call = functools.partial(fn, *args)
        result[f"{side}_us"] = 1e6 * statistics.median(timed(call, device, repeat))
        gpu = replayed(call, repeat) if device.type == "cuda" else None
        result[f"{side}_gpu_us"] = None if gpu is None else 1e6 * gpu
    result["speedup"] = result["torch_us"] / result["fused_us"]
    if result["fused_gpu_us"] and result["torch_gpu_us"]:
        result["gpu_speedup"] = result["torch_gpu_us"] / result["fused_gpu_us"]
    gpu_time = f"  GPU time x{result['gpu_speedup']:.2f}" if "gpu_speedup" in result else ""
    print(
        f"{name:40s} fused {result['fused_us']:9.1f} us  torch {result['torch_us']:9.1f} us  "
        f"x{result['speedup']:.2f}{gpu_time}"
    )
    return result


def kernel_cases(device: torch.device, smoke: bool) -> list[tuple]:
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g)).to(device)

    def vq(layers):
        return [rnd(layers, 8, 256, scale=0.1), rnd(layers, 8), rnd(layers, 1024, 8), rnd(layers, 256, 8, scale=0.1),
                rnd(layers, 256)]  # fmt: skip

    frames = 16 if smoke else 800  # 10 s of audio
    streams = 8 if smoke else 256
    cases = [
        ("rvq group, 3 layers, 10 s", rvq_group, rvq_group_reference, (rnd(frames, 256), *vq(3))),
        ("rvq V1 chain, 6 layers, 10 s", rvq_chain, rvq_chain_reference, (rnd(frames, 256), *vq(6))),
        (f"rvq group, 3 layers, a hop x {streams}", rvq_group, rvq_group_reference, (rnd(streams, 256), *vq(3))),
    ]  # fmt: skip
    for b, t in [(1, 16 if smoke else 800), (4 if smoke else 512, 1)]:
        x, gamma, beta = rnd(b, 256, t), rnd(b, 256), rnd(b, 256)
        cases.append((f"timbre norm [{b}, 256, {t}]", timbre_norm, timbre_norm_reference, (x, gamma, beta)))
    shapes = [(1, 4, 64)] if smoke else [(1, 64, 160000), (1, 512, 4000), (1, 32, 160000), (64, 1024, 11)]
    for shape in shapes:
        module = AntiAliasedSnake(shape[1]).to(device)
        alpha, inv_beta = (t.flatten().detach() for t in module.act.prepared())
        args = (rnd(*shape), alpha, inv_beta, module.filters())
        cases.append((f"anti-aliased snake {list(shape)}", anti_aliased_snake, anti_aliased_snake_reference, args))
        # and against the published form the models run without the kernel (pad, transposed conv, ...)
        published = _published(module)
        cases.append((f"  ... vs published form {list(shape)}", anti_aliased_snake, published, args))
    return cases


def _published(module: AntiAliasedSnake):
    def run(x, *_):
        mode = kernels.mode()
        kernels.use("torch")
        try:
            return module(x)
        finally:
            kernels.use(mode)

    return run


def hop_times(encoder, decoder, batch: int, hops: int, device: torch.device, graphs: bool, warm: int) -> list[float]:
    """Seconds per one-hop push of streaming voice conversion at `batch` streams, after `warm` pushes (which
    fill the lookahead, settle the streams and, with `graphs`, capture the CUDA graphs)."""
    from rtcodec.pipelines import VoiceConversion

    reference = 0.1 * torch.randn(1, 1, 16000, device=device)
    pipeline = VoiceConversion(
        encoder, decoder, reference, batch_size=batch, backend="cuda-graph" if graphs else "eager"
    )
    hop = 0.1 * torch.randn(batch, 1, 200, device=device)
    times = []
    for _ in range(warm + hops):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        pipeline.push(hop)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times[warm:]


def breakdown(encoder, decoder, hops: int, device: torch.device, warm: int) -> dict:
    """At batch 1 with CUDA graphs: a push's wall time against the GPU time of the two streams' graph replays
    (the rest is the quantizer, the timbre norm and Python)."""
    from rtcodec.pipelines import VoiceConversion

    pipeline = VoiceConversion(encoder, decoder, 0.1 * torch.randn(1, 1, 16000, device=device), backend="cuda-graph")
    hop = 0.1 * torch.randn(1, 1, 200, device=device)
    push = statistics.median(timed(lambda: pipeline.push(hop), device, warm + hops)[warm:])
    result = {"push_ms": 1000 * push}
    for name, stream in (("encoder", pipeline.sender.encoder_stream), ("decoder", pipeline.receiver.decoder_stream)):
        replay = stream.settled_ticks.graphs[stream.in_per_hop].graph.replay  # one hop
        result[f"{name}_graph_gpu_ms"] = 1000 * statistics.median(timed(replay, device, hops))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (TRITON_INTERPRET=1)")
    parser.add_argument("--output", help="JSON path (default: bench/results/gpu-<card>-<date>.json)")
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: run with --smoke to check the script on the CPU")
    import triton

    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu-interpreter"
    report = {
        "card": card,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "date": datetime.date.today().isoformat(),
        "smoke": args.smoke,
        "kernels": [],
    }
    safe = re.sub(r"[^A-Za-z0-9]+", "-", card).strip("-").lower()
    path = Path(args.output) if args.output else RESULTS / f"gpu-{safe}-{report['date']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every part, so that a run cut short keeps what it measured
        path.write_text(json.dumps(report, indent=1) + "\n")

    repeat = 2 if args.smoke else 50
    kernels.use("triton")
    with torch.inference_mode():
        for name, fused, reference, case_args in kernel_cases(device, args.smoke):
            report["kernels"].append(compare(name, fused, reference, case_args, device, repeat))
        save()
        encoder, decoder = models()
        encoder, decoder = encoder.to(device), decoder.to(device)
        hops, warm = (8, 2) if args.smoke else (300, WARM_HOPS)
        # The interpreter would take hours over the full-size stack: the smoke run streams on torch only, and
        # the CPU has no graphs.
        for mode in ("torch",) if args.smoke else ("triton", "torch"):
            for graphs in (False,) if args.smoke else (True, False):
                kernels.use(mode)
                name = f"hop_batch1_{mode}_{'cuda_graphs' if graphs else 'eager'}"
                try:
                    report[name] = latency(hop_times(encoder, decoder, 1, hops, device, graphs, warm))
                except Exception as error:  # keep measuring the rest; the report says what failed
                    report[name] = f"failed: {error!r}"
                print(f"hop latency, batch 1, kernels {mode}, CUDA graphs {graphs}: {report[name]}")
                save()
        kernels.use("torch" if args.smoke else "triton")
        graphs = isinstance(report.get("hop_batch1_triton_cuda_graphs"), dict)
        if graphs:
            report["hop_batch1_breakdown"] = breakdown(encoder, decoder, hops, device, warm)
            print(f"where a graphed hop goes: {report['hop_batch1_breakdown']}")
            save()
        # The convolutions of short ticks as unfold + matmul (the CPU's best) against cuDNN (the GPU default).
        report["realtime_streams"], report["hop_by_batch"] = 0, {}
        default = stream_ops.SMALL_TICK[device.type]
        for convs, small_tick in (("matmul", 1 << 30), ("cudnn", 0)):
            stream_ops.SMALL_TICK[device.type] = small_tick
            report["hop_by_batch"][convs] = {}
            batches = [1, 2] if args.smoke else [32, 64, 96, 128, 192, 256, 384, 512]
            for batch in batches[: 1 if args.smoke and convs == "cudnn" else None]:
                try:
                    times = hop_times(encoder, decoder, batch, 8 if args.smoke else 50, device, graphs, warm)
                except torch.cuda.OutOfMemoryError:
                    report["hop_by_batch"][convs][batch] = "out of memory"
                    break
                report["hop_by_batch"][convs][batch] = {**latency(times), "cuda_graphs": graphs}
                print(f"convolutions {convs}, batch {batch}: {report['hop_by_batch'][convs][batch]}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # the last batch's graph pools
                if percentile(times, 0.99) < HOP_SECONDS:
                    report["realtime_streams"] = max(report["realtime_streams"], batch)
                    save()
                elif not args.smoke:  # a smoke run measures every batch: CI checks them all, whatever its speed
                    break
        stream_ops.SMALL_TICK[device.type] = default
    kernels.use("auto")
    save()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
