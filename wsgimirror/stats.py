"""Step 6, count: the counters behind ``MirrorMiddleware.stats()``.

Every request that matches a route with mirror clusters yields one *copy* per
cluster; each copy ends in exactly one of ``mirrored`` or a ``dropped`` reason, and
each mirrored copy in exactly one of ``succeeded``, ``failed`` or ``in_flight``.
"""

from __future__ import annotations

import typing as t
from collections import Counter


def _original_allocate_lock() -> t.Callable[[], t.Any]:
    try:
        from gevent.monkey import get_original
    except ImportError:  # pragma: no cover - gevent is a dependency
        import _thread

        return _thread.allocate_lock
    return t.cast(t.Callable[[], t.Any], get_original("_thread", "allocate_lock"))


# A real OS-thread lock, even after gevent monkey-patching. The critical sections here are a
# few increments with no I/O, so no greenlet can switch while one is held; gevent's patched
# lock costs ten times as much.
new_lock = _original_allocate_lock()


class Stats:
    """Thread-safe counters; under gevent the lock is never contended."""

    def __init__(self) -> None:
        self._lock = new_lock()
        self.requests = 0
        self.matched = 0
        self.copies = 0
        self.mirrored = 0
        self.succeeded = 0
        self.failed = 0
        self.in_flight = 0
        self.dropped: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()

    def request(self) -> None:
        with self._lock:
            self.requests += 1

    def matched_route(self, copies: int) -> None:
        with self._lock:
            self.matched += 1
            self.copies += copies

    def drop(self, reason: str, copies: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += copies

    def started(self) -> None:
        with self._lock:
            self.mirrored += 1
            self.in_flight += 1

    def unstart(self, reason: str) -> None:
        """Undo ``started`` for a copy the executor refused, counting it as dropped."""
        with self._lock:
            self.mirrored -= 1
            self.in_flight -= 1
            self.dropped[reason] += 1

    def succeeded_with(self, status: int) -> None:
        with self._lock:
            self.in_flight -= 1
            self.succeeded += 1
            self.statuses[f"{status // 100}xx"] += 1

    def failed_with(self, reason: str) -> None:
        with self._lock:
            self.in_flight -= 1
            self.failed += 1
            self.failures[reason] += 1

    def snapshot(self) -> dict[str, t.Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "matched": self.matched,
                "copies": self.copies,
                "mirrored": self.mirrored,
                "succeeded": self.succeeded,
                "failed": self.failed,
                "in_flight": self.in_flight,
                "dropped": dict(self.dropped),
                "failures": dict(self.failures),
                "statuses": dict(self.statuses),
            }
