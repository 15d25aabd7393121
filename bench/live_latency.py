"""`rtcodec live` on a real audio server, with what it reports of its latency: `python -m bench.live_latency`.

A private PulseAudio runs with virtual devices (null sinks at 16 kHz mono float): `live` hears the monitor of
`rtc_in` as its microphone and plays into `rtc_speakers`, while a probe plays speech into `rtc_in` and records
`rtc_speakers` on one duplex stream. Per preset and block size it records what `live` reports (its whole latency:
lookahead, block and the devices' buffers PortAudio gives), its compute per block (RTF), xruns and dropped blocks,
and the probe's own round trip through the server (how little the server itself adds). Writes
`bench/results/live-latency-DATE.{md,json,png}`.

The glass-to-glass delay is not read from the recording: a codec's output is not shift-invariant, and the
microphone's samples reach `live` at an unknown offset within a 200-sample hop, so the recording is not the
library's conversion of the speech played, delayed, unless that offset is known (the next step: `live` recording
what its microphone gave).

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
        # No shared memory: PulseAudio 16 once died here on an assertion in its shared-memory pools' mutexes
        # (after "Cannot send block reference with non-registered memfd ID"); over the socket it is only copying.
        "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--disallow-exit",
        "--disable-shm=yes",
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

    from .common import speech
    from .long_recordings import write_checkpoints

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_checkpoints(tmp)
        said = speech(3.0 + args.seconds)[0, 0].numpy()
        sf.write(tmp / "reference.wav", said[: 3 * RATE], RATE)
        with pulseaudio(tmp) as env:
            for preset in args.presets:
                for hops in args.hops_per_block:
                    extra = ["--device-latency", args.device_latency]
                    extra += ["--threads", str(args.threads)] if args.threads else []
                    row = measure(env, tmp, said[3 * RATE :], preset, hops, extra)
                    rows.append(row)
                    print(preset, hops, summary(row), flush=True)
    write_report(rows, args)


def measure(env: dict, folder: Path, speech: np.ndarray, preset: str, hops: int, extra: list[str]) -> dict:
    """One run of `live --latency preset --hops-per-block hops` (and `extra`) while the probe plays `speech`: what
    live reported, and the probe's own round trip."""
    own = probe_round_trip(env, folder)
    options = ["--latency", preset, "--hops-per-block", str(hops), *extra]
    args = ["--reference", str(folder / "reference.wav"), "--checkpoint-dir", str(folder), *options]
    live = Command(["live", *args], {**env, "PULSE_SOURCE": "rtc_in.monitor", "PULSE_SINK": "rtc_speakers"})
    try:
        live.wait_for("latency in all")
        time.sleep(2.0)  # past the start, where the first blocks fill the devices' buffers
        played = np.concatenate([speech, np.zeros(int(TAIL_S * RATE), np.float32)])
        play_and_record(env, "rtc_in", "rtc_speakers.monitor", played, folder)
    finally:
        live.stop()
    return {"preset": preset, "hops": hops, "options": options, "probe_ms": 1000 * own / RATE, **live_report(live.err)}


def summary(row: dict) -> str:
    return (
        f"live says {row['latency_ms_reported']} ms, of which {row['device_ms']} ms devices; RTF {row['rtf']:.2f}, "
        f"{row['xruns']} xruns, {row['dropped']} dropped"
    )


def write_report(rows: list[dict], args: argparse.Namespace) -> None:
    import torch

    from rtcodec import __version__

    from .report import cpu_isa, cpu_name

    date = datetime.date.today().isoformat()
    stem = RESULTS / f"live-latency-{date}"
    lines = [
        f"# rtcodec live on a real audio server ({date})",
        "",
        f"`python -m bench.live_latency {' '.join(sys.argv[1:])}`: {cpu_name()} ({cpu_isa()}), "
        f"{os.cpu_count()} cores, torch {torch.__version__}, rtcodec {__version__}, Python "
        f"{platform.python_version()}; full-size models with random weights; a private PulseAudio with "
        f"null sinks (16 kHz mono float), PortAudio through ALSA's pulse plugin; {args.seconds:g} s of speech per run. "
        "What live reports: its whole latency (lookahead + block + the devices' buffers PortAudio gives), the "
        "compute per block (RTF; over 1 does not keep up: gaps), xruns and dropped blocks; and the probe's own round "
        "trip through the server.",
        "",
        "| preset | block | live's latency | of which devices | RTF | xruns | dropped | probe round trip |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['preset']} | {row['hops'] * 12.5:g} ms | {row['latency_ms_reported']} ms | "
            f"{row['device_ms']} ms | {row['rtf']:.2f} | {row['xruns']} | {row['dropped']} | {row['probe_ms']:.0f} ms |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + f"\n\n![latency by part]({stem.name}.png)\n")
    stem.with_suffix(".json").write_text(json.dumps({"date": date, "cpu": cpu_name(), "runs": rows}, indent=1))
    plot(rows, stem.with_suffix(".png"))
    print(f"wrote {stem}.md, .json and .png")


def plot(rows: list[dict], path: Path) -> None:
    """Each run's latency by part: lookahead, block, devices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 4))
    labels = [f"{row['preset']}\n{row['hops']} hops" for row in rows]
    block = np.array([row["hops"] * 12.5 for row in rows])
    devices = np.array([row["device_ms"] for row in rows], dtype=float)
    lookahead = np.array([row["latency_ms_reported"] for row in rows]) - block - devices
    bottom = np.zeros(len(rows))
    for part, name in ((lookahead, "lookahead"), (block, "block"), (devices, "devices (PortAudio)")):
        ax.bar(labels, part, bottom=bottom, label=name)
        bottom += part
    for i, row in enumerate(rows):
        ax.annotate(f"RTF {row['rtf']:.2f}", (i, bottom[i]), ha="center", va="bottom")
    ax.set_ylabel("latency (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
