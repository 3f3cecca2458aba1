"""``wsgimirror replay``: play GoReplay files (ours or GoReplay's) back to a target, paced, and compare.

Requests (type 1) are read from files, globs or directories, merged by timestamp as GoReplay merges them
(see :mod:`.gor`), and sent through the mirrors' transport with their recorded method, target, headers and
de-chunked body. The recorded pacing is kept, scaled by ``--speed`` (0: as fast as ``--concurrency``
allows), or a fixed ``--rate`` replaces it; ``--max-wait`` caps a gap when asked. With ``--compare`` each
answer is compared with the recorded one (type 2, same id) by the comparison engine, so a recording made
on Friday becomes a regression check of the candidate in CI.

What is sent is read by :mod:`.source`; the plan and the summary are written by :mod:`.summary`.

Memory is bounded whatever the files hold: a payload keeps at most 32 KiB in memory (the rest waits in a
temporary file), and the replay holds at most the read window, the look-ahead for recorded answers and the
requests in flight; with ``--compare``, each answer compared keeps at most ``Compare.MaxBodyBytes``.

The command runs under gevent (the CLI monkey-patches before importing this module).
"""

from __future__ import annotations

import random
import sys
import time
import typing as t
from array import array
from collections import Counter
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from ..capture.answer import Answer
from ..compare.diff import MirrorMade
from ..config.model import Destination, HttpClientSettings, MirrorSettings
from ..errors import MirrorSendError
from ..send.transport import Lane, exchange
from .gor import BadMessage, parse_message

if t.TYPE_CHECKING:
    from ..capture.body import BodyBuffer
from .source import NOT_RECORDED, Options, Pacer, ReplayError, Request, Source, _answer, _Body
from .summary import plan

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
        self._host, self._base = destination.host_header, destination.base_path
        http_client = HttpClientSettings(ca_file=options.ca_file, accept_any_certificate=options.insecure)
        from ..send.pools import connection_pool

        # every connection the concurrency opens stays open: a replay reuses them until its end
        settings = replace(MirrorSettings(), max_in_flight=options.concurrency,
                           keep_alive_connections=options.concurrency)  # fmt: skip
        try:
            self._pool = connection_pool(destination, settings, http_client)
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError: a CA file that is not PEM
            raise ReplayError(f"--ca-file {options.ca_file}: {getattr(err, 'strerror', None) or err}") from None
        if options.compare:
            from ..compare.comparer import Comparer

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
                    if not options.loop or self._out_of_time() or self._sends_nothing():
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
        answered, on a connection of its own (a :class:`~wsgimirror.send.transport.Lane`). No greenlet per
        request and no pool between requests: at ten thousand a second, each is a fair share of the work."""
        import gevent
        from gevent.lock import Semaphore

        reading = Semaphore()  # the source is one generator: one greenlet advances it at a time
        failed: list[Exception] = []  # what stopped the reading, raised once the senders are done

        def take() -> Request | None:
            with reading:
                try:
                    return next(requests, None)  # None too once it raised: a generator that raised is done
                except Exception as err:  # as the paced replay would raise it, and no sender's own traceback
                    failed.append(err)
                    return None

        def sender() -> None:
            lane = Lane(self._pool)
            try:
                while not self._stopping and not self._out_of_time():
                    request = take()
                    if request is None:
                        return
                    self._send(request, lane)
            finally:
                lane.close()

        workers = [gevent.spawn(sender) for _ in range(self.options.concurrency)]
        try:
            gevent.joinall(workers)
        finally:
            gevent.killall(workers, block=True, timeout=self.options.timeout + 1)
        if failed:
            raise failed[0]

    def _sends_nothing(self) -> bool:
        """Whether a ``--loop`` would go round without sending: the recording has no request, or this process
        took some and sent none (all filtered, cut or malformed). A worker that has taken none yet, the others
        having claimed them all, goes on: its blocks come in a later pass."""
        source = self.source
        return self.results.sent == 0 and (source.records > 0 or source.seen == 0)

    def stop(self) -> None:
        self._stopping = True

    def _out_of_time(self) -> bool:
        duration = self.options.duration
        return duration is not None and time.monotonic() - self._started >= duration

    def _send(self, request: Request, lane: Lane | None = None) -> None:
        """Send one request, through ``lane`` when given, else through the pool; count and compare its answer."""
        options, results = self.options, self.results
        host = request.host if options.original_host and request.host else self._host
        # read as Latin-1, and the target is ASCII
        head = "\r\n".join([f"{request.method} {self._base}{request.target} HTTP/1.1", f"Host: {host}",
                             *map(": ".join, request.headers), "", ""]).encode("latin-1")  # fmt: skip
        body = t.cast("BodyBuffer", _Body(request.body)) if request.body.size else None
        kept = self._comparer.mirror_answer() if self._comparer is not None else None
        results.sent += 1
        began = time.monotonic()
        try:
            status = exchange(lane or self._pool, head, body, request.method == "HEAD", min(options.timeout, 5.0),
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
        from ..compare.comparer import NO_ANSWER, request_record

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
            from ..compare.report import endpoint_rows

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
