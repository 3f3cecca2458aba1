"""File destinations: record copies to GoReplay files, off the event loop, in bounded memory and disk. One idea
kept whole (over 400 lines): the queue, the writer thread and the chunks share one lock and one accounting.

A cluster destination ``file:///path/traffic.gor`` (or ``.gor.gz``) gets one :class:`Recorder` per
process. The request path only builds the copy's head and queues a :class:`Record` (the body stays
in its capture buffer, in memory or spilled, until written); one writer thread per recorder writes
the queue to ``traffic_<pid>_<n>.gor`` chunks. Every queued copy ends ``succeeded`` (written) or
``failed`` (``disk_full``, ``io_error``); a copy the queue or the disk budget cannot take is
dropped (``backlog_full``, ``disk_budget``) before it is counted as mirrored.

No payload ever holds GoReplay's separator line: a body that would form one (``\n🐵🙈🙉\n``, with
the line break before it that ends the head) is written with chunked framing, a chunk boundary
falling inside every such run, so a reader can never split the payload or find a forged one in it.
The request's ``X-Mirrored-By`` is the plain mark, never ``Mirror.LoopToken``; an answer leaves out
``Set-Cookie`` and the headers of ``Mirror.RemoveHeaders``, as the request does.

A copy counts as written once its bytes are with the OS: when its chunk is flushed or closed, not
when it enters the file's buffers. When a write, flush or close fails, every copy written since the
chunk's last flush is counted failed with it: the file may have lost any of them.

Limits (the ``Record`` section): ``QueueBytes`` of copies waiting in memory, a new chunk every
``ChunkBytes``, and at most ``MaxBytes`` written per process per recorder (files are never
deleted). Chunks are flushed every ``FlushSeconds`` and at ``close()``, and created 0600.

The writer thread is a real OS thread even under gevent's monkey-patching. It never touches a
gevent object: under gevent, outcomes go back to the hub through a loop ``async`` watcher and are
counted there.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import re
import time
import typing as t
import zlib
from collections import deque
from email.utils import formatdate

from ..util.green import new_lock, original
from ..util.logs import Throttled
from ..util.pid import current_pid
from .gor import REQUEST, RESPONSE, SEPARATOR, payload_header

if t.TYPE_CHECKING:
    from ..capture.answer import Answer
    from ..capture.body import BodyBuffer
    from ..config.model import RecordSettings

log = logging.getLogger(__name__)
_failed = Throttled(log)

BACKLOG_FULL = "backlog_full"
DISK_BUDGET = "disk_budget"
DISK_FULL = "disk_full"
IO_ERROR = "io_error"
# "No room for these bytes": the disk or the quota is full, or the file may grow no more.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_WRITE_PIECE = 256 << 10
# After a wake-up the writer waits this long for more copies: under load it then takes the interpreter
# once per batch rather than once per copy, which costs the requests' own thread less.
BATCH_SECONDS = 0.002
_sleep = original("time", "sleep")
_CONTENT_LENGTH = re.compile(rb"\r\nContent-Length: \d+\r\n")
_PAYLOAD_OVERHEAD = 2 + 24 + 2 * 21 + len(SEPARATOR) + 8  # "1 <id> <ts> <latency>\n" and the separator


class Record:
    """One copy to write: its request payload, and the app's answer when the route records responses.

    ``hidden``: header names (lower case) the answer's payload leaves out.
    """

    __slots__ = ("id", "arrived_ns", "latency_ns", "head", "body", "answer", "size", "done", "started", "hidden",
                 "connection")  # fmt: skip

    def __init__(
        self,
        payload_id: str,
        arrived_ns: int,
        head: bytes,
        body: BodyBuffer,
        answer: Answer | None,
        latency_ns: int,
        done: t.Callable[[Record, str | None], None],
        hidden: t.AbstractSet[str] = frozenset({"set-cookie"}),
        connection: str | None = None,
    ) -> None:
        self.id = payload_id
        self.hidden = hidden
        self.connection = connection  # the Connection header servers add to the answer (see connection_header)
        self.arrived_ns = arrived_ns
        self.latency_ns = latency_ns  # the app's time to the end of its answer
        self.head = head
        self.body = body  # retained by the caller; released once written (or refused)
        self.answer = answer  # retained likewise
        self.done = done  # called once with None (written) or the failure reason
        self.started = time.monotonic()
        self.size = _PAYLOAD_OVERHEAD + len(head) + body.size + (_answer_size(answer) if answer is not None else 0)

    def release(self) -> None:
        self.body.release()
        if self.answer is not None:
            self.answer.release()


def _answer_size(answer: Answer) -> int:
    """At least the bytes the answer's payload takes in the file (its status line, headers and body)."""
    return _PAYLOAD_OVERHEAD + 64 + len(answer.status_text) + len(answer.body) + \
        sum(len(k) + len(v) + 4 for k, v in answer.headers)  # fmt: skip


def connection_header(environ: t.Mapping[str, t.Any]) -> str | None:
    """The ``Connection`` header gevent, gunicorn and waitress all add to the answer of an HTTP/1.0 request:
    ``keep-alive`` when it asked for one, else ``close``; None for HTTP/1.1 (where they differ)."""
    if environ.get("SERVER_PROTOCOL") != "HTTP/1.0":
        return None
    return "keep-alive" if "keep-alive" in str(environ.get("HTTP_CONNECTION", "")).lower() else "close"


def response_message(answer: Answer, hidden: t.AbstractSet[str] = frozenset(), connection: str | None = None) -> bytes:
    """The app's answer as an HTTP/1.1 message, with what servers add: the body as kept (cut at
    Compare.MaxBodyBytes).

    An answer without Content-Length gets one for the bytes recorded, so the message frames
    itself. When the body was cut, the app's own Content-Length stays and says how long it was.
    ``hidden`` headers (lower case) are left out. A body that would form the separator line is
    sent chunked (a cut one without its last chunk, so a reader still sees it cut). As the servers
    do, a ``Connection`` header (``connection``) and a ``Date`` (the answer's start) are added when
    the app set none.
    """
    body = bytes(answer.body)
    headers = [(k, v) for k, v in answer.headers if k.lower() != "transfer-encoding" and k.lower() not in hidden]
    names = {k.lower() for k, _ in answer.headers}
    cuts = separator_cuts((body,))
    if cuts:
        cut = any(k.lower() == "content-length" and v.strip() != str(len(body)) for k, v in headers)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Transfer-Encoding", "chunked")]
        framed = b"".join(chunked((body,), cuts, len(body), last=not cut))
    else:
        framed = body
        if not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Content-Length", str(len(body))))
    if connection is not None and "connection" not in names:
        headers.append(("Connection", connection))
    if "date" not in names and answer.started:
        headers.append(("Date", formatdate(answer.started / 1e9, usegmt=True)))
    lines = [f"HTTP/1.1 {answer.status_text}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + framed


def separator_cuts(pieces: t.Iterable[bytes]) -> list[int]:
    """Where to cut a body that follows a line break so that no line of it is the separator line.

    The body is scanned as ``\n + body + \n`` (the head's last line break comes before it, and the next
    line break after it); each run of the separator gets a cut after its first emoji. Empty: no run.
    """
    cuts: list[int] = []
    tail = b"\n"  # what came before the piece: a line break, then the previous piece's last bytes
    offset = -1  # the body offset of tail's first byte
    keep = len(SEPARATOR) - 1
    for piece in pieces:
        window = tail + piece
        at = window.find(SEPARATOR)
        while at >= 0:
            cuts.append(offset + at + 1 + 4)  # after the line break and the first emoji (4 bytes)
            at = window.find(SEPARATOR, at + 1)
        offset += len(window) - min(keep, len(window))
        tail = window[-keep:]
    window = tail + b"\n"
    at = window.find(SEPARATOR)
    while at >= 0:  # a body whose last line is the separator's text
        cuts.append(offset + at + 1 + 4)
        at = window.find(SEPARATOR, at + 1)
    return sorted(set(cuts))


def chunked(pieces: t.Iterable[bytes], cuts: t.Sequence[int], size: int, last: bool = True) -> t.Iterator[bytes]:
    """The body's bytes framed as chunks, with a chunk boundary at each of ``cuts``."""
    ends = iter([*cuts, size])
    end = next(ends)
    pending = bytearray()
    position = 0
    for piece in pieces:
        view = memoryview(piece)
        while view:
            take = min(len(view), end - position)
            pending += view[:take]
            view = view[take:]
            position += take
            if position == end:
                yield b"%x\r\n%s\r\n" % (len(pending), bytes(pending))
                pending = bytearray()
                end = next(ends, 1 << 62)  # past the last cut, the rest (there is none past ``size``)
    if last:
        yield b"0\r\n\r\n"


class Recorder:
    """The files of one ``file://`` destination in this process, and the thread that writes them."""

    def __init__(self, template: str, settings: RecordSettings) -> None:
        self.template = template
        self.settings = settings
        self._lock = new_lock()
        self._wake = new_lock()  # a binary semaphore: released to wake the writer
        self._wake.acquire()
        self._queue: deque[Record] = deque()
        self._outcomes: deque[tuple[Record, str | None]] = deque()
        self._index = 0  # the next chunk's number
        self._pid = -1  # the process whose writer runs (none yet)
        self._closing = False
        self._chunk_done = False  # asked to close the current chunk once the queue is written
        self._last_flush = time.monotonic()
        self._reset()

    def _reset(self) -> None:
        """The state of one process's writer: nothing queued, written or open."""
        self._queue.clear()
        self._outcomes.clear()
        self._queued = 0  # bytes waiting
        self.written = 0  # bytes written by this process
        self._reserved = 0  # bytes written or queued, as counted against MaxBytes (a record's size is an upper bound)
        self.exhausted = False  # MaxBytes reached: every further copy is dropped as disk_budget
        self._file: t.Any = None  # the open chunk (a GzipFile over the raw file for .gz)
        self._raw: t.Any = None
        self._chunk_bytes = 0
        self._unflushed: list[Record] = []  # written into the open chunk's buffers, not yet flushed
        self._notify: t.Any = None  # under gevent: the hub's async watcher, and its outcomes
        self._stopped = new_lock()  # held while the writer runs
        self.files: list[str] = []  # chunks opened by this process, oldest first

    # -- the request side ------------------------------------------------------------------------

    def configure(self, settings: RecordSettings) -> None:
        self.settings = settings

    def submit(self, record: Record) -> str | None:
        """Queue ``record`` for the writer; None, or why it was refused (the caller releases it then)."""
        self._started()
        with self._lock:
            if self._closing:
                return "closed"
            if self.exhausted or self._reserved + record.size > self.settings.max_bytes:
                if not self.exhausted:
                    log.warning("recording to %s stopped: Record.MaxBytes (%d) written by this process",
                                self.template, self.settings.max_bytes)  # fmt: skip
                self.exhausted = True
                return DISK_BUDGET
            if self._queued + record.size > self.settings.queue_bytes and self._queue:
                return BACKLOG_FULL
            idle = not self._queue
            self._queue.append(record)
            self._queued += record.size
            self._reserved += record.size
        if idle:  # a busy writer takes the whole queue when it comes back: no need to wake it per copy
            self._signal()
        return None

    def _signal(self) -> None:
        try:
            self._wake.release()
        except RuntimeError:  # already released: the writer will wake anyway
            pass

    def _started(self) -> None:
        """Start the writer (again, in a forked child: the parent's thread and files are not ours)."""
        if self._pid == current_pid():
            return
        with self._lock:
            if self._pid == current_pid():
                return
            self._reset()
            self._notify = _hub_watcher(self._deliver)
            self._stopped.acquire()
            original("_thread", "start_new_thread")(self._run, ())
            self._pid = current_pid()

    # -- outcomes, back on the submitting side ------------------------------------------------------

    def _report(self, record: Record, reason: str | None) -> None:
        if self._notify is None:
            record.done(record, reason)
            return
        self._outcomes.append((record, reason))
        self._notify.send()

    def _deliver(self) -> None:
        """On the hub: count the outcomes the writer reported."""
        while self._outcomes:
            record, reason = self._outcomes.popleft()
            try:
                record.done(record, reason)
            except Exception:  # counting must never break the loop
                _failed.warning("wsgimirror could not count a recorded copy", exc_info=True)

    # -- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                if self._wake.acquire(timeout=min(self.settings.flush_seconds, 0.5)) and not self._closing:
                    _sleep(BATCH_SECONDS)  # let a burst gather: one wake-up writes many copies
                batch = self._take()
                for record in batch:
                    before = self.written
                    reason = self._write(record)
                    with self._lock:  # the record's upper bound gives way to the bytes it took
                        self._reserved += self.written - before - record.size
                    record.release()  # its bytes are in the chunk's buffers (or refused): the capture can go
                    if reason is not None:
                        self._report(record, reason)
                if self._file is not None and (
                    time.monotonic() - self._last_flush >= self.settings.flush_seconds or self._closing
                ):
                    self._flush()
                if self._chunk_done and not self._queue:
                    self._chunk_done = False
                    self._close_chunk()
                if self._closing and not self._queue:
                    self._close_chunk()
                    return
        finally:
            self._stopped.release()

    def _take(self) -> list[Record]:
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
            self._queued = 0
        return batch

    def _write(self, record: Record) -> str | None:
        """Write one copy (and its answer); None, or why it was not written."""
        answer = record.answer
        size = 0
        try:
            if self._file is None:
                self._open_chunk()
            write = self._file.write
            body = record.body
            cuts = separator_cuts(body.chunks(_WRITE_PIECE)) if body.size else []
            size = write(payload_header(REQUEST, record.id, record.arrived_ns))
            if cuts:  # the body would hold the separator line: framed in chunks cut inside every such run
                size += write(_CONTENT_LENGTH.sub(b"\r\nTransfer-Encoding: chunked\r\n", record.head, count=1))
                for framed in chunked(body.chunks(_WRITE_PIECE), cuts, body.size):
                    size += write(framed)
            else:
                size += write(record.head)
                for piece in body.chunks(_WRITE_PIECE):
                    size += write(piece)
            size += write(SEPARATOR)
            if answer is not None:
                size += write(payload_header(RESPONSE, record.id, _answered(record, answer), record.latency_ns))
                size += write(response_message(answer, record.hidden, record.connection))
                size += write(SEPARATOR)
        except OSError as err:
            _failed.warning("wsgimirror could not record to %s: %s", self._raw_name(), err)
            return self._abandon_chunk(_reason(err))
        except Exception as err:  # a bug here must not stop the writer
            _failed.warning("wsgimirror could not record to %s: %r", self.template, err, exc_info=True)
            return self._abandon_chunk(IO_ERROR)
        finally:
            self.written += size  # a partial write took its bytes too
        self._unflushed.append(record)
        self._chunk_bytes += size
        if self._chunk_bytes >= self.settings.chunk_bytes:
            self._close_chunk()
        return None

    def _raw_name(self) -> str:
        return self.files[-1] if self.files else self.template

    def _open_chunk(self) -> None:
        """Create the next chunk, 0600, never over an existing file: ``traffic_<pid>_<n>.gor[.gz]``."""
        gz = self.template.endswith(".gz")
        name = _expand_time(self.template[: -len(".gz")] if gz else self.template)
        base, ext = os.path.splitext(name)
        pid = os.getpid()
        while True:
            path = f"{base}_{pid}_{self._index}{ext}{'.gz' if gz else ''}"
            self._index += 1
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # Python adds O_CLOEXEC
            except FileExistsError:
                continue  # a chunk of an earlier process with this pid: never overwritten
            break
        self._raw = os.fdopen(fd, "wb")
        self._file = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6) if gz else self._raw
        self._chunk_bytes = 0
        self._chunk_holds = False  # whether a copy of this chunk reached the disk (counted written)
        self.files.append(path)

    def _flush(self) -> None:
        try:
            if self._file is not self._raw:
                self._file.flush(zlib.Z_SYNC_FLUSH)  # a reader can decompress what was written so far
            self._raw.flush()
        except OSError as err:
            _failed.warning("wsgimirror could not flush %s: %s", self._raw_name(), err)
            self._abandon_chunk(_reason(err))
        else:
            self._settle(None)
        self._last_flush = time.monotonic()

    def _close_chunk(self) -> None:
        if self._file is None:
            return
        try:
            if self._file is not self._raw:
                self._file.close()
            self._raw.close()
        except OSError as err:
            _failed.warning("wsgimirror could not close %s: %s", self._raw_name(), err)
            self._abandon_chunk(_reason(err))
        else:
            self._settle(None)
        self._file = self._raw = None

    def _settle(self, reason: str | None) -> None:
        """Report the copies written since the last flush: on disk (None), or lost with their chunk."""
        if reason is None and self._unflushed:
            self._chunk_holds = True
        for record in self._unflushed:
            self._report(record, reason)
        self._unflushed.clear()

    def _abandon_chunk(self, reason: str) -> str:
        """After a failure: fail what the chunk held unflushed, and leave the chunk (it may end in a partial
        payload) when a copy of it reached the disk, else remove it: a disk that cannot write is not littered
        with empty chunks. The next copy starts a new chunk. Returns ``reason``."""
        self._settle(reason)
        if self._file is not None:
            for handle in dict.fromkeys((self._file, self._raw)):  # the gzip layer first, then the file
                try:
                    handle.close()  # flushing fails again; the descriptor is closed all the same
                except (OSError, ValueError):
                    pass
            if not self._chunk_holds:
                self._remove(self.files.pop())
        self._file = self._raw = None
        return reason

    @staticmethod
    def _remove(path: str) -> None:
        try:
            os.unlink(path)
        except OSError as err:
            _failed.warning("wsgimirror could not remove the empty chunk %s: %s", path, err)

    # -- the end ---------------------------------------------------------------------------------------

    def close_chunk(self) -> None:
        """Close the current chunk once what is queued is written, without waiting; the recorder stays usable."""
        if self._pid == current_pid():
            self._chunk_done = True
            self._signal()

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued, flush and close the chunk; True when the writer finished in time."""
        if self._pid != current_pid():
            return True
        with self._lock:
            if self._closing:
                return not self._stopped.locked()  # closed before (or still closing, after a timeout)
            self._closing = True
        self._signal()
        done = bool(self._stopped.acquire(timeout=timeout))
        if done:
            self._stopped.release()  # it stays free: a later close() sees the writer has ended
        self._deliver()
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        return done


def _answered(record: Record, answer: Answer) -> int:
    """An answer's timestamp, as GoReplay stamps it: when the answer started, always after its request's, so
    that a reader ordering payloads by timestamp (GoReplay's heap keeps no order on ties) reads it second."""
    started = answer.started or record.arrived_ns + max(record.latency_ns, 0)
    return max(started, record.arrived_ns + 1)


def _reason(err: OSError) -> str:
    return DISK_FULL if err.errno in _FULL else IO_ERROR


def _expand_time(path: str) -> str:
    """``%Y %m %d %H`` expanded (UTC) when a chunk opens; nothing else is a directive."""
    now = time.gmtime()
    values = {"%Y": f"{now.tm_year:04d}", "%m": f"{now.tm_mon:02d}", "%d": f"{now.tm_mday:02d}",
              "%H": f"{now.tm_hour:02d}"}  # fmt: skip
    return re.sub(r"%[YmdH]", lambda m: values[m.group()], path)


def _hub_watcher(deliver: t.Callable[[], None]) -> t.Any:
    """Under gevent's patched threads: an async watcher of this thread's hub that runs ``deliver``."""
    try:
        from gevent import get_hub, monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return None
    if not monkey.is_module_patched("threading"):
        return None
    watcher = get_hub().loop.async_(ref=False)
    watcher.start(deliver)
    return watcher
