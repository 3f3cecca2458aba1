"""What a process's mirrors share: the executor, the connection pools and the count of mirrors in flight.

The :class:`Runtime` of a middleware (or of the agent) owns, per process and across every reload, the
executor (a gevent group when the server owner monkey-patched sockets, else a bounded thread pool), one
urllib3 connection pool per destination address, a file destination's recorder, and the count of mirrors in
flight. ``MaxInFlight`` bounds that count for the whole process: however many configurations are still
draining after reloads, no more mirrors run at once.
"""

from __future__ import annotations

import time
import typing as t
import weakref

from ..record.recorder import Recorder
from ..util.green import new_lock, original, sockets_patched
from ..util.pid import current_pid

if t.TYPE_CHECKING:
    from ..config.model import Config, Destination, HttpClientSettings, MirrorSettings, RecordSettings
from ..send.executors import _GeventExecutor, _ThreadExecutor, make_executor
from ..send.pools import PoolKey, connection_pool, pool_key

# -- what every configuration of a middleware shares in a process --------------------------------------


class Runtime:
    """The executor, connection pools and in-flight count of one middleware in one process.

    Created again in a forked child (gunicorn forks after import). Every configuration,
    including retired ones still draining, sends through it, so ``MaxInFlight`` and the
    connections per destination hold process-wide whatever the number of reloads.
    """

    def __init__(self) -> None:
        self._pid = -1
        self._lock = new_lock()
        self._executor: _GeventExecutor | _ThreadExecutor | None = None
        self._pools: dict[PoolKey, t.Any] = {}  # a MirrorHTTP(S)ConnectionPool, or a Recorder
        self.in_flight = 0
        self.cooperative = False  # gevent with patched sockets: one gevent.Timeout per mirror

    def _fresh(self, settings: MirrorSettings) -> None:
        """Start over in this process: the parent's executor and sockets are not ours."""
        self._executor = make_executor(settings.executor, settings.max_in_flight)
        self.cooperative = self._executor.name == "gevent" and sockets_patched()
        self._pools = {}
        self.in_flight = 0
        self._pid = current_pid()
        _start_sweep(weakref.ref(self), settings.keep_alive_seconds)

    def sweep(self) -> None:
        """Close the connections that rested past their pool's ``KeepAliveSeconds``."""
        for pool in list(self._pools.values()):
            if not isinstance(pool, Recorder):
                pool.close_resting(pool.keep_alive_seconds)

    def executor(self, settings: MirrorSettings) -> _GeventExecutor | _ThreadExecutor:
        if self._pid != current_pid():
            with self._lock:
                if self._pid != current_pid():
                    self._fresh(settings)
        return t.cast("_GeventExecutor | _ThreadExecutor", self._executor)

    @property
    def executor_name(self) -> str | None:
        return self._executor.name if self._executor is not None and self._pid == current_pid() else None

    def pool(
        self,
        destination: Destination,
        settings: MirrorSettings,
        http_client: HttpClientSettings,
        record: RecordSettings | None = None,
    ) -> t.Any:
        """The connection pool of a destination's address and TLS settings, shared by every configuration
        naming them; it holds at most ``MaxConnectionsPerServer`` connections (``MaxInFlight`` by default).

        A file destination's "pool" is its :class:`Recorder`, which takes the latest ``Record`` settings.
        """
        self.executor(settings)
        key = pool_key(destination, http_client)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = _new_pool(destination, settings, http_client, record)
            elif isinstance(pool, Recorder) and record is not None:
                pool.configure(record)
            return pool

    def admit(self, limit: int, pool: t.Any) -> bool:
        """Count one more mirror in flight, unless ``limit`` are running or its pool's connections are all lent."""
        with self._lock:
            if self.in_flight >= limit or pool.busy >= pool.limit:
                return False
            self.in_flight += 1
            pool.busy += 1
            if pool.busy > pool.peak:
                pool.peak = pool.busy  # how many connections the recent concurrency needs (see transport)
            return True

    def ended(self, pool: t.Any) -> None:
        with self._lock:
            self.in_flight -= 1
            pool.busy -= 1

    def close_idle(self, keep: t.Container[PoolKey] = ()) -> None:
        """Close the idle connections of every pool whose address is not in ``keep``; pools stay usable."""
        for key, pool in list(self._pools.items()):
            if key in keep:
                continue
            if isinstance(pool, Recorder):
                pool.close_chunk()  # no longer configured: its file is closed, a late copy opens a new one
            else:
                pool.close_resting()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every mirror in flight, then close all connections."""
        if self._executor is None or self._pid != current_pid():
            return True
        deadline = time.monotonic() + timeout
        done = self._executor.join(timeout)
        for pool in self._pools.values():
            if isinstance(pool, Recorder):  # write what is queued, flush, close the chunk
                done = pool.close(max(0.0, deadline - time.monotonic())) and done
            else:
                pool.close()
        return done


def _start_sweep(ref: weakref.ref[Runtime], every: float) -> None:
    """Sweep the runtime's pools every half ``KeepAliveSeconds`` while it lives: a greenlet when threads are
    gevent's (the pools' queues use its locks), else a thread of the OS."""
    from gevent import monkey

    interval = min(30.0, max(0.05, every / 2))
    cooperative = monkey.is_module_patched("threading")

    def sweep() -> None:
        sleep = __import__("gevent").sleep if cooperative else original("time", "sleep")
        while True:
            sleep(interval)
            runtime = ref()
            if runtime is None or runtime._pid != current_pid():
                return
            runtime.sweep()
            del runtime

    if cooperative:
        __import__("gevent").spawn(sweep)
    else:
        original("_thread", "start_new_thread")(sweep, ())


def _new_pool(
    destination: Destination,
    settings: MirrorSettings,
    http_client: HttpClientSettings,
    record: RecordSettings | None = None,
) -> t.Any:
    if destination.records:
        from ..config.model import RecordSettings

        return Recorder(destination.path, record or RecordSettings())
    return connection_pool(destination, settings, http_client)


def address_keys(config: Config) -> frozenset[PoolKey]:
    return frozenset(pool_key(d, c.http_client) for c in config.clusters.values() for d in c.destinations)
