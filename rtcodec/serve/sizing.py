"""The server's size, measured: how many callers this machine serves in real time, and in what blocks.

A tick carries one block of every slot, and every slot is computed each tick. So `rtcodec serve` without
`--hops-per-tick` (or `--slots`) times a full tick (every slot taken, in every preset offered, since their batches
share the machine) in `realtime.first_fit`'s search: the most slots among `CANDIDATE_SLOTS` whose tick fits
`HEADROOM` of real time at the largest block, then the fewest hops that still fit.

`--latency auto` sizes one preset at a time, the lowest latency first, and offers the first that serves a caller
in real time (`choose_preset`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import astuple
from functools import partial

import torch

from ..hub import Pretrained
from ..pipelines import LATENCY_PRESETS, settling_hops
from ..realtime import CANDIDATE_HOPS, Fit, first_fit, settled_seconds
from ..scheduler import CallerScheduler
from ..streaming import StreamOptions

CANDIDATE_SLOTS = (4, 2, 1)
AUTO = "auto"
AUTO_ORDER = ("low", "balanced", "exact")  # the lowest latency first; exact, with no lookahead to redo, costs least

Measure = Callable[[int, int], float]  # (slots, hops) -> seconds of compute of a full tick


class Sizing(Fit[int]):
    """The slots (the fit's setting) and block chosen, and what the full tick at that size took."""

    slots = property(lambda self: self.setting)
    hops_per_tick = property(lambda self: self.hops)
    tick_seconds = property(lambda self: self.seconds)

    def describe(self) -> str:
        """The start-up line saying what was chosen and why."""
        block = f"{self.slots} slot{'s' if self.slots > 1 else ''} per preset, blocks of {self.hops_per_tick} hops"
        measured = (
            f"a full tick took {1000 * self.tick_seconds:.0f} ms here, {100 * self.rtf:.0f}% of the "
            f"{1000 * self.block_seconds:.1f} ms of audio it carries"
        )
        if self.keeps_up:
            return f"{block} ({1000 * self.block_seconds:.1f} ms): {measured}"
        return (
            f"{block}, the largest tried, and still {measured}: this machine cannot serve {self.slots} caller"
            f"{'s' if self.slots > 1 else ''} per preset in real time; offer fewer presets, or use a GPU"
        )


def choose(measure: Measure, slots: Sequence[int] = CANDIDATE_SLOTS, hops: Sequence[int] = CANDIDATE_HOPS) -> Sizing:
    """The most `slots` whose full tick fits at the largest of `hops`, then the fewest `hops` that fit for them;
    the last slots and the largest hops where nothing fits."""
    return Sizing(*astuple(first_fit(measure, slots, hops)))


def choose_preset(size: Callable[[str], Sizing], presets: Sequence[str] = AUTO_ORDER) -> tuple[str, dict[str, Sizing]]:
    """The first of `presets` whose `size(preset)` keeps up, or the last where none does; with the sizings tried,
    in order."""
    tried = {}
    for preset in presets:
        tried[preset] = size(preset)
        if tried[preset].keeps_up:
            break
    return preset, tried


def describe_preset(preset: str, tried: dict[str, Sizing]) -> str:
    """The start-up line of `--latency auto`: the preset chosen, and why the lower ones were not."""
    missed = [f"{name} does not keep up ({100 * sizing.rtf:.0f}% of real time)" for name, sizing in tried.items()]
    why = f" ({'; '.join(missed[:-1])})" if len(missed) > 1 else ""
    return f"--latency auto: {preset}{why}; {tried[preset].describe()}"


@torch.inference_mode()
def full_tick_seconds(
    models: Pretrained, latencies: tuple[str, ...], backend: str | None, slots: int, hops: int
) -> float:
    """Seconds of compute of one tick of `hops` hops with every slot taken, summed over the presets' batches."""
    total = 0.0
    for preset in latencies:
        options = StreamOptions(lookahead=LATENCY_PRESETS[preset], backend=backend)
        scheduler = CallerScheduler(models.encoder, models.decoder, slots, hops, options)
        callers = [scheduler.join(torch.zeros(models.decoder.in_channels)) for _ in range(slots)]
        # Until the decoder rows have started and both streams run settled ticks, as in a long call.
        settle_hops = settling_hops(scheduler.encoder_stream, scheduler.decoder_stream)
        silence = torch.zeros(scheduler.block, device=scheduler.device)
        fill = partial(_put_all, scheduler, callers, silence)
        total += settled_seconds(scheduler.tick, -(-settle_hops // hops), prepare=fill)
    return total


def _put_all(scheduler: CallerScheduler, callers: list, block: torch.Tensor) -> None:
    for caller in callers:
        scheduler.put(caller, block)


def measure(
    models: Pretrained,
    latencies: tuple[str, ...],
    backend: str | None = None,
    slots: int | None = None,
    hops: int | None = None,
) -> Sizing:
    """Time this machine and choose what is not given (see the module docstring)."""
    return choose(
        lambda count, size: full_tick_seconds(models, latencies, backend, count, size),
        CANDIDATE_SLOTS if slots is None else (slots,),
        CANDIDATE_HOPS if hops is None else (hops,),
    )
