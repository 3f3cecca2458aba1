"""Bytes held in bounded memory: a spool (memory, then a temporary file), slices of it and ropes of them.

Reading a recording must not hold a payload whole: a 16 MiB upload, or a gzip bomb that inflates one line
to a gigabyte, would otherwise sit in memory, once per payload the reader keeps. A :class:`Spool` keeps its
first ``SPOOL_MEMORY`` bytes in memory and the rest in an anonymous temporary file; :class:`Slice` and
:class:`Rope` are views over spools that copy nothing. Every view reads with ``os.pread``, so several
readers never disturb each other's position, and ``release()`` frees what the spool holds.
"""

from __future__ import annotations

import os
import tempfile
import typing as t

SPOOL_MEMORY = 32 << 10  # a spool's bytes in memory; the rest goes to its temporary file
PIECE = 256 << 10  # what chunks() yields at most


class Blob:
    """Bytes of a known size, read by offset."""

    size: int = 0

    def read(self, start: int, count: int) -> bytes:
        """At most ``count`` bytes from ``start`` (fewer at the end)."""
        raise NotImplementedError

    def chunks(self, start: int = 0, end: int | None = None, piece: int = PIECE) -> t.Iterator[bytes]:
        """The bytes from ``start`` to ``end`` (the end by default), in pieces of at most ``piece``."""
        end = self.size if end is None else min(end, self.size)
        while start < end:
            data = self.read(start, min(piece, end - start))
            if not data:
                raise OSError(f"{start} of {end} bytes could be read back")
            start += len(data)
            yield data

    def value(self) -> bytes:
        """All the bytes (for what is known to be small, and for tests)."""
        return b"".join(self.chunks())

    def find(self, needle: bytes, start: int = 0, end: int | None = None) -> int:
        """The offset of ``needle`` between ``start`` and ``end``, or -1; reads piece by piece."""
        end = self.size if end is None else min(end, self.size)
        carry = b""
        offset = start
        for data in self.chunks(start, end):
            window = carry + data
            at = window.find(needle)
            if at >= 0:
                return offset - len(carry) + at
            carry = window[-(len(needle) - 1) :] if len(needle) > 1 else b""
            offset += len(data)
        return -1

    def release(self) -> None:
        """Free what is held (a view frees nothing: its spool's owner does)."""


class Bytes(Blob):
    """Bytes already in memory, as a blob."""

    __slots__ = ("data", "size")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read(self, start: int, count: int) -> bytes:
        return self.data[start : start + count]


class Spool(Blob):
    """Bytes written once, in order: the first ``memory`` of them in memory, the rest in a temporary file."""

    __slots__ = ("size", "_memory", "_limit", "_file")

    def __init__(self, memory: int = SPOOL_MEMORY) -> None:
        self.size = 0
        self._memory = bytearray()
        self._limit = memory
        self._file: t.Any = None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        room = self._limit - len(self._memory)
        if room > 0:
            self._memory += data[:room]
            data = data[room:]
        if data:
            try:
                if self._file is None:
                    self._file = tempfile.TemporaryFile(prefix="wsgimirror-replay-", buffering=0)
                view = memoryview(data)
                fd = self._file.fileno()
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as err:  # TMPDIR full or not writable, or the file size limit: say which file failed
                self.release()  # a spool that could not take its bytes holds nothing, its file closed
                where = f"a temporary file for a payload over {self._limit >> 10} KiB in {tempfile.gettempdir()}"
                raise OSError(err.errno, f"{where}: {err.strerror or err}") from err

    def read(self, start: int, count: int) -> bytes:
        memory = len(self._memory)
        if start < memory:
            data = bytes(self._memory[start : start + count])
            if len(data) == count or self._file is None:
                return data
            return data + os.pread(self._file.fileno(), count - len(data), 0)
        if self._file is None:
            return b""
        return os.pread(self._file.fileno(), count, start - memory)

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        self._memory = bytearray()
        if self._file is not None:
            self._file.close()
            self._file = None


class Slice(Blob):
    """``size`` bytes of ``blob`` from ``start``."""

    __slots__ = ("blob", "start", "size")

    def __init__(self, blob: Blob, start: int, size: int) -> None:
        self.blob, self.start, self.size = blob, start, max(0, size)

    def read(self, start: int, count: int) -> bytes:
        count = min(count, self.size - start)
        return self.blob.read(self.start + start, count) if count > 0 else b""


class Rope(Blob):
    """Blobs one after the other, read as one."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: t.Sequence[Blob]) -> None:
        self.parts = list(parts)
        self.size = sum(part.size for part in self.parts)

    def read(self, start: int, count: int) -> bytes:
        out = bytearray()
        for part in self.parts:
            if count <= 0:
                break
            if start >= part.size:
                start -= part.size
                continue
            data = part.read(start, count)
            out += data
            count -= len(data)
            start = 0
        return bytes(out)

    def release(self) -> None:
        for part in self.parts:
            part.release()
