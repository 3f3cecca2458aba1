"""The app's side of the agent: hand each copy off at ``close()``, never waiting, and keep the stats whole. One
idea kept whole (over 400 lines): the link, its buffer and the relay of outcomes share one lock discipline.

:class:`AgentDispatcher` stands where the in-process :class:`wsgimirror.agent.dispatch.Dispatcher` stands in the
middleware, one per config generation; they share the process's :class:`AgentLink`.

The link holds one connection to the agent. A copy becomes one frame, written without blocking; its
body goes inline, or, when it spilled to a temporary file, as that file's descriptor. When the agent
is slow to read, frames wait in a buffer of ``Agent.BufferBytes``; past it a copy is dropped, as
``agent_busy`` (connected) or ``agent_unavailable`` (no agent yet, or none to be had), before anything
of its request is captured when the buffer is already full.

The link's loop (a greenlet under gevent, a thread otherwise) connects, starts an embedded agent when
none answers, flushes the buffer, and reads the agent's events: what became of each copy, in batches.
Each event is counted in the middleware's :class:`wsgimirror.stats.Stats` as it would have been counted
in-process, so ``stats()`` keeps its shape and its identities. A copy the agent has not reported on is
``pending`` (or ``in_flight`` once started). When the connection ends (the agent killed, crashed, or
gone), every copy it held is counted at once: ``agent_lost``, dropped if it had not started, failed if
it had; the link then connects again, starting a new agent if it is embedded.
"""

from __future__ import annotations

import array
import errno
import hashlib
import json
import logging
import os
import socket
import time
import typing as t
import weakref
from collections import Counter, deque

from ..capture.answer import SpooledAnswer
from ..util.green import new_lock, sockets_patched
from ..util.logs import Throttled
from ..util.pid import current_pid
from . import protocol, supervise

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from ..capture.answer import Answer
    from ..capture.body import BodyBuffer
    from ..config.model import AgentSettings, Config, Route
    from ..stats import Stats

log = logging.getLogger(__name__)
_trouble = Throttled(log)

AGENT_BUSY = "agent_busy"  # the agent reads too slowly: Agent.BufferBytes of copies already wait for it
AGENT_UNAVAILABLE = "agent_unavailable"  # no agent to hand the copy to (starting, or none can be had)
AGENT_LOST = "agent_lost"  # the agent ended (killed, crashed) holding the copy
RETRY_SECONDS = 0.2  # between attempts to connect (or start) after a failure
# Under gevent, copies handed off within this long go to the agent in one write: it then reads several per
# wake-up and sends their mirrors together, and the app makes one system call per batch, not per copy. The
# hand-off that finds a batch this old writes it; a timer writes the last one, after BATCH_TIMER_SECONDS, so
# that under steady traffic no timer wakes the loop.
BATCH_SECONDS = 0.01
BATCH_TIMER_SECONDS = 0.05
BATCH_BYTES = 256 * 1024  # or at once, once this many bytes wait
WRITE_FRAMES = 512  # frames given to one sendmsg (the system takes up to IOV_MAX, 1024 on Linux)
ASK_SECONDS = 2.0  # how long stats() waits for the agent's comparison figures
# What a copy's environ carries to the agent: the request's strings (headers, target, client, server).
_CARRIED = str
LINKS: weakref.WeakSet[AgentLink] = weakref.WeakSet()  # every link of this process (tests shut them down)


class AgentLink:
    """One middleware's connection to its agent, in this process (a forked child makes its own)."""

    def __init__(self, path: str, settings: AgentSettings, starts: bool, stats: Stats) -> None:
        self.path = path
        self.settings = settings
        self.starts = starts  # embedded: start an agent when none answers
        self.stats = stats
        self._lock = new_lock()
        self._pid = -1
        self.closed = False  # no more copies are taken
        self._shut = False  # the connection is closed for good, the loop ended
        self._last_answers: dict[str, t.Any] = {}  # what the agent last answered, kept for after shutdown
        LINKS.add(self)

    # -- per process -----------------------------------------------------------------------------------

    def _fresh(self) -> None:
        """This process's state: nothing connected, queued or outstanding (a forked child's parent's are not ours)."""
        self._sock: socket.socket | None = None
        # Frames not yet written: (bytes, the descriptors to pass with them, the generation of a copy's frame).
        self._outbox: deque[tuple[memoryview, tuple[int, ...], str]] = deque()
        self._buffered = 0
        self._sent_generations: set[str] = set()  # the configs this connection has had
        self._configs: dict[str, str] = {}  # generation -> its config's JSON
        self._handed: Counter[tuple[str, str]] = Counter()  # copies the agent has not picked or dropped yet
        self._flying: Counter[tuple[str, str, str]] = Counter()  # copies started and not ended
        self._outstanding = 0  # the sum of both
        self._replies: dict[int, t.Any] = {}
        self._asked = 0
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._cooperative = sockets_patched()
        self._pid = current_pid()
        self._loop_started = False
        self._flush_due: t.Any = None  # (gevent) the loop timer that writes the batch if no hand-off does
        self._batch_started = 0.0
        self._stalled = False  # the socket refused the last write: the loop waits until it takes more

    def _ready(self) -> None:
        if self._pid != current_pid():
            with self._lock:
                if self._pid != current_pid():
                    self._fresh()
        if not self._loop_started:
            with self._lock:
                if not self._loop_started:
                    self._loop_started = True
                    self._start_loop()

    def _start_loop(self) -> None:
        """The loop holds the link weakly: a middleware freed, or a link shut down, ends it."""
        loop = _loop_of(weakref.ref(self))
        if self._cooperative:
            import gevent

            gevent.spawn(loop)
        else:
            import threading

            threading.Thread(target=loop, name="wsgimirror-agent-link", daemon=True).start()

    @property
    def cooperative(self) -> bool:
        """Whether the link runs in gevent's loop (sockets patched): read once per process."""
        self._ready()
        return self._cooperative

    # -- the request side ----------------------------------------------------------------------------------

    def full(self, max_in_flight: int) -> bool:
        """Whether a copy handed off now would be dropped, so that it is shed before anything is captured: the
        buffer is full, or ``max_in_flight`` copies of this process are already with the agent (it would drop
        them as backlog_full, after the work of taking them)."""
        self._ready()
        return self._buffered >= self.settings.buffer_bytes or self._outstanding >= max_in_flight

    def hand_off(
        self,
        generation: str,
        config_text: str,
        route: Route,
        clusters: t.Sequence[str],
        environ: WSGIEnvironment,
        body: BodyBuffer,
        answer: Answer | None,
        timing: tuple[int, int],
    ) -> str | None:
        """Queue one copy for the agent; None, or why it was dropped. Never blocks."""
        self._ready()
        memory, fd = body.parts()
        spooled = answer.spool() if isinstance(answer, SpooledAnswer) else None
        message = protocol.frame(
            (
                protocol.COPY,
                generation,
                route.id,
                tuple(clusters),
                {k: v for k, v in environ.items() if type(v) is _CARRIED},
                memory,
                body.size,
                fd is not None,
                answer.fields() if answer is not None else None,
                timing[0],
                timing[1],
            )
        )  # fmt: skip  (the fields of protocol.COPY_FIELDS, in their order)
        with self._lock:
            if self.closed:
                return "closed"
            if self._buffered + len(message) > self.settings.buffer_bytes and self._buffered:
                return AGENT_BUSY if self._sock is not None else AGENT_UNAVAILABLE
            self._configs.setdefault(generation, config_text)
            fds = tuple(os.dup(each) for each in (fd, spooled) if each is not None)  # the body's, then the answer's
            self._queue(message, fds, generation)
            for cluster in clusters:
                self._handed[route.id, cluster] += 1
            self._outstanding += len(clusters)
            broken = self._write() if self._batch_now() else None
        if broken is not None:
            self._lost(broken)  # counted: this copy with the others the agent held
        return None

    def _batch_now(self) -> bool:
        """Whether to write now (the caller holds the lock): not under gevent, or once a batch is large; else a
        timer of the loop writes the batch within :data:`BATCH_SECONDS`."""
        if not self._cooperative or self._buffered >= BATCH_BYTES:
            self._cancel_batch_timer()
            return True
        now = time.monotonic()
        if self._flush_due is None:  # a timer of its own per batch: libev re-arms a reused one at its old time
            from gevent import get_hub

            self._batch_started = now
            self._flush_due = get_hub().loop.timer(BATCH_TIMER_SECONDS)
            self._flush_due.start(self._flush_batch)
            return False
        if now - self._batch_started >= BATCH_SECONDS:
            self._cancel_batch_timer()
            return True
        return False

    def _cancel_batch_timer(self) -> None:
        if self._flush_due is not None:
            self._flush_due.stop()
            self._flush_due = None

    def _flush_batch(self) -> None:
        """In the hub, when no hand-off came to write the batch: write it (what the socket does not take, the loop
        writes later)."""
        with self._lock:
            self._flush_due = None
            broken = self._write()
        if broken is not None:
            self._lost(broken)

    def _queue(self, data: bytes, fds: tuple[int, ...] = (), generation: str = "") -> None:
        """Append a frame (the caller holds the lock); a copy's config goes before it on a connection that lacks it."""
        if generation and self._sock is not None and generation not in self._sent_generations:
            self._queue(protocol.frame((protocol.CONFIG, generation, self._configs[generation])))
            self._sent_generations.add(generation)
        self._outbox.append((memoryview(data), fds, generation))
        self._buffered += len(data)

    def _write(self) -> str | None:
        """Write what the socket takes now, never waiting (the caller holds the lock); why the connection broke,
        or None. The caller counts a broken connection (``_lost``) once it has let go of the lock.

        Frames go out together, in one ``sendmsg`` (a frame with a descriptor on its own, the descriptor with its
        first byte)."""
        sock = self._sock
        if sock is None:
            return None
        outbox = self._outbox
        try:
            while outbox:
                data, fds, generation = outbox[0]
                if fds:
                    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    sent = sock.sendmsg([data], rights)
                    for fd in fds:
                        os.close(fd)  # they travelled with the frame's first bytes
                    outbox[0] = (data, (), generation)
                else:
                    views: list[memoryview] = []
                    for each, each_fds, _ in outbox:
                        if each_fds or len(views) >= WRITE_FRAMES:
                            break
                        views.append(each)
                    sent = sock.sendmsg(views)
                self._buffered -= sent
                while sent:  # drop what was written from the front of the outbox
                    data, fds, generation = outbox[0]
                    if sent < len(data):
                        outbox[0] = (data[sent:], fds, generation)
                        self._stall()
                        return None
                    sent -= len(data)
                    outbox.popleft()
        except BlockingIOError:
            self._stall()
        except OSError as err:
            return f"cannot write to the agent: {err}"
        self._stalled = False
        return None

    def _stall(self) -> None:
        """The socket takes no more for now: the loop waits until it does, and writes the rest."""
        if not self._stalled:
            self._stalled = True
            self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # already awake

    # -- questions ----------------------------------------------------------------------------------------

    def ask(self, question: str | tuple[str, t.Any], timeout: float = ASK_SECONDS) -> t.Any:
        """The agent's answer to ``question`` (a name, or a name and an argument); its last answer to that name
        (or None) when it cannot answer in time."""
        key = question if isinstance(question, str) else question[0]
        if self._shut:
            return self._last_answers.get(key)
        self._ready()
        with self._lock:
            if self._sock is None:
                return self._last_answers.get(key)
            self._asked += 1
            number = self._asked
            self._queue(protocol.frame((protocol.ASK, number, question)))
            broken = self._write()
        if broken is not None:
            self._lost(broken)
            return self._last_answers.get(key)
        deadline = time.monotonic() + timeout
        while number not in self._replies and time.monotonic() < deadline:
            time.sleep(0.002)  # gevent's sleep when patched: the loop reads the reply meanwhile
        if number in self._replies:
            self._last_answers[key] = self._replies.pop(number)
        return self._last_answers.get(key)

    def outstanding(self) -> int:
        """Copies handed off that the agent has not finished (or reported on) yet."""
        return self._outstanding if self._pid == current_pid() else 0

    def join(self, timeout: float) -> bool:
        """Stop taking copies, wait up to ``timeout`` for the agent to report on every one handed off, then close
        the connection (the comparison's last figures are kept for ``stats()``)."""
        self.closed = True
        if self._pid != current_pid():
            return True
        deadline = time.monotonic() + timeout
        while self.outstanding() and time.monotonic() < deadline:
            time.sleep(0.005)
        done = not self.outstanding()
        for question in ("compare", "circuits"):
            self.ask(question, max(0.1, min(ASK_SECONDS, deadline - time.monotonic())))
        self.shutdown()
        return done

    def shutdown(self) -> None:
        """Close the connection for good; the loop ends (a copy still outstanding is counted agent_lost)."""
        self.closed = self._shut = True
        if self._pid == current_pid():
            self._lost("the middleware closed", warn=False)
            self._wake()

    # -- the loop: connect, flush, read events -------------------------------------------------------------

    def _step(self, reader: protocol.Reader) -> protocol.Reader:
        """One turn of the link's loop: connect if need be, then wait up to a second to write or read."""
        import select

        if self._sock is None:
            if not self._connect():
                time.sleep(RETRY_SECONDS)
            return protocol.Reader()
        sock = self._sock
        fd = sock.fileno()
        writing = [fd] if self._stalled else []  # otherwise the batch timer (or the next copy) writes
        try:
            readable, writable, _ = select.select([fd, self._wake_r], writing, [], 1.0)
        except (OSError, ValueError):
            return reader
        if self._wake_r in readable:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
        if fd in writable:
            with self._lock:
                broken = self._write() if self._sock is sock else None
            if broken is not None:
                self._lost(broken)
                return protocol.Reader()
        if fd in readable:
            self._read(sock, reader)
        return reader

    def _connect(self) -> bool:
        if self._shut:
            return False
        try:
            sock = supervise.connect_or_start(self.path, self.settings, self.starts)
        except OSError as err:
            _trouble.warning("wsgimirror cannot reach its agent at %s: %s; copies are dropped as %s until it "
                             "answers", self.path, err, AGENT_UNAVAILABLE)  # fmt: skip
            self._drop_buffered(AGENT_UNAVAILABLE)
            return False
        with self._lock:
            if self._shut:  # shut down while connecting: this connection is not wanted
                sock.close()
                return False
            self._sock = sock
            self._sent_generations = set()
            pending, self._outbox, self._buffered = list(self._outbox), deque(), 0
            for data, fds, generation in pending:  # queued while there was no connection: configs go first
                self._queue(bytes(data), fds, generation)
            broken = self._write()
        if broken is not None:
            self._lost(broken)
            return False
        log.info("wsgimirror hands its mirrors to the agent at %s", self.path)
        return True

    def _read(self, sock: socket.socket, reader: protocol.Reader) -> None:
        try:
            data = sock.recv(256 * 1024)
        except BlockingIOError:
            return
        except OSError as err:
            self._lost(f"cannot read from the agent: {err}")
            return
        if not data:
            self._lost("the agent closed the connection")
            return
        try:
            frames = reader.feed(data)
        except protocol.ProtocolError as err:
            self._lost(f"the agent sent {err}")
            return
        for message in frames:
            if message[0] == protocol.EVENTS:
                self._count(message[1])
            elif message[0] == protocol.REPLY:
                self._replies[message[1]] = message[2]

    def _count(self, events: list[tuple[t.Any, ...]]) -> None:
        """Count the agent's events in the middleware's stats, as the in-process dispatcher would have."""
        stats, handed, flying = self.stats, self._handed, self._flying
        for kind, route, cluster, destination, value, seconds in events:
            if kind == protocol.LOG:  # the agent's warning: route is its logger's name, seconds the message
                name = route[len("wsgimirror.") :] if route.startswith("wsgimirror.") else route
                logging.getLogger(f"wsgimirror.agent.{name}").log(value, "agent: %s", seconds)
                continue
            if kind == protocol.STARTED:
                handed[route, cluster] -= 1
                flying[route, cluster, destination] += 1
                stats.started(route, cluster, destination)
            elif kind == protocol.DROPPED:
                handed[route, cluster] -= 1
                self._outstanding -= 1
                stats.drop(value, route, (cluster,), destination)
            else:
                flying[route, cluster, destination] -= 1
                self._outstanding -= 1
                if kind == protocol.SUCCEEDED:
                    stats.succeeded(route, cluster, destination, value, seconds)
                elif kind == protocol.WRITTEN:
                    stats.written(route, cluster, destination, seconds)
                elif kind == protocol.FAILED:
                    stats.failed(route, cluster, destination, value, seconds)
                else:
                    stats.unstart(value, route, cluster, destination)
        _prune(handed)
        _prune(flying)

    def _lost(self, why: str, warn: bool = True) -> None:
        """The connection ended: count every copy the agent held (or that waited for it) as lost, then reconnect."""
        with self._lock:
            sock, self._sock = self._sock, None
            handed, self._handed = self._handed, Counter()
            flying, self._flying = self._flying, Counter()
            self._outstanding = 0
            for _, fds, _ in self._outbox:
                for fd in fds:
                    os.close(fd)
            self._outbox, self._buffered = deque(), 0
        if sock is not None:
            sock.close()
        lost = sum(handed.values()) + sum(flying.values())
        if warn or lost:
            _trouble.warning("wsgimirror lost its agent at %s (%s): %d copies it held are counted %s", self.path, why,
                             lost, AGENT_LOST)  # fmt: skip
        for (route, cluster), count in handed.items():
            for _ in range(count):
                self.stats.drop(AGENT_LOST, route, (cluster,))
        for (route, cluster, destination), count in flying.items():
            for _ in range(count):
                self.stats.failed(route, cluster, destination, AGENT_LOST, 0.0)

    def _drop_buffered(self, reason: str) -> None:
        """Copies that waited for an agent that could not be reached: dropped with ``reason``."""
        with self._lock:
            pending, self._outbox, self._buffered = list(self._outbox), deque(), 0
            handed, self._handed = self._handed, Counter()
            self._outstanding = sum(self._flying.values())
        for _, fds, _ in pending:
            for fd in fds:
                os.close(fd)
        for (route, cluster), count in handed.items():
            for _ in range(count):
                self.stats.drop(reason, route, (cluster,))


def _loop_of(ref: weakref.ref[AgentLink]) -> t.Callable[[], None]:
    def loop() -> None:
        reader = protocol.Reader()
        while True:
            link = ref()
            if link is None or link._shut:
                return
            reader = link._step(reader)
            del link  # between turns the loop holds the link weakly

    return loop


def _prune(counter: Counter[t.Any]) -> None:
    for key in [k for k, v in counter.items() if not v]:
        del counter[key]


class AgentDispatcher:
    """A config generation's dispatcher when the agent sends the mirrors: hands copies to the link."""

    spools_answers = True  # the app's answers go to the agent in files: it keeps and hashes them, not the app

    def __init__(self, config: Config, stats: Stats, link: AgentLink) -> None:
        self.config = config
        self._stats = stats
        self.link = link
        self.config_text = json.dumps(config.source, sort_keys=True, default=str)
        self.generation = hashlib.sha256(self.config_text.encode()).hexdigest()[:24]
        self.closed = False
        self.on_idle: t.Callable[[], None] | None = None

    @property
    def cooperative(self) -> bool:
        return self.link.cooperative

    @property
    def active(self) -> int:
        return 0  # the agent finishes the copies of a retired generation: nothing here waits for them

    def open_circuits(self, cluster_ids: t.Iterable[str]) -> list[str]:
        return []  # the agent knows the circuits; it drops a copy it cannot send (circuit_open)

    def full(self, cluster_ids: t.Sequence[str]) -> list[str]:
        """The clusters whose copies would be dropped now: all of them, when the link's buffer is full or
        ``MaxInFlight`` copies of this process are with the agent (shed before capture, as in-process)."""
        return list(cluster_ids) if self.link.full(self.config.mirror.max_in_flight) else []

    def circuits(self) -> dict[str, str]:
        answer = self.link.ask("circuits", 0.5)
        return json.loads(answer) if isinstance(answer, str) else {}

    def dispatch(
        self,
        route: Route,
        cluster_ids: t.Iterable[str],
        environ: WSGIEnvironment,
        body: BodyBuffer,
        answer: Answer | None = None,
        timing: tuple[int, int] = (0, -1),
    ) -> None:
        """Hand the copy to the agent (or count why not); ``body`` is released here."""
        clusters = list(cluster_ids)
        try:
            if self.closed:
                self._stats.drop("closed", route.id, clusters)
                return
            compared = route.record_responses or any(
                c in route.compare_clusters or c == route.baseline_cluster for c in clusters
            )
            reason = self.link.hand_off(self.generation, self.config_text, route, clusters, environ, body,
                                        answer if compared else None, timing)  # fmt: skip
            if reason is not None:
                self._stats.drop(reason, route.id, clusters)
        finally:
            body.release()

    def retire(self, on_idle: t.Callable[[], None]) -> None:
        on_idle()


def link_for(config: Config, source: t.Any, stats: Stats) -> AgentLink:
    """The link a middleware uses for ``config``'s ``Agent`` section (and ``WSGIMIRROR_AGENT``)."""
    settings = config.agent
    if settings.mode == "external":
        return AgentLink(t.cast(str, settings.socket), settings, starts=False, stats=stats)
    if settings.socket is not None:
        supervise.private_directory(os.path.dirname(settings.socket))  # only the user may reach a started agent
        return AgentLink(settings.socket, settings, starts=True, stats=stats)
    return AgentLink(supervise.socket_path(supervise.identity(source, config.source)), settings, True, stats)


def mode(config: Config) -> tuple[str, str | None]:
    """The agent mode in force: ``WSGIMIRROR_AGENT`` (in-process, embedded, or a socket path) wins over the config."""
    override = os.environ.get("WSGIMIRROR_AGENT", "").strip()
    if not override:
        return config.agent.mode, config.agent.socket
    if override in ("in-process", "embedded"):
        return override, config.agent.socket
    if override.startswith("/"):
        return "external", override
    raise OSError(errno.EINVAL, f"WSGIMIRROR_AGENT must be in-process, embedded or a socket path, got {override!r}")
