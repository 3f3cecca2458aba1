"""``wsgimirror replay``: play GoReplay files (ours or GoReplay's) back to a target, paced, and compare.

Requests (type 1) are read from one or more files merged by timestamp and sent through the
mirrors' transport with their recorded method, target, headers and de-chunked body. The
recorded pacing is kept, scaled by ``--speed`` (0: as fast as ``--concurrency`` allows), or a
fixed ``--rate`` replaces it; a gap in the recording waits at most ``--max-wait``. With
``--compare`` each answer is compared with the recorded one (type 2, same id) by the comparison
engine, so a recording made on Friday becomes a regression check of the candidate in CI.

The command runs under gevent (the CLI monkey-patches before importing this module).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import typing as t
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from ._paths import NoMatch
from ._paths import expand as expand_patterns
from .compare.endpoints import Endpoints
from .config import CompareSettings, Destination, HttpClientSettings, MirrorSettings
from .errors import MirrorSendError
from .gor import REQUEST, RESPONSE, BadMessage, Message, Payload, ReadCounts, merged, parse_message
from .response import Answer
from .syntax import field_value, is_token, origin_form

if t.TYPE_CHECKING:
    from .capture import BodyBuffer

# Headers a replay never copies: hop-by-hop ones, Expect, and those it sets itself.
SKIPPED = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect",
     "host", "content-length"}
)  # fmt: skip
LOOKAHEAD = 256  # requests read ahead of the one being sent, so that their answers (type 2) are seen first
KEPT_ANSWERS = 4096  # recorded answers waiting for their request to be replayed
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
    max_wait: float = 1.0
    loop: bool = False
    duration: float | None = None
    concurrency: int = 64
    timeout: float = 5.0
    original_host: bool = False
    methods: frozenset[str] = frozenset()
    path_filter: re.Pattern[str] | None = None
    compare: bool = False
    compare_settings: CompareSettings = field(default_factory=CompareSettings)
    ca_file: str | None = None
    insecure: bool = False


@dataclass
class Request:
    id: str
    timestamp: int
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    host: str


def expand(patterns: t.Sequence[str]) -> list[str]:
    """The files named or matched, each checked readable now (a clear error instead of a late one)."""
    try:
        paths = expand_patterns(patterns)
    except NoMatch as err:
        raise ReplayError(f"no file matches {str(err)!r}") from None
    for path in paths:
        if os.path.isdir(path):
            raise ReplayError(f"{path}: is a directory")
        try:
            with open(path, "rb") as fh:
                magic = fh.read(2)
        except OSError as err:
            raise ReplayError(f"{path}: {err.strerror or err}") from err
        if path.endswith(".gz") and magic and magic != b"\x1f\x8b":
            raise ReplayError(f"{path}: not a gzip file")
    return paths


class Source:
    """The requests of the recording, filtered, with the recorded answers kept for comparison."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.counts = ReadCounts()
        self.records = 0  # requests read
        self.filtered = 0
        self.bad = 0  # request payloads whose message is not HTTP
        self.malformed: list[str] = []  # "<id>: <why>" of the first few
        self.answers: OrderedDict[str, Message] = OrderedDict()

    @property
    def skipped_malformed(self) -> int:
        return self.counts.malformed + self.bad

    def requests(self) -> t.Iterator[Request]:
        """One pass over the files (again for each ``--loop``), reading a little ahead for the answers."""
        ahead: deque[Request] = deque()
        for payload in merged(self.options.paths, self.counts):
            request = self._take(payload)
            if request is not None:
                ahead.append(request)
            if len(ahead) > LOOKAHEAD:
                yield ahead.popleft()
        yield from ahead

    def _take(self, payload: Payload) -> Request | None:
        if payload.kind == RESPONSE and self.options.compare:
            try:
                self.answers[payload.id] = parse_message(payload.message)
            except BadMessage:
                return None
            while len(self.answers) > KEPT_ANSWERS:
                self.answers.popitem(last=False)
            return None
        if payload.kind != REQUEST:
            return None
        self.records += 1
        try:
            message = parse_message(payload.message)
            request = _request(payload, message)
        except BadMessage as err:
            self.bad += 1
            if len(self.malformed) < MALFORMED_EXAMPLES:
                self.malformed.append(f"{payload.id}: {err}")
            return None
        options = self.options
        if (options.methods and request.method not in options.methods) or (
            options.path_filter is not None and not options.path_filter.search(request.target)
        ):
            self.filtered += 1
            return None
        return request


def _request(payload: Payload, message: Message) -> Request:
    method, target, version = message.start
    if not is_token(method) or not version.startswith("HTTP/"):
        raise BadMessage(f"not a request line: {method!r} {target!r}")
    reduced = origin_form(target)
    if reduced is None:
        raise BadMessage(f"the target is neither origin nor absolute form: {target!r}")
    target = reduced
    headers = []
    for name, value in message.headers:
        if not is_token(name):
            raise BadMessage(f"{name!r} is not a header name")
        cleaned = field_value(value)
        if cleaned is None:
            raise BadMessage(f"the {name} header holds control characters")
        if name.lower() not in SKIPPED and not name.lower().startswith("proxy-"):
            headers.append((name, cleaned))
    framed = bool(message.header("Content-Length") or message.header("Transfer-Encoding"))
    if framed or message.body:
        headers.append(("Content-Length", str(len(message.body))))
    return Request(payload.id, payload.timestamp, method, target, headers, message.body, message.header("Host"))


# -- pacing -----------------------------------------------------------------------------------------


class Pacer:
    """When each request is due, in seconds from the start, from the recording's timestamps or a rate."""

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
        if self._previous is not None and options.speed > 0:
            gap = min(max(0.0, (timestamp - self._previous) / 1e9), options.max_wait)
            self._due += gap / options.speed
        self._previous = timestamp
        return self._due

    def restart(self) -> None:
        """A ``--loop`` starts over: the first request of the new pass follows the last one at once."""
        self._previous = None


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class Results:
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


class Replay:
    def __init__(self, options: Options, progress: t.TextIO | None = None, every: float | None = None) -> None:
        """``progress``: where the progress line goes (stderr), redrawn ``every`` seconds (0.5 on a
        terminal) or printed as a line of its own (every 5 s otherwise)."""
        self.options = options
        self.source = Source(options)
        self.results = Results()
        self._progress = progress if progress is not None else sys.stderr
        self._every = every
        self._started = 0.0
        self._stopping = False
        self._comparer: t.Any = None
        self._expected: float | None = None
        destination = _destination(options.target)
        self._destination = destination
        http_client = HttpClientSettings(ca_file=options.ca_file, accept_any_certificate=options.insecure)
        from .sender import _new_pool

        settings = replace(MirrorSettings(), max_in_flight=options.concurrency)
        try:
            self._pool = _new_pool(destination, settings, http_client)
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError: a CA file that is not PEM
            raise ReplayError(f"--ca-file {options.ca_file}: {getattr(err, 'strerror', None) or err}") from None
        if options.compare:
            from .compare.comparer import Comparer

            self._comparer = Comparer(options.compare_settings)

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
                    for request in self.source.requests():
                        delay = self._started + pacer.next(request.timestamp) - time.monotonic()
                        if options.duration is not None:
                            delay = min(delay, self._started + options.duration - time.monotonic())
                        if delay > 0:
                            gevent.sleep(delay)
                        if self._stopping or self._out_of_time():
                            break
                        pool.spawn(self._send, request)
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

    def stop(self) -> None:
        self._stopping = True

    def _out_of_time(self) -> bool:
        duration = self.options.duration
        return duration is not None and time.monotonic() - self._started >= duration

    def _send(self, request: Request) -> None:
        from .transport import exchange

        options, results = self.options, self.results
        host = request.host if options.original_host and request.host else self._destination.host_header
        lines = [f"{request.method} {self._destination.base_path}{request.target} HTTP/1.1", f"Host: {host}"]
        lines.extend(f"{name}: {value}" for name, value in request.headers)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")  # read as Latin-1, and the target is ASCII
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
            results.latencies.append(time.monotonic() - began)
        finally:
            if kept is not None:
                self._compare(request, head, kept)

    def _compare(self, request: Request, head: bytes, replayed: Answer) -> None:
        from .compare.comparer import NO_ANSWER, request_record

        comparer = self._comparer
        environ = {"REQUEST_METHOD": request.method, "PATH_INFO": request.target.partition("?")[0]}
        endpoint = comparer.endpoint(environ)
        try:
            recorded = self.source.answers.pop(request.id, None)
            if recorded is None:
                comparer.skip(NOT_RECORDED, "replay", "target", endpoint)
            elif not replayed.complete:
                comparer.skip(NO_ANSWER, "replay", "target", endpoint)
            else:
                original = _answer(recorded, comparer)
                try:
                    comparer.compare("replay", "target", False, environ,
                                     lambda: request_record(head, lambda n: request.body[:n], len(request.body)),
                                     original, replayed, True)  # fmt: skip
                finally:
                    original.release()
        finally:
            replayed.release()

    # -- progress and summary --------------------------------------------------------------------------

    def _report_progress(self) -> None:
        import gevent

        tty = self._progress.isatty()
        every = self._every or (0.5 if tty else 5.0)
        while True:
            gevent.sleep(every)
            self._progress.write(("\r\033[K" if tty else "") + self._progress_line() + ("" if tty else "\n"))
            self._progress.flush()

    def _progress_line(self) -> str:
        r = self.results
        elapsed = time.monotonic() - self._started
        line = (f"sent {r.sent}  succeeded {r.succeeded}  failed {r.failed}  "
                f"rate {r.sent / elapsed if elapsed else 0:.1f}/s  elapsed {elapsed:.0f}s")  # fmt: skip
        expected = self.options.duration if self.options.loop else self._expected
        if expected is not None:
            line += f"  ETA {max(0.0, expected - elapsed):.0f}s"
        return line

    def summary(self, seconds: float) -> dict[str, t.Any]:
        r = self.results
        latencies = sorted(r.latencies)
        summary: dict[str, t.Any] = {
            "records": self.source.records,
            "sent": r.sent,
            "succeeded": r.succeeded,
            "failed": r.failed,
            "failures": dict(r.failures),
            "statuses": dict(sorted(r.statuses.items())),
            "skipped_malformed": self.source.skipped_malformed,
            "malformed_examples": self.source.malformed,
            "filtered": self.source.filtered,
            "partial_files": self.source.counts.partial,
            "latency_ms": {"p50": _percentile_ms(latencies, 0.50), "p99": _percentile_ms(latencies, 0.99)},
            "seconds": round(seconds, 3),
            "rate": round(r.sent / seconds, 1) if seconds > 0 else 0.0,
        }
        if self._comparer is not None:
            from .compare.report import endpoint_rows

            compare = self._comparer.snapshot()
            compare["regression"] = any(row["regression"] for row in endpoint_rows(self._comparer.report()))
            summary["compare"] = compare
        return summary


class _Body:
    """A recorded body, already in memory, as the transport reads a captured one."""

    __slots__ = ("data", "size")

    def __init__(self, data: bytes) -> None:
        self.data, self.size = data, len(data)

    def in_memory(self) -> bytes:
        return self.data

    def chunks(self) -> t.Iterator[bytes]:
        yield self.data


def _percentile_ms(samples: list[float], q: float) -> float:
    if not samples:
        return 0.0
    return round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1000, 3)


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
    answer.feed(message.body)
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
        "methods": dict(methods.most_common()),
        "endpoints": dict(by_endpoint.most_common()),
        "expected_seconds": round(expected, 3),
    }


def plan_text(figures: dict[str, t.Any], options: Options) -> str:
    pacing = (f"{options.rate:g}/s" if options.rate else "as fast as possible" if options.speed == 0
              else f"speed {options.speed:g}, gaps capped at {options.max_wait:g}s")  # fmt: skip
    lines = [
        f"{figures['requests']} requests to replay of {figures['records']} recorded "
        f"({figures['filtered']} filtered out, {figures['skipped_malformed']} malformed)",
        f"expected duration: {figures['expected_seconds']:.1f}s ({pacing})",
        "",
        "by method:",
        *(f"  {count:>8}  {method}" for method, count in figures["methods"].items()),
        "by endpoint:",
        *(f"  {count:>8}  {name}" for name, count in figures["endpoints"].items()),
    ]
    return "\n".join(lines)


def summary_text(summary: dict[str, t.Any]) -> str:
    failures = ", ".join(f"{k} {v}" for k, v in sorted(summary["failures"].items())) or "none"
    statuses = ", ".join(f"{k}: {v}" for k, v in summary["statuses"].items()) or "none"
    lines = [
        f"records {summary['records']}  sent {summary['sent']}  succeeded {summary['succeeded']}  "
        f"failed {summary['failed']}  malformed {summary['skipped_malformed']}  filtered {summary['filtered']}",
        f"failures: {failures}",
        f"statuses: {statuses}",
        f"latency: p50 {summary['latency_ms']['p50']} ms, p99 {summary['latency_ms']['p99']} ms",
        f"{summary['seconds']}s at {summary['rate']}/s",
        *(f"not sent, request {example}" for example in summary.get("malformed_examples", ())),
    ]
    if "compare" in summary:
        compare = summary["compare"]
        lines.append(
            f"compared {compare['compared']}: {compare['different']} different, skipped "
            f"{sum(compare['skipped'].values())}; {'REGRESSION' if compare['regression'] else 'no regression'}"
        )
    return "\n".join(lines)


def exit_status(summary: dict[str, t.Any]) -> int:
    if summary["sent"] == 0 or summary["failed"]:
        return 1
    return 1 if summary.get("compare", {}).get("regression") else 0


def dumps(value: t.Any) -> str:
    return json.dumps(value, indent=2)
