"""`rtcodec live` on a real audio server: a private PulseAudio with virtual devices, reached through PortAudio and
ALSA's pulse plugin, as on a desktop (no sound card needed).

Skips, saying why, where PulseAudio, pactl or the PortAudio library is missing (`.ci/run` installs them).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from rtcodec import audio
from rtcodec.hub import from_pretrained
from rtcodec.pipelines import VoiceConversion

from .conftest import AUDIO, needs_audio
from .helpers import write_checkpoint_dir

RATE = 16000
TOOLS = ("pulseaudio", "pactl", "pacat", "parec")
pytestmark = [
    needs_audio,
    pytest.mark.skipif(
        not all(shutil.which(tool) for tool in TOOLS),
        reason=f"needs {', '.join(TOOLS)} (Debian: apt install pulseaudio pulseaudio-utils libasound2-plugins)",
    ),
]


def _portaudio_missing() -> str | None:
    try:
        import sounddevice  # noqa: F401
    except OSError as err:
        return f"no PortAudio library ({err}; Debian: apt install libportaudio2)"
    return None


@pytest.fixture(scope="module")
def audio_server(tmp_path_factory):
    """A PulseAudio server of this test's own, with two 16 kHz mono float sinks: `rtc_in`, whose monitor stands
    in for a microphone, and `rtc_speakers`. Yields the environment that points clients at it."""
    if reason := _portaudio_missing():
        pytest.skip(reason)
    runtime = tmp_path_factory.mktemp("pulse")
    socket = runtime / "native"
    env = {
        **os.environ,
        "HOME": str(runtime),
        "XDG_RUNTIME_DIR": str(runtime),
        "PULSE_RUNTIME_PATH": str(runtime),
        "PULSE_SERVER": f"unix:{socket}",
    }
    sink = "rate=16000 channels=1 format=float32le"
    command = [
        "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--disallow-exit",
        f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket}",
        f"--load=module-null-sink sink_name=rtc_in {sink}",
        f"--load=module-null-sink sink_name=rtc_speakers {sink}",
    ]  # fmt: skip
    log = open(runtime / "pulseaudio.log", "w+b")  # noqa: SIM115 (closed at the end)
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode:
        if server.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            pytest.skip(f"PulseAudio did not start: {log.read().decode(errors='replace')[-500:]}")
        time.sleep(0.2)
    yield env
    server.terminate()
    server.wait(30)
    log.close()


def pactl(env: dict, *args: str) -> str:
    return subprocess.run(["pactl", *args], env=env, capture_output=True, text=True, check=True).stdout


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
            assert self.process.poll() is None, f"the command ended early:\n{self.err}"
            assert time.monotonic() < deadline, f"no {text!r} from the command:\n{self.err}"
            time.sleep(0.1)

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(60)
        self.reader.join(10)
        return code


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_checkpoint_dir(tmp_path_factory.mktemp("ckpt"))


def _raw(path: Path, seconds: float) -> np.ndarray:
    speech, rate = sf.read(AUDIO / "slt.wav", dtype="float32")
    assert rate == RATE
    speech = speech[: int(seconds * RATE)]
    speech.tofile(path)
    return speech


def best_match(recording: np.ndarray, signal: np.ndarray) -> float:
    """The correlation of `signal` with the part of `recording` it matches best (cross-correlation by FFT)."""
    n = 1 << int(np.ceil(np.log2(recording.size + signal.size)))
    cross = np.fft.irfft(np.fft.rfft(recording, n) * np.conj(np.fft.rfft(signal, n)), n)[: recording.size - signal.size]
    start = int(np.argmax(cross))
    return float(np.corrcoef(signal, recording[start : start + signal.size])[0, 1])


def window_matches(recording: np.ndarray, signal: np.ndarray, size: int = RATE // 40) -> np.ndarray:
    """For each window of `recording` that is not silent, its correlation with the place of `signal` it matches
    best."""
    windows = [recording[i : i + size] for i in range(0, recording.size - size + 1, size)]
    return np.array([best_match(signal, w) for w in windows if np.sqrt(np.mean(w**2)) > 1e-3])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_virtual_microphone_carries_the_converted_voice_and_is_gone_after(audio_server, ckpt, tmp_path, signum):
    """`live --virtual-mic` makes a microphone that another program (parec here) records the converted voice from,
    and removes it when stopped by Ctrl-C or SIGTERM."""
    env = {**audio_server, "PULSE_SOURCE": "rtc_in.monitor"}
    reference = tmp_path / "reference.wav"
    sf.write(reference, sf.read(AUDIO / "rms.wav", dtype="float32")[0][: 3 * RATE], RATE)
    speech = _raw(tmp_path / "speech.raw", 3.0)
    raw = ["--format=float32le", "--channels=1", f"--rate={RATE}", "--raw"]
    args = ["--reference", str(reference), "--checkpoint-dir", str(ckpt), "--virtual-mic", "rtc_vm"]
    live = Command(["live", *args, "--hops-per-block", "8"], env)
    try:
        live.wait_for("converting to the voice")
        assert "rtc_vm_mic" in pactl(env, "list", "short", "sources")
        with open(tmp_path / "heard.raw", "wb") as heard:
            recorder = subprocess.Popen(["parec", "-d", "rtc_vm_mic", *raw], env=env, stdout=heard)
            subprocess.run(["pacat", "-d", "rtc_in", *raw, str(tmp_path / "speech.raw")], env=env, check=True)
            time.sleep(2.0)  # the conversion's lookahead, its block and the devices' buffers
            recorder.terminate()
            recorder.wait(10)
    finally:
        code = live.stop(signum)
    assert code == 0, live.err
    assert "stopped after" in live.err and "removed the virtual microphone rtc_vm_mic" in live.err
    listed = pactl(env, "list", "short", "sources") + pactl(env, "list", "short", "sinks")
    assert "rtc_vm" not in listed  # gone with live
    heard = np.fromfile(tmp_path / "heard.raw", np.float32)
    # The converted voice, stretch by stretch: each 25 ms window of what was heard is matched on its own to the
    # place of the library's conversion it resembles most. A machine too slow for real time plays gaps (xruns) and
    # drops blocks, which only the windows across them show; windows within a block played whole are the
    # conversion exactly (windows as long as a block would nearly all straddle a gap on such a machine).
    silence = np.zeros(RATE // 2, np.float32)
    played = np.concatenate([silence, speech, silence])
    models = from_pretrained("v1", checkpoint_dir=ckpt)
    with torch.inference_mode():
        vc = VoiceConversion(models.encoder, models.decoder, audio.read(reference))
        wav = torch.from_numpy(played).view(1, 1, -1)
        expected = torch.cat([vc.push(wav), vc.flush()], dim=2)[0, 0].numpy()
    converted, passed_through = window_matches(heard, expected), window_matches(heard, played)
    assert (converted > 0.95).sum() >= 3, (np.round(converted, 3), live.err[-300:])
    # The speech itself does not come out (its windows would match it at 1; a 25 ms window of something else finds
    # a place that resembles it at about 0.3).
    assert np.median(passed_through) < 0.6, np.round(passed_through, 3)


def test_receive_plays_on_the_speakers_what_it_writes(audio_server, ckpt, tmp_path):
    """`rtcodec receive --play --output`: the speakers (a virtual sink, recorded) play the audio it writes."""
    env = {**audio_server, "PULSE_SINK": "rtc_speakers"}
    clip = tmp_path / "speech.wav"
    sf.write(clip, sf.read(AUDIO / "slt.wav", dtype="float32")[0][: 2 * RATE], RATE)
    raw = ["--format=float32le", "--channels=1", f"--rate={RATE}", "--raw"]
    with open(tmp_path / "heard.raw", "wb") as heard:
        recorder = subprocess.Popen(["parec", "-d", "rtc_speakers.monitor", *raw], env=env, stdout=heard)
        port = "50631"
        args = ["--port", port, "--checkpoint-dir", str(ckpt)]
        receive = Command(["receive", *args, "--play", "--output", str(tmp_path / "out.wav"), "--timeout", "5"], env)
        receive.wait_for("listening on UDP")
        sent = subprocess.run([sys.executable, "-m", "rtcodec", "send", str(clip), *args], env=env, capture_output=True)
        assert sent.returncode == 0, sent.stderr
        assert receive.process.wait(120) == 0, receive.err
        time.sleep(1.0)  # the devices' buffers
        recorder.terminate()
        recorder.wait(10)
    written = sf.read(tmp_path / "out.wav", dtype="float32")[0]
    assert written.size == 2 * RATE  # as long as what was sent
    played = window_matches(np.fromfile(tmp_path / "heard.raw", np.float32), written)
    assert (played > 0.95).sum() >= 3, np.round(played, 3)
