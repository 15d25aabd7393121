"""Audio made on one thread and played by a device's callback on another, with the delay kept bounded."""

from __future__ import annotations

import threading

import numpy as np


class PlaybackBuffer:
    """What waits to be played. `put(samples)` (the producer) appends; `take(out)` (the device's callback) fills
    `out` and never waits.

    Playback starts at a callback that finds `start` samples waiting. From then on the callback plays silence for
    what is missing (an xrun, counted). When a producer catches up after a stall, more than `slack` samples wait
    ahead of the newest chunk, by a chunk or more: those beyond `slack` are skipped (counted in `skipped`
    samples), else the stall's delay would last for the rest of the signal. `slack` is the jitter absorbed (a late
    chunk, a lost packet's concealment), at that much more delay."""

    def __init__(self, start: int, slack: int = 0) -> None:
        self.start, self.slack = start, slack
        self.samples = np.zeros(0, dtype=np.float32)
        self.lock = threading.Lock()
        self.started = False  # playback has begun: from here, a short buffer is an xrun
        self.xruns = self.skipped = 0

    def put(self, chunk: np.ndarray) -> None:
        with self.lock:
            excess = self.samples.size - self.slack if self.started else 0
            if excess >= max(chunk.size, 1):
                self.samples = self.samples[excess:]
                self.skipped += excess
            self.samples = np.concatenate([self.samples, chunk.astype(np.float32, copy=False)])

    def finish(self) -> None:
        """Nothing more comes: what waits plays, however short."""
        with self.lock:
            self.started = True

    def take(self, out: np.ndarray) -> None:
        """Fills the 1-D `out` with what waits, and silence beyond."""
        with self.lock:
            self.started = self.started or self.samples.size >= self.start
            take = min(out.size, self.samples.size) if self.started else 0
            out[:take], self.samples = self.samples[:take], self.samples[take:]
            if self.started and take < out.size:
                self.xruns += 1
        out[take:] = 0.0
