"""`rtcodec live --virtual-mic NAME`: a microphone other programs can pick (a call, a stream), fed with the
converted voice.

On Linux it is made on the audio server, PulseAudio or PipeWire (through its PulseAudio server, pipewire-pulse):
a null sink NAME that `live` plays into, and a source NAME_mic remapped from the sink's monitor, which programs
list as a microphone. Both are removed when `live` ends, Ctrl-C and SIGTERM included. Elsewhere there is no audio
server to ask: `VirtualMicError` gives the steps (a loopback driver, then `--output-device`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

DEFAULT_NAME = "rtcodec"
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ELSEWHERE = {
    "darwin": "on macOS, install the BlackHole loopback driver (https://existential.audio/blackhole/), run "
    '`rtcodec live --output-device "BlackHole 2ch" ...`, and pick BlackHole 2ch as the microphone in the call',
    "win32": "on Windows, install VB-CABLE (https://vb-audio.com/Cable/), run `rtcodec live --output-device "
    '"CABLE Input" ...`, and pick CABLE Output as the microphone in the call',
}


class VirtualMicError(RuntimeError):
    """No virtual microphone can be made here; the message says what to do instead."""


class VirtualMic:
    """`with VirtualMic(name):` the sink and the microphone exist, and this process's audio output (PortAudio's
    default device, through the pulse plugin) goes to the sink. Enter it before sounddevice is imported."""

    def __init__(self, name: str = DEFAULT_NAME) -> None:
        if not NAME.fullmatch(name):
            raise VirtualMicError(f"--virtual-mic {name!r}: a name is 1 to 64 letters, digits, '_', '.' or '-'")
        if sys.platform != "linux":
            raise VirtualMicError(f"--virtual-mic needs PulseAudio or PipeWire: {ELSEWHERE.get(sys.platform, '')}")
        if shutil.which("pactl") is None:
            raise VirtualMicError(
                "--virtual-mic needs pactl and a running PulseAudio or PipeWire (Debian: apt install pulseaudio-utils)"
            )
        self.name, self.modules = name, []

    @property
    def microphone(self) -> str:
        """The source other programs pick."""
        return f"{self.name}_mic"

    def __enter__(self) -> VirtualMic:
        sinks = _pactl("list", "short", "sinks")
        if any(line.split("\t")[1:2] == [self.name] for line in sinks.splitlines()):
            raise VirtualMicError(f"--virtual-mic {self.name}: the audio server has a sink of that name already")
        try:
            description = f"device.description=rtcodec-{self.name}"
            # At the voice's own rate and format: nothing is resampled or rounded on the way in; a program that
            # records the microphone at another rate has the server convert it, once.
            spec = ("rate=16000", "channels=1", "format=float32le")
            self._load("module-null-sink", f"sink_name={self.name}", f"sink_properties={description}", *spec)
            self._load(
                "module-remap-source",
                f"master={self.name}.monitor",
                f"source_name={self.microphone}",
                f"source_properties=device.description=rtcodec-{self.microphone}",
            )
        except BaseException:
            self.__exit__()
            raise
        os.environ["PULSE_SINK"] = self.name  # read by the pulse plugin when PortAudio opens its stream
        print(f"virtual microphone {self.microphone}: pick it as the microphone in other programs", file=sys.stderr)
        return self

    def _load(self, module: str, *arguments: str) -> None:
        self.modules.append(int(_pactl("load-module", module, *arguments).strip()))

    def __exit__(self, *exc) -> None:
        removed = bool(self.modules)
        while self.modules:
            _pactl("unload-module", str(self.modules.pop()), check=False)
        if removed:
            print(f"\nremoved the virtual microphone {self.microphone}", file=sys.stderr)


def _pactl(*arguments: str, check: bool = True) -> str:
    result = subprocess.run(["pactl", *arguments], capture_output=True, text=True, timeout=10)
    if check and result.returncode:
        reason = result.stderr.strip() or f"exit status {result.returncode}"
        raise VirtualMicError(f"the audio server refused `pactl {' '.join(arguments[:2])}`: {reason}")
    return result.stdout
