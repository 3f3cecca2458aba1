"""Step 2, tee: copy the request body as the app reads it, in memory and then in a temp file.

:class:`TeeInput` replaces ``wsgi.input``. It implements exactly the PEP 3333 input
methods (``read``, ``readline``, ``readlines``, ``__iter__``) plus a capturing
``readinto``, and never forwards unknown attributes, so no read can bypass the copy.
It never reads past ``CONTENT_LENGTH``; without one, it reads to the end only when
the server sets ``wsgi.input_terminated`` (as werkzeug's ``get_input_stream`` does),
and otherwise the body is empty.

:class:`BodyBuffer` keeps the first ``MemoryBodyBytes`` in memory and spills the rest
to an anonymous temporary file; past ``MaxBodyBytes`` it stops copying and marks the
body too large. It is shared by the mirrors of one request and closed by the last.
"""

from __future__ import annotations

import tempfile
import typing as t

from .stats import new_lock

DRAIN_CHUNK = 64 * 1024
SEND_CHUNK = 256 * 1024

# The outcomes of a capture that mean "do not mirror"; they are the stats' drop reasons.
TOO_LARGE = "body_too_large"
INCOMPLETE = "incomplete_body"
EXPECT_CONTINUE = "expect_continue"


class BodyBuffer:
    """The captured body: memory up to ``memory_limit`` bytes, the rest in a temp file."""

    __slots__ = ("size", "too_large", "_memory", "_file", "_memory_limit", "_max_size", "_refs", "_lock")

    def __init__(self, memory_limit: int, max_size: int) -> None:
        self.size = 0
        self.too_large = False
        self._memory = bytearray()
        self._file: t.BinaryIO | None = None
        self._memory_limit = memory_limit
        self._max_size = max_size
        self._refs = 1
        self._lock = new_lock()

    def write(self, data: bytes) -> None:
        if self.too_large or not data:
            return
        size = self.size + len(data)
        if size > self._max_size:
            self.too_large = True
            self._discard()
            return
        room = self._memory_limit - len(self._memory)
        if room >= len(data):
            self._memory += data
        else:
            view = memoryview(data)
            if room > 0:
                self._memory += view[:room]
            if self._file is None:
                self._file = t.cast(t.BinaryIO, tempfile.TemporaryFile(prefix="wsgimirror-"))
            self._file.write(view[max(room, 0) :])
        self.size = size

    @property
    def spilled(self) -> bool:
        """True when part of the body lives in a temporary file."""
        return self._file is not None

    def in_memory(self) -> bytes | None:
        """The whole body as bytes when it never spilled to disk, else None."""
        return None if self._file is not None else bytes(self._memory)

    def chunks(self, size: int = SEND_CHUNK) -> t.Iterator[bytes]:
        """The body from its start, in pieces of at most about ``size`` bytes; re-iterable."""
        if self._memory:
            yield bytes(self._memory)
        if self._file is not None:
            self._file.seek(0)
            while True:
                piece = self._file.read(size)
                if not piece:
                    return
                yield piece

    def retain(self) -> None:
        with self._lock:
            self._refs += 1

    def release(self) -> None:
        """Drop one reference; the last one frees the memory and removes the temp file."""
        with self._lock:
            self._refs -= 1
            last = self._refs == 0
        if last:
            self._discard()

    def _discard(self) -> None:
        self._memory = bytearray()
        if self._file is not None:
            self._file.close()
            self._file = None


class TeeInput:
    """A ``wsgi.input`` that copies every byte the app reads into a :class:`BodyBuffer`."""

    __slots__ = ("buffer", "read_called", "failed", "_stream", "_remaining", "_eof")

    def __init__(self, stream: t.Any, length: int | None, terminated: bool, buffer: BodyBuffer) -> None:
        self.buffer = buffer
        self.read_called = False  # True once the inner stream was read (gevent sends 100 Continue then)
        self.failed = False  # True when the inner stream raised or ended before CONTENT_LENGTH
        self._stream = stream
        # Bytes left to read; None means "read until the stream says EOF".
        self._remaining: int | None = length if length is not None else (None if terminated else 0)
        self._eof = self._remaining == 0

    # -- the PEP 3333 input interface -------------------------------------------------------

    def read(self, size: int | None = -1) -> bytes:
        size = self._bounded(size)
        if size == 0:
            return b""
        return self._took(self._call(self._stream.read, size))

    def readline(self, size: int | None = -1) -> bytes:
        size = self._bounded(size)
        if size == 0:
            return b""
        return self._took(self._call(self._stream.readline, size))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> t.Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def readinto(self, target: t.Any) -> int:
        view = memoryview(target).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    # -- used by the middleware when the response is done ------------------------------------

    def drain(self) -> None:
        """Read what the app left unread, stopping early when the buffer gave up (too large)."""
        try:
            while not self._eof and not self.failed and not self.buffer.too_large:
                if not self.read(DRAIN_CHUNK):
                    return
        except Exception:  # the inner stream's own error (client gone, bad chunk): already marked
            return

    def outcome(self, expect_continue: bool) -> str | None:
        """None when the whole body was captured, else the drop reason."""
        if expect_continue and not self.read_called and not self._eof:
            return EXPECT_CONTINUE
        self.drain()
        if self.buffer.too_large:
            return TOO_LARGE
        if self.failed or not self._eof:
            return INCOMPLETE
        return None

    # -- internals ---------------------------------------------------------------------------

    def _bounded(self, size: int | None) -> int | None:
        """The size to ask the inner stream for: never past the body's end; None means all."""
        if size is None:
            return self._remaining
        if not isinstance(size, int):
            raise TypeError(f"size must be an integer, got {type(size).__name__}")
        if size < 0:
            return self._remaining
        return size if self._remaining is None else min(size, self._remaining)

    def _call(self, method: t.Callable[..., bytes], size: int | None) -> bytes:
        self.read_called = True
        try:
            return method() if size is None else method(size)
        except Exception:
            self.failed = True
            raise

    def _took(self, data: bytes) -> bytes:
        self.buffer.write(data)
        if self._remaining is None:
            self._eof = not data
        else:
            self._remaining -= len(data)
            if not data:
                self.failed = True  # the stream ended before CONTENT_LENGTH: a truncated body
            self._eof = self._remaining <= 0
        return data
