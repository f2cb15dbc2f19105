"""A standard-library logger with the call shape of a ROS logger, for the core's background threads.

The learning worker and session log with ``throttle_duration_sec`` (as rclpy's
loggers do) so the node can hand them its own logger; outside ROS (bag
evaluation, tests) :class:`ThrottledLogger` gives them the same calls on
:mod:`logging`, dropping a message repeated within its throttle period.
"""

from __future__ import annotations

import logging
import threading
import time


class ThrottledLogger:
    """``info``/``warning``/``error`` on a :mod:`logging` logger; ``throttle_duration_sec`` as rclpy means it."""

    def __init__(self, name: str = "clifer"):
        self.logger = logging.getLogger(name)
        self._last: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()

    def _log(self, level: int, message: str, throttle_duration_sec: float = 0.0) -> None:
        if throttle_duration_sec:
            key, now = (level, message), time.monotonic()
            with self._lock:
                if now - self._last.get(key, float("-inf")) < throttle_duration_sec:
                    return
                self._last[key] = now
        self.logger.log(level, message)

    def info(self, message: str, throttle_duration_sec: float = 0.0) -> None:
        self._log(logging.INFO, message, throttle_duration_sec)

    def warning(self, message: str, throttle_duration_sec: float = 0.0) -> None:
        self._log(logging.WARNING, message, throttle_duration_sec)

    def error(self, message: str, throttle_duration_sec: float = 0.0) -> None:
        self._log(logging.ERROR, message, throttle_duration_sec)
