"""`rtcodec live` on a real audio server, with what it reports of its latency: `python -m bench.live_latency`.

A private PulseAudio runs with virtual devices (null sinks at 16 kHz mono float): `live` hears the monitor of
`rtc_in` as its microphone and plays into `rtc_speakers`, while a probe plays speech into `rtc_in` and records
`rtc_speakers` on one duplex stream. Per preset and block size it records what `live` reports (its whole latency:
lookahead, block and the devices' buffers PortAudio gives), its compute per block (RTF), xruns and dropped blocks,
and the probe's own round trip through the server (how little the server itself adds). Writes
`bench/results/live-latency-DATE.{md,json,png}`.

The glass-to-glass delay (speech into the microphone to its converted voice out of the speakers) is read from the
recording: `live --save-input` keeps what its microphone gave, block by block as converted, so the library's
conversion of that file is, sample for sample, what `live` played (a codec is not shift-invariant: the conversion
of the speech played, delayed, would not do, for the microphone's samples reach `live` at an unknown offset
within a 200-sample hop). Each 25 ms of that conversion is found in the recording; its place, less the
microphone's offset and the probe's own round trip, is the delay of those 25 ms (p50 and p99 per run),
and its match states the noise the audio path adds (SNR).

Needs pulseaudio, pactl and PortAudio with ALSA's pulse plugin (Debian: pulseaudio pulseaudio-utils libportaudio2
libasound2-plugins); the tests of `rtcodec live` use the same server and probe.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
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
SINK_FORMAT = "rate=16000 channels=1 format=float32le"
MATCH_SNR_DB = 40.0  # found whole: this path is near bit-exact (over 60 dB); the next best place stays under 25
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


class Places:
    """Where windows of `size` samples lie in `signal`: its spectrum and running energy are computed once, for all
    the windows looked for."""

    def __init__(self, signal: np.ndarray, size: int) -> None:
        self.size, self.count = size, signal.size - size + 1
        self.n = 1 << int(np.ceil(np.log2(signal.size + size)))
        self.spectrum = np.fft.rfft(signal, self.n)
        energy = np.cumsum(np.concatenate([[0.0], signal.astype(np.float64) ** 2]))
        self.energy = energy[size:] - energy[:-size]  # of each stretch of `size` samples

    def cross(self, window: np.ndarray) -> np.ndarray:
        """The cross-correlation of `window` with each stretch, by FFT."""
        return np.fft.irfft(self.spectrum * np.conj(np.fft.rfft(window, self.n)), self.n)[: self.count]

    def find(self, window: np.ndarray) -> tuple[int, float] | None:
        """Where `window` is (the place of least squared difference) and the SNR there; None where it is not there
        whole. (Not the correlation's peak: it favours loud places over the one that matches.)"""
        own = float(np.sum(window.astype(np.float64) ** 2))
        error = self.energy - 2 * self.cross(window) + own
        place = int(np.argmin(error))
        snr = 10 * np.log10(own / max(float(error[place]), 1e-20))
        return (place, snr) if snr >= MATCH_SNR_DB else None


def lag(recording: np.ndarray, sound: np.ndarray) -> int:
    """Where `sound` starts in `recording`, in samples (the peak of their cross-correlation)."""
    return int(np.argmax(Places(recording, sound.size).cross(sound)))


def probe_round_trip(env: dict, folder: Path, sink: str = "rtc_probe") -> int:
    """The probe's own latency in samples: a burst of noise played into `sink`, recorded from its monitor."""
    burst = 0.3 * np.random.default_rng(0).standard_normal(RATE // 10).astype(np.float32)
    sound = np.concatenate([np.zeros(RATE // 4, np.float32), burst, np.zeros(2 * RATE, np.float32)])
    return lag(play_and_record(env, sink, f"{sink}.monitor", sound, folder), burst) - RATE // 4


class Command:
    """An `rtcodec` command as a subprocess, its stderr collected as it comes (live's status line has no newline)."""

    def __init__(self, args: list[str], env: dict) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", "rtcodec", *args], env=env, stderr=subprocess.PIPE, text=True
        )
        self.name = args[0]
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

    def wait(self, timeout: float) -> int:
        """Its exit code, once it ends by itself and all it said is read; RuntimeError after `timeout` s."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"rtcodec {self.name} did not end within {timeout:g} s:\n{self.err[-2000:]}") from None
        self.reader.join(10)
        return code

    def stop(self, signum: int = signal.SIGINT) -> int:
        self.process.send_signal(signum)
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)  # with -X faulthandler: where each thread was, on stderr
            self.process.wait(30)
            self.reader.join(10)
            raise RuntimeError(f"rtcodec did not stop within 60 s of signal {signum}:\n{self.err[-5000:]}") from None
        self.reader.join(10)
        return code


def conversion(checkpoint_dir: Path, reference: Path, microphone: np.ndarray, preset: str, hops: int) -> np.ndarray:
    """What `live --latency preset --hops-per-block hops` played for what its microphone gave: the library's
    conversion, pushed block by block (pipelined or not, the same samples)."""
    import torch

    from rtcodec import audio
    from rtcodec.hub import from_pretrained
    from rtcodec.pipelines import LATENCY_PRESETS, VoiceConversion

    models = from_pretrained("v1", checkpoint_dir=checkpoint_dir)
    block = hops * 200
    with torch.inference_mode():
        vc = VoiceConversion(models.encoder, models.decoder, audio.read(reference), lookahead=LATENCY_PRESETS[preset])
        wav = torch.from_numpy(microphone).view(1, 1, -1)
        return torch.cat([vc.push(wav[..., i : i + block]) for i in range(0, wav.shape[2], block)], 2)[0, 0].numpy()


def glass_to_glass(
    recording: np.ndarray,
    played: np.ndarray,
    microphone: np.ndarray,
    converted: np.ndarray,
    round_trip: int,
    size: int = RATE // 40,
) -> dict:
    """Delays (ms) from the speech played to its conversion recorded, per window of `size` samples of voice (25 ms:
    shorter than a block, so that windows are found whole between the gaps of a machine too slow for real time).

    For each window [s, s + n) of the microphone that holds speech: it is `played[k:k + n]` (found by
    correlation, window by window: a block `live` dropped shifts the rest); its conversion `converted[s:s + n]` is
    `recording[r:r + n]` (found likewise); and the probe records a sample played at k at `k + round_trip`. So that
    voice came back `r - round_trip - k` samples after it was played. Windows not found whole (a gap of an xrun
    across them) count as unmatched; the SNR of the matched ones is the noise of the audio path."""
    delays, snrs, windows = [], [], 0
    in_played, in_recording = Places(played, size), Places(recording, size)
    for start in range(0, min(microphone.size, converted.size) - size + 1, size):  # converted: less its lookahead
        heard = microphone[start : start + size]
        if np.sqrt(np.mean(heard**2)) < 1e-2:  # no speech here
            continue
        windows += 1
        said, out = in_played.find(heard), in_recording.find(converted[start : start + size])
        if said is None or out is None:
            continue
        delays.append(out[0] - round_trip - said[0])
        snrs.append(out[1])
    ms = 1000 * np.array(delays) / RATE
    return {
        "windows": windows,
        "matched": len(delays),
        "glass_p50_ms": float(np.percentile(ms, 50)) if delays else float("nan"),
        "glass_p99_ms": float(np.percentile(ms, 99)) if delays else float("nan"),
        "glass_min_ms": float(ms.min()) if delays else float("nan"),
        "glass_ms": [round(float(d), 1) for d in ms],  # window by window, in the microphone's order
        "snr_db_median": float(np.median(snrs)) if snrs else float("nan"),
    }


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
    parser.add_argument("--pipelined", action="store_true", help="live's --pipelined")
    args = parser.parse_args()
    if args.probe:
        return _probe(*args.probe)
    import soundfile as sf

    from .common import speech

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        said = speech(3.0 + args.seconds)[0, 0].numpy()
        write_checkpoints(tmp, said)
        sf.write(tmp / "reference.wav", said[: 3 * RATE], RATE)
        with pulseaudio(tmp) as env:
            for preset in args.presets:
                for hops in args.hops_per_block:
                    extra = ["--device-latency", args.device_latency]
                    extra += ["--threads", str(args.threads)] if args.threads else []
                    extra += ["--pipelined"] if args.pipelined else []
                    try:
                        row = measure(env, tmp, said[3 * RATE :], preset, hops, extra)
                    except RuntimeError as err:  # one run that went wrong: said, and the others still run
                        print(f"{preset} {hops}: {err}", file=sys.stderr, flush=True)
                        continue
                    rows.append(row)
                    print(preset, hops, summary(row), flush=True)
    write_report(rows, args)


def write_checkpoints(folder: Path, speech: np.ndarray) -> None:
    """V1 checkpoints with `plausible_state_dict` weights and codebooks drawn from `speech`'s frames: their
    conversion follows its input, so that each stretch of it is found in the recording at one place only."""
    import torch

    from rtcodec import OFFICIAL, FACodecDecoder, FACodecEncoder
    from rtcodec.checkpoint import PUBLISHED_FILES

    from .common import plausible_state_dict, speech_codebooks

    models = []
    for seed, (cls, config) in enumerate(((FACodecEncoder, OFFICIAL.encoder), (FACodecDecoder, OFFICIAL.decoder))):
        model = cls(config).eval()
        model.load_state_dict(plausible_state_dict(model, seed))
        models.append(model)
    speech_codebooks(*models, torch.from_numpy(speech).view(1, 1, -1))
    for model in models:
        torch.save(model.state_dict(), folder / PUBLISHED_FILES[type(model).__name__])


def measure(env: dict, folder: Path, speech: np.ndarray, preset: str, hops: int, extra: list[str]) -> dict:
    """One run of `live --latency preset --hops-per-block hops` (and `extra`) while the probe plays `speech`: what
    live reported, the glass-to-glass delays measured, and the probe's own round trip."""
    import soundfile as sf

    own = probe_round_trip(env, folder)
    saved = folder / "microphone.wav"
    options = ["--latency", preset, "--hops-per-block", str(hops), *extra]
    reference = folder / "reference.wav"
    args = ["--reference", str(reference), "--checkpoint-dir", str(folder), "--save-input", str(saved), *options]
    live = Command(["live", *args], {**env, "PULSE_SOURCE": "rtc_in.monitor", "PULSE_SINK": "rtc_speakers"})
    try:
        live.wait_for("latency in all")
        time.sleep(2.0)  # past the start, where the first blocks fill the devices' buffers
        played = np.concatenate([speech, np.zeros(int(TAIL_S * RATE), np.float32)])
        recording = play_and_record(env, "rtc_in", "rtc_speakers.monitor", played, folder)
    finally:
        live.stop()
    microphone = sf.read(saved, dtype="float32")[0]
    converted = conversion(folder, reference, microphone, preset, hops)
    return {
        "preset": preset,
        "hops": hops,
        "options": options,
        "probe_ms": 1000 * own / RATE,
        **live_report(live.err),
        **glass_to_glass(recording, speech, microphone, converted, own),
    }


def summary(row: dict) -> str:
    return (
        f"live says {row['latency_ms_reported']} ms, of which {row['device_ms']} ms devices; measured "
        f"{row['glass_p50_ms']:.0f} ms p50, {row['glass_p99_ms']:.0f} ms p99 ({row['matched']} of {row['windows']} "
        f"windows, SNR {row['snr_db_median']:.0f} dB); RTF {row['rtf']:.2f}, {row['xruns']} xruns, "
        f"{row['dropped']} dropped"
    )


def write_report(rows: list[dict], args: argparse.Namespace) -> None:
    from .common import results_stem
    from .report import command_and_machine, write_results

    date = datetime.date.today().isoformat()
    stem = results_stem("live-latency")
    lines = [
        f"# rtcodec live on a real audio server ({date})",
        "",
        f"{command_and_machine('bench.live_latency')}; full-size models with random weights of plausible scale "
        "(`bench.common.plausible_state_dict`); a private PulseAudio with null sinks (16 kHz mono float), PortAudio "
        f"through ALSA's pulse plugin; {args.seconds:g} s of speech per run. "
        "What live reports: its whole latency (lookahead + block + the devices' buffers PortAudio gives), the "
        "compute per block (RTF; over 1 does not keep up: gaps), xruns and dropped blocks. What was measured: the "
        "delay from speech played into the microphone to its conversion recorded from the speakers, per 25 ms "
        "of voice found in the recording (`live --save-input` gives what live converted), its p50 and p99, "
        "how many windows were found whole (the others straddle a gap), and their SNR against the library's "
        "conversion (the audio path's noise); the probe's own round trip is taken off.",
        "",
        "| preset | block | live's latency | of which devices | measured p50 / p99 | windows found | SNR | RTF "
        "| xruns | dropped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['preset']} | {row['hops'] * 12.5:g} ms | {row['latency_ms_reported']} ms | {row['device_ms']} ms "
            f"| {row['glass_p50_ms']:.0f} / {row['glass_p99_ms']:.0f} ms | {row['matched']} of {row['windows']} | "
            f"{row['snr_db_median']:.0f} dB | {row['rtf']:.2f} | {row['xruns']} | {row['dropped']} |"
        )
    write_results(stem, "\n".join(lines) + f"\n\n![latency by part]({stem.name}.png)\n", rows)
    plot(rows, stem.with_suffix(".png"))
    print(f"wrote {stem}.png")


def plot(rows: list[dict], path: Path) -> None:
    """Each run's latency by part: lookahead, block, devices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 4))
    labels = [f"{row['preset']}\n{row['hops']} hops" for row in rows]
    block = np.array([row["hops"] * 12.5 * (1 + ("--pipelined" in row["options"])) for row in rows])  # blocks held
    devices = np.array([row["device_ms"] for row in rows], dtype=float)
    lookahead = np.array([row["latency_ms_reported"] for row in rows]) - block - devices
    bottom = np.zeros(len(rows))
    for part, name in ((lookahead, "lookahead"), (block, "blocks held"), (devices, "devices (PortAudio)")):
        ax.bar(labels, part, bottom=bottom, label=name)
        bottom += part
    p50 = np.array([row["glass_p50_ms"] for row in rows])
    p99 = np.array([row["glass_p99_ms"] for row in rows])
    ax.errorbar(range(len(rows)), p50, yerr=[0 * p50, p99 - p50], fmt="ko", capsize=4, label="measured (p50, p99)")
    for i, row in enumerate(rows):
        ax.annotate(f"RTF {row['rtf']:.2f}", (i, max(bottom[i], p99[i])), ha="center", va="bottom")
    ax.set_ylabel("latency (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
