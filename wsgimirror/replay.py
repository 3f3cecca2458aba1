"""``wsgimirror replay``: play GoReplay files (ours or GoReplay's) back to a target, paced, and compare.

Requests (type 1) are read from files, globs or directories, merged by timestamp as GoReplay merges them
(see :mod:`.gor`), and sent through the mirrors' transport with their recorded method, target, headers and
de-chunked body. The recorded pacing is kept, scaled by ``--speed`` (0: as fast as ``--concurrency``
allows), or a fixed ``--rate`` replaces it; ``--max-wait`` caps a gap when asked. With ``--compare`` each
answer is compared with the recorded one (type 2, same id) by the comparison engine, so a recording made
on Friday becomes a regression check of the candidate in CI.

What is never sent: a malformed payload, a request whose message is cut (its body shorter than its framing
says: GoReplay cuts payloads at its copy buffer), and what the filters leave out; each is counted. The
mirror's mark (``X-Mirrored-By``) is removed unless ``--keep-mirror-mark``: a replay is not a loop.

Memory is bounded whatever the files hold: a payload keeps at most 32 KiB in memory (the rest waits in a
temporary file), and the replay holds at most the read window, the look-ahead for recorded answers and the
requests in flight; with ``--compare``, each answer compared keeps at most ``Compare.MaxBodyBytes``.

The command runs under gevent (the CLI monkey-patches before importing this module).
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
import typing as t
from array import array
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from ._paths import NoMatch
from ._paths import expand as expand_patterns
from .blob import Blob
from .compare.diff import MirrorMade
from .compare.endpoints import Endpoints
from .config import CompareSettings, Destination, HttpClientSettings, MirrorSettings
from .errors import MirrorSendError
from .gor import (
    READ_DEPTH,
    REQUEST,
    RESPONSE,
    BadMessage,
    Message,
    Payload,
    ReadCounts,
    directory_files,
    merged,
    parse_message,
)
from .head import MARK_HEADER
from .response import Answer
from .syntax import field_value, is_token, origin_form

if t.TYPE_CHECKING:
    from .capture import BodyBuffer

# Headers a replay never copies: hop-by-hop ones, Expect, and those it sets itself.
SKIPPED = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect",
     "host", "content-length"}
)  # fmt: skip
LOOKAHEAD = 256  # (--compare) requests read ahead of the one being sent, so that their answers are seen first
EARLY_ANSWERS = 256  # (--compare) recorded answers read before their request, waiting for it
MALFORMED_EXAMPLES = 5  # why a request was not sent, for the first few the summary shows
NOT_RECORDED = "not_recorded"  # a comparison skipped: the recording has no answer for the request


class ReplayError(Exception):
    """Bad arguments or unreadable files: reported in one line, exit status 2."""


@dataclass
class Options:
    paths: list[str]
    target: str = ""
    speed: float = 1.0
    rate: float | None = None
    max_wait: float | None = None  # None: the recorded gaps, however long
    loop: bool = False
    duration: float | None = None
    concurrency: int = 64
    timeout: float = 5.0
    original_host: bool = False
    keep_mirror_mark: bool = False
    methods: frozenset[str] = frozenset()
    path_filter: re.Pattern[str] | None = None
    compare: bool = False
    compare_settings: CompareSettings = field(default_factory=CompareSettings)
    ca_file: str | None = None
    insecure: bool = False
    read_depth: int = READ_DEPTH
    warn: t.Callable[[str], None] | None = None  # told of each file skipped or damaged, as it happens
    workers: int = 1  # processes sending (see run_workers)
    share: tuple[int, int] = (0, 1)  # (index, count): this process sends the requests whose ordinal % count == index


class Request:
    """A recorded request ready to send; its body is a view over the payload, held until ``release()``."""

    __slots__ = ("id", "timestamp", "method", "target", "headers", "body", "host", "recorded", "_held")

    def __init__(self, payload: Payload, message: Message, method: str, target: str,
                 headers: list[tuple[str, str]]) -> None:  # fmt: skip
        self.id = payload.id
        self.timestamp = payload.timestamp
        self.method, self.target, self.headers = method, target, headers
        self.body: Blob = message.content
        self.host = message.header("Host")
        self.recorded: Payload | None = None  # (--compare) the recorded answer, once read
        self._held = (payload, message)

    def release(self) -> None:
        payload, message = self._held
        message.release()
        payload.release()
        if self.recorded is not None:
            self.recorded.release()
            self.recorded = None


def expand(patterns: t.Sequence[str]) -> list[str]:
    """The files named, matched by a glob, or held by a directory (its recordings, see
    :func:`~wsgimirror.gor.directory_files`); a name that is missing, or a directory with no recording,
    is an error now rather than a late one. A file that turns out unreadable is skipped when read."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = directory_files(pattern)
            if not found:
                raise ReplayError(f"{pattern}: no recording in this directory (*.gor, *.gor.gz, *.gor_N.gz)")
            paths.extend(found)
            continue
        try:
            matched = expand_patterns([pattern])
        except NoMatch as err:
            raise ReplayError(f"no file matches {str(err)!r}") from None
        for path in matched:
            if not os.path.exists(path):
                raise ReplayError(f"{path}: No such file or directory")
        paths.extend(p for p in matched if not os.path.isdir(p))
    return paths


class Source:
    """The requests of the recording, filtered, each with its recorded answer when comparing."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.counts = ReadCounts(options.warn)
        self.records = 0  # requests read (of this process's share)
        self._ordinal = 0  # request payloads seen, shared or not
        self.filtered = 0
        self.bad = 0  # request payloads whose message is not HTTP
        self.cut = 0  # requests whose body is shorter than their framing says
        self.malformed: list[str] = []  # "<id>: <why>" of the first few
        self.pending: dict[str, Request] = {}  # (--compare) requests read and not yet done, by id
        self.early: OrderedDict[str, Payload] = OrderedDict()  # (--compare) answers read before their request

    @property
    def skipped_malformed(self) -> int:
        return self.counts.malformed + self.bad

    def requests(self) -> t.Generator[Request, None, None]:
        """One pass over the files (again for each ``--loop``); when comparing, a little ahead for the answers.

        Each request is the caller's to :meth:`done` once sent (or not).
        """
        ahead: deque[Request] = deque()
        lookahead = LOOKAHEAD if self.options.compare else 0
        payloads = merged(self.options.paths, self.counts, self.options.read_depth)
        try:
            for payload in payloads:
                request = self._take(payload)
                if request is not None:
                    ahead.append(request)
                if len(ahead) > lookahead:
                    yield ahead.popleft()
            while ahead:
                yield ahead.popleft()
        finally:
            for request in ahead:  # a run stopped early: what was read ahead is freed
                self.done(request)
            while self.early:
                self.early.popitem(last=False)[1].release()

    def done(self, request: Request) -> None:
        if self.pending.get(request.id) is request:
            del self.pending[request.id]
        request.release()

    def _take(self, payload: Payload) -> Request | None:
        if payload.kind == RESPONSE and self.options.compare:
            self._answer(payload)
            return None
        if payload.kind != REQUEST or not self._mine():
            payload.release()
            return None
        self.records += 1
        request = self._request(payload)
        if request is None:
            payload.release()
            return None
        if self.options.compare and request.id not in self.pending:
            self.pending[request.id] = request
            request.recorded = self.early.pop(request.id, None)
        return request

    def _mine(self) -> bool:
        """Whether the next request payload is this process's to send (``--workers``: every n-th one)."""
        index, count = self.options.share
        self._ordinal += 1
        return count == 1 or (self._ordinal - 1) % count == index

    def _request(self, payload: Payload) -> Request | None:
        message = None
        try:
            message = parse_message(payload.raw)
            request = _request(payload, message, self.options.keep_mirror_mark)
        except BadMessage as err:
            if message is not None:
                message.release()
            self.bad += 1
            if len(self.malformed) < MALFORMED_EXAMPLES:
                self.malformed.append(f"{payload.id}: {err}")
            return None
        options = self.options
        if message.cut:
            self.cut += 1
        elif (options.methods and request.method not in options.methods) or (
            options.path_filter is not None and not options.path_filter.search(request.target)
        ):
            self.filtered += 1
        else:
            return request
        message.release()
        return None

    def _answer(self, payload: Payload) -> None:
        """Keep a recorded answer with its request, or for a while when its request is still to come."""
        request = self.pending.get(payload.id)
        if request is not None and request.recorded is None:
            request.recorded = payload
            return
        if payload.id in self.early or request is not None:
            payload.release()  # a second answer for one id: the first stands
            return
        self.early[payload.id] = payload
        while len(self.early) > EARLY_ANSWERS:  # those of requests filtered out, cut, or never recorded
            self.early.popitem(last=False)[1].release()


def _request(payload: Payload, message: Message, keep_mark: bool = False) -> Request:
    method, target, version = message.start
    if not is_token(method) or not version.startswith("HTTP/"):
        raise BadMessage(f"not a request line: {method!r} {target!r}")
    reduced = origin_form(target)
    if reduced is None:
        raise BadMessage(f"the target is neither origin nor absolute form: {target!r}")
    headers = []
    for name, value in message.headers:
        if not is_token(name):
            raise BadMessage(f"{name!r} is not a header name")
        cleaned = field_value(value)
        if cleaned is None:
            raise BadMessage(f"the {name} header holds control characters")
        lower = name.lower()
        if lower not in SKIPPED and not lower.startswith("proxy-") and (keep_mark or lower != MARK_HEADER):
            headers.append((name, cleaned))
    framed = bool(message.header("Content-Length") or message.header("Transfer-Encoding"))
    if framed or message.content.size:
        headers.append(("Content-Length", str(message.content.size)))
    return Request(payload, message, method, reduced, headers)


# -- pacing -----------------------------------------------------------------------------------------


class Pacer:
    """When each request is due, in seconds from the start, from the recording's timestamps or a rate.

    As GoReplay's file input: each gap to the previous request is waited, divided by the speed and then
    capped at ``--max-wait`` when one is given; a request stamped before the previous one waits nothing,
    and the next gap is still measured from the previous one.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self._due = 0.0
        self._previous: int | None = None
        self._count = 0

    def next(self, timestamp: int) -> float:
        options = self.options
        self._count += 1
        if options.rate:
            return (self._count - 1) / options.rate
        if self._previous is None:
            self._previous = timestamp
            return self._due
        gap = timestamp - self._previous
        if gap < 0:
            return self._due
        self._previous = timestamp
        if options.speed > 0:
            wait = gap / 1e9 / options.speed
            if options.max_wait is not None:
                wait = min(wait, options.max_wait)
            self._due += wait
        return self._due

    def restart(self) -> None:
        """A ``--loop`` starts over: the first request of the new pass follows the last one at once."""
        self._previous = None


# -- the run ----------------------------------------------------------------------------------------


class Latencies:
    """The latencies of the answers: every one up to ``KEPT``, then a uniform sample of ``KEPT`` (reservoir
    sampling), so the percentiles are exact for a replay of up to 65,536 answers and close beyond, in
    512 KiB however many requests a replay sends."""

    KEPT = 65536

    def __init__(self) -> None:
        self.count = 0
        self._kept = array("d")

    def add(self, seconds: float) -> None:
        self.count += 1
        if len(self._kept) < self.KEPT:
            self._kept.append(seconds)
        else:
            slot = random.randrange(self.count)
            if slot < self.KEPT:
                self._kept[slot] = seconds

    def kept(self) -> array[float]:
        """The latencies kept (all of them, or the sample), in seconds."""
        return self._kept

    def percentile_ms(self, q: float) -> float | None:
        """The ``q`` quantile in ms, rounded to the µs; None without samples."""
        if not self._kept:
            return None
        ordered = sorted(self._kept)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


@dataclass
class Results:
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: Latencies = field(default_factory=Latencies)


class Replay:
    def __init__(self, options: Options, progress: t.TextIO | None = None, every: float | None = None) -> None:
        """``progress``: where the progress line goes (stderr), redrawn ``every`` seconds (0.5 on a
        terminal) or printed as a line of its own (every 5 s otherwise)."""
        self.options = options
        self._progress = progress if progress is not None else sys.stderr
        if options.warn is None:
            options = self.options = replace(options, warn=self._warn)
        self.source = Source(options)
        self.results = Results()
        self._every = every
        self._started = 0.0
        self._stopping = False
        self._comparer: t.Any = None
        self._expected: float | None = None
        self.tick: t.Callable[[], None] | None = None  # (a --workers process) called instead of a progress line
        destination = _destination(options.target)
        self._destination = destination
        self._host, self._base = destination.host_header, destination.base_path
        http_client = HttpClientSettings(ca_file=options.ca_file, accept_any_certificate=options.insecure)
        from .sender import _new_pool

        # every connection the concurrency opens stays open: a replay reuses them until its end
        settings = replace(MirrorSettings(), max_in_flight=options.concurrency,
                           keep_alive_connections=options.concurrency)  # fmt: skip
        try:
            self._pool = _new_pool(destination, settings, http_client)
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError: a CA file that is not PEM
            raise ReplayError(f"--ca-file {options.ca_file}: {getattr(err, 'strerror', None) or err}") from None
        if options.compare:
            from .compare.comparer import Comparer

            self._comparer = Comparer(options.compare_settings)

    def _warn(self, message: str) -> None:
        self._progress.write(("\r\033[K" if self._progress.isatty() else "") + f"wsgimirror replay: {message}\n")
        self._progress.flush()

    def run(self) -> dict[str, t.Any]:
        import gevent
        from gevent.pool import Pool

        options = self.options
        if self._progress.isatty():
            self._expected = plan(options)["expected_seconds"]
        pool = Pool(options.concurrency)
        pacer = Pacer(options)
        self._started = time.monotonic()
        reporter = gevent.spawn(self._report_progress)
        try:
            with _interrupts(self.stop):
                while not self._stopping:
                    requests = self.source.requests()
                    try:
                        if options.speed == 0 and not options.rate:
                            self._flood(requests)
                        else:
                            self._paced(requests, pacer, pool)
                    finally:
                        requests.close()
                    if not options.loop or self._out_of_time() or self.results.sent == 0:
                        break
                    pacer.restart()
                pool.join(timeout=options.timeout + 1)
                pool.kill(block=False)
        finally:
            reporter.kill(block=False)
            seconds = time.monotonic() - self._started
            self._pool.close()
            if self._comparer is not None:
                self._comparer.close()
        if self._progress.isatty():
            self._progress.write("\r\033[K")
            self._progress.flush()
        return self.summary(seconds)

    def _paced(self, requests: t.Iterator[Request], pacer: Pacer, pool: t.Any) -> None:
        """Each request at its time: a greenlet of ``pool`` sends it, so a slow answer delays no other."""
        import gevent

        options = self.options
        for request in requests:
            delay = self._started + pacer.next(request.timestamp) - time.monotonic()
            if options.duration is not None:
                delay = min(delay, self._started + options.duration - time.monotonic())
            if delay > 0:
                gevent.sleep(delay)
            if self._stopping or self._out_of_time():
                self.source.done(request)
                return
            pool.spawn(self._send, request)

    def _flood(self, requests: t.Iterator[Request]) -> None:
        """``--speed 0``: ``--concurrency`` greenlets, each sending the next request as soon as its last one is
        answered (no greenlet per request: at ten thousand a second, starting one is a fair share of the work)."""
        import gevent
        from gevent.lock import Semaphore

        reading = Semaphore()  # the source is one generator: one greenlet advances it at a time

        def take() -> Request | None:
            with reading:
                return next(requests, None)

        def sender() -> None:
            while not self._stopping and not self._out_of_time():
                request = take()
                if request is None:
                    return
                self._send(request)

        workers = [gevent.spawn(sender) for _ in range(self.options.concurrency)]
        try:
            gevent.joinall(workers)
        finally:
            gevent.killall(workers, block=True, timeout=self.options.timeout + 1)

    def stop(self) -> None:
        self._stopping = True

    def _out_of_time(self) -> bool:
        duration = self.options.duration
        return duration is not None and time.monotonic() - self._started >= duration

    def _send(self, request: Request) -> None:
        from .transport import exchange

        options, results = self.options, self.results
        host = request.host if options.original_host and request.host else self._host
        lines = "".join(f"{name}: {value}\r\n" for name, value in request.headers)
        # read as Latin-1, and the target is ASCII
        head = f"{request.method} {self._base}{request.target} HTTP/1.1\r\nHost: {host}\r\n{lines}\r\n".encode(
            "latin-1"
        )
        body = t.cast("BodyBuffer", _Body(request.body))
        kept = self._comparer.mirror_answer() if self._comparer is not None else None
        results.sent += 1
        began = time.monotonic()
        try:
            status = exchange(self._pool, head, body, request.method == "HEAD", min(options.timeout, 5.0),
                              options.timeout, True, kept)  # fmt: skip
        except Exception as err:
            failure = err if isinstance(err, MirrorSendError) else MirrorSendError("internal_error", repr(err))
            results.failed += 1
            results.failures[failure.reason] += 1
            if kept is not None:
                kept.release()  # a partial answer gives its bytes back; a failed request is not compared
                kept = None
        else:
            results.succeeded += 1
            results.statuses[str(status)] += 1
            results.latencies.add(time.monotonic() - began)
            if kept is not None:
                kept.elapsed = time.monotonic() - began
        finally:
            try:
                if kept is not None:
                    self._compare(request, head, kept)
            finally:
                self.source.done(request)

    def _compare(self, request: Request, head: bytes, replayed: Answer) -> None:
        from .compare.comparer import NO_ANSWER, request_record

        comparer = self._comparer
        environ = {"REQUEST_METHOD": request.method, "PATH_INFO": request.target.partition("?")[0]}
        endpoint = comparer.endpoint(environ)
        try:
            if request.recorded is None:
                comparer.skip(NOT_RECORDED, "replay", "target", endpoint)
            elif not replayed.complete:
                comparer.skip(NO_ANSWER, "replay", "target", endpoint)
            else:
                try:
                    recorded = parse_message(request.recorded.raw)
                except BadMessage:
                    comparer.skip(NOT_RECORDED, "replay", "target", endpoint)
                    return
                original = _answer(recorded, comparer)
                original.elapsed = request.recorded.latency / 1e9 if request.recorded.latency > 0 else 0.0
                body = request.body
                sent_host = head.split(b"\r\n", 2)[1][6:].decode("latin-1")  # the "Host: " line build sends
                made = MirrorMade([(request.host or None, sent_host)])  # an echo of the target's Host is not a change
                try:
                    comparer.compare("replay", "target", False, environ,
                                     lambda: request_record(head, lambda n: body.read(0, n), body.size),
                                     original, replayed, True, made=made)  # fmt: skip
                finally:
                    original.release()
                    recorded.release()
        finally:
            replayed.release()

    # -- progress and summary --------------------------------------------------------------------------

    def _report_progress(self) -> None:
        import gevent

        tty = self._progress.isatty()
        every = self._every or (0.5 if tty else 5.0)
        while True:
            gevent.sleep(every)
            if self.tick is not None:
                self.tick()
                continue
            self._progress.write(("\r\033[K" if tty else "") + self._progress_line() + ("" if tty else "\n"))
            self._progress.flush()

    def _progress_line(self) -> str:
        r = self.results
        return progress_line(r.sent, r.succeeded, r.failed, time.monotonic() - self._started,
                             self.options.duration if self.options.loop else self._expected)  # fmt: skip

    def summary(self, seconds: float) -> dict[str, t.Any]:
        r, source = self.results, self.source
        summary: dict[str, t.Any] = {
            "records": source.records,
            "sent": r.sent,
            "succeeded": r.succeeded,
            "failed": r.failed,
            "failures": dict(r.failures),
            "statuses": dict(sorted(r.statuses.items())),
            "skipped_malformed": source.skipped_malformed,
            "skipped_cut": source.cut,
            "skipped_unknown_type": source.counts.unknown_type,
            "malformed_examples": source.malformed,
            "filtered": source.filtered,
            "partial_files": source.counts.partial,
            "unreadable_files": source.counts.unreadable,
            "file_problems": source.counts.problems,
            "latency_ms": {"p50": r.latencies.percentile_ms(0.50), "p99": r.latencies.percentile_ms(0.99)}
            if r.succeeded
            else None,
            "seconds": round(seconds, 3),
            "rate": round(r.sent / seconds, 1) if r.sent and seconds > 0 else None,
            "answered_rate": round(r.succeeded / seconds, 1) if r.succeeded and seconds > 0 else None,
        }
        if self._comparer is not None:
            from .compare.report import endpoint_rows

            compare = self._comparer.snapshot()
            compare["regression"] = any(row["regression"] for row in endpoint_rows(self._comparer.report()))
            summary["compare"] = compare
        return summary


def progress_line(sent: int, succeeded: int, failed: int, elapsed: float, expected: float | None) -> str:
    line = (f"sent {sent}  succeeded {succeeded}  failed {failed}  "
            f"rate {sent / elapsed if elapsed else 0:.1f}/s  elapsed {elapsed:.0f}s")  # fmt: skip
    if expected is not None:
        line += f"  ETA {max(0.0, expected - elapsed):.0f}s"
    return line


class _Body:
    """A recorded body, a view over its payload, as the transport reads a captured one."""

    __slots__ = ("blob", "size")

    def __init__(self, blob: Blob) -> None:
        self.blob, self.size = blob, blob.size

    def in_memory(self) -> bytes:
        return self.blob.value()

    def chunks(self) -> t.Iterator[bytes]:
        return self.blob.chunks()


def _answer(message: Message, comparer: t.Any) -> Answer:
    """A recorded answer as the comparison engine takes it; a cut body makes it not comparable."""
    answer = Answer(comparer.settings.max_body_bytes, comparer.budget)
    _version, status, reason = message.start
    try:
        answer.status = int(status)
    except ValueError:
        answer.status = 0
    answer.status_text = f"{status} {reason}"
    answer.headers = list(message.headers)
    for piece in message.content.chunks():
        answer.feed(piece)
    answer.complete = answer.status != 0 and not message.cut
    return answer


def _destination(target: str) -> Destination:
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError as err:
        raise ReplayError(f"--target is not a valid URL: {err}") from None
    if not target.isascii():
        raise ReplayError(f"--target must be ASCII (percent-encode its path), got {target!r}")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ReplayError(f"--target must be http://HOST[:PORT][/BASE] or https://..., got {target!r}")
    if parts.query or parts.fragment:
        raise ReplayError(f"--target must not carry a query or fragment, got {target!r}")
    return Destination(
        name=target, address=target, scheme=scheme, host=parts.hostname,
        port=port or (443 if scheme == "https" else 80), base_path=parts.path.rstrip("/"),
    )  # fmt: skip


class _interrupts:
    """Ctrl-C and SIGTERM stop scheduling; the requests in flight end and the summary is printed."""

    def __init__(self, stop: t.Callable[[], None]) -> None:
        self._stop = stop
        self._handlers: list[t.Any] = []

    def __enter__(self) -> None:
        import signal

        import gevent

        for signum in (signal.SIGINT, signal.SIGTERM):
            self._handlers.append(gevent.signal_handler(signum, self._stop))

    def __exit__(self, *exc: t.Any) -> None:
        for handler in self._handlers:
            handler.cancel()


# -- dry run ----------------------------------------------------------------------------------------


def plan(options: Options) -> dict[str, t.Any]:
    """What a replay would send: counts per method and endpoint, and how long it would take."""
    source = Source(replace(options, compare=False))  # counting needs no recorded answer: none is parsed or kept
    endpoints = Endpoints(options.compare_settings.endpoints)
    methods: Counter[str] = Counter()
    by_endpoint: Counter[str] = Counter()
    pacer = Pacer(options)
    due = 0.0
    for request in source.requests():
        methods[request.method] += 1
        by_endpoint[endpoints.name(request.method, request.target.partition("?")[0])] += 1
        due = pacer.next(request.timestamp)
        source.done(request)
    count = sum(methods.values())
    expected = due  # at --speed 0 the pacer gives every request 0
    if options.loop and options.duration is not None:
        expected = options.duration
    elif options.duration is not None:
        expected = min(expected, options.duration)
    return {
        "records": source.records,
        "requests": count,
        "filtered": source.filtered,
        "skipped_malformed": source.skipped_malformed,
        "skipped_cut": source.cut,
        "skipped_unknown_type": source.counts.unknown_type,
        "unreadable_files": source.counts.unreadable,
        "methods": dict(methods.most_common()),
        "endpoints": dict(by_endpoint.most_common()),
        "expected_seconds": round(expected, 3),
    }


def _pacing(options: Options) -> str:
    if options.rate:
        return f"{options.rate:g}/s"
    if options.speed == 0:
        return "as fast as possible"
    capped = f", gaps capped at {options.max_wait:g}s" if options.max_wait is not None else ", recorded gaps kept"
    return f"speed {options.speed:g}{capped}"


def _not_sent(figures: dict[str, t.Any]) -> str:
    """What was read and not sent, only what happened: '2 malformed, 1 cut, 3 filtered out'."""
    parts = [(figures["skipped_malformed"], "malformed"), (figures["skipped_cut"], "cut (shorter than framed)"),
             (figures["skipped_unknown_type"], "of an unknown type"),
             (figures["filtered"], "filtered out")]  # fmt: skip
    return ", ".join(f"{count} {what}" for count, what in parts if count)


def plan_text(figures: dict[str, t.Any], options: Options) -> str:
    skipped = _not_sent(figures)
    lines = [
        f"{figures['requests']} requests to replay of {figures['records']} recorded"
        + (f" ({skipped})" if skipped else ""),
        f"expected duration: {figures['expected_seconds']:.1f}s ({_pacing(options)})",
        "",
        "by method:",
        *(f"  {count:>8}  {method}" for method, count in figures["methods"].items()),
        "by endpoint:",
        *(f"  {count:>8}  {name}" for name, count in figures["endpoints"].items()),
    ]
    return "\n".join(lines)


def summary_text(summary: dict[str, t.Any]) -> str:
    """The summary in a few lines, each about something that happened."""
    lines = [f"records {summary['records']}  sent {summary['sent']}  succeeded {summary['succeeded']}  "
             f"failed {summary['failed']}"]  # fmt: skip
    skipped = _not_sent(summary)
    if skipped:
        lines.append(f"not sent: {skipped}")
    if summary["failures"]:
        lines.append("failures: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["failures"].items())))
    if summary["statuses"]:
        lines.append("statuses: " + ", ".join(f"{k}: {v}" for k, v in summary["statuses"].items()))
    if summary["latency_ms"] is not None:
        lines.append(f"latency: p50 {summary['latency_ms']['p50']} ms, p99 {summary['latency_ms']['p99']} ms")
    if summary["sent"]:
        answered = f"{summary['succeeded']} answered at {summary['answered_rate']}/s" if summary["succeeded"] \
            else "none answered"  # fmt: skip
        lines.append(f"{summary['seconds']}s: {summary['sent']} sent at {summary['rate']}/s, {answered}")
    else:
        lines.append(f"{summary['seconds']}s: nothing sent")
    if summary["unreadable_files"]:
        lines.append(f"files skipped or damaged: {summary['unreadable_files']}")
        lines.extend(f"  {problem}" for problem in summary["file_problems"])
    if summary["partial_files"]:
        lines.append(f"files ending in a partial payload (ignored): {summary['partial_files']}")
    lines.extend(f"not sent, request {example}" for example in summary.get("malformed_examples", ()))
    if "compare" in summary:
        lines.extend(_compare_lines(summary["compare"]))
    return "\n".join(lines)


def _compare_lines(compare: dict[str, t.Any]) -> list[str]:
    """The comparison's totals, then each regressing endpoint with its fields and their rates."""
    from .compare.report import regressing_fields

    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(compare["skipped"].items())) or "none"
    lines = [f"compared {compare['compared']}: {compare['different']} different, skipped: {skipped}; "
             f"{'REGRESSION' if compare['regression'] else 'no regression'}"]  # fmt: skip
    for endpoint, row in compare.get("by_endpoint", {}).items():
        if row.get("regression"):
            lines.append(f"  {endpoint} regresses:")
            lines.extend(regressing_fields(row, "    "))
    return lines


def exit_status(summary: dict[str, t.Any]) -> int:
    """0 when every request sent got an answer, no file was skipped and nothing regressed; else 1."""
    if summary["sent"] == 0 or summary["failed"] or summary.get("unreadable_files"):
        return 1
    return 1 if summary.get("compare", {}).get("regression") else 0


def dumps(value: t.Any) -> str:
    return json.dumps(value, indent=2)
