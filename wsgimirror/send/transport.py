"""Step 5b, the wire: one HTTP/1.1 exchange on a connection borrowed from a urllib3 pool. One idea kept whole
(over 400 lines): from the head written to the answer drained, every failure named on the way.

urllib3 does what it does well: the per-destination connection pool, connecting
with timeouts, TLS and the stale-connection check. The request itself is one
prepared head written with ``sendall`` (plus the body), and the answer is framed
by ``httptools`` (Content-Length, chunked, close-delimited, HEAD, 204/304), drained
up to :data:`DRAIN_LIMIT` bytes so the connection can be kept alive. This costs a
fraction of ``HTTPConnectionPool.urlopen`` per mirror; the README has the figures.

A reused keep-alive connection that the destination closed meanwhile is detected
when nothing at all came back, and the request is written once more on a fresh
connection; every other failure raises :class:`MirrorSendError` with a short reason
(``tls_error`` for a failed handshake or verification, naming the verification error).

HTTPS pools get their context from :func:`tls_context`: verified against the system's
certificates or the cluster's ``CaFile``, with its client certificate and protocol
versions. The context remembers the last TLS session of its pool, so a new connection
to the same destination resumes it instead of a full handshake.
"""

from __future__ import annotations

import queue
import select
import socket
import ssl
import time
import typing as t
from functools import cache

import httptools
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ClosedPoolError, ConnectTimeoutError, NewConnectionError

from ..errors import MirrorSendError
from ..util.green import original

_new_lock = original("_thread", "allocate_lock")

if t.TYPE_CHECKING:
    from ..capture.answer import Answer
    from ..capture.body import BodyBuffer
    from ..config.model import HttpClientSettings

DRAIN_LIMIT = 1 << 20  # response body bytes read to keep the connection; past it, close instead
# An answer's head (status line and headers, interim answers included) past these fails the mirror at once,
# as HTTP servers and clients refuse one: a destination sending header lines forever holds no memory.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
RECV_SIZE = 64 * 1024
SMALL_BODY = 64 * 1024  # bodies up to this size go out in the same send as the head
QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


# The OS's poll, even under gevent: a zero-timeout poll never blocks, and skips the hub.
_poll = original("select", "poll")


def _dropped(sock: socket.socket) -> bool:
    """An idle pooled connection that is readable was closed by the peer (or sent junk): don't reuse it.

    Over TLS, a readable socket may only hold records without data (TLS 1.3 session tickets
    arrive after the answer): one non-blocking read tells them from a close or junk. The
    exchange sets the socket's timeout again before it uses the connection.
    """
    poller = _poll()
    poller.register(sock.fileno(), select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        sock.settimeout(0)
        sock.recv(1)  # b"": closed; bytes: junk before any request
        return True
    except ssl.SSLWantReadError:
        return False  # only records without application data: the connection is fine
    except OSError:
        return True


class _MirrorPoolMixin:
    """urllib3's pool, with the idle-connection check done by one non-blocking poll, and a bound on rest.

    urllib3 checks with ``wait_for_read``, which under gevent goes through the hub
    (a timer, a watcher and a switch) for every request: a large share of a mirror's CPU.

    A connection given back rests in the pool for the next mirror, as many as the recent concurrency
    needs: at most the larger of ``keep_alive`` (``Mirror.KeepAliveConnections``, 32 as nginx's upstream
    ``keepalive``) and the most connections lent at once since the last sweep; one more is closed. A cap
    below the concurrency would close a connection at every turn and open another (nginx's known churn).
    One that rested longer than ``keep_alive_seconds`` is closed instead of reused, and
    :meth:`close_resting` (run by the runtime's sweep) closes those before any mirror asks: after a burst
    the destination keeps what recent concurrency needs, not hundreds idle.
    """

    pool: t.Any
    busy = 0  # connections lent out now; the runtime keeps it within ``limit``
    keep_alive = 32
    keep_alive_seconds = 60.0
    resting = 0  # open connections in the pool
    peak = 0  # the most connections lent at once since the last sweep
    _rest_lock: t.Any = None

    @property
    def limit(self) -> int:
        """The most connections this pool holds (``MaxConnectionsPerServer``)."""
        return int(self.pool.maxsize) if self.pool is not None else 0

    def _get_conn(self, timeout: float | None = None) -> t.Any:
        conn = None
        try:
            conn = self.pool.get(block=False)
        except AttributeError:  # self.pool is None: the pool was closed
            raise ClosedPoolError(t.cast(t.Any, self), "Pool is closed.") from None
        except queue.Empty:
            pass
        if conn is not None and conn.sock is not None:
            self._rested(-1)
            if time.monotonic() - getattr(conn, "rested_since", 0.0) > self.keep_alive_seconds or _dropped(conn.sock):
                conn.close()
        return conn or self._new_conn()  # type: ignore[attr-defined]

    def _put_conn(self, conn: t.Any) -> None:
        if conn is not None and conn.sock is not None:
            if self._rested(+1) > max(self.keep_alive, self.peak):
                self._rested(-1)
                conn.close()  # enough rest already: the destination keeps what recent concurrency needs
            else:
                conn.rested_since = time.monotonic()
        super()._put_conn(conn)  # type: ignore[misc]

    def _rested(self, delta: int) -> int:
        lock = self._rest_lock
        if lock is None:
            lock = self._rest_lock = _new_lock()
        with lock:
            self.resting += delta
            return self.resting

    def close_resting(self, older_than: float | None = None) -> None:
        """Close the connections resting in the pool: all of them, or (``older_than`` given, as the sweep does)
        those resting longer than that, and the oldest beyond what the last period's concurrency needed.
        The pool stays usable and reconnects on demand."""
        idle = self.pool
        if idle is None:
            return
        allowed = max(self.keep_alive, self.peak) if older_than is not None else 0
        self.peak = self.busy  # the concurrency of the next period starts from what is lent now
        now = time.monotonic()
        taken = []
        while True:  # take them all first: the queue is LIFO, a put would come straight back
            try:
                taken.append(idle.get(block=False))
            except queue.Empty:
                break
        kept = 0
        for conn in taken:  # the most recently used first
            if conn is not None and conn.sock is not None:
                if kept < allowed and (older_than is None or now - getattr(conn, "rested_since", 0.0) <= older_than):
                    kept += 1
                    continue
                conn.close()
                self._rested(-1)
        for conn in reversed(taken):  # back in their order: the most recently used on top
            idle.put(conn, block=False)


class Lane:
    """One connection of a pool's destination, kept by one sender that sends one request after another
    (``replay --speed 0``): :func:`exchange` takes it in place of the pool, with no queue, lock or idle
    check per request. It never rests: a destination that closed it between two requests is found by the
    exchange (a reused connection that gives nothing back is reconnected once), and one that ended its
    answer with a close reconnects at the next request. :meth:`close` when the sender is done."""

    __slots__ = ("pool", "conn_kw", "_conn")

    def __init__(self, pool: t.Any) -> None:
        self.pool = pool
        self.conn_kw = pool.conn_kw  # for the TLS session the exchange remembers
        self._conn: t.Any = None

    def _get_conn(self) -> t.Any:
        if self._conn is None:
            self._conn = self.pool._new_conn()
        return self._conn

    def _put_conn(self, conn: t.Any) -> None:
        """The connection stays the lane's, open or closed (a closed one connects again when next used)."""

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class MirrorHTTPConnectionPool(_MirrorPoolMixin, HTTPConnectionPool):
    pass


class MirrorHTTPSConnectionPool(_MirrorPoolMixin, HTTPSConnectionPool):
    pass


_TLS_VERSIONS = {"Tls12": ssl.TLSVersion.TLSv1_2, "Tls13": ssl.TLSVersion.TLSv1_3}


@cache
def _session_context(base: type[ssl.SSLContext]) -> type[ssl.SSLContext]:
    """``base`` (gevent's SSLContext once the server owner patched) that offers each new connection the
    last session it saw, for an abbreviated handshake."""

    class SessionContext(base):  # type: ignore[valid-type,misc]
        last_session: t.Any = None

        def wrap_socket(self, sock: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
            if kwargs.get("session") is None and self.last_session is not None:
                kwargs["session"] = self.last_session
            return super().wrap_socket(sock, *args, **kwargs)

    return SessionContext


def tls_context(settings: HttpClientSettings) -> ssl.SSLContext:
    """The client context of a cluster's HTTPS destinations."""
    context = _session_context(ssl.SSLContext)(ssl.PROTOCOL_TLS_CLIENT)
    if settings.ca_file is not None:
        context.load_verify_locations(cafile=settings.ca_file)
    else:
        context.load_default_certs()
    if settings.client_certificate is not None:
        context.load_cert_chain(settings.client_certificate, settings.client_key)
    if settings.protocols:
        context.minimum_version = _TLS_VERSIONS[settings.protocols[0]]
        context.maximum_version = _TLS_VERSIONS[settings.protocols[-1]]
    if settings.accept_any_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _remember_session(pool: t.Any, sock: t.Any) -> None:
    """Keep the session of a connection that completed an exchange (TLS 1.3 sends its ticket after the handshake)."""
    context = pool.conn_kw.get("ssl_context")  # urllib3 hands it to each connection it makes
    if hasattr(context, "last_session"):  # one of our HTTPS pools: its sockets have a session
        context.last_session = sock.session or context.last_session


class _StaleConnection(Exception):
    """A reused connection gave nothing back: the destination closed it while it was idle."""


class _ResetAfter(Exception):
    """The destination reset the connection, after part of the answer (``received``) or before any."""

    def __init__(self, received: bool) -> None:
        super().__init__()
        self.received = received


class _Response:
    """The httptools protocol object: notes the status, where the response ends, and keep-alive.

    llhttp resets its state once a message is complete, so status and keep-alive are read
    inside the callbacks, not afterwards.
    """

    __slots__ = ("parser", "head_request", "headers_done", "done", "body_bytes", "status", "keep_alive", "headers")

    def __init__(self, head_request: bool) -> None:
        self.parser: t.Any = None
        self.head_request = head_request
        self.headers = 0  # header lines seen (counted where they are kept)
        self.headers_done = False
        self.done = False
        self.body_bytes = 0
        self.status = 0
        self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += 1

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status < 200:
            return  # an interim answer (100 Continue): the final one follows
        self.headers_done = True
        if self.head_request:
            self.keep_alive = self.parser.should_keep_alive()
            self.done = True

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)

    def on_message_complete(self) -> None:
        if self.status >= 200:
            self.keep_alive = self.parser.should_keep_alive()
            self.done = True

    def closed(self) -> None:
        """The destination closed the connection (the end of a close-delimited body; the caller decides)."""

    def refused(self) -> None:
        """The answer broke a bound: whatever was parsed of it does not count."""


class _KeptResponse(_Response):
    """A response whose status, headers and body are kept in an :class:`~wsgimirror.capture.answer.Answer`
    to be compared; its body is read to the end whatever its size (the answer keeps a bounded part)."""

    __slots__ = ("answer",)

    def __init__(self, head_request: bool, answer: Answer) -> None:
        super().__init__(head_request)
        self.answer = answer

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += 1
        if self.headers <= MAX_HEADERS:  # past it the mirror fails: nothing more is kept
            self.answer.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.status < 200:
            self.answer.headers.clear()  # the interim answer's; the final one's follow
        else:
            self.answer.status = self.status
            self.answer.complete = self.done  # HEAD: complete without a body

    def on_body(self, body: bytes) -> None:
        self.answer.feed(body)  # read to the end whatever its size: no count against DRAIN_LIMIT

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.answer.complete = self.done

    def refused(self) -> None:
        self.answer.complete = False  # never compared: the mirror failed

    def closed(self) -> None:
        """An answer with neither Content-Length nor chunked framing ends where the connection does: complete."""
        framed = any(k.lower() in ("content-length", "transfer-encoding") for k, _ in self.answer.headers)
        if self.headers_done and not self.done and not framed:
            self.answer.complete = True


def exchange(
    pool: HTTPConnectionPool | Lane,
    head: bytes,
    body: BodyBuffer | None,
    head_request: bool,
    connect_timeout: float,
    timeout: float,
    cooperative: bool = False,
    answer: Answer | None = None,
) -> int:
    """Send one request on a pooled connection (or a :class:`Lane`'s own) and return the response status.

    ``cooperative`` (gevent with patched sockets): one ``gevent.Timeout`` bounds the whole
    exchange, instead of a timer armed for every socket operation. ``answer``: keep the
    response's status, headers and body there, for a comparison.
    """
    if not cooperative:
        return _exchange(pool, head, body, head_request, connect_timeout, timeout, answer)
    import gevent

    with gevent.Timeout(timeout, MirrorSendError("timeout", "no complete answer in time")):
        return _exchange(pool, head, body, head_request, connect_timeout, None, answer)


def _exchange(
    pool: HTTPConnectionPool | Lane,
    head: bytes,
    body: BodyBuffer | None,
    head_request: bool,
    connect_timeout: float,
    timeout: float | None,
    answer: Answer | None,
) -> int:
    for attempt in (1, 2):
        conn: t.Any = pool._get_conn()
        try:
            reused = conn.sock is not None
            if not reused:
                _connect(conn, connect_timeout)
            deadline = None if timeout is None else time.monotonic() + timeout
            status, keep = _roundtrip(conn.sock, head, body, head_request, deadline, reused, answer)
        except _StaleConnection:
            conn.close()
            pool._put_conn(conn)
            if attempt == 2:
                raise MirrorSendError("closed", "the destination closed the connection without answering") from None
            continue
        except BaseException:
            conn.close()
            pool._put_conn(conn)
            raise
        if not reused:
            _remember_session(pool, conn.sock)
        if not keep:
            conn.close()
        pool._put_conn(conn)
        return status
    raise AssertionError("unreachable")


def _connect(conn: t.Any, connect_timeout: float) -> None:
    conn.timeout = connect_timeout
    try:
        conn.connect()
    except NewConnectionError as err:  # a subclass of ConnectTimeoutError: test it first
        reason = "refused" if isinstance(err.__cause__, ConnectionRefusedError) else "connect_error"
        raise MirrorSendError(reason, str(err)) from err
    except ConnectTimeoutError as err:
        raise MirrorSendError("connect_timeout", str(err)) from err
    except ssl.SSLError as err:  # the handshake failed, or the certificate did not verify
        raise MirrorSendError("tls_error", _tls_reason(err)) from err
    except OSError as err:  # name resolution failures
        raise MirrorSendError("connect_error", str(err)) from err


def _tls_reason(err: ssl.SSLError) -> str:
    """One line: the verification error when there is one, else OpenSSL's reason."""
    return str(getattr(err, "verify_message", None) or getattr(err, "reason", None) or err)


def _roundtrip(
    sock: socket.socket,
    head: bytes,
    body: BodyBuffer | None,
    head_request: bool,
    deadline: float | None,
    reused: bool,
    answer: Answer | None = None,
) -> tuple[int, bool]:
    """Write the request, read the response; returns (status, connection reusable).

    With no ``deadline`` the socket blocks and the caller bounds the time.
    """
    if deadline is None:
        sock.settimeout(None)
    try:
        _write(sock, head, body, deadline)
        response = _Response(head_request) if answer is None else _KeptResponse(head_request, answer)
        response.parser = parser = httptools.HttpResponseParser(response)
        received = _read(sock, parser, response, deadline)
    except socket.timeout as err:
        raise MirrorSendError("timeout", "no complete answer in time") from err
    except httptools.HttpParserUpgrade as err:
        raise MirrorSendError("bad_response", "the destination switched protocols") from err
    except httptools.HttpParserError as err:
        raise MirrorSendError("bad_response", f"not a valid HTTP response: {err}") from err
    except ssl.SSLError as err:  # an alert after the handshake: with TLS 1.3, a refused client certificate
        raise MirrorSendError("tls_error", _tls_reason(err)) from err
    except _ResetAfter as err:
        if reused and not err.received:
            raise _StaleConnection() from err
        raise MirrorSendError("reset", str(err.__cause__)) from err
    except (ConnectionResetError, BrokenPipeError) as err:  # while writing: nothing was received
        if reused:
            raise _StaleConnection() from err
        raise MirrorSendError("reset", str(err)) from err
    except OSError as err:
        raise MirrorSendError("socket_error", str(err)) from err
    if not received:
        if reused:
            raise _StaleConnection()
        raise MirrorSendError("closed", "the destination closed the connection without answering")
    if not response.headers_done:
        raise MirrorSendError("closed", "the connection closed in the middle of the response head")
    keep = response.done and response.keep_alive
    return response.status, keep


def _write(sock: socket.socket, head: bytes, body: BodyBuffer | None, deadline: float | None) -> None:
    _arm(sock, deadline)
    if body is None or body.size == 0:
        _send(sock, head)
        return
    small = body.in_memory() if body.size <= SMALL_BODY else None
    if small is not None:
        _send(sock, head + small)
        return
    sock.sendall(head)
    for piece in body.chunks():
        _arm(sock, deadline)
        sock.sendall(piece)


def _send(sock: socket.socket, data: bytes) -> None:
    """``sendall`` in one ``send`` when the socket takes it all, as it does a head and a small body.

    gevent's ``sendall`` asks the socket's buffer size first, a system call per mirror.
    """
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def _read(sock: socket.socket, parser: t.Any, response: _Response, deadline: float | None) -> bool:
    """Feed the parser until the response ends, or its body passed DRAIN_LIMIT (a kept answer's body is not
    counted: it is read to the end); returns whether anything came at all."""
    received = False
    head = 0  # bytes received before the head ended
    while not response.done and response.body_bytes <= DRAIN_LIMIT:
        _arm(sock, deadline)
        if received:  # a part came and more is due: acknowledge it now, the rest may wait for that
            _quick_ack(sock)
        try:
            data = sock.recv(RECV_SIZE)
        except (ConnectionResetError, BrokenPipeError) as err:
            raise _ResetAfter(received) from err
        if not data:
            response.closed()  # a close-delimited body ends here, or the connection dropped
            break
        received = True
        if not response.headers_done:
            head += len(data)
        parser.feed_data(data)
        if (not response.headers_done and head > MAX_HEAD_BYTES) or response.headers > MAX_HEADERS:
            response.refused()
            raise MirrorSendError(
                "head_too_large", f"the answer's head passed {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} header lines"
            )
    return received


def _quick_ack(sock: socket.socket) -> None:
    """Acknowledge what arrived at once, not after the delayed-ACK timer (about 40 ms on Linux).

    A destination without TCP_NODELAY that writes its answer in two sends (gevent.pywsgi's
    default: head, then body) holds the second until the first is acknowledged (Nagle). Setting
    the flag sends an ACK that is due right away, so it is set only once part of an answer came
    and more is awaited: an answer read whole at once costs no system call. Linux clears the
    flag after it acts, so it is set again before each such read.
    """
    if QUICKACK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        except OSError:
            pass  # not a TCP socket (a test's socketpair): nothing to acknowledge early


def _arm(sock: socket.socket, deadline: float | None) -> None:
    """Give the next socket operation what is left of the deadline (nothing to do without one)."""
    if deadline is None:
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("deadline passed")
    sock.settimeout(left)
