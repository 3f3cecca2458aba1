"""Tee an answer: the status, headers and a bounded copy of the body, plus its length and SHA-256.

Used on both sides of a comparison. The app's answer is teed as the server iterates the
response (:class:`AnswerTee` wraps ``start_response`` and the iterable without changing a
byte, a chunk or ``len()``); a mirror's answer is filled by the transport as it parses it.
The body is kept up to ``Compare.MaxBodyBytes`` and within the process's
``Compare.MemoryBytes``; past either, only its length and hash are kept, so an answer of any
size is compared in bounded memory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import typing as t

from .body import UNLIMITED, CaptureBudget, Shared

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse


class Answer(Shared):
    """One side's answer to a request: complete once its body has been seen to the end."""

    __slots__ = (
        "status",
        "status_text",
        "headers",
        "body",
        "length",
        "_hash",
        "_limit",
        "_budget",
        "_taken",
        "complete",
        "invalid",
        "_initial_limit",
        "_prefix",
        "budget_refused",
        "_digest",
        "started",
        "elapsed",
    )

    def __init__(self, limit: int, budget: CaptureBudget, prefix: bool = False) -> None:
        self.status = 0
        self.status_text = ""  # the status line's text after the version, as the app gave it
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.length = 0
        self._hash = hashlib.sha256()
        self._limit = limit
        self._initial_limit = limit
        self._budget = budget
        self._taken = 0  # bytes of the budget this answer holds
        super().__init__()  # held by the request, then by each mirror comparing with it
        self.complete = False
        self.invalid = False  # a chunk that is not bytes went by
        self.budget_refused = False  # the body fitted MaxBodyBytes but Compare.MemoryBytes had no room for it
        self._digest: str | None = None  # the SHA-256 of an answer restored from its fields
        self.started = 0  # when the app started its answer (ns since the epoch; 0: unknown)
        self.elapsed = 0.0  # seconds the answer took: the app's from arrival to its end, a mirror's round trip
        # Past the limit, keep the first ``limit`` bytes (a recording cuts the body there) instead of none.
        self._prefix = prefix

    def feed(self, chunk: bytes) -> None:
        """Add body bytes: hashed and counted always, kept while within the limit and the budget.

        Anything but bytes (an app's bug the server will report) marks the answer as not comparable, and
        never raises here: the chunk reaches the server as the app gave it.
        """
        if not isinstance(chunk, (bytes, bytearray)):
            self.invalid = True
            return
        if not chunk:
            return
        self.length += len(chunk)
        self._hash.update(chunk)
        if self._limit < 0:
            return  # already over: only the hash and length from here on
        if self.length <= self._limit and self._budget.take_memory(len(chunk)):
            self._taken += len(chunk)
            self.body += chunk
            return
        room = min(self._limit - len(self.body), len(chunk))
        self.budget_refused = self.length <= self._limit
        self._limit = -1
        if not self._prefix:
            self._forget()
        elif room > 0 and self._budget.take_memory(room):
            self._taken += room
            self.body += chunk[:room]

    def restart(self) -> None:
        """Forget the body seen so far (the status and headers stay)."""
        self._forget()
        self.length = 0
        self._hash = hashlib.sha256()
        self._limit = self._initial_limit
        self.complete = False
        self.budget_refused = False

    @property
    def whole(self) -> bool:
        """The whole body is kept (else compare by length and hash)."""
        return self._limit >= 0

    @property
    def digest(self) -> str:
        return self._digest if self._digest is not None else self._hash.hexdigest()

    def fields(self) -> tuple[t.Any, ...]:
        """The answer as it crosses to the agent (``wsgimirror.agent.protocol.ANSWER_FIELDS``)."""
        return (self.status, self.status_text, [tuple(h) for h in self.headers], bytes(self.body), self.length,
                self.digest, self.whole, self.complete, self.budget_refused, self.started, self.elapsed)  # fmt: skip

    @classmethod
    def restore(cls, fields: tuple[t.Any, ...], limit: int, budget: CaptureBudget, fd: int | None = None) -> Answer:
        """An answer from :meth:`fields`, its kept body taken from ``budget`` again (or refused, as it would be).

        A spooled answer's body (``None`` in the fields) is read from ``fd``: hashed here when the app did not
        have to, and kept up to ``limit``.
        """
        status, status_text, headers, body, length, digest, whole, complete, budget_refused, started, elapsed = fields
        if body is None:  # spooled: the file holds the body's first bytes; the app hashed it only past the limit
            body = _read_spool(fd, min(length, limit))
            digest = digest or hashlib.sha256(body).hexdigest()
        answer = cls(max(limit, len(body)), budget, prefix=not whole)
        answer.status, answer.status_text, answer.headers = status, status_text, [tuple(h) for h in headers]
        if body and budget.take_memory(len(body)):
            answer._taken = len(body)
            answer.body = bytearray(body)
        elif body:
            answer.budget_refused = True
        if not whole or answer.budget_refused:
            answer._limit = -1
        answer.length, answer._digest, answer.complete = length, digest, complete
        answer.budget_refused = answer.budget_refused or budget_refused
        answer.started, answer.elapsed = started, elapsed
        return answer

    def header(self, name: str) -> str:
        """The first value of a header (case-insensitive), or ''."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), "")

    def _free(self) -> None:
        """The last holder is done: give the kept body's bytes back to the budget."""
        self._forget()

    def _forget(self) -> None:
        self.body = bytearray()
        if self._taken:
            self._budget.give_back(self._taken, 0)
            self._taken = 0


def _read_spool(fd: int | None, size: int) -> bytes:
    """The first ``size`` bytes of a spooled answer's file (which is closed here)."""
    if fd is None:
        return b""
    out = bytearray()
    try:
        while len(out) < size:
            piece = os.pread(fd, size - len(out), len(out))
            if not piece:
                break
            out += piece
    finally:
        os.close(fd)
    return bytes(out)


class SpooledAnswer(Answer):
    """The app's answer when an agent compares or records it: its body goes to an anonymous memory file, whose
    descriptor travels to the agent; the app neither keeps nor hashes it (the agent does both).

    The file holds at most the first ``limit`` bytes (``Compare.MaxBodyBytes``). Past them, the app hashes the
    whole body itself (reading the file's bytes back once), since only it sees every byte: the agent then
    compares by length and SHA-256, as it would have. A file that cannot be written leaves the answer not
    comparable, never the response.
    """

    __slots__ = ("_fd", "_spooled")

    def __init__(self, limit: int, prefix: bool = False) -> None:
        super().__init__(limit, UNLIMITED, prefix)
        self._fd = -1
        self._spooled = 0  # bytes in the file
        self._hash = None  # type: ignore[assignment]  # made past the limit only

    def feed(self, chunk: bytes) -> None:
        if not isinstance(chunk, (bytes, bytearray)):
            self.invalid = True
            return
        if not chunk:
            return
        self.length += len(chunk)
        room = self._initial_limit - self._spooled
        try:
            if room > 0:
                self._write(chunk[:room])
            if self.length > self._initial_limit:
                if self._hash is None:  # past the limit: from here the app hashes, from the body's first byte
                    self._hash = hashlib.sha256(os.pread(self._fd, self._spooled, 0) if self._spooled else b"")
                    self._hash.update(chunk[room:] if room > 0 else chunk)
                else:
                    self._hash.update(chunk)
        except OSError:
            self.invalid = True  # no room for the file: this answer is not compared, the response goes on

    def _write(self, data: bytes) -> None:
        if self._fd < 0:
            self._fd = _anonymous_file()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._spooled += len(data)

    def restart(self) -> None:
        self.length = self._spooled = 0
        self._hash = None  # type: ignore[assignment]
        self.complete = False
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)

    @property
    def whole(self) -> bool:
        return self.length <= self._initial_limit

    @property
    def digest(self) -> str:
        return self._hash.hexdigest() if self._hash is not None else ""

    def spool(self) -> int | None:
        """The file's descriptor (None when the body is empty)."""
        return self._fd if self._fd >= 0 else None

    def fields(self) -> tuple[t.Any, ...]:
        """As :meth:`Answer.fields`, the body ``None``: it is in the file that goes with the frame."""
        return (self.status, self.status_text, [tuple(h) for h in self.headers], None, self.length, self.digest,
                self.whole, self.complete and not self.invalid, False, self.started, self.elapsed)  # fmt: skip

    def _free(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _anonymous_file() -> int:
    """A file with no name, in memory when the system has ``memfd_create``."""
    try:
        return os.memfd_create("wsgimirror-answer", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        with tempfile.TemporaryFile(prefix="wsgimirror-answer-") as handle:
            return os.dup(handle.fileno())


class AnswerTee:
    """The app's side: wraps ``start_response`` (the last call wins, as for the server) and the response."""

    __slots__ = ("answer", "_start_response", "_iterations", "_written")

    def __init__(self, start_response: StartResponse, limit: int, budget: CaptureBudget, prefix: bool = False,
                 spool: bool = False) -> None:  # fmt: skip
        self.answer = SpooledAnswer(limit, prefix) if spool else Answer(limit, budget, prefix)
        self._start_response = start_response
        self._iterations = 0
        self._written = False  # the app used write(): those bytes come before the iterable's

    def start_response(
        self, status: str, headers: list[tuple[str, str]], *exc_info: t.Any
    ) -> t.Callable[[bytes], t.Any]:
        write = self._start_response(status, headers, *exc_info)
        answer = self.answer
        answer.started = time.time_ns()  # a recording stamps the answer with it, as GoReplay does
        answer.status_text = status if isinstance(status, str) else ""
        try:
            answer.status = int(status.split(None, 1)[0])
        except (ValueError, IndexError, AttributeError):
            answer.status = 0
        answer.headers = list(headers)

        def tee_write(data: bytes) -> t.Any:  # the legacy write() callable (PEP 3333)
            self._written = True
            result = write(data)
            answer.feed(data)
            return result

        return tee_write

    def iterate(self, result: t.Iterable[bytes]) -> t.Iterator[bytes]:
        """Yield the app's chunks unchanged, each as soon as the app gives it; the answer is complete at the end.

        A server may iterate a sized response more than once, even inside its own iteration: gevent
        sums the chunks' lengths for Content-Length while writing the first chunk. The body is that
        of the iteration started last, from its start; earlier ones go on yielding but feed nothing.
        """
        answer = self.answer
        self._iterations += 1
        mine = self._iterations
        if mine > 1:
            answer.restart()
        for chunk in result:
            if self._iterations == mine:
                answer.feed(chunk)
            yield chunk
        if self._iterations != mine:
            return  # a later iteration owns the answer
        # After write() and a second iteration the body seen is not the body sent: not compared.
        answer.complete = answer.status != 0 and not answer.invalid and not (self._written and mine > 1)
