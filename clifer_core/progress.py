"""One-line progress on stderr for long evaluation stages (count, rate, time left)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``update(n)`` after each unit of work; redraws at most every ``interval`` seconds."""

    def __init__(self, label: str, total: int, stream=None, interval: float = 0.5, enabled: bool = True):
        self.label = label
        self.total = max(int(total), 0)
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.enabled = enabled
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= self.interval or self.done >= self.total):
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        percent = 100.0 * self.done / self.total if self.total else 100.0
        self.stream.write(f"\r{self.label}: {self.done}/{self.total} ({percent:5.1f}%) "
                          f"{elapsed:6.1f}s elapsed, ~{left:6.1f}s left ")
        self.stream.flush()

    def close(self) -> float:
        """Finish the line; returns the elapsed seconds."""
        elapsed = time.monotonic() - self.started
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
        return elapsed
