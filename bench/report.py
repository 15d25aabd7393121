"""The CPU benchmark report: `python -m bench.report` writes bench/results/cpu-<date>.{json,md} and a histogram.

Each measurement runs in its own process, so its peak memory (max RSS) is its own. Full-size models with
random weights, 10 s of speech; the reference path is the plain transcription of the published computation.
Streaming voice conversion runs on each backend of the streams' settled ticks (eager, compile, onnxruntime),
and once more with one competing busy process on the same cores, with 1 and 2 threads. The machines this was
written on are shared virtual machines whose speed drifts by up to 1.5x over minutes: each figure is the best of
`REPEAT` runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from rtcodec import onnx_stream

from .common import latency, models, realtime_factor, round_trip, speech, stream_push_times, voice_conversion

RESULTS = Path(__file__).resolve().parent / "results"
SECONDS = 10.0
STREAM_SECONDS = 4.0
REPEAT = 3
HOPS = (1, 2, 4, 8)  # hops per push of the streaming stages
BACKENDS = ("eager", "compile", "onnxruntime")
# Pushes beside a busy process: (backend, threads, onnxruntime's threads spinning while they wait, hops per push).
BUSY = [
    ("eager", 1, False, 1),
    ("eager", 2, False, 1),
    ("onnxruntime", 1, False, 1),
    ("onnxruntime", 2, False, 1),
    ("onnxruntime", 2, True, 1),
    ("eager", 1, False, 4),
]
ONE_THREAD = (1, 4)  # hops per push of eager pushes on one thread, quiet machine (what `rtcodec live` runs)


def busy_stage(backend: str, threads: int, spin: bool, hops: int) -> str:
    return f"busy_{backend}_{threads}t{'_spin' if spin else ''}{'' if hops == 1 else f'_{hops}h'}"


STAGES = [
    "reference_10s",
    "reference_1s_pieces",
    "fast_10s",
    "fast_1s_pieces",
    *(f"{backend}_{hops}" for backend in BACKENDS for hops in HOPS),
    *(f"eager_{hops}_1t" for hops in ONE_THREAD),
    *(busy_stage(*case) for case in BUSY),
]


ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_isa() -> str:
    """The vector extensions of this CPU that matter to the kernels torch and onnxruntime pick."""
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return " ".join(flag for flag in ISA_FLAGS if flag in flags) or "no AVX2"
    return platform.machine()


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def command_and_machine(module: str) -> str:
    """The start of a results file's description: the command that made it and the machine it ran on."""
    from rtcodec import __version__

    command = " ".join(["python -m", module, *sys.argv[1:]])
    return (
        f"`{command}`: {cpu_name()} ({cpu_isa()}), {os.cpu_count()} cores, torch {torch.__version__}, "
        f"rtcodec {__version__}, Python {platform.python_version()}"
    )


def write_results(stem: Path, markdown: str, runs: list[dict]) -> None:
    """`stem.md`, and `stem.json` with the runs, the date and the CPU; says so."""
    stem.with_suffix(".md").write_text(markdown)
    data = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "runs": runs}
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print(f"wrote {stem}.md and .json")


def run_stage(name: str) -> dict:
    encoder, decoder = models()
    torch.set_grad_enabled(False)
    busy = None
    if name.startswith("busy_"):
        backend, threads, spin, hops = next(case for case in BUSY if busy_stage(*case) == name)
        torch.set_num_threads(threads)
        onnx_stream.SPINNING = spin
        name = f"{backend}_{hops}"
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one core's worth of other work
    elif name.endswith("_1t"):
        torch.set_num_threads(1)
        name = name[: -len("_1t")]
    try:
        result = _measure(name, encoder, decoder)
    finally:
        if busy:
            busy.kill()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _measure(name: str, encoder, decoder) -> dict:
    backend, _, what = name.partition("_")
    if backend in BACKENDS:
        hops = int(what)
        wav = speech(STREAM_SECONDS)
        start = time.perf_counter()
        pipeline = voice_conversion(encoder, decoder, wav, hops, backend)
        warm_up = time.perf_counter() - start
        times = min((stream_push_times(pipeline, wav, hops) for _ in range(REPEAT)), key=sum)
        return {
            "hops_per_push": hops,
            **latency(times),
            "rtf": realtime_factor(times, hops),
            "warm_up_s": warm_up,
            "threads": torch.get_num_threads(),
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
        return {"seconds_per_audio_second": best / SECONDS}


def _onnxruntime_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "absent"
    return onnxruntime.__version__


def markdown(report: dict) -> str:
    r = report["results"]
    ref, ref_pieces, fast = (
        r[k]["seconds_per_audio_second"] for k in ("reference_10s", "reference_1s_pieces", "fast_10s")
    )
    lines = [
        f"# CPU benchmark, {report['date']}",
        "",
        f"{report['cpu']} ({report.get('isa', 'ISA not recorded')}), {report['threads']} threads, "
        f"torch {report['torch']}, onnxruntime {report.get('onnxruntime', 'absent')}. "
        "Full-size FACodec (random weights), "
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
        "Streaming voice conversion (exact mode), p50 / p99 per push (ms) and real-time factor, by the backend of "
        "the settled ticks (`VoiceConversion(..., backend=...)`):",
        "",
        "| hops per push | " + " | ".join(BACKENDS) + " |",
        "|---|" + "---|" * len(BACKENDS),
    ]
    for hops in HOPS:
        cells = [
            f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f}, RTF {c['rtf']:.2f}" for c in (r[f"{b}_{hops}"] for b in BACKENDS)
        ]
        lines.append(f"| {hops} ({hops * 12.5:g} ms of audio) | " + " | ".join(cells) + " |")
    warm_ups = "; ".join(
        f"{b}: " + ", ".join(f"{r[f'{b}_{hops}']['warm_up_s']:.0f}" for hops in HOPS) for b in BACKENDS[1:]
    )
    lines += [
        "",
        f"Warm-up (compiling or exporting the hop step, in s, for {HOPS} hops per push): {warm_ups}.",
        "",
        "Eager on one thread, quiet machine (what `rtcodec live` runs): "
        + "; ".join(
            f"{hops} hop(s) per push {c['p50_ms']:.1f} / {c['p99_ms']:.1f} ms, RTF {c['rtf']:.2f}"
            for hops, c in ((hops, r.get(f"eager_{hops}_1t")) for hops in ONE_THREAD)
            if c
        )
        + ".",
        "",
        "Pushes beside one busy process on the same cores (`busy_*` stages):",
        "",
        "| backend | threads | hops per push | p50 (ms) | p99 (ms) | real-time factor |",
        "|---|---|---|---|---|---|",
    ]
    for backend, threads, spin, hops in BUSY:
        c = r.get(busy_stage(backend, threads, spin, hops))
        if c:
            note = ", spinning" if spin else ""
            lines.append(
                f"| {backend} | {threads}{note} | {hops} | {c['p50_ms']:.1f} | {c['p99_ms']:.1f} | {c['rtf']:.2f} |"
            )
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
        ax.hist(report["results"][f"eager_{hops}"]["push_ms"], bins=40, alpha=0.6, label=f"{hops} hop(s) per push")
    for backend in BACKENDS[1:]:
        ax.hist(report["results"][f"{backend}_1"]["push_ms"], bins=40, alpha=0.6, label=f"1 hop per push, {backend}")
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
    parser.add_argument(
        "--only", nargs="+", choices=STAGES, metavar="STAGE", help="run only these stages; the others from today's file"
    )
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage)))
        return
    report = {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_name(),
        "isa": cpu_isa(),
        "threads": torch.get_num_threads(),
        "onnxruntime": _onnxruntime_version(),
        "torch": torch.__version__,
        "results": {},
    }
    stem = RESULTS / f"cpu-{report['date']}"
    if args.only:
        report["results"] = json.loads(stem.with_suffix(".json").read_text())["results"]
    stages = args.only or STAGES
    for i, stage in enumerate(stages, 1):
        print(f"[{i}/{len(stages)}] {stage}", file=sys.stderr, flush=True)
        out = subprocess.run(
            [sys.executable, "-m", "bench.report", "--stage", stage], check=True, capture_output=True, text=True
        )
        report["results"][stage] = json.loads(out.stdout.strip().splitlines()[-1])
    RESULTS.mkdir(exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    histogram(report, stem.with_suffix(".png"))
    print(markdown(report))


if __name__ == "__main__":
    main()
