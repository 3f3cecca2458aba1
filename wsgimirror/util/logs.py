"""Warnings that a hostile or broken stream of requests cannot turn into a flood of log lines."""

from __future__ import annotations

import logging
import time

from .green import new_lock


class Throttled:
    """One kind of warning, logged at most once per ``interval`` seconds.

    The first line of a burst carries the traceback when asked; later lines say how many
    were held back since the previous one.
    """

    __slots__ = ("_log", "_interval", "_next", "_held", "_lock")

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self._log = logger
        self._interval = interval
        self._next = 0.0
        self._held = 0
        self._lock = new_lock()

    def warning(self, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._held += 1
                return
            held, self._held = self._held, 0
            self._next = now + self._interval
        if held:
            message += f" ({held} more like this in the last {self._interval:g} s were not logged)"
        self._log.warning(message, *args, exc_info=exc_info)
