"""GoReplay's file format: payloads of raw HTTP messages, as GoReplay writes and reads them. One idea kept whole
(over 400 lines): the reader and the writer side by side, so that each edge of the format is handled once.

A file (``.gor``, or gzip-compressed ``.gz``) is a sequence of payloads. Each payload is a header line
``TYPE ID TIMESTAMP_NS LATENCY_NS\\n``, the raw HTTP message, then the separator ``\\n🐵🙈🙉\\n``. Type 1
is a request, 2 the original response (same id), 3 a replayed response. Nothing is escaped: a body that
holds the separator line splits its payload in GoReplay's reader. wsgimirror never writes one (see
:mod:`.recorder`).

The reader follows GoReplay's (``input_file.go``): lines are collected until a line is the separator; a
header line is split on single spaces and needs three fields, else the payload is malformed and skipped
(so is a separator line with nothing before it, a doubled one or one that starts the file); the type is
the first byte, a timestamp that is not a number reads as 0 and a latency that is not one as unknown;
text after the last separator (a payload being written, or cut by a crash) is ignored. Types other than
1, 2 and 3 are skipped and counted. Each file is read through a window of ``READ_DEPTH`` payloads (100,
GoReplay's ``--input-file-read-depth``) that sends the earliest first, and files are merged by timestamp,
a file being opened only once the merge reaches its first payload's time.

Where GoReplay would turn one payload into two, this reader does not: a payload whose message is
shorter than its own framing says (``Content-Length``, or chunks without their last one) is joined
with what follows the separator, and kept joined when that makes the message exactly complete. A
forged payload hidden in a body is then part of that body, never sent on its own. When no join
completes it (GoReplay cut the payload at its copy buffer), the pieces are read as they stand.

Memory stays bounded whatever the file holds: lines are read in pieces of at most 64 KiB, and a
payload's bytes go to a :class:`~wsgimirror.record.blob.Spool` (32 KiB in memory, the rest in a temporary
file); the messages inside are views over it. A payload is freed by its ``release()``.
"""

from __future__ import annotations

import gzip
import heapq
import os
import random
import re
import typing as t
import zlib
from collections import deque

from .blob import SPOOL_MEMORY, Blob, Bytes, Rope, Slice, Spool

SEPARATOR = "\n🐵🙈🙉\n".encode()
SEPARATOR_LINE = SEPARATOR[1:]
REQUEST, RESPONSE, REPLAYED = "1", "2", "3"
KNOWN_TYPES = frozenset({REQUEST, RESPONSE, REPLAYED})
UNKNOWN_LATENCY = -1
READ_DEPTH = 100  # payloads each file's window orders by timestamp, as GoReplay's reader
LINE_PIECE = 64 << 10  # lines are read in pieces of at most this
HEADER_LIMIT = 1024  # a payload header line longer than this is malformed
HEAD_LIMIT = 64 << 10  # an HTTP head longer than this is not a message this reader takes
PROBLEMS_KEPT = 20  # messages about unreadable or damaged files kept for the summary


def payload_header(kind: str, payload_id: str, timestamp_ns: int, latency_ns: int = UNKNOWN_LATENCY) -> bytes:
    return f"{kind} {payload_id} {timestamp_ns} {latency_ns}\n".encode("ascii")


def new_id() -> str:
    """A payload id as GoReplay makes them today: 24 lower-case hex characters.

    Ids need to be unique, not secret: the random module (reseeded in a forked child) costs a
    fraction of ``os.urandom``'s system call.
    """
    return f"{random.getrandbits(96):024x}"


class Payload:
    """One payload: its header's fields and its HTTP message, a view over bytes held until ``release()``."""

    __slots__ = ("kind", "id", "timestamp", "latency", "raw", "_holder")

    def __init__(self, kind: str, payload_id: str, timestamp: int, latency: int, raw: Blob, holder: Blob) -> None:
        self.kind = kind
        self.id = payload_id
        self.timestamp = timestamp  # ns since the epoch
        self.latency = latency  # ns, -1 when unknown
        self.raw = raw  # the HTTP message
        self._holder = holder

    @property
    def message(self) -> bytes:
        """The whole message as bytes (for small ones and tests; senders read ``raw``)."""
        return self.raw.value()

    def release(self) -> None:
        self._holder.release()

    def __repr__(self) -> str:
        return f"Payload({self.kind!r}, {self.id!r}, {self.timestamp}, {self.latency}, {self.raw.size} bytes)"


class ReadCounts:
    """What reading found besides payloads: malformed ones and unknown types skipped, files cut off at
    their end, and files that could not be read (or stopped being readable) and were skipped.

    ``warn``: called with a one-line message for each file skipped or damaged, as it happens.
    """

    def __init__(self, warn: t.Callable[[str], None] | None = None) -> None:
        self.malformed = 0
        self.unknown_type = 0
        self.partial = 0
        self.files = 0
        self.unreadable = 0
        self.problems: list[str] = []
        self._reported: set[str] = set()  # every problem's message, kept or not
        self._warn = warn

    def problem(self, message: str) -> None:
        self._reported.add(message)
        self.unreadable += 1
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(message)
        if self._warn is not None:
            self._warn(message)

    def again(self, later: ReadCounts) -> None:
        """Add what a later read of the same files found (``replay --loop``): payloads skipped again are counted
        again, but a file cut off or unreadable is one file, reported once; only a problem not reported before
        (a file that became unreadable) is new."""
        self.malformed += later.malformed
        self.unknown_type += later.unknown_type
        for message in later._reported:
            if message not in self._reported:
                self.problem(message)


class Unreadable(Exception):
    """A file cannot be opened or read (missing, not gzip, permission); the message names it."""


# A payload short of its framing is joined with at most this many bytes, and records, after it.
JOIN_LIMIT = 64 << 20
JOIN_RECORDS = 1024


def _open(path: str) -> t.Any:
    try:
        return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    except OSError as err:
        raise Unreadable(f"{path}: {err.strerror or err}") from err


def read_payloads(path: str, counts: ReadCounts | None = None) -> t.Iterator[Payload]:
    """The payloads of one file in file order; malformed ones and unknown types are counted and skipped.

    Raises :class:`Unreadable` when the file cannot be opened, is not gzip though named ``.gz``, or its
    compressed stream breaks; what came before is yielded first. A gzip file cut short (its writer was
    killed) ends quietly with ``counts.partial`` counted.
    """
    counts = counts if counts is not None else ReadCounts()
    raw = _open(path)
    counts.files += 1
    with raw:
        try:
            for record in _joined(_records(raw, counts)):
                if isinstance(record, Bytes):  # in memory (the common case): parsed from its bytes, no views
                    payload = parse_payload(record.data[:-1])  # the last \n is the separator's
                else:
                    payload = parse_payload(Slice(record, 0, record.size - 1), record)
                if payload is None:
                    counts.malformed += 1
                    record.release()
                elif payload.kind not in KNOWN_TYPES:
                    counts.unknown_type += 1
                    record.release()
                else:
                    yield payload
        except EOFError:  # a .gz cut short (the writer was killed): keep what came before
            counts.partial += 1
        except (OSError, gzip.BadGzipFile, zlib.error) as err:
            raise Unreadable(f"{path}: {getattr(err, 'strerror', None) or err}") from err


BLOCK = 256 << 10  # a file is read this much at a time


def _records(raw: t.Any, counts: ReadCounts) -> t.Iterator[Blob]:
    """The text before each separator line, its line breaks kept (empty for a separator line alone).

    A separator line is ``SEPARATOR_LINE`` at a line's start: the separator with the line break before it, or
    the file's first line. Blocks are searched for it, and a record longer than ``SPOOL_MEMORY`` goes to a spool
    as it is read, so memory stays bounded whatever a line's length.
    """
    keep = len(SEPARATOR) - 1  # bytes at a block's end that may begin a separator
    spool: Spool | None = None  # the record so far, once it outgrew SPOOL_MEMORY
    read = raw.read1  # what is there, rather than a full block: a gzip stream cut short keeps what came before
    data = read(BLOCK)
    while data and len(data) < len(SEPARATOR_LINE):  # enough to see whether the file starts with a separator
        more = read(BLOCK)
        if not more:
            break
        data += more
    start = 0  # where the current record begins in ``data``
    if data.startswith(SEPARATOR_LINE):
        yield Bytes(b"")
        start = len(SEPARATOR_LINE)
    search = start
    try:
        while data:
            at = data.find(SEPARATOR, search)
            if at >= 0:
                piece = data[start : at + 1]  # the record's last line break is the separator's first byte
                if spool is not None:
                    spool.write(piece)
                    yield spool
                    spool = None
                else:
                    yield _blob(piece)
                start = at + len(SEPARATOR)
                search = start - 1  # a doubled separator shares this line break
                continue
            search = max(search, len(data) - keep)  # a separator not found may still begin in the last bytes
            if (spool is not None or len(data) - start > SPOOL_MEMORY) and len(data) - keep > start:
                if spool is None:
                    spool = Spool()
                spool.write(data[start : len(data) - keep])
                start = len(data) - keep
            more = read(BLOCK)
            base = min(start, search)
            if not more:
                rest = data[start:]
                break
            data, start, search = data[base:] + more, start - base, search - base
        else:
            rest = b""
        if spool is not None or rest.strip():
            counts.partial += 1  # text after the last separator: a payload being written, or cut off
    finally:
        if spool is not None:
            spool.release()


def _blob(data: bytes) -> Blob:
    if len(data) <= SPOOL_MEMORY:
        return Bytes(data)
    spool = Spool()
    spool.write(data)
    return spool


def _joined(records: t.Iterator[Blob]) -> t.Iterator[Blob]:
    """The records, each short one joined with the records after it when that completes it exactly."""
    waiting: list[Blob] = []  # records read ahead while trying a join, to be read again when it fails
    while True:
        record = waiting.pop(0) if waiting else next(records, None)
        if record is None:
            return
        if not record.size:
            continue  # a separator line with nothing before it (doubled, or the file's first line): skipped
        if _record_framing(record) != SHORT:
            yield record
            continue
        parts, grown, used, state = [record], 0, 0, SHORT
        for follower in _ahead(waiting, records):
            parts += [_SEPARATOR_BLOB, follower]
            used += 1
            grown += len(SEPARATOR_LINE) + follower.size
            state = _record_framing(Rope(parts))
            if state != SHORT or grown > JOIN_LIMIT or used >= JOIN_RECORDS:
                break
        if state == COMPLETE:
            del waiting[:used]
            yield Rope(parts)
        else:
            yield record  # cut where it stands: the followers are payloads of their own


_SEPARATOR_BLOB = Bytes(SEPARATOR_LINE)


def _ahead(waiting: list[Blob], records: t.Iterator[Blob]) -> t.Iterator[Blob]:
    """The records after the current one: first those already read ahead, then new ones (kept in ``waiting``)."""
    yield from list(waiting)
    for record in records:
        waiting.append(record)
        yield record


def _record_framing(record: Blob) -> str:
    """The framing of a record's message: after its header line, before the separator's line break."""
    if isinstance(record, Bytes):  # the common case, a record in memory: no views needed to find its head
        data = record.data
        newline = data.find(b"\n", 0, HEADER_LIMIT + 1)
        if newline < 0:
            return UNFRAMED
        head_end = data.find(b"\r\n\r\n", newline + 1, newline + 1 + HEAD_LIMIT + 4)
        if head_end >= 0 and not _FRAMING_NAME.search(data, newline, head_end + 2):
            return UNFRAMED  # neither Content-Length nor Transfer-Encoding: nothing to check
    newline = record.read(0, HEADER_LIMIT + 1).find(b"\n")
    if newline < 0:
        return UNFRAMED
    return framing(Slice(record, newline + 1, record.size - newline - 2))


# What a message's framing says of it.
COMPLETE, SHORT, LONG, UNFRAMED = "complete", "short", "long", "unframed"
_LENGTH = re.compile(rb"\r?\ncontent-length:[ \t]*([0-9]+)[ \t]*\r?\n", re.I)
_CHUNKED = re.compile(rb"\r?\ntransfer-encoding:[^\n]*chunked", re.I)
_FRAMING_NAME = re.compile(rb"\n(?:content-length|transfer-encoding):", re.I)  # without it, neither of the two
_CHUNK_LINE = 1024  # a chunk-size line (with extensions) longer than this is not chunked framing


def _split_head(message: Blob) -> tuple[bytes, int]:
    """The head (ending with its last header line's break) and where the body starts; (b"", -1) when the head
    does not end within ``HEAD_LIMIT``."""
    window = message.read(0, HEAD_LIMIT + 4)
    end, size = window.find(b"\r\n\r\n"), 4
    if end < 0:
        end, size = window.find(b"\n\n"), 2
        if end < 0:
            return b"", -1
    return window[: end + 2], end + size


def framing(message: Blob | bytes) -> str:
    """Whether an HTTP message is exactly as long as its framing says, shorter, or longer.

    ``unframed`` when the message carries neither ``Content-Length`` nor chunked framing (its body
    ends where the payload does), or its head has not ended.
    """
    message = Bytes(message) if isinstance(message, bytes) else message
    head, body_start = _split_head(message)
    if body_start < 0:
        return UNFRAMED
    if _CHUNKED.search(head):
        return _chunked_framing(message, body_start)
    length = _LENGTH.search(head)
    if length is None:
        return UNFRAMED
    declared, body = int(length.group(1)), message.size - body_start
    return COMPLETE if body == declared else SHORT if body < declared else LONG


def _chunked_framing(message: Blob, at: int) -> str:
    while True:
        line = message.read(at, _CHUNK_LINE)
        line_end = line.find(b"\r\n")
        if line_end < 0:
            return SHORT if len(line) < _CHUNK_LINE else UNFRAMED
        size = _chunk_size(line[:line_end])
        if size is None:
            return UNFRAMED  # not chunked framing after all: judged by no rule
        if size == 0:  # the last chunk: trailer lines (usually none), then a blank line
            return _ends_with_blank_line(message, at + line_end + 2)
        at += line_end + 2 + size + 2
        if at > message.size:
            return SHORT


_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")


def _chunk_size(line: bytes) -> int | None:
    """A chunk-size line's size (extensions after ``;`` ignored), or None when it is not hexadecimal digits."""
    text = line.split(b";", 1)[0].strip()
    return int(text, 16) if _HEX.fullmatch(text) else None


def _ends_with_blank_line(message: Blob, at: int) -> str:
    rest = message.read(at, HEAD_LIMIT + 4)
    if rest.startswith(b"\r\n"):
        return COMPLETE if message.size - at == 2 else LONG
    end = rest.find(b"\r\n\r\n")
    if end < 0:
        return SHORT if message.size - at <= HEAD_LIMIT else LONG
    return COMPLETE if at + end + 4 == message.size else LONG


def parse_payload(record: Blob | bytes, holder: Blob | None = None) -> Payload | None:
    """A payload from its record (header line and message, without the separator's line break), or None
    when the header is malformed: no line break, or fewer than three fields split on single spaces."""
    if isinstance(record, bytes):
        first = record
        newline = first.find(b"\n", 0, HEADER_LIMIT + 1)
    else:
        first = record.read(0, HEADER_LIMIT + 1)
        newline = first.find(b"\n")
    if newline < 0:
        return None
    fields = first[:newline].split(b" ")
    if len(fields) < 3 or not fields[0]:
        return None
    latency = _number(fields[3]) if len(fields) > 3 else None
    raw: Blob
    if isinstance(record, bytes):  # already in memory: the message copied out, read directly from then on
        raw = holder = Bytes(record[newline + 1 :])
    else:
        raw, holder = Slice(record, newline + 1, record.size - newline - 1), holder or record
    return Payload(chr(fields[0][0]), fields[1].decode("latin-1"), _number(fields[2]) or 0,
                   UNKNOWN_LATENCY if latency is None else latency, raw, holder)  # fmt: skip


def _number(text: bytes) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


# -- several files ----------------------------------------------------------------------------------


def first_timestamp(path: str) -> int | None:
    """The timestamp of a file's first payload header (None: the file holds no payload); raises Unreadable."""
    with _open(path) as raw:
        try:
            while True:
                line = raw.readline(LINE_PIECE)
                if not line:
                    return None
                if line != SEPARATOR_LINE:
                    fields = line.split(b" ")
                    return (_number(fields[2]) or 0) if len(fields) >= 3 else 0
        except EOFError:
            return None
        except (OSError, gzip.BadGzipFile, zlib.error) as err:
            raise Unreadable(f"{path}: {getattr(err, 'strerror', None) or err}") from err


def ordered(payloads: t.Iterable[Payload], depth: int = READ_DEPTH) -> t.Iterator[Payload]:
    """Payloads through a window of ``depth``: the earliest of the window goes first (file order on ties)."""
    window: list[tuple[int, int, Payload]] = []
    for seq, payload in enumerate(payloads):
        heapq.heappush(window, (payload.timestamp, seq, payload))
        if len(window) >= depth:
            yield heapq.heappop(window)[2]
    while window:
        yield heapq.heappop(window)[2]


def _guarded(path: str, counts: ReadCounts) -> t.Iterator[Payload]:
    """A file's payloads; a file that stops being readable is reported and ends there."""
    try:
        yield from read_payloads(path, counts)
    except Unreadable as err:
        counts.problem(f"{err}; skipped from there")


def merged(paths: t.Sequence[str], counts: ReadCounts | None = None, depth: int = READ_DEPTH) -> t.Iterator[Payload]:
    """The payloads of several files merged by timestamp, each file through its window, as GoReplay merges a
    glob's files. A file is opened when the merge reaches its first payload's time, so a directory of many
    chunks written one after the other has one or two open at once. A file that cannot be read is reported
    through ``counts`` and skipped."""
    counts = counts if counts is not None else ReadCounts()
    starts = []
    for index, path in enumerate(paths):
        try:
            first = first_timestamp(path)
        except Unreadable as err:
            counts.problem(f"{err}; skipped")
            continue
        starts.append((first if first is not None else 0, index, path))
    starts.sort()
    if len(starts) == 1:  # one file: its window alone, no merge
        yield from ordered(_guarded(starts[0][2], counts), depth)
        return
    closed = deque(starts)
    heap: list[tuple[int, int, int, Payload, t.Iterator[Payload]]] = []
    seq = 0
    try:
        while closed or heap:
            while closed and (not heap or closed[0][0] <= heap[0][0]):
                _, index, path = closed.popleft()
                stream = ordered(_guarded(path, counts), depth)
                first_payload = next(stream, None)
                if first_payload is not None:
                    heapq.heappush(heap, (first_payload.timestamp, index, seq, first_payload, stream))
                    seq += 1
            if not heap:
                continue
            _, index, _, payload, stream = heapq.heappop(heap)
            following = next(stream, None)
            if following is not None:
                heapq.heappush(heap, (following.timestamp, index, seq, following, stream))
                seq += 1
            yield payload
    finally:
        for entry in heap:  # a consumer that stopped early: the payloads read ahead are freed
            entry[3].release()


def is_recording(name: str) -> bool:
    """Whether a file in a directory argument is a chunk as GoReplay or wsgimirror names them."""
    return name.endswith((".gor", ".gor.gz")) or bool(re.search(r"\.gor_\d+\.gz$", name))


def directory_files(directory: str) -> list[str]:
    """The recordings of a directory (see :func:`is_recording`), by name; hidden files left out."""
    names = sorted(n for n in os.listdir(directory) if not n.startswith(".") and is_recording(n))
    return [os.path.join(directory, n) for n in names if os.path.isfile(os.path.join(directory, n))]


# -- the HTTP message inside a payload --------------------------------------------------------------


class BadMessage(Exception):
    """A payload's message is not an HTTP/1.x message."""


class Message:
    """A parsed request or response: the start line's parts, the headers in order, the decoded body.

    ``content`` is the body as a blob (a view over the payload, or a spool of a de-chunked body);
    ``cut``: the body is shorter than its framing says (recorded with a cap, or cut off).
    """

    __slots__ = ("start", "headers", "content", "cut", "_index")

    def __init__(self, start: tuple[str, str, str], headers: list[tuple[str, str]], content: Blob | None = None,
                 cut: bool = False) -> None:  # fmt: skip
        self.start = start  # (method, target, version) or (version, status, reason)
        self.headers = headers
        self.content: Blob = content if content is not None else Bytes(b"")
        self.cut = cut
        self._index: dict[str, str] | None = None

    @property
    def body(self) -> bytes:
        return self.content.value()

    def header(self, name: str) -> str:
        """The first value of a header (case-insensitive), or ''."""
        if self._index is None:
            self._index = {}
            for key, value in self.headers:
                self._index.setdefault(key.lower(), value)
        return self._index.get(name.lower(), "")

    def release(self) -> None:
        """Free a de-chunked body's spool (a view over the payload is freed with the payload)."""
        if isinstance(self.content, Spool):
            self.content.release()


def parse_message(raw: Blob | bytes) -> Message:
    """Split a raw HTTP/1.x message; a chunked body is decoded, a Content-Length one cut to its length."""
    raw = Bytes(raw) if isinstance(raw, bytes) else raw
    head, body_start = _split_head(raw)
    if body_start < 0:
        if raw.size > HEAD_LIMIT:
            raise BadMessage(f"the head does not end within {HEAD_LIMIT} bytes")
        head, body_start = raw.read(0, raw.size), raw.size
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    start = lines[0].split(" ", 2)
    if len(start) < 2:
        raise BadMessage(f"not an HTTP start line: {lines[0][:80]!r}")
    if len(start) == 2:
        start.append("")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadMessage(f"not a header line: {line[:80]!r}")
        headers.append((name, value.strip()))
    message = Message((start[0], start[1], start[2]), headers)
    rest = raw.size - body_start
    length_text = message.header("Content-Length")
    if "chunked" in message.header("Transfer-Encoding").lower():
        message.content, message.cut = _dechunk(raw, body_start)
    elif length_text:
        try:
            length = int(length_text)
        except ValueError:
            raise BadMessage(f"Content-Length is not a number: {length_text!r}") from None
        message.content, message.cut = Slice(raw, body_start, min(length, rest)), rest < length
    else:
        message.content = Slice(raw, body_start, rest)
    return message


def _dechunk(data: Blob, at: int) -> tuple[Blob, bool]:
    """The decoded body of chunked framing from ``at``, and whether it ended before its last chunk."""
    out = Spool()
    try:
        while True:
            line = data.read(at, _CHUNK_LINE)
            line_end = line.find(b"\r\n")
            if line_end < 0:
                if len(line) < _CHUNK_LINE:
                    return out, True
                raise BadMessage(f"bad chunk size {line[:20]!r}")
            size = _chunk_size(line[:line_end])
            if size is None:
                raise BadMessage(f"bad chunk size {line[:line_end].split(b';', 1)[0].strip()[:20]!r}")
            if size == 0:
                return out, False
            start = at + line_end + 2
            for piece in data.chunks(start, start + size):
                out.write(piece)
            if start + size > data.size:
                return out, True
            at = start + size + 2  # the chunk's CRLF
    except BaseException:
        out.release()
        raise
