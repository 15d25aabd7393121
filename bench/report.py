"""The CPU benchmark report: `python -m bench.report` writes bench/results/cpu-<date>.{json,md} and a histogram.

Each measurement runs in its own process, so its peak memory (max RSS) is its own. Full-size models with
random weights, 10 s of speech; the reference path is the plain transcription of the published computation.
The machines this was written on are shared virtual machines whose speed drifts by up to 1.5x over minutes:
each figure is the best of `REPEAT` runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from .common import latency, models, realtime_factor, round_trip, speech, stream_push_times, voice_conversion

RESULTS = Path(__file__).resolve().parent / "results"
SECONDS = 10.0
STREAM_SECONDS = 4.0
REPEAT = 3
HOPS = (1, 2, 4, 8)  # hops per push of the streaming stages
STAGES = [
    "reference_10s",
    "reference_1s_pieces",
    "fast_10s",
    "fast_1s_pieces",
    *(f"stream_{hops}" for hops in HOPS),
    *(f"compiled_{hops}" for hops in HOPS),
]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_stage(name: str) -> dict:
    encoder, decoder = models()
    torch.set_grad_enabled(False)
    if name.startswith(("stream_", "compiled_")):
        hops = int(name.split("_")[1])
        wav = speech(STREAM_SECONDS)
        start = time.perf_counter()
        pipeline = voice_conversion(encoder, decoder, wav, hops, compile=name.startswith("compiled"))
        warm_up = time.perf_counter() - start
        times = min((stream_push_times(pipeline, wav, hops) for _ in range(REPEAT)), key=sum)
        result = {
            "hops_per_push": hops,
            **latency(times),
            "rtf": realtime_factor(times, hops),
            "warm_up_s": warm_up,
            "push_ms": [1000 * t for t in times],
        }
    else:
        fast = name.startswith("fast")
        wav = speech(SECONDS)
        pieces = [wav] if name.endswith("10s") else list(wav.split(16000, dim=2))
        round_trip(encoder, decoder, pieces[0][..., :16000], fast)  # warm-up
        best = float("inf")
        for _ in range(REPEAT):
            start = time.perf_counter()
            for piece in pieces:
                round_trip(encoder, decoder, piece, fast)
            best = min(best, time.perf_counter() - start)
        result = {"seconds_per_audio_second": best / SECONDS}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def markdown(report: dict) -> str:
    r = report["results"]
    ref, ref_pieces, fast = (
        r[k]["seconds_per_audio_second"] for k in ("reference_10s", "reference_1s_pieces", "fast_10s")
    )
    lines = [
        f"# CPU benchmark, {report['date']}",
        "",
        f"{report['cpu']}, {report['threads']} threads, torch {report['torch']}. Full-size FACodec (random weights), "
        f"{SECONDS:.0f} s of speech, best of {REPEAT} runs. Command: `python -m bench.report`.",
        "",
        "| offline round trip (encode, quantize, decode) | s per audio s | peak RSS (MB) |",
        "|---|---|---|",
    ]
    for key, label in [
        ("reference_10s", "reference path, 10 s at once"),
        ("reference_1s_pieces", "reference path, 1 s pieces"),
        ("fast_10s", "fast path, 10 s at once"),
        ("fast_1s_pieces", "fast path, 1 s pieces"),
    ]:
        lines.append(f"| {label} | {r[key]['seconds_per_audio_second']:.3f} | {r[key]['peak_rss_mb']:.0f} |")
    lines += [
        "",
        f"Fast / reference on 10 s: **{fast / ref:.2f}x**; fast / reference's best cost per second (1 s pieces): "
        f"**{fast / ref_pieces:.2f}x**.",
        "",
        "| streaming voice conversion, hops per push | p50 (ms) | p99 (ms) | real-time factor | "
        "compiled: p50 (ms) | p99 (ms) | real-time factor |",
        "|---|---|---|---|---|---|---|",
    ]
    for hops in HOPS:
        s, c = r[f"stream_{hops}"], r[f"compiled_{hops}"]
        lines.append(
            f"| {hops} ({hops * 12.5:g} ms of audio) | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['rtf']:.2f} | "
            f"{c['p50_ms']:.1f} | {c['p99_ms']:.1f} | {c['rtf']:.2f} |"
        )
    warm_ups = ", ".join(f"{r[f'compiled_{hops}']['warm_up_s']:.0f}" for hops in HOPS)
    lines += [
        "",
        f"Compiled: `VoiceConversion(..., compile=True)`; its warm-up (compiling) took {warm_ups} s for {HOPS} hops "
        "per push in this run (the compiler's cache, kept between runs, makes a first run much slower).",
    ]
    return "\n".join(lines) + "\n"


def histogram(report: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no histogram (pip install matplotlib)", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for hops in HOPS:
        ax.hist(report["results"][f"stream_{hops}"]["push_ms"], bins=40, alpha=0.6, label=f"{hops} hop(s) per push")
    ax.hist(report["results"]["compiled_1"]["push_ms"], bins=40, alpha=0.6, label="1 hop per push, compiled")
    ax.set_xlabel("compute per push (ms)")
    ax.set_ylabel("pushes")
    ax.set_title(f"Streaming voice conversion, {report['cpu']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", choices=STAGES, help="run one measurement and print it as JSON (internal)")
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage)))
        return
    report = {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": {},
    }
    for i, stage in enumerate(STAGES, 1):
        print(f"[{i}/{len(STAGES)}] {stage}", file=sys.stderr, flush=True)
        out = subprocess.run(
            [sys.executable, "-m", "bench.report", "--stage", stage], check=True, capture_output=True, text=True
        )
        report["results"][stage] = json.loads(out.stdout.strip().splitlines()[-1])
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"cpu-{report['date']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    histogram(report, stem.with_suffix(".png"))
    print(markdown(report))


if __name__ == "__main__":
    main()
