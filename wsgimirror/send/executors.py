"""Where mirrors run off the request path: a gevent executor of parked worker greenlets at idle priority
when the server owner monkey-patched sockets, else a bounded pool of OS threads. Both refuse a job rather than
queue it past their size.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from ..util.green import sockets_patched

if t.TYPE_CHECKING:
    pass

IDLE_PRIORITY = -2  # libev's EV_MINPRI: mirrors start after every other event of the loop
PARKED_WORKERS = 32  # idle worker greenlets kept for the next mirrors (about 20 KiB each)


log = logging.getLogger(__name__)

# -- executors ---------------------------------------------------------------------------------------


class _GeventExecutor:
    """Mirrors run in worker greenlets, each mirror started when the event loop has nothing else to do.

    A mirror waits in a FIFO until a libev idle watcher of the lowest priority fires: only when no
    I/O, timer or other event is pending, that is when the real traffic has been served. Under
    saturation the loop is never idle, mirrors wait, ``MaxInFlight`` fills, and further copies are
    dropped (``backlog_full``); a mirror that waited longer than ``Timeout`` is dropped when its turn
    comes (``overloaded``). The runtime's admission count bounds how many wait or run.

    A worker that ended its mirror parks, and the next mirror reuses it: a new greenlet per mirror
    cost its creation, its group's bookkeeping and, on Python 3.11, a frame stack mapped and unmapped
    (two system calls). Up to :data:`PARKED_WORKERS` wait parked; past that, a worker ends with its mirror.
    """

    name = "gevent"
    # In the agent's process the loop has no real traffic to give way to: mirrors start at its next turn,
    # all those waiting in one go, instead of one per idle turn.
    eager = False

    def __init__(self) -> None:
        from gevent import get_hub

        self._hub = get_hub()
        self._waiting: deque[tuple[t.Callable[..., None], tuple[t.Any, ...]]] = deque()
        self._parked: list[t.Any] = []  # worker greenlets waiting for a mirror
        self._running = 0  # mirrors started and not ended
        self._idle: t.Any = None  # the loop's idle watcher, made on the first mirror
        self._soon = False  # (eager) a callback to start the waiting mirrors is due

    def try_submit(self, fn: t.Callable[..., None], *args: t.Any) -> bool:
        self._waiting.append((fn, args))
        if self.eager:
            if not self._soon:
                self._soon = True
                self._hub.loop.run_callback(self._start_all)
            return True
        idle = self._idle
        if idle is None:
            from gevent import get_hub

            idle = self._idle = get_hub().loop.idle()
            idle.priority = IDLE_PRIORITY
        if not idle.active:
            idle.start(self._start_one)
        return True

    def _start_one(self) -> None:
        """The loop is idle: start the mirror that waited longest, on a parked worker or a new one.

        This runs in the hub, as gevent's own callbacks do: the worker runs until it waits for I/O.
        """
        waiting = self._waiting
        if waiting:
            job = waiting.popleft()
            self._running += 1
            if self._parked:
                self._parked.pop().switch(job)
            else:
                from greenlet import greenlet

                greenlet(self._work, self._hub).switch(job)
        if not waiting and self._idle is not None:
            self._idle.stop()

    def _start_all(self) -> None:
        """(eager) Start every waiting mirror, each running until it waits for I/O."""
        self._soon = False
        while self._waiting:
            self._start_one()

    def _work(self, job: tuple[t.Callable[..., None], tuple[t.Any, ...]]) -> None:
        """A worker: run a mirror (it never raises), then park until the idle watcher hands over the next."""
        from greenlet import getcurrent

        while True:
            fn, args = job
            try:
                fn(*args)
            finally:
                self._running -= 1
            if len(self._parked) >= PARKED_WORKERS:
                return
            self._parked.append(getcurrent())
            job = self._hub.switch()

    def join(self, timeout: float) -> bool:
        import gevent

        deadline = time.monotonic() + timeout
        while (self._waiting or self._running) and time.monotonic() < deadline:
            gevent.sleep(0.001)  # the loop is idle now, so waiting mirrors start; running ones end
        self._end_parked()
        return not self._waiting and not self._running

    def _end_parked(self) -> None:
        """End the parked workers (a later mirror starts a new one): closing leaves no greenlet behind."""
        from greenlet import getcurrent

        here = getcurrent()
        while self._parked:
            worker = self._parked.pop()
            worker.parent = here  # it ends by returning here, not to the hub
            worker.throw()  # GreenletExit, where it waits


class _ThreadExecutor:
    """A thread pool of ``MaxInFlight`` threads; the runtime's admission count bounds what is submitted.

    After a reload to a larger ``MaxInFlight`` the excess waits in the pool's queue, never beyond the new limit.
    """

    name = "thread"

    def __init__(self, size: int) -> None:
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="wsgimirror")
        self._active = 0  # submitted and not ended, for join()
        self._idle = threading.Condition()

    def try_submit(self, fn: t.Callable[..., None], *args: t.Any) -> bool:
        with self._idle:
            self._active += 1
        try:
            self._executor.submit(self._run, fn, args)
        except RuntimeError:  # the executor is shutting down
            self._finished()
            return False
        return True

    def _run(self, fn: t.Callable[..., None], args: tuple[t.Any, ...]) -> None:
        try:
            fn(*args)
        finally:
            self._finished()

    def _finished(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def join(self, timeout: float) -> bool:
        with self._idle:
            done = self._idle.wait_for(lambda: self._active == 0, timeout)
        self._executor.shutdown(wait=False)
        return done


def make_executor(kind: str, size: int) -> _GeventExecutor | _ThreadExecutor:
    patched = sockets_patched()
    if kind == "gevent" and not patched:
        log.warning(
            "Mirror.Executor is 'gevent' but sockets are not monkey-patched: every mirror will block "
            "the server while it is sent; call gevent.monkey.patch_all() first, or use Executor 'auto'"
        )
    if kind == "gevent" or (kind == "auto" and patched):
        return _GeventExecutor()
    return _ThreadExecutor(size)
