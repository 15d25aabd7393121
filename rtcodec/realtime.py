"""What this machine keeps up with in real time, measured: `rtcodec live --latency auto` and `rtcodec serve`'s sizing.

Audio comes in blocks, and each block must be computed in less time than it lasts, or the output breaks up. Small
blocks cost the most per second of audio (a block's fixed overhead is paid more often), and each search goes from
the most wanted setting to the cheapest (the lowest latency preset to exact; the most callers to one). So the
search takes the first setting whose largest block is computed within `HEADROOM` of the audio it carries, then
the fewest hops per block that still are; where nothing fits, the cheapest setting at the largest block, flagged.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from .config import HOP_LENGTH, SAMPLE_RATE
from .pipelines import LATENCY_PRESETS, VoiceConversion, settling_hops
from .streaming import StreamOptions

CANDIDATE_HOPS = (1, 2, 4, 8)
HEADROOM = 0.8  # a block may take at most this share of the audio it carries
TIMED_BLOCKS = 5  # timed after the streams have settled; the median is taken
AUTO_PRESETS = ("low", "balanced", "exact")  # the lowest latency first

T = TypeVar("T")


@dataclass(frozen=True)
class Fit(Generic[T]):
    """A setting and block size, what a block took to compute there, and whether that keeps up."""

    setting: T
    hops: int
    seconds: float
    keeps_up: bool

    @property
    def block_seconds(self) -> float:
        return self.hops * HOP_LENGTH / SAMPLE_RATE

    @property
    def rtf(self) -> float:
        """Compute time over audio time: under 1 keeps up, under `HEADROOM` with room to spare."""
        return self.seconds / self.block_seconds


@dataclass(frozen=True)
class LiveSetting:
    """How `rtcodec live` converts: a latency preset, and whether the encoder runs on a thread of its own
    (`VoiceConversion(pipelined=True)`: two cores share a block's work, and the audio comes a block later)."""

    preset: str
    pipelined: bool = False

    def __str__(self) -> str:
        return f"{self.preset}, pipelined" if self.pipelined else self.preset


def auto_settings(pipelined: bool | None, cores: int) -> list[LiveSetting]:
    """What `--latency auto` tries, the lowest latency first: each preset, and pipelined after it (a block more
    of latency, for the speed of two cores) where `pipelined` is None and there are two cores, or as asked."""
    choices = [pipelined] if pipelined is not None else [False, True] if cores >= 2 else [False]
    return [LiveSetting(preset, choice) for preset in AUTO_PRESETS for choice in choices]


def _fits(hops: int, seconds: float) -> bool:
    return seconds <= HEADROOM * hops * HOP_LENGTH / SAMPLE_RATE


def first_fit(
    measure: Callable[[T, int], float], settings: Sequence[T], hops: Sequence[int] = CANDIDATE_HOPS
) -> Fit[T]:
    """The first of `settings` whose block of `hops[-1]` hops fits, at the fewest `hops` that fit;
    `measure(setting, hops)` gives the seconds a block takes."""
    for setting in settings:
        largest = measure(setting, hops[-1])
        if not _fits(hops[-1], largest):
            continue
        for fewer in hops[:-1]:
            seconds = measure(setting, fewer)
            if _fits(fewer, seconds):
                return Fit(setting, fewer, seconds, True)
        return Fit(setting, hops[-1], largest, True)
    return Fit(settings[-1], hops[-1], largest, False)


@torch.inference_mode()
def block_seconds(
    encoder, decoder, reference: torch.Tensor, setting: LiveSetting, hops: int, backend: str | None
) -> float:
    """Seconds of compute of one block of `hops` hops of voice conversion in `setting`, once the streams have
    settled (the median of `TIMED_BLOCKS`)."""
    options = StreamOptions(lookahead=LATENCY_PRESETS[setting.preset], backend=backend)
    pipeline = VoiceConversion(encoder, decoder, reference, options, pipelined=setting.pipelined)
    settle = -(-settling_hops(*pipeline.stages) // hops) + setting.pipelined
    silence = torch.zeros(1, 1, hops * HOP_LENGTH, device=reference.device, dtype=encoder.dtype)
    return settled_seconds(lambda: pipeline.push(silence), settle)


def settled_seconds(step: Callable[[], object], settle: int, prepare: Callable[[], None] = lambda: None) -> float:
    """The median seconds of `step()` over `TIMED_BLOCKS` calls, after `settle` calls that bring the streams to
    their steady state; `prepare()` runs untimed before each call."""
    times = []
    for _ in range(settle + TIMED_BLOCKS):
        prepare()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[-TIMED_BLOCKS:])


def choose_latency(
    encoder,
    decoder,
    reference: torch.Tensor,
    settings: Sequence[LiveSetting],
    backend: str | None = None,
    hops: int | None = None,
) -> Fit[LiveSetting]:
    """`--latency auto`: the first of `settings` (`auto_settings`) this machine converts in real time, and its
    fewest hops per block (or the `hops` given)."""
    return first_fit(
        lambda setting, size: block_seconds(encoder, decoder, reference, setting, size, backend),
        settings,
        CANDIDATE_HOPS if hops is None else (hops,),
    )


def describe_latency(fit: Fit[LiveSetting], tried: Sequence[LiveSetting]) -> str:
    """The line that says what `--latency auto` chose among `tried`, and why."""
    block = f"{fit.setting} at {fit.hops} hops per block ({1000 * fit.block_seconds:.1f} ms)"
    measured = f"a block took {1000 * fit.seconds:.0f} ms here (RTF {fit.rtf:.2f})"
    if fit.keeps_up:
        lower = [str(setting) for setting in tried[: tried.index(fit.setting)]]
        why = f"; {' and '.join(lower)} did not keep up with {HEADROOM:.0%} headroom" if lower else ""
        return f"--latency auto: {block}: {measured}{why}"
    return (
        f"--latency auto: {block}, the cheapest tried, and still {measured}: this machine does not convert in real "
        "time; expect gaps (try --threads, --backend compile, or a GPU)"
    )
