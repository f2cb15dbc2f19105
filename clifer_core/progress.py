"""Progress of long stages (evaluation, bag tools) on stderr, drawn by tqdm.

tqdm redraws one line in a terminal and in notebooks. Into a log (a stream
that is not a terminal) it writes at most one update every
:data:`LOG_INTERVAL_S`, so a long run adds a handful of lines, not one per item.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


class Progress:
    """``update(n)`` after each unit of work, ``close()`` at the end; redraws at most every ``interval`` seconds."""

    def __init__(self, label: str, total: int, stream=None, interval: float = 0.5, enabled: bool = True):
        stream = stream if stream is not None else sys.stderr
        terminal = bool(getattr(stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._bar = tqdm(
            total=max(int(total), 0), desc=label, file=stream, disable=not enabled, leave=True,
            mininterval=interval if terminal else max(interval, LOG_INTERVAL_S), dynamic_ncols=terminal,
        )

    @property
    def done(self) -> int:
        return self._bar.n

    def update(self, count: int = 1) -> None:
        self._bar.update(count)

    def close(self) -> float:
        """Draw the final state and end the line; returns the elapsed seconds."""
        self._bar.close()
        return time.monotonic() - self.started
