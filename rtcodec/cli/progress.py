"""A one-line progress bar on stderr, for jobs longer than a few seconds."""

from __future__ import annotations

import sys
import time

MIN_SECONDS = 3.0  # jobs expected to take less than this show no bar


class ProgressBar:
    """`bar(done, total)` redraws the bar once the job has run `min_seconds`; `bar.close()` ends the line."""

    def __init__(self, label: str, stream=None, width: int = 30, min_seconds: float = MIN_SECONDS) -> None:
        self.label, self.stream, self.width, self.min_seconds = label, stream or sys.stderr, width, min_seconds
        self.start = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.start
        if elapsed < self.min_seconds and not self.shown:
            return
        self.shown = True
        filled = self.width * done // max(total, 1)
        eta = elapsed * (total - done) / max(done, 1)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {100 * done // max(total, 1):3d}%  {eta:4.0f} s left")
        self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
