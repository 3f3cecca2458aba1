"""Compare each mirror's answer with the app's, after its answer has arrived (in the agent, or in the app's
process in-process). One idea kept whole (over 400 lines): the comparison's run, its budgets and what it writes
and keeps of each result.

One :class:`Comparer` per middleware, shared by every configuration it loads (its counts
survive reloads; its settings come from the newest configuration). It hands the request
path an :class:`~wsgimirror.capture.answer.AnswerTee` for routes that compare, and does the rest
off the request path: the ``Compare.MaxPerSecond`` budget, building both trees, the field
diff, counting (:mod:`.analysis`), Prometheus, and the diff log (:mod:`.difflog`).
"""

from __future__ import annotations

import json
import logging
import time
import typing as t
from collections import deque

from ..capture.answer import Answer, AnswerTee
from ..capture.body import CaptureBudget
from ..config.model import CompareSettings
from ..util.green import new_lock, original
from ..util.logs import Throttled
from ..util.pid import current_pid
from ..util.text import clean
from .analysis import Analysis
from .diff import Difference, MirrorMade, compare
from .difflog import EXAMPLE_BODY_BYTES, DiffLogWriter, Report
from .endpoints import Endpoints
from .redact import Redactor
from .trees import Digest, comparable
from .verdicts import settings_of

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)
_failed = Throttled(log)

COMPARE_THREADS = 1  # native threads comparing answers, per process: the CPU is bounded by MaxPerSecond
KEPT_EXAMPLES = 500  # example records kept in memory for the live /compare page, Compare.Examples per field
SHOWN_VALUE_CHARS = 2048  # a differing value longer than this (as JSON) is cut in the diff log

# Why a mirror's answer was not compared.
BUDGET = "budget"  # over Compare.MaxPerSecond
NO_ANSWER = "no_answer"  # the mirror failed
NOT_CAPTURED = "not_captured"  # the app raised, or the client went away before the end of the answer
MEMORY_BUDGET = "memory_budget"  # Compare.MemoryBytes had no room for one side: never compared on unequal terms
ERROR = "internal_error"


class Comparer:
    def __init__(self, settings: CompareSettings, metrics: t.Any = None) -> None:
        self.analysis = Analysis()
        self._metrics = metrics
        self._lock = new_lock()
        self._second = 0
        self._in_second = 0
        self._next_counts = 0.0
        self._unwritten = False  # comparisons since the last counts record
        self._trailer_pid = -1  # the process whose trailing writer runs
        self._writer: DiffLogWriter | None = None
        self.budget = CaptureBudget(settings.memory_bytes)
        self._pool: t.Any = None  # a gevent ThreadPool, made on first use in each process
        self._pool_pid = -1
        self.kept = KeptExamples(KEPT_EXAMPLES)  # for the live page
        self.configure(settings)

    def configure(self, settings: CompareSettings, removed: frozenset[str] = frozenset(),
                  token: str | None = None) -> None:  # fmt: skip
        """Take a (re)loaded configuration's settings; the counts carry on.

        ``removed`` (``Mirror.RemoveHeaders``) and ``token`` (``Mirror.LoopToken``) never appear in an example.
        """
        self.settings = settings
        self.redactor = Redactor(removed, settings.sensitive_names, token)
        self.endpoints = Endpoints(settings.endpoints)
        self.budget.memory_limit = settings.memory_bytes
        old = self._writer
        if settings.log is None:
            self._writer = None
        elif old is None or old.template != settings.log or old.max_bytes != settings.log_max_bytes:
            self._writer = DiffLogWriter(settings.log, settings.log_max_bytes)
        if old is not None and old is not self._writer:
            old.close()

    # -- on the request path ------------------------------------------------------------------

    def tee(self, start_response: StartResponse, *, prefix: bool, spool: bool = False) -> AnswerTee:
        """Tee the app's answer; ``prefix``: past MaxBodyBytes keep the first bytes (a recording needs them);
        ``spool``: into a file for the agent, which compares it (see
        :class:`~wsgimirror.capture.answer.SpooledAnswer`)."""
        return AnswerTee(start_response, self.settings.max_body_bytes, self.budget, prefix, spool)

    def endpoint(self, environ: WSGIEnvironment) -> str:
        path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        return self.endpoints.name(str(environ.get("REQUEST_METHOD", "GET")), path)

    # -- in the mirror's greenlet --------------------------------------------------------------

    def mirror_answer(self) -> Answer:
        """An empty answer for the transport to fill."""
        return Answer(self.settings.max_body_bytes, self.budget)

    def admit(self) -> bool:
        """One more comparison this second, unless ``MaxPerSecond`` were already made."""
        now = int(time.monotonic())
        with self._lock:
            if now != self._second:
                self._second, self._in_second = now, 0
            if self._in_second >= self.settings.max_per_second:
                return False
            self._in_second += 1
            return True

    def skip(self, reason: str, route: str, cluster: str, endpoint: str) -> None:
        endpoint = self.analysis.skip(reason, endpoint)
        if self._metrics is not None:
            self._metrics.compared(route, cluster, endpoint, reason)

    def compare(
        self,
        route: str,
        cluster: str,
        baseline: bool,
        environ: WSGIEnvironment,
        request: t.Callable[[], Shown],
        app: Answer,
        mirror: Answer,
        cooperative: bool = False,
        has_baseline: bool = False,
        made: MirrorMade | None = None,
    ) -> None:
        """Compare and count one mirror's answer; ``request`` gives the request for an example. Never raises.

        ``cooperative``: called in a greenlet of gevent's loop (the gevent executor); the diff then runs
        in a native thread. ``has_baseline``: the route has a baseline cluster. ``made``: what the mirror
        changed in the request (by default, read from ``environ`` and the head ``request`` gives).
        """
        endpoint = self.endpoint(environ)
        try:
            if not app.complete:
                self.skip(NOT_CAPTURED, route, cluster, endpoint)
                return
            if app.budget_refused or mirror.budget_refused:
                self.skip(MEMORY_BUDGET, route, cluster, endpoint)
                return
            if not self.admit():
                self.skip(BUDGET, route, cluster, endpoint)
                return
            if made is None:
                made = mirror_made(environ, request()[0])
            differences = self._off_the_loop(
                cooperative, self._differences, environ.get("REQUEST_METHOD") == "HEAD", app, mirror, made
            )
            latency = (app.elapsed or None, mirror.elapsed or None)
            self._count(route, cluster, baseline, endpoint, differences, request, app, mirror, has_baseline,
                        latency)  # fmt: skip
        except Exception:
            _failed.warning("wsgimirror could not compare an answer of route %r", route, exc_info=True)
            self.skip(ERROR, route, cluster, endpoint)

    def _differences(self, head: bool, app: Answer, mirror: Answer, made: MirrorMade | None) -> list[Difference]:
        """The differences, on equal terms: when either body is known by its length and hash only (too large
        to keep, or to inflate), or is JSON nested past what can be walked, both are compared that way."""
        settings = self.settings
        ignore, limit, ordered = settings.ignore_headers, settings.max_body_bytes, settings.array_order == "ordered"
        a, b = comparable(app, ignore, head, limit), comparable(mirror, ignore, head, limit)
        if isinstance(a.body, Digest) != isinstance(b.body, Digest):
            a, b = (
                comparable(app, ignore, head, limit, digest=True),
                comparable(mirror, ignore, head, limit, digest=True),
            )
        try:
            return compare(a, b, ordered, settings.ignore_fields, settings.strict_types, made)
        except RecursionError:  # nested deeper than Python walks (some hundreds of levels): as bytes
            a, b = (
                comparable(app, ignore, head, limit, digest=True),
                comparable(mirror, ignore, head, limit, digest=True),
            )
            return compare(a, b, ordered, settings.ignore_fields, settings.strict_types, made)

    def _off_the_loop(
        self, cooperative: bool, work: t.Callable[..., list[Difference]], *args: t.Any
    ) -> list[Difference]:
        """Run the CPU-heavy part in a native thread when called in a greenlet, so that a large JSON
        answer (1 MiB takes about 60 to 150 ms) cannot hold the event loop that serves the real traffic;
        the loop gets the interpreter back at least every switch interval (5 ms), between C calls.
        In the thread executor the mirror already runs in a thread of its own."""
        if not cooperative:
            return work(*args)
        if self._pool_pid != current_pid():
            from gevent.threadpool import ThreadPool

            self._pool, self._pool_pid = ThreadPool(COMPARE_THREADS), current_pid()
        return t.cast("list[Difference]", self._pool.apply(work, args))

    def _count(
        self,
        route: str,
        cluster: str,
        baseline: bool,
        endpoint: str,
        differences: list[Difference],
        request: t.Callable[[], Shown],
        app: Answer,
        mirror: Answer,
        has_baseline: bool = False,
        latency: tuple[float | None, float | None] = (None, None),
    ) -> None:
        settings = self.settings
        pairs = [(d.field, d.kind) for d in differences]
        endpoint, counted, wanted = self.analysis.record(endpoint, baseline, pairs, settings.examples, has_baseline,
                                                         latency)  # fmt: skip
        if self._metrics is not None:
            self._metrics.compared(route, cluster, endpoint, "different" if differences else "same")
            source = "baseline" if baseline else "candidate"
            for field in dict.fromkeys(counted):
                self._metrics.field_difference(endpoint, field, source)
        if wanted:
            source = "baseline" if baseline else "candidate"
            example = self._example(endpoint, route, cluster, source, request, app, mirror, differences)
            if example is not None:
                self.kept.add(example, wanted)
                if self._writer is not None:
                    self._writer.write(example)
        if self._writer is not None:
            self._counts_due()

    def _example(
        self,
        endpoint: str,
        route: str,
        cluster: str,
        source: str,
        request: t.Callable[[], Shown],
        app: Answer,
        mirror: Answer,
        differences: list[Difference],
    ) -> dict[str, t.Any] | None:
        """The example record of a comparison already counted, or None (logged) when it cannot be shown:
        the comparison keeps its one outcome whatever its answers hold."""
        try:
            example = {
                "type": "example",
                "time": round(time.time(), 3),
                "endpoint": endpoint,
                "route": route,
                "cluster": cluster,
                "source": source,
                "request": self._shown_request(*request()),
                "app": self._shown_answer(app),
                "mirror": self._shown_answer(mirror),
                "differences": [self._shown_difference(d) for d in differences],
            }
            json.dumps(example, default=str)  # what the diff log will write: it must encode
        except (ValueError, TypeError, RecursionError) as err:
            _failed.warning("wsgimirror could not show an example of %s: %r", endpoint, err)
            return None
        return example

    def _shown_request(self, head: bytes, body: bytes, length: int) -> dict[str, t.Any]:
        """The request as the mirror received it (``Mirror.RemoveHeaders`` already applied), masked."""
        redactor = self.redactor
        lines = head.decode("latin-1").split("\r\n")
        method, target = (lines[0].split(" ") + ["", ""])[:2]
        headers = [(name, value) for name, _, value in (line.partition(": ") for line in lines[1:] if ": " in line)]
        return {"method": method, "target": redactor.text(target), "headers": redactor.headers(headers),
                **redactor.body(body, length)}  # fmt: skip

    def _shown_answer(self, answer: Answer) -> dict[str, t.Any]:
        redactor = self.redactor
        return {"status": answer.status, "headers": redactor.headers(answer.headers),
                **redactor.body(bytes(answer.body[:EXAMPLE_BODY_BYTES]), answer.length)}  # fmt: skip

    def _shown_difference(self, d: Difference) -> dict[str, t.Any]:
        redactor = self.redactor
        return {"field": clean(d.field), "kind": d.kind, "app": _capped(redactor.value(d.field, d.app)),
                "mirror": _capped(redactor.value(d.field, d.mirror))}  # fmt: skip

    def _counts_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next_counts:
                # a trailing writer writes it when the interval is over, so that a quiet period after a burst
                # never leaves the log behind
                start = not self._unwritten or self._trailer_pid != current_pid()
                self._unwritten, self._trailer_pid = True, current_pid()
                if start:
                    original("_thread", "start_new_thread")(self._trail, ())
                return
            self._next_counts = now + self.settings.log_seconds
            self._unwritten = False
        self.write_counts()

    def _trail(self) -> None:
        """Write the counts the last comparisons of a burst left unwritten, once ``LogSeconds`` is over. An OS
        thread that sleeps and touches no gevent object; it ends when it has written. After ``close()`` the
        diff log refuses its record."""
        sleep = original("time", "sleep")
        while True:
            sleep(max(0.001, self._next_counts - time.monotonic()))
            with self._lock:
                if not self._unwritten:
                    return
                if time.monotonic() < self._next_counts:
                    continue
                self._unwritten = False
                self._next_counts = time.monotonic() + self.settings.log_seconds
            self.write_counts()
            return

    def write_counts(self) -> None:
        writer = self._writer
        if writer is None:
            return
        endpoints, skipped = self.analysis.counts()
        writer.write(
            {
                "type": "counts",
                "time": round(time.time(), 6),
                "thresholds": settings_of(self.settings)._asdict(),
                "skipped": skipped,
                "by_endpoint": endpoints,
            }
        )

    def report(self) -> Report:
        """This process's results, shaped as ``wsgimirror report`` reads them from diff logs."""
        endpoints, skipped = self.analysis.counts()
        return Report(endpoints, self.kept.all(), settings_of(self.settings), 1, {}, skipped)

    def snapshot(self) -> dict[str, t.Any]:
        return self.analysis.snapshot(settings_of(self.settings))

    def close(self) -> None:
        self.write_counts()
        if self._writer is not None:
            self._writer.close()


Shown = t.Tuple[bytes, bytes, int]  # a request for an example: its head, its first body bytes, its length


class KeptExamples:
    """The examples the live page shows: those the diff log gets (``Compare.Examples`` per endpoint and field),
    at most ``limit`` in all; past it, the oldest of the endpoint and field holding the most goes, so that every
    endpoint and field keeps some."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = new_lock()
        self._by_key: dict[tuple[str, str], deque[dict[str, t.Any]]] = {}
        self._count = 0

    def add(self, example: dict[str, t.Any], fields: t.Sequence[str]) -> None:
        key = (str(example.get("endpoint", "")), fields[0] if fields else "")
        with self._lock:
            self._by_key.setdefault(key, deque()).append(example)
            self._count += 1
            while self._count > self.limit:
                fullest = max(self._by_key, key=lambda k: len(self._by_key[k]))
                self._by_key[fullest].popleft()
                if not self._by_key[fullest]:
                    del self._by_key[fullest]
                self._count -= 1

    def all(self) -> list[dict[str, t.Any]]:
        with self._lock:
            return sorted((e for kept in self._by_key.values() for e in kept), key=lambda e: e.get("time", 0))


def mirror_made(environ: WSGIEnvironment, head: bytes) -> MirrorMade:
    """What the mirror changed in the request: the original request's header values (from ``environ``) against
    those of the head it sent, header by header (added, removed or changed), ``Host`` included."""
    sent: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, colon, value = line.partition(":")
        if colon:
            sent.setdefault(name.strip().lower(), value.strip())
    original = {key[5:].replace("_", "-").lower(): str(value) for key, value in environ.items()
                if key.startswith("HTTP_") and isinstance(value, str)}  # fmt: skip
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        if environ.get(key):
            original[name] = str(environ[key])
    pairs = [(original.get(name), sent.get(name)) for name in original.keys() | sent.keys()]
    return MirrorMade(pairs)


def request_record(head: bytes, body: t.Callable[[int], bytes], length: int) -> Shown:
    """The request as the mirror received it: its head, the first bytes of its body, its length."""
    return head, body(EXAMPLE_BODY_BYTES), length


SHOWN_DEPTH = 32  # a value nested deeper is shown as its JSON text (cut like a long one)


def _capped(value: t.Any) -> t.Any:
    """A differing value as an example holds it: as it is when short and shallow, else its JSON text, cut."""
    try:
        text = json.dumps(value, default=str)
    except (ValueError, RecursionError):  # nested past the encoder's limit: shown by its type only
        return {"truncated": f"({type(value).__name__} nested too deeply to show)", "chars": 0}
    if len(text) <= SHOWN_VALUE_CHARS and _depth(text) <= SHOWN_DEPTH:
        return value
    return {"truncated": text[:SHOWN_VALUE_CHARS], "chars": len(text)}


def _depth(text: str) -> int:
    """The deepest nesting of a JSON text (brackets inside strings counted too: an upper bound)."""
    if text.count("[") + text.count("{") <= SHOWN_DEPTH:
        return 0
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest
