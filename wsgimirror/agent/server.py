"""``wsgimirror agent``: the process that sends, compares and records the copies middlewares hand it.

It listens on a Unix socket and serves any number of middlewares (one per worker process). A client
must be the same user (``SO_PEERCRED``); anyone else is refused before a byte is read.

Each client is a :class:`Session`. Its copies are dispatched by the existing sending machinery
(:class:`wsgimirror.agent.dispatch.Dispatcher`, one per config generation the client sent), through one
:class:`wsgimirror.agent.runtime.Runtime` shared by every client: ``Mirror.MaxInFlight`` and the connections
per destination hold for the whole agent. One :class:`wsgimirror.compare.comparer.Comparer` compares
every client's answers (its counts are the deployment's). What happens to each copy goes back to its
client as events, in batches every :data:`EVENT_SECONDS`, so the client's ``stats()`` stay whole.

An embedded agent exits once it has had no client for ``--idle-seconds`` and no mirror is left in
flight. No network listener is opened unless ``--metrics-bind`` asks for one (loopback for a bare port).
"""

from __future__ import annotations

import array
import json
import logging
import os
import socket
import struct
import time
import typing as t

from ..capture.answer import Answer
from ..capture.body import BodyBuffer, CaptureBudget
from ..compare.comparer import Comparer
from ..config.load import load_config
from ..config.model import CompareSettings
from ..errors import ConfigError
from . import protocol
from .dispatch import Dispatcher
from .runtime import Runtime

log = logging.getLogger("wsgimirror.agent")

EVENT_SECONDS = 0.1  # how often a client hears what became of its copies (a wake-up of its loop each time)
EVENT_BATCH = 512  # or sooner, once this many events wait
GENERATIONS_KEPT = 8  # config generations a client may have copies of at once
RECV_SIZE = 256 * 1024
_UCRED = struct.Struct("3i")


class _ToClients(logging.Handler):
    """The agent's warnings go to its clients too, which log them: a failing destination shows in the app's log."""

    def __init__(self, agent: Agent) -> None:
        super().__init__(logging.WARNING)
        self.agent = agent

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage()
        except Exception:  # a record that cannot be formatted is not worth a client's attention
            return
        for session in list(self.agent.sessions):
            session.say(record.levelno, record.name, line)


class Agent:
    """Everything shared by the clients of one agent process."""

    def __init__(self, idle_seconds: float = 300.0, registry: t.Any = None) -> None:
        from ..metrics import PrometheusMetrics
        from ..send.executors import _GeventExecutor

        _GeventExecutor.eager = True  # nothing here to give way to: a batch of copies goes out in one turn
        self.idle_seconds = idle_seconds
        self.runtime = Runtime()
        self.metrics = PrometheusMetrics.for_registry(registry) if registry is not None else None
        self.comparer = Comparer(CompareSettings(), self.metrics)
        self.budget = CaptureBudget()  # bodies received: bounded by each client's config (the newest one's)
        self.sessions: set[Session] = set()
        self.last_client = time.monotonic()
        self._relay = _ToClients(self)
        logging.getLogger("wsgimirror").addHandler(self._relay)

    def configure(self, config: t.Any) -> None:
        """A client sent a config: the comparison and the body budget follow the newest one."""
        self.comparer.configure(config.compare, config.mirror.remove_headers, config.mirror.loop_token)
        self.budget.memory_limit = config.mirror.capture_memory_bytes
        self.budget.disk_limit = config.mirror.capture_disk_bytes

    def serve(self, listener: socket.socket) -> None:
        """Serve clients until idle (no client for ``idle_seconds`` and no mirror in flight), or SIGTERM/SIGINT:
        then stop taking clients and let the mirrors in flight end (up to 5 s)."""
        import signal

        import gevent
        from gevent.event import Event
        from gevent.server import StreamServer

        stop = Event()
        handlers = [gevent.signal_handler(signum, stop.set) for signum in (signal.SIGTERM, signal.SIGINT)]
        server = StreamServer(listener, self._client)
        server.start()
        try:
            while not stop.wait(min(1.0, self.idle_seconds / 4)):
                if self.sessions:
                    self.last_client = time.monotonic()
                elif time.monotonic() - self.last_client >= self.idle_seconds and not self.runtime.in_flight:
                    log.info("no client for %gs: the agent exits", self.idle_seconds)
                    return
            log.info("stopping: the agent exits once its mirrors in flight end")
        finally:
            for handler in handlers:
                handler.cancel()
            server.stop(timeout=1)
            self.runtime.join(5.0)
            self.comparer.close()

    def _client(self, sock: socket.socket, _address: t.Any) -> None:
        pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        if uid != os.geteuid():
            log.warning("refused a client of uid %d (pid %d): the agent serves uid %d only", uid, pid, os.geteuid())
            sock.close()
            return
        session = Session(self, sock, pid)
        self.sessions.add(session)
        log.info("client pid %d connected", pid)
        try:
            session.run()
        finally:
            self.sessions.discard(session)
            self.last_client = time.monotonic()
            log.info("client pid %d disconnected", pid)


class Session:
    """One client: its config generations, and the events of its copies on their way back."""

    def __init__(self, agent: Agent, sock: socket.socket, pid: int) -> None:
        self.agent = agent
        self.sock = sock
        self.pid = pid
        self.dispatchers: dict[str, Dispatcher] = {}  # by generation, oldest first
        self.routes: dict[str, dict[str, t.Any]] = {}
        self.events: list[tuple[t.Any, ...]] = []
        self.open = True
        self._buffer = bytearray(RECV_SIZE)  # read into, again and again: no allocation per read

    # -- events: the Stats interface the Dispatcher reports to, relayed to the client ------------------

    def drop(self, reason: str, route: str, clusters: t.Sequence[str], destination: str = "") -> None:
        for cluster in clusters:
            self._event((protocol.DROPPED, route, cluster, destination, reason, 0.0))

    def started(self, route: str, cluster: str, destination: str) -> None:
        self._event((protocol.STARTED, route, cluster, destination, None, 0.0))

    def unstart(self, reason: str, route: str, cluster: str, destination: str) -> None:
        self._event((protocol.UNSTARTED, route, cluster, destination, reason, 0.0))

    def succeeded(self, route: str, cluster: str, destination: str, status: int, seconds: float) -> None:
        self._event((protocol.SUCCEEDED, route, cluster, destination, status, seconds))

    def written(self, route: str, cluster: str, destination: str, seconds: float) -> None:
        self._event((protocol.WRITTEN, route, cluster, destination, None, seconds))

    def failed(self, route: str, cluster: str, destination: str, reason: str, seconds: float) -> None:
        self._event((protocol.FAILED, route, cluster, destination, reason, seconds))

    def _event(self, event: tuple[t.Any, ...]) -> None:
        if self.open:
            self.events.append(event)

    def say(self, level: int, name: str, line: str) -> None:
        """A log line for the client to log (in its next batch)."""
        if self.open:
            self.events.append((protocol.LOG, name, "", "", level, line))

    # -- the connection ----------------------------------------------------------------------------------

    def run(self) -> None:
        import gevent

        flusher = gevent.spawn(self._flush_events)
        reader = protocol.Reader()
        fds: list[int] = []
        try:
            while True:
                data, descriptors = self._receive()
                if not data:
                    return
                fds.extend(descriptors)
                for message in reader.feed(data):
                    self._handle(message, fds)
        except (OSError, protocol.ProtocolError) as err:
            log.warning("client pid %d: %s; its connection is closed", self.pid, err)
        finally:
            self.open = False
            flusher.kill()
            for fd in fds:
                os.close(fd)
            self.sock.close()

    def _receive(self) -> tuple[bytes, list[int]]:
        space = socket.CMSG_SPACE(4 * array.array("i").itemsize)
        size, ancillary, flags, _ = self.sock.recvmsg_into([self._buffer], space)
        data = bytes(memoryview(self._buffer)[:size])
        descriptors: list[int] = []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                descriptors.extend(received)
        if flags & socket.MSG_CTRUNC:
            for fd in descriptors:
                os.close(fd)
            raise protocol.ProtocolError("descriptors were cut off")
        return data, descriptors

    def _handle(self, message: tuple[t.Any, ...], fds: list[int]) -> None:
        kind = message[0]
        if kind == protocol.COPY:
            self._copy(protocol.copy_fields(message), fds)
        elif kind == protocol.CONFIG and len(message) == 3:
            self._config(message[1], message[2])
        elif kind == protocol.ASK and len(message) == 3:
            self._send(protocol.frame((protocol.REPLY, message[1], self._answer(message[2]))))
        else:
            raise protocol.ProtocolError(f"an unknown frame {kind!r}")

    def _config(self, generation: str, text: str) -> None:
        try:
            config = load_config(json.loads(text))
        except (ConfigError, ValueError) as err:  # loaded by the client already: only a version skew gets here
            log.error("client pid %d sent a config this agent refuses: %s", self.pid, err)
            return
        self.agent.configure(config)
        self.dispatchers[generation] = Dispatcher(config, t.cast(t.Any, self), self.agent.runtime, self.agent.comparer)
        self.routes[generation] = {route.id: route for route in config.routes}
        while len(self.dispatchers) > GENERATIONS_KEPT:
            oldest = next(iter(self.dispatchers))
            self.dispatchers.pop(oldest).retire(lambda: None)
            del self.routes[oldest]

    def _copy(self, fields: dict[str, t.Any], fds: list[int]) -> None:
        answer_fields = fields["answer"]
        spooled = answer_fields is not None and answer_fields[3] is None and answer_fields[4] > 0
        wanted = int(fields["in_file"]) + int(spooled)  # the body's file, then the answer's
        if len(fds) < wanted:
            raise protocol.ProtocolError("a copy whose files did not come with it")
        fd = fds.pop(0) if fields["in_file"] else None
        answer_fd = fds.pop(0) if spooled else None
        body = BodyBuffer.adopt(fields["body"], fd, fields["body_size"], self.agent.budget)
        dispatcher = self.dispatchers.get(fields["generation"])
        route = self.routes.get(fields["generation"], {}).get(fields["route"])
        if dispatcher is None or route is None:
            body.release()
            if answer_fd is not None:
                os.close(answer_fd)
            self.drop("unknown_config", fields["route"], fields["clusters"])
            return
        comparer = self.agent.comparer
        answer = None
        if answer_fields is not None:
            answer = Answer.restore(answer_fields, comparer.settings.max_body_bytes, comparer.budget, answer_fd)
        try:
            dispatcher.dispatch(route, fields["clusters"], fields["environ"], body, answer,
                                (fields["arrived"], fields["latency"]))  # fmt: skip
        finally:
            if answer is not None:
                answer.release()  # the request's hold; each mirror comparing or recording it holds its own

    def _answer(self, question: t.Any) -> t.Any:
        comparer = self.agent.comparer
        dropped = None
        if isinstance(question, tuple) and len(question) == 2 and isinstance(question[1], dict):
            question, dropped = question  # a page, with the client's dropped copies to show beside it
        if question == "compare":
            return json.dumps(comparer.snapshot())
        if question == "report_html":
            from ..compare.html import render

            return render(comparer.report(), dropped).encode("utf-8")
        if question == "report_json":
            from ..compare.report import as_json

            return as_json(comparer.report(), dropped)
        if question == "circuits":
            newest = list(self.dispatchers.values())[-1:] or []
            return json.dumps({k: v for d in newest for k, v in d.circuits().items()})
        return None

    def _flush_events(self) -> None:
        import gevent

        while True:
            gevent.sleep(EVENT_SECONDS)
            while self.events:
                batch, self.events = self.events[:EVENT_BATCH], self.events[EVENT_BATCH:]
                self._send(protocol.frame((protocol.EVENTS, batch)))

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as err:
            log.info("client pid %d is gone: %s", self.pid, err)
            self.open = False


def listen(path: str) -> socket.socket:
    """A Unix socket listening at ``path``, readable and writable by this user only."""
    previous = os.umask(0o177)
    try:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
    finally:
        os.umask(previous)
    listener.listen(128)
    return listener


def run_agent(path: str, idle_seconds: float, metrics_bind: tuple[str, int] | None = None,
              ready: t.Callable[[], None] | None = None) -> int:  # fmt: skip
    """Listen at ``path`` and serve until idle; ``ready`` is called once the socket listens."""
    listener = listen(path)
    inode = os.stat(path).st_ino  # the socket file is ours to remove only while it is still this one
    registry = None
    servers: list[t.Any] = []
    if metrics_bind is not None:
        import prometheus_client

        registry = prometheus_client.CollectorRegistry()
    agent = Agent(idle_seconds, registry)
    if metrics_bind is not None:
        servers.append(_pages(metrics_bind, agent, registry))
        servers[0].start()
        log.info("agent metrics on http://%s:%d/metrics", *servers[0].address[:2])
    log.info("agent pid %d listening on %s", os.getpid(), path)
    if ready is not None:
        ready()
    try:
        agent.serve(listener)
    finally:
        for server in servers:
            server.stop(timeout=1)
        try:
            if os.stat(path).st_ino == inode:
                os.unlink(path)  # ours still: a later agent may have replaced it
        except OSError:
            pass
    return 0


def _pages(bind: tuple[str, int], agent: Agent, registry: t.Any) -> t.Any:
    """The agent's /metrics (its comparisons), and the live report at /compare and /compare.json."""
    from gevent.pywsgi import WSGIServer
    from prometheus_client import make_wsgi_app

    from ..compare.html import render
    from ..compare.report import as_json
    from ..util.listen import make_listener

    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> t.Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/compare", "/compare.json"):
            return t.cast("t.Iterable[bytes]", metrics(environ, start_response))
        report = agent.comparer.report()
        if path == "/compare":
            body, kind = render(report).encode("utf-8"), "text/html; charset=utf-8"
        else:
            body, kind = as_json(report).encode("utf-8"), "application/json"
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])  # fmt: skip
        return [body]

    return WSGIServer(make_listener(bind), app, log=None)
