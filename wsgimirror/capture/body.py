"""Step 2, tee: copy the request body as the app reads it, in memory and then in a temp file. One idea kept whole
(over 400 lines): the buffer and the two tees share the budgets' accounting.

:class:`TeeInput` replaces ``wsgi.input``. It implements exactly the PEP 3333 input
methods (``read``, ``readline``, ``readlines``, ``__iter__``) plus a capturing
``readinto``, and never forwards unknown attributes, so no read can bypass the copy.
When the server's input is seekable (waitress buffers the body before calling the app; WebOb
marks a seekable input with ``webob.is_body_seekable``), :class:`SeekableTeeInput` keeps
``seek``, ``tell`` and ``seekable``: the app may read the body again, and the copy still holds
the body once, as the client sent it.
It follows werkzeug's ``get_input_stream``: when the server sets ``wsgi.input_terminated``
the stream is read to its end and ``CONTENT_LENGTH`` is ignored; otherwise it never reads
past ``CONTENT_LENGTH``, and without one the body is empty.

:class:`BodyBuffer` keeps the first ``MemoryBodyBytes`` in memory and spills the rest
to an anonymous temporary file; past ``MaxBodyBytes`` it stops copying and marks the
body too large. Whatever happens to the copy (no space, no descriptor, an I/O error),
the app's read returns its data: the copy is marked failed, never the request. It is
shared by the mirrors of one request, each reading it independently, and freed by the last.

:class:`CaptureBudget` bounds the bytes held by all captures of a process together
(``CaptureMemoryBytes`` in memory, ``CaptureDiskBytes`` in temporary files), from the
first byte copied until the last mirror of the request has been sent.
"""

from __future__ import annotations

import logging
import os
import tempfile
import typing as t

from ..util.green import new_lock

log = logging.getLogger(__name__)

DRAIN_CHUNK = 64 * 1024
SEND_CHUNK = 256 * 1024

# The outcomes of a capture that mean "do not mirror"; they are the stats' drop reasons.
TOO_LARGE = "body_too_large"
INCOMPLETE = "incomplete_body"
EXPECT_CONTINUE = "expect_continue"
CAPTURE_ERROR = "capture_error"
SPILL_BUDGET = "spill_budget"


class CaptureBudget:
    """The bytes all captures of a process hold, in memory and on disk, against their caps.

    A capture that cannot have memory spills to its temporary file; one that cannot have
    disk either is dropped (``spill_budget``). Failures to write a temporary file are
    logged once per streak: the first of a streak, then nothing until a spilled body is
    copied whole again.
    """

    __slots__ = ("memory_limit", "disk_limit", "memory", "disk", "_lock", "_failing")

    def __init__(self, memory_limit: int = 1 << 62, disk_limit: int = 1 << 62) -> None:
        self.memory_limit = memory_limit
        self.disk_limit = disk_limit
        self.memory = 0
        self.disk = 0
        self._lock = new_lock()
        self._failing = False

    def take_memory(self, size: int) -> bool:
        with self._lock:
            if self.memory + size > self.memory_limit:
                return False
            self.memory += size
            return True

    def take_disk(self, size: int) -> bool:
        with self._lock:
            if self.disk + size > self.disk_limit:
                return False
            self.disk += size
            return True

    def give_back(self, memory: int, disk: int) -> None:
        with self._lock:
            self.memory -= memory
            self.disk -= disk

    def spill_failed(self, err: OSError) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "wsgimirror cannot write a request body copy to a temporary file (%s); such copies are dropped "
                "as capture_error, the requests themselves are served as usual", err
            )  # fmt: skip

    def spill_worked(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("wsgimirror can write request body copies to temporary files again")


UNLIMITED = CaptureBudget()


class Shared:
    """Something held by a request and by each mirror that uses it; the last holder to let go frees it.

    Subclasses call ``super().__init__()`` and say what freeing is.
    """

    __slots__ = ("_lock", "_refs")

    def __init__(self) -> None:
        self._lock = new_lock()
        self._refs = 1  # the request's hold; each mirror that uses it retains its own

    def retain(self) -> None:
        with self._lock:
            self._refs += 1

    def release(self) -> None:
        """Drop one reference; the last one frees."""
        with self._lock:
            self._refs -= 1
            last = self._refs == 0
        if last:
            self._free()

    def _free(self) -> None:
        raise NotImplementedError


class BodyBuffer(Shared):
    """The captured body: memory up to ``memory_limit`` bytes, the rest in a temp file.

    ``failure`` is None while the copy is whole, else the reason it was given up
    (``body_too_large``, ``capture_error``, ``spill_budget``); a failed buffer holds nothing.
    """

    __slots__ = ("size", "failure", "_memory", "_file", "_disk", "_memory_limit", "_max_size", "_budget")  # fmt: skip

    def __init__(self, memory_limit: int, max_size: int, budget: CaptureBudget = UNLIMITED) -> None:
        self.size = 0
        self.failure: str | None = None
        self._memory = bytearray()
        self._file: t.BinaryIO | None = None
        self._disk = 0  # bytes in the temp file
        self._memory_limit = memory_limit
        self._max_size = max_size
        self._budget = budget
        super().__init__()

    @property
    def too_large(self) -> bool:
        return self.failure == TOO_LARGE

    def write(self, data: bytes) -> None:
        """Copy ``data``; never raises, whatever happens to the copy."""
        if self.failure is not None or not data:
            return
        size = self.size + len(data)
        if size > self._max_size:
            self._fail(TOO_LARGE)
            return
        fits = self._file is None and len(self._memory) + len(data) <= self._memory_limit
        if fits and self._budget.take_memory(len(data)):
            self._memory += data
        elif not self._spill(data):
            return
        self.size = size

    def _spill(self, data: bytes) -> bool:
        if not self._budget.take_disk(len(data)):
            self._fail(SPILL_BUDGET)
            return False
        self._disk += len(data)
        try:
            if self._file is None:
                self._file = t.cast(t.BinaryIO, tempfile.TemporaryFile(prefix="wsgimirror-", buffering=0))
            fd = self._file.fileno()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as err:
            self._budget.spill_failed(err)
            self._fail(CAPTURE_ERROR)
            return False
        return True

    def complete(self) -> None:
        """The whole body was copied: a spilled one ends a streak of temp-file failures."""
        if self._file is not None:
            self._budget.spill_worked()

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self._discard()

    @property
    def spilled(self) -> bool:
        """True when part of the body lives in a temporary file."""
        return self._file is not None

    def parts(self) -> tuple[bytes, int | None]:
        """The body as it is held: the bytes in memory, and the temporary file's descriptor (None: not spilled).

        The agent's hand-off sends the first and passes the second to the agent's process, never its bytes.
        """
        return bytes(self._memory), (self._file.fileno() if self._file is not None else None)

    @classmethod
    def adopt(cls, memory: bytes, fd: int | None, size: int, budget: CaptureBudget = UNLIMITED) -> BodyBuffer:
        """A body received whole: ``memory``, then ``size - len(memory)`` bytes of the file ``fd`` (now owned here).

        The bytes are counted against ``budget`` without a limit: they arrived already, and the sender bounded them.
        """
        buffer = cls(len(memory), size, budget)
        buffer._memory = bytearray(memory)
        buffer.size = size
        if fd is not None:
            buffer._file = t.cast(t.BinaryIO, os.fdopen(fd, "rb", buffering=0))
            buffer._disk = size - len(memory)
        with budget._lock:
            budget.memory += len(buffer._memory)
            budget.disk += buffer._disk
        return buffer

    def in_memory(self) -> bytes | None:
        """The whole body as bytes when it never spilled to disk, else None."""
        return None if self._file is not None else bytes(self._memory)

    def head_bytes(self, limit: int) -> bytes:
        """The first ``limit`` bytes of the body (a diff log example shows them)."""
        if limit <= 0:
            return b""
        out = bytearray()
        for piece in self.chunks(limit):
            out += piece[: limit - len(out)]
            if len(out) >= limit:
                break
        return bytes(out)

    def chunks(self, size: int = SEND_CHUNK) -> t.Iterator[bytes]:
        """The body from its start, in pieces of at most about ``size`` bytes.

        Each call reads on its own (``os.pread`` at its own offset), so the mirrors of one
        request, in greenlets or threads, never disturb each other's position.
        """
        if self._memory:
            yield bytes(self._memory)
        if self._file is None:
            return
        fd, offset, end = self._file.fileno(), 0, self._disk
        while offset < end:
            piece = os.pread(fd, min(size, end - offset), offset)
            if not piece:
                raise OSError(f"the body copy ended at {offset} of {end} bytes")
            offset += len(piece)
            yield piece

    def _free(self) -> None:
        """The last reference is gone: free the memory and remove the temp file."""
        self._discard()

    def _discard(self) -> None:
        memory, disk = len(self._memory), self._disk
        self._memory = bytearray()
        self._disk = 0
        if self._file is not None:
            self._file.close()
            self._file = None
        self._budget.give_back(memory, disk)


class TeeInput:
    """A ``wsgi.input`` that copies every byte the app reads into a :class:`BodyBuffer`."""

    __slots__ = ("buffer", "read_called", "failed", "_stream", "_remaining", "_eof")

    def __init__(self, stream: t.Any, length: int | None, terminated: bool, buffer: BodyBuffer) -> None:
        self.buffer = buffer
        self.read_called = False  # True once the inner stream was read (gevent sends 100 Continue then)
        self.failed = False  # True when the inner stream raised or ended before CONTENT_LENGTH
        self._stream = stream
        # Bytes left to read; None means "read until the stream says EOF" (werkzeug's rule: a
        # terminated stream is read to its end whatever CONTENT_LENGTH says).
        self._remaining: int | None = None if terminated else (length or 0)
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
        """Copy what the app left unread, stopping early when the buffer gave up."""
        try:
            while not self._eof and not self.failed and self.buffer.failure is None:
                if not self.read(DRAIN_CHUNK):
                    break
        except Exception:  # the inner stream's own error (client gone, bad chunk): already marked
            pass

    def outcome(self, expect_continue: bool) -> str | None:
        """None when the whole body was captured, else the drop reason."""
        if expect_continue and not self.read_called and not self._eof:
            return EXPECT_CONTINUE
        self.drain()
        if self.buffer.failure is not None:
            return self.buffer.failure
        if self.failed or not self._eof:
            return INCOMPLETE
        self.buffer.complete()
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


class SeekableTeeInput(TeeInput):
    """A tee over a seekable input: ``seek`` and ``tell`` work as the server's do, relative to where
    the body starts, and each byte of the body is copied the first time it is read (a high-water mark).

    Reading again after ``seek(0)`` copies nothing more; seeking past what was read leaves a gap
    that the drain at ``close()`` fills, reading from the mark with the app's position kept.
    """

    __slots__ = ("_origin", "_length", "_pos", "_copied")

    def __init__(self, stream: t.Any, length: int | None, terminated: bool, buffer: BodyBuffer, origin: int) -> None:
        super().__init__(stream, length, terminated, buffer)
        self._origin = origin  # where the body starts in the stream
        self._length = None if terminated else (length or 0)  # None: up to the stream's end
        self._pos = 0  # the app's position in the body
        self._copied = 0  # bytes of the body copied, from its start

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            target = self._origin + offset
        elif whence == 1:
            target = self._origin + self._pos + offset
        else:
            target = self._stream.seek(offset, whence) if self._length is None else self._origin + self._length + offset
        self._stream.seek(max(target, self._origin))
        self._pos = max(target, self._origin) - self._origin
        return self._pos

    def _bounded(self, size: int | None) -> int | None:
        left = None if self._length is None else max(0, self._length - self._pos)
        if size is None:
            return left
        if not isinstance(size, int):
            raise TypeError(f"size must be an integer, got {type(size).__name__}")
        if size < 0:
            return left
        return size if left is None else min(size, left)

    def _took(self, data: bytes) -> bytes:
        start, end = self._pos, self._pos + len(data)
        if start <= self._copied < end:  # bytes past the mark: copy them, once
            self.buffer.write(data[self._copied - start :])
            self._copied = end
        self._pos = end
        if self._length is None:
            if not data and self._copied >= start:  # the stream ends here, and everything before it is copied
                self._eof = True
        else:
            if not data and start < self._length:
                self.failed = True  # the stream ended before CONTENT_LENGTH: a truncated body
            self._eof = self._copied >= self._length
        return data

    def drain(self) -> None:
        """Copy the body from the mark to its end, then put the stream back where the app left it."""
        position = self._pos
        try:
            self.seek(self._copied)
            while not self._eof and not self.failed and self.buffer.failure is None:
                if not self.read(DRAIN_CHUNK):
                    break
        except Exception:  # the inner stream's own error: already marked, or the copy stays incomplete
            pass
        try:
            self.seek(position)
        except Exception:
            pass


def tee_input(stream: t.Any, length: int | None, terminated: bool, buffer: BodyBuffer) -> TeeInput:
    """The tee for a server's input: :class:`SeekableTeeInput` when the input is seekable, else :class:`TeeInput`."""
    origin = _position(stream) if getattr(stream, "seekable", None) is not None else None
    if origin is None:
        return TeeInput(stream, length, terminated, buffer)
    return SeekableTeeInput(stream, length, terminated, buffer, origin)


def _position(stream: t.Any) -> int | None:
    """Where a seekable stream stands, or None (sockets, servers' input objects)."""
    try:
        return int(stream.tell()) if stream.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None
