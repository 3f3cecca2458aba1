"""What ``wsgimirror replay`` sends and when: its options, the recorded requests read from files, globs or
directories in GoReplay's order (:class:`Source`), and the pacing (:class:`Pacer`).

What is never sent: a malformed payload, a request whose message is cut (its body shorter than its framing
says: GoReplay cuts payloads at its copy buffer), and what the filters leave out; each is counted. The
mirror's mark (``X-Mirrored-By``) is removed unless ``--keep-mirror-mark``: a replay is not a loop.
"""

from __future__ import annotations

import os
import re
import typing as t
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from ..capture.answer import Answer
from ..config.model import CompareSettings
from ..send.head import MARK_HEADER
from ..util.paths import NoMatch
from ..util.paths import expand as expand_patterns
from ..util.syntax import CONTROL, is_token, origin_form
from .blob import Blob
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

if t.TYPE_CHECKING:
    pass

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
    claims: Claims | None = None  # (--workers, --speed 0) instead of share: the blocks this process claims


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


class Claims:
    """The requests of a flood (``--workers`` with ``--speed 0``) handed out to the worker processes in blocks,
    first come, first served: a worker on a busier core, or held by a slow answer, sends fewer, and none
    waits for another's share. Made before the fork; every worker reads the same requests in the same order
    and sends those of the blocks it claimed (see :meth:`Source._mine`)."""

    BLOCK = 16  # requests per claim: one lock taken per 16 requests, and little left waiting behind a slow one
    LOCK_SECONDS = 5.0

    def __init__(self) -> None:
        import multiprocessing

        # the fork context whatever the default start method (Python 3.14's is forkserver): the semaphore is
        # unlinked at once, and no resource tracker process is started
        fork = multiprocessing.get_context("fork")
        self._next = fork.RawValue("q", 0)  # shared memory, inherited by the fork
        self._lock = fork.Lock()

    def take(self) -> int:
        """The first ordinal of the next block no worker has claimed.

        The lock is held for two memory accesses; one not had within ``LOCK_SECONDS`` was left held by a worker
        killed there (SIGKILL): the replay fails rather than hang."""
        if not self._lock.acquire(timeout=self.LOCK_SECONDS):
            raise ReplayError("a worker was killed while claiming requests: the others cannot go on")
        try:
            start = self._next.value
            self._next.value = start + self.BLOCK
        finally:
            self._lock.release()
        return int(start)


def expand(patterns: t.Sequence[str]) -> list[str]:
    """The files named, matched by a glob, or held by a directory (its recordings, see
    :func:`~wsgimirror.record.gor.directory_files`); a name that is missing, or a directory with no recording,
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
        self.passes = 0  # passes over the files begun (more than one with --loop)
        self.records = 0  # requests read (of this process's share)
        self._ordinal = 0  # request payloads seen, shared or not
        self._claimed = (0, 0)  # (--workers, --speed 0) the block of ordinals this process claimed last
        self.filtered = 0
        self.bad = 0  # request payloads whose message is not HTTP
        self.cut = 0  # requests whose body is shorter than their framing says
        self.malformed: list[str] = []  # "<id>: <why>" of the first few
        self.pending: dict[str, Request] = {}  # (--compare) requests read and not yet done, by id
        self.early: OrderedDict[str, Payload] = OrderedDict()  # (--compare) answers read before their request

    @property
    def seen(self) -> int:
        """Request payloads read, this process's or not."""
        return self._ordinal

    @property
    def skipped_malformed(self) -> int:
        return self.counts.malformed + self.bad

    def requests(self) -> t.Generator[Request, None, None]:
        """One pass over the files (again for each ``--loop``); when comparing, a little ahead for the answers.

        Each request is the caller's to :meth:`done` once sent (or not).
        """
        ahead: deque[Request] = deque()
        lookahead = LOOKAHEAD if self.options.compare else 0
        # a --loop's later passes read the same files: what they find of the files is added once (see again)
        counts = self.counts if not self.passes else ReadCounts()
        self.passes += 1
        payloads = merged(self.options.paths, counts, self.options.read_depth)
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
            if counts is not self.counts:
                self.counts.again(counts)

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
        """Whether the next request payload is this process's to send (``--workers``: every n-th one, or those of
        the blocks it claims). A block is claimed when the last one is passed; blocks are claimed in order by
        all, so the next begins at or after the ordinal that asks for it, and those between are another's."""
        ordinal = self._ordinal
        self._ordinal += 1
        claims = self.options.claims
        if claims is not None:
            if ordinal >= self._claimed[1]:
                start = claims.take()
                self._claimed = (start, start + claims.BLOCK)
            return ordinal >= self._claimed[0]
        index, count = self.options.share
        return count == 1 or ordinal % count == index

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
    fields = message.headers
    why = _bad_header(fields)
    if why is not None:
        raise BadMessage(why)
    headers = [(name, value) for name, value in fields if _sent(name.lower(), keep_mark)]
    if message.header("Content-Length") or message.header("Transfer-Encoding") or message.content.size:
        headers.append(("Content-Length", str(message.content.size)))
    return Request(payload, message, method, reduced, headers)


def _bad_header(fields: list[tuple[str, str]]) -> str | None:
    """Why the first header that cannot be sent as recorded cannot, or None.

    Names that are all tokens joined are one token, and values without a control byte joined have none (a
    message's values never hold a line break: it is split on them), so the common case is checked at once.
    """
    names = "".join([name for name, _ in fields])
    if (not names or is_token(names)) and not CONTROL.search("".join([value for _, value in fields])):
        return None
    for name, value in fields:
        if not is_token(name):
            return f"{name!r} is not a header name"
        if CONTROL.search(value):
            return f"the {name} header holds control characters"
    return None


def _sent(lower: str, keep_mark: bool) -> bool:
    """Whether a recorded header (its name in lower case) is sent again."""
    return lower not in SKIPPED and not lower.startswith("proxy-") and (keep_mark or lower != MARK_HEADER)


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
    status = message.start[1]
    try:
        answer.status = int(status)
    except ValueError:
        answer.status = 0
    answer.headers = list(message.headers)
    for piece in message.content.chunks():
        answer.feed(piece)
    answer.complete = answer.status != 0 and not message.cut
    return answer
