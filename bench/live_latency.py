"""Glass-to-glass latency of `rtcodec live` through a real audio server: `python -m bench.live_latency`.

A private PulseAudio runs with virtual devices (null sinks at 16 kHz mono float): `live` hears the monitor of
`rtc_in` as its microphone and plays into `rtc_speakers`. A probe process plays speech into `rtc_in` and records
`rtc_speakers`' monitor on one duplex stream, so the two share a clock; its own round trip through the server is
measured first (played into a sink and recorded from that sink's monitor) and taken off. Each 25 ms window of
the recording is then found in what the library's conversion of the speech should be: the lag of each window
is one latency sample (p50 and p99 over the windows of a run). Writes `bench/results/live-latency-DATE.md`
and a plot beside it.

Needs pulseaudio, pactl and PortAudio with ALSA's pulse plugin (Debian: pulseaudio pulseaudio-utils libportaudio2
libasound2-plugins); the tests of `rtcodec live` use the same server and probe.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

RATE = 16000
RESULTS = Path(__file__).resolve().parent / "results"
SINK_FORMAT = "rate=16000 channels=1 format=float32le"
WINDOW = RATE // 40  # 25 ms: samples per latency sample
MATCH = 0.95  # the correlation of a window of the recording with its place in the expected conversion
TAIL_S = 3.0  # silence played after the speech, while the rest of the conversion comes out


@contextlib.contextmanager
def pulseaudio(folder: Path, sinks: tuple[str, ...] = ("rtc_in", "rtc_speakers", "rtc_probe")) -> Iterator[dict]:
    """A PulseAudio server of our own with null sinks `sinks` (16 kHz mono float); yields the environment that
    points clients at it. Raises RuntimeError, with the server's log, if it does not start within 30 s."""
    socket = folder / "native"
    env = {
        **os.environ,
        "HOME": str(folder),
        "XDG_RUNTIME_DIR": str(folder),
        "PULSE_RUNTIME_PATH": str(folder),
        "PULSE_SERVER": f"unix:{socket}",
    }
    command = [
        "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--disallow-exit",
        f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket}",
        *(f"--load=module-null-sink sink_name={sink} {SINK_FORMAT}" for sink in sinks),
    ]  # fmt: skip
    with open(folder / "pulseaudio.log", "w+b") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"PulseAudio did not start: {log.read().decode(errors='replace')[-500:]}")
                time.sleep(0.2)
            yield env
        finally:
            server.terminate()
            server.wait(30)


def play_and_record(env: dict, sink: str, source: str, sound: np.ndarray, folder: Path) -> np.ndarray:
    """Plays `sound` into `sink` while recording `source` for as long, on one duplex stream (a shared clock),
    in a process of its own (the pulse plugin picks its devices from the environment)."""
    played, recorded = folder / "probe-played.raw", folder / "probe-recorded.raw"
    sound.astype(np.float32).tofile(played)
    env = {**env, "PULSE_SINK": sink, "PULSE_SOURCE": source}
    probe = [sys.executable, "-m", "bench.live_latency", "--probe", str(played), str(recorded)]
    done = subprocess.run(probe, env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"the probe failed: {done.stderr.decode(errors='replace')[-1000:]}")
    return np.fromfile(recorded, np.float32)


def _probe(played: str, recorded: str) -> None:
    import sounddevice as sd

    sound = np.fromfile(played, np.float32)
    recording = sd.playrec(sound, samplerate=RATE, channels=1, dtype="float32", blocking=True)
    recording[:, 0].tofile(recorded)


def lag(recording: np.ndarray, sound: np.ndarray) -> int:
    """Where `sound` starts in `recording`, in samples (the peak of their cross-correlation, by FFT)."""
    n = 1 << int(np.ceil(np.log2(recording.size + sound.size)))
    cross = np.fft.irfft(np.fft.rfft(recording, n) * np.conj(np.fft.rfft(sound, n)), n)
    return int(np.argmax(cross[: recording.size - sound.size + 1]))


def window_lags(recording: np.ndarray, expected: np.ndarray, played: np.ndarray) -> np.ndarray:
    """Latency samples: each `WINDOW` of `recording` found in `expected` (the conversion of `played`, sample for
    sample), kept where it matches within `MATCH` and `played` has speech there (where the input is silent the
    conversion repeats itself, so a match there says nothing); the lags in samples. Short windows, so that a machine
    too slow for real time, whose output has gaps, still gives some; their lags grow with its backlog."""
    lags = []
    for start in range(0, recording.size - WINDOW + 1, WINDOW):
        window = recording[start : start + WINDOW]
        if np.sqrt(np.mean(window**2)) < 1e-3:
            continue
        found = lag(expected, window)
        if np.sqrt(np.mean(played[found : found + WINDOW] ** 2)) < 1e-2:
            continue
        if np.corrcoef(window, expected[found : found + WINDOW])[0, 1] > MATCH:
            lags.append(start - found)
    return np.array(lags, dtype=float)


def probe_round_trip(env: dict, folder: Path, sink: str = "rtc_probe") -> int:
    """The probe's own latency in samples: a burst of noise played into `sink`, recorded from its monitor."""
    burst = 0.3 * np.random.default_rng(0).standard_normal(RATE // 10).astype(np.float32)
    sound = np.concatenate([np.zeros(RATE // 4, np.float32), burst, np.zeros(2 * RATE, np.float32)])
    return lag(play_and_record(env, sink, f"{sink}.monitor", sound, folder), burst) - RATE // 4


class Command:
    """An `rtcodec` command as a subprocess, its stderr collected as it comes (live's status line has no newline)."""

    def __init__(self, args: list[str], env: dict) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rtcodec", *args], env=env, stderr=subprocess.PIPE, text=True
        )
        self.err = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while chunk := self.process.stderr.read(1):
            self.err += chunk

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.err:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no {text!r} from rtcodec:\n{self.err}")
            time.sleep(0.1)

    def stop(self, signum: int = signal.SIGINT) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(60)
        self.reader.join(10)
        return code


def live_report(err: str) -> dict:
    """What `rtcodec live` said on stderr: its whole latency and its devices' buffers (ms), the last block RTF,
    xruns and dropped blocks."""
    devices = re.search(r"audio devices: (\d+) ms in \+ (\d+) ms out .*latency in all (\d+) ms", err)
    rtf = re.findall(r"RTF (\d+\.\d+)", err)
    end = re.search(r"stopped after [\d.]+ s, (\d+) xruns, (\d+) dropped blocks", err)
    if not devices or not end:
        raise RuntimeError(f"rtcodec live did not report its latency and xruns:\n{err}")
    return {
        "device_ms": int(devices[1]) + int(devices[2]),
        "latency_ms_reported": int(devices[3]),
        "rtf": float(rtf[-1]) if rtf else float("nan"),
        "xruns": int(end[1]),
        "dropped": int(end[2]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", nargs=2, metavar=("PLAYED", "RECORDED"), help=argparse.SUPPRESS)
    parser.add_argument("--presets", nargs="+", default=["exact", "balanced", "low"])
    parser.add_argument("--hops-per-block", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--seconds", type=float, default=10.0, help="speech played per run (default: 10)")
    parser.add_argument("--device-latency", default="high", help="live's --device-latency (default: high)")
    parser.add_argument("--threads", type=int, help="live's --threads (default: live's)")
    args = parser.parse_args()
    if args.probe:
        return _probe(*args.probe)
    import soundfile as sf

    from rtcodec.hub import from_pretrained
    from tests.helpers import write_checkpoint_dir

    from .common import speech

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The tests' random weights, scaled per kind of key: with the benchmarks' plain N(0, 0.02) everywhere, the
        # conversion does not depend on its input at all, and no delay can be read from it.
        write_checkpoint_dir(tmp)
        said = speech(3.0 + args.seconds)[0, 0].numpy()
        sf.write(tmp / "reference.wav", said[: 3 * RATE], RATE)
        models = from_pretrained("v1", checkpoint_dir=tmp)
        with pulseaudio(tmp) as env:
            for preset in args.presets:
                for hops in args.hops_per_block:
                    options = [
                        "--latency",
                        preset,
                        "--hops-per-block",
                        str(hops),
                        "--device-latency",
                        args.device_latency,
                    ]
                    options += ["--threads", str(args.threads)] if args.threads else []
                    row = measure(env, tmp, models, said[3 * RATE :], options)
                    rows.append(row)
                    print(preset, hops, summary(row), flush=True)
    write_report(rows, args)


def expected_conversion(models, reference: np.ndarray, played: np.ndarray, options: list[str]) -> np.ndarray:
    """What `live` with `options` should play for `played`: the library's conversion, pushed block by block."""
    import torch

    from rtcodec.pipelines import LATENCY_PRESETS, VoiceConversion

    preset, hops = options[options.index("--latency") + 1], int(options[options.index("--hops-per-block") + 1])
    with torch.inference_mode():
        ref = torch.from_numpy(reference).view(1, 1, -1)
        vc = VoiceConversion(models.encoder, models.decoder, ref, lookahead=LATENCY_PRESETS[preset])
        wav, block = torch.from_numpy(played).view(1, 1, -1), hops * 200
        return torch.cat([vc.push(wav[..., i : i + block]) for i in range(0, wav.shape[2], block)], 2)[0, 0].numpy()


def measure(env: dict, folder: Path, models, speech: np.ndarray, options: list[str]) -> dict:
    """One run of `live` with `options`: latency samples (ms), what live reported, the probe's own latency."""
    own = probe_round_trip(env, folder)
    played = np.concatenate([speech, np.zeros(int(TAIL_S * RATE), np.float32)])
    reference = folder / "reference.wav"
    expected = expected_conversion(models, sf_read(reference), played, options)
    args = ["--reference", str(reference), "--checkpoint-dir", str(folder), *options]
    live = Command(["live", *args], {**env, "PULSE_SOURCE": "rtc_in.monitor", "PULSE_SINK": "rtc_speakers"})
    try:
        live.wait_for("latency in all")
        time.sleep(2.0)  # past the start, where the first blocks fill the devices' buffers
        recording = play_and_record(env, "rtc_in", "rtc_speakers.monitor", played, folder)
    finally:
        live.stop()
    latency_ms = 1000 * (window_lags(recording, expected, played) - own) / RATE
    return {"options": options, "latency_ms": latency_ms, "probe_ms": 1000 * own / RATE, **live_report(live.err)}


def sf_read(path: Path) -> np.ndarray:
    import soundfile as sf

    return sf.read(path, dtype="float32")[0]


def measured(row: dict) -> str:
    """p50 and p99 of the latency samples, where they mean something: a run that kept up."""
    if row["rtf"] > 1 or row["latency_ms"].size < 10:
        return "did not keep up", "-"
    return tuple(f"{v:.0f} ms" for v in np.percentile(row["latency_ms"], [50, 99]))


def summary(row: dict) -> str:
    p50, p99 = measured(row)
    return (
        f"measured p50 {p50}, p99 {p99}; reported {row['latency_ms_reported']} ms; RTF {row['rtf']:.2f}, "
        f"{row['xruns']} xruns, {row['dropped']} dropped"
    )


def write_report(rows: list[dict], args: argparse.Namespace) -> None:
    import torch

    from rtcodec import __version__

    from .report import cpu_isa, cpu_name

    date = datetime.date.today().isoformat()
    stem = RESULTS / f"live-latency-{date}"
    lines = [
        f"# rtcodec live: glass-to-glass latency ({date})",
        "",
        f"`python -m bench.live_latency {' '.join(sys.argv[1:])}`: {cpu_name()} ({cpu_isa()}), "
        f"{os.cpu_count()} cores, torch {torch.__version__}, rtcodec {__version__}, Python "
        f"{platform.python_version()}; full-size models with the tests' random weights; a private PulseAudio with "
        f"null sinks (16 kHz mono float), PortAudio through ALSA's pulse plugin; {args.seconds:g} s of speech per run. "
        "The probe's own round trip, measured before each run, is taken off. Latency samples: 25 ms windows of the "
        "recording found in the library's conversion of what was played. A run slower than real time (RTF over 1)"
        " plays gaps and drops input, so its samples are not figures of latency: none is given.",
        "",
        "| preset | block | live says | measured p50 | p99 | samples | devices | probe | RTF | xruns | dropped |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        options = row["options"]
        preset, hops = options[options.index("--latency") + 1], int(options[options.index("--hops-per-block") + 1])
        p50, p99 = measured(row)
        lines.append(
            f"| {preset} | {hops * 12.5:g} ms | {row['latency_ms_reported']} ms | {p50} | {p99} | "
            f"{row['latency_ms'].size} | {row['device_ms']} ms | {row['probe_ms']:.0f} ms | {row['rtf']:.2f} | "
            f"{row['xruns']} | {row['dropped']} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + f"\n\n![latency samples]({stem.name}.png)\n")
    samples = [{**row, "latency_ms": [round(v, 1) for v in row["latency_ms"]]} for row in rows]
    stem.with_suffix(".json").write_text(json.dumps({"date": date, "cpu": cpu_name(), "runs": samples}, indent=1))
    plot(rows, stem.with_suffix(".png"))
    print(f"wrote {stem}.md, .json and .png")


def plot(rows: list[dict], path: Path) -> None:
    """Box plots of the latency samples of each run that kept up, and live's own figure (red x) for every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 4))
    for i, row in enumerate(rows, start=1):
        if measured(row)[1] != "-":
            ax.boxplot([row["latency_ms"]], positions=[i], whis=(1, 99))
        else:
            ax.annotate(f"RTF {row['rtf']:.2f}:\nno figure", (i, row["latency_ms_reported"]), ha="center", va="bottom")
    ax.scatter(range(1, len(rows) + 1), [row["latency_ms_reported"] for row in rows], marker="x", color="red",
               label="live's own figure", zorder=3)  # fmt: skip
    ax.set_xticks(range(1, len(rows) + 1), [" ".join(row["options"][1:4:2]) + " hops" for row in rows])
    ax.set_xlim(0.5, len(rows) + 0.5)
    ax.set_ylabel("glass-to-glass latency (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
