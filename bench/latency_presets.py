"""What each latency preset of `rtcodec live` costs, and how it runs fastest: `python -m bench.latency_presets`.

Streaming voice conversion (full-size models, random weights, 4 s of speech) for each preset of
`rtcodec.pipelines.LATENCY_PRESETS`, pushes of 1, 2, 4 and 8 hops, and each way of running it on two cores
(`RUNS`): one thread, two threads, pipelined (the encoder on a thread of its own, one thread each), and
`--backend compile` where asked (`--compile`: minutes per tick size). Per push: p50, p99 and the real-time factor
(compute time over audio time; `live --latency auto` takes a setting at RTF 0.8 or less), and the latency a
listener gets (lookahead, the blocks held, no device buffers). The synthesis in fp32, or in each of `--precision`
(the encoder and the codes stay fp32: `FACodecDecoder.set_synthesis_dtype`).

Writes `bench/results/latency-presets-cpu-DATE.{json,md}`: the table, the lowest latency that keeps up per way
of running, and issue 22's targets against what was measured.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
from dataclasses import asdict, dataclass

import torch

from rtcodec.cli.common import PRECISIONS
from rtcodec.pipelines import LATENCY_PRESETS
from rtcodec.realtime import HEADROOM

from .common import (
    HOP_SECONDS,
    latency,
    models,
    realtime_factor,
    results_stem,
    speech,
    stream_push_times,
    voice_conversion,
)
from .report import cpu_isa, cpu_name

HOPS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Run:
    """A way of running the conversion."""

    label: str
    threads: int
    pipelined: bool = False
    backend: str | None = None


RUNS = (Run("1 thread", 1), Run("2 threads", 2), Run("pipelined, 1 + 1 threads", 1, pipelined=True))
COMPILED = (Run("compile, 1 thread", 1, backend="compile"), Run("compile, pipelined", 1, True, "compile"))
# Issue 22's targets: (preset, hops per push, the RTF to reach).
TARGETS = (("low", 4, 0.8), ("balanced", 2, 0.8), ("exact", 1, 0.5))


def measure(encoder, decoder, wav: torch.Tensor, preset: str, hops: int, run: Run, precision: str = "fp32") -> dict:
    torch.set_num_threads(run.threads)  # before the pipeline: its encoder thread takes the same count
    pipeline = voice_conversion(
        encoder, decoder, wav, hops, backend=run.backend, lookahead=LATENCY_PRESETS[preset], pipelined=run.pipelined
    )
    times = min((stream_push_times(pipeline, wav, hops) for _ in range(2)), key=sum)
    held = 1 + run.pipelined  # blocks between a block's arrival and its output
    return {
        "preset": preset,
        "run": run.label,
        **asdict(run),
        "precision": precision,
        "hops": hops,
        **latency(times),
        "rtf": realtime_factor(times, hops),
        "latency_ms": pipeline.latency_ms + 1000 * held * hops * HOP_SECONDS,
    }


def markdown(report: dict) -> str:
    rows = report["rows"]
    lines = [
        f"# Latency presets: {report['cpu']}",
        "",
        f"{report['cpu']} ({report['isa']}), torch {report['torch']}, {report['date']}, full-size models with "
        f"random weights, {report['seconds']:g} s of speech, the better of two passes. Precision: the synthesis's "
        "(the codes are fp32's). "
        "Latency: lookahead and the blocks held (one, two where pipelined), no device buffers. RTF: compute over "
        "audio time.",
        "",
        "| preset | run | precision | hops per push | latency | p50 / p99 per push | RTF |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['run']} | {r['precision']} | {r['hops']} | {r['latency_ms']:.0f} ms | "
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms | {r['rtf']:.2f} |"
        )
    lines += ["", f"Lowest latency that keeps up with RTF at most {HEADROOM}, per way of running:", ""]
    for run, precision in dict.fromkeys((r["run"], r["precision"]) for r in rows):
        fitting = [r for r in rows if (r["run"], r["precision"]) == (run, precision) and r["rtf"] <= HEADROOM]
        best = min(fitting, key=lambda r: r["latency_ms"], default=None)
        found = (
            f"{best['latency_ms']:.0f} ms ({best['preset']}, {best['hops']} hops, RTF {best['rtf']:.2f})"
            if best
            else "none"
        )
        lines.append(f"- {run}, {precision}: {found}")
    lines += ["", "Issue 22's targets (the best run of each):", ""]
    for preset, hops, goal in TARGETS:
        candidates = [r for r in rows if r["preset"] == preset and r["hops"] == hops]
        best = min(candidates, key=lambda r: r["rtf"], default=None)
        got = f"RTF {best['rtf']:.2f} ({best['run']}, {best['precision']})" if best else "not measured"
        met = best is not None and best["rtf"] <= goal
        lines.append(f"- {preset} at {hops} hops per push, RTF at most {goal}: {got}: {'met' if met else 'missed'}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compile", action="store_true", help="also torch.compile'd runs at 4 hops (minutes)")
    parser.add_argument("--seconds", type=float, default=4.0, help="speech streamed per pass (default: 4)")
    parser.add_argument("--precision", nargs="+", choices=list(PRECISIONS), default=["fp32"], help="of the synthesis")
    parser.add_argument("--presets", nargs="+", choices=list(LATENCY_PRESETS), default=list(LATENCY_PRESETS))
    parser.add_argument("--hops", nargs="+", type=int, default=list(HOPS), help="hops per push (default: 1 2 4 8)")
    parser.add_argument("--runs", nargs="+", choices=[run.label for run in RUNS], help="ways of running (default: all)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    encoder, decoder = models()
    decoders = {  # fp32 is the decoder as built: no copy of its weights
        name: decoder if name == "fp32" else copy.deepcopy(decoder).set_synthesis_dtype(PRECISIONS[name])
        for name in args.precision
    }
    runs = [run for run in RUNS if args.runs is None or run.label in args.runs]
    wav = speech(args.seconds)
    report = {
        "cpu": cpu_name(),
        "isa": cpu_isa(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "seconds": args.seconds,
        "rows": [],
    }
    plan = [(preset, hops, run) for preset in args.presets for hops in args.hops for run in runs]
    if args.compile:
        plan += [(preset, 4, run) for preset in args.presets for run in COMPILED]
    print(f"CPU: {report['cpu']} ({report['isa']}), torch {report['torch']}")
    for preset, hops, run in plan:
        for precision, synthesis in decoders.items():
            row = measure(encoder, synthesis, wav, preset, hops, run, precision)
            report["rows"].append(row)
            print(
                f"{preset:8} {run.label:26} {precision} {hops} hops: RTF {row['rtf']:.2f}, {row['latency_ms']:.0f} ms",
                flush=True,
            )
    stem = results_stem("latency-presets-cpu")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
