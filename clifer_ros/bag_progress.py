"""A one-line progress bar on stderr for long bag work (no extra package)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``label [#####.....] 120/400 30% 25.1/s eta 11s``, redrawn at most 5 times a second.

    Disabled instances cost nothing, so library code can always report and the
    command line decides whether anyone sees it.
    """

    def __init__(self, total: int, label: str, enabled: bool = True, stream=None):
        self.total = max(int(total), 0)
        self.label = label
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self._start = time.monotonic()
        self._last_draw = 0.0

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and (now - self._last_draw >= 0.2 or self.done >= self.total):
            self._last_draw = now
            self._draw(now)

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            bar = "#" * int(fraction * 30)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            text = f"{self.label} [{bar:<30}] {self.done}/{self.total} {fraction:4.0%} {rate:5.1f}/s eta {eta:4.0f}s"
        else:
            text = f"{self.label} {self.done} {rate:5.1f}/s"
        self.stream.write("\r" + text)
        self.stream.flush()
