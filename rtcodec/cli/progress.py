"""A one-line progress bar on stderr, for jobs longer than a few seconds."""

from __future__ import annotations

import sys
import time

MIN_SECONDS = 3.0  # jobs expected to take less than this show no bar


class ProgressBar:
    """`bar(done, total)` redraws the bar once the job has run `min_seconds`; `bar.close()` ends the line. Where
    the stream is not a terminal (a log file), a line is written at each tenth of the job instead of redrawing."""

    def __init__(self, label: str, stream=None, width: int = 30, min_seconds: float = MIN_SECONDS) -> None:
        self.label, self.stream, self.width, self.min_seconds = label, stream or sys.stderr, width, min_seconds
        self.start = time.monotonic()
        self.shown = False
        self.terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.tenth = -1  # the last tenth written, where the stream is not a terminal

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.start
        if elapsed < self.min_seconds and not self.shown:
            return
        percent = 100 * done // max(total, 1)
        if not self.terminal and percent // 10 == self.tenth:
            return
        self.shown, self.tenth = True, percent // 10
        filled = self.width * done // max(total, 1)
        eta = elapsed * (total - done) / max(done, 1)
        line = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {percent:3d}%  {eta:4.0f} s left"
        self.stream.write(f"\r{line}" if self.terminal else f"{line}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.shown and self.terminal:
            self.stream.write("\n")
            self.stream.flush()
