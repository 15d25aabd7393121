"""What each latency preset of `rtcodec live` costs: `python -m bench.latency_presets`.

Streaming voice conversion (full-size models, random weights, 4 s of speech) op by op, for each preset of
`rtcodec.pipelines.LATENCY_PRESETS` and pushes of 1, 2, 4 and 8 hops: p50 and p99 per push and the real-time
factor (compute time over audio time; below 1 keeps up). Prints a table with the CPU it ran on.
"""

from __future__ import annotations

import torch

from rtcodec.pipelines import LATENCY_PRESETS

from .common import latency, models, realtime_factor, speech, stream_push_times, voice_conversion
from .report import cpu_isa, cpu_name

HOPS = (1, 2, 4, 8)


def main() -> None:
    torch.set_grad_enabled(False)
    encoder, decoder = models()
    wav = speech(4.0)
    print(f"CPU: {cpu_name()} ({cpu_isa()}), {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| preset | latency | hops per push | p50 / p99 per push | RTF |")
    print("|---|---|---|---|---|")
    for name, lookahead in LATENCY_PRESETS.items():
        for hops in HOPS:
            pipeline = voice_conversion(encoder, decoder, wav, hops, lookahead=lookahead)
            times = min((stream_push_times(pipeline, wav, hops) for _ in range(2)), key=sum)
            stats, rtf = latency(times), realtime_factor(times, hops)
            block_ms = 12.5 * hops
            print(
                f"| {name} | {pipeline.latency_ms + block_ms:.0f} ms | {hops} | "
                f"{stats['p50_ms']:.1f} / {stats['p99_ms']:.1f} ms | {rtf:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
