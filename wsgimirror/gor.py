"""GoReplay's file format: payloads of raw HTTP messages, as GoReplay writes and reads them.

A file (``.gor``, or ``.gor.gz`` gzip-compressed) is a sequence of payloads. Each payload is a
header line ``TYPE ID TIMESTAMP_NS LATENCY_NS\\n``, the raw HTTP message, then the separator
``\\n🐵🙈🙉\\n``. Type 1 is a request, 2 the original response (same id), 3 a replayed response.
Nothing is escaped: a body that holds the separator line splits its payload in GoReplay's reader.
wsgimirror never writes one (see :mod:`.record`).

The reader follows GoReplay's: lines split on ``\\n`` are collected until a line is the
separator; a separator line with nothing collected before it (a doubled one, or one that starts
the file) is skipped; a header with fewer than three fields is malformed and skipped; text after
the last separator (a payload being written, or cut by a crash) is ignored.

Where GoReplay would turn one payload into two, this reader does not: a payload whose message is
shorter than its own framing says (``Content-Length``, or chunks without their last one) is joined
with what follows the separator, and kept joined when that makes the message exactly complete. A
forged payload hidden in a body is then part of that body, never sent on its own. When no join
completes it (GoReplay cut the payload at its copy buffer), the pieces are read as they stand.
"""

from __future__ import annotations

import gzip
import heapq
import random
import re
import typing as t
from dataclasses import dataclass, field

SEPARATOR = "\n🐵🙈🙉\n".encode()
SEPARATOR_LINE = SEPARATOR[1:]
REQUEST, RESPONSE, REPLAYED = "1", "2", "3"
UNKNOWN_LATENCY = -1


def payload_header(kind: str, payload_id: str, timestamp_ns: int, latency_ns: int = UNKNOWN_LATENCY) -> bytes:
    return f"{kind} {payload_id} {timestamp_ns} {latency_ns}\n".encode("ascii")


def new_id() -> str:
    """A payload id as GoReplay makes them today: 24 lower-case hex characters.

    Ids need to be unique, not secret: the random module (reseeded in a forked child) costs a
    fraction of ``os.urandom``'s system call.
    """
    return f"{random.getrandbits(96):024x}"


@dataclass
class Payload:
    kind: str
    id: str
    timestamp: int  # ns since the epoch
    latency: int  # ns, -1 when unknown
    message: bytes


@dataclass
class ReadCounts:
    """What reading found besides payloads: malformed ones skipped, and files with a cut-off end."""

    malformed: int = 0
    partial: int = 0
    files: int = 0


class Unreadable(Exception):
    """A file cannot be opened or read (missing, not gzip, permission); the message names it."""


# A payload short of its framing is joined with at most this many bytes after it (a body can't be longer).
JOIN_LIMIT = 64 << 20


def read_payloads(path: str, counts: ReadCounts | None = None) -> t.Iterator[Payload]:
    """The payloads of one file in file order; malformed ones are counted in ``counts`` and skipped."""
    counts = counts if counts is not None else ReadCounts()
    try:
        raw: t.Any = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    except OSError as err:
        raise Unreadable(f"{path}: {err.strerror or err}") from err
    counts.files += 1
    with raw:
        try:
            for record in _joined(_records(raw, counts)):
                payload = parse_payload(record[:-1])  # the last line break is the separator's
                if payload is None:
                    counts.malformed += 1
                else:
                    yield payload
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            if isinstance(err, EOFError):  # a .gz cut short (the writer was killed): keep what came before
                counts.partial += 1
                return
            raise Unreadable(f"{path}: {err}") from err


def _records(lines: t.Iterable[bytes], counts: ReadCounts) -> t.Iterator[bytes]:
    """The text before each separator line, its line breaks kept (empty for a separator line alone)."""
    pending: list[bytes] = []
    for line in lines:
        if line != SEPARATOR_LINE:
            pending.append(line)
        else:
            yield b"".join(pending)
            pending = []
    if any(piece.strip() for piece in pending):
        counts.partial += 1


def _joined(records: t.Iterator[bytes]) -> t.Iterator[bytes]:
    """The records, each short one joined with the records after it when that completes it exactly."""
    waiting: list[bytes] = []  # records read ahead while trying a join, to be read again when it fails
    while True:
        record = waiting.pop(0) if waiting else next(records, None)
        if record is None:
            return
        if not record:
            continue  # a separator line with nothing before it (doubled, or the file's first line): skipped
        if framing(record[:-1]) != SHORT:
            yield record
            continue
        joined, used, state = record, 0, SHORT
        for follower in _ahead(waiting, records):
            joined += SEPARATOR_LINE + follower
            used += 1
            state = framing(joined[:-1])
            if state != SHORT or len(joined) - len(record) > JOIN_LIMIT:
                break
        if state == COMPLETE:
            del waiting[:used]
            yield joined
        else:
            yield record  # cut where it stands: the followers are payloads of their own


def _ahead(waiting: list[bytes], records: t.Iterator[bytes]) -> t.Iterator[bytes]:
    """The records after the current one: first those already read ahead, then new ones (kept in ``waiting``)."""
    yield from list(waiting)
    for record in records:
        waiting.append(record)
        yield record


def _ends_with_blank_line(rest: bytes) -> str:
    if rest.startswith(b"\r\n"):
        return COMPLETE if len(rest) == 2 else LONG
    end = rest.find(b"\r\n\r\n")
    if end < 0:
        return SHORT
    return COMPLETE if end + 4 == len(rest) else LONG


# What a payload's framing says of its message.
COMPLETE, SHORT, LONG, UNFRAMED = "complete", "short", "long", "unframed"
_LENGTH = re.compile(rb"\r?\ncontent-length:[ \t]*([0-9]+)[ \t]*\r?\n", re.I)
_CHUNKED = re.compile(rb"\r?\ntransfer-encoding:[^\n]*chunked", re.I)


def framing(payload: bytes) -> str:
    """Whether a payload's HTTP message is exactly as long as its framing says, shorter, or longer.

    ``unframed`` when the message carries neither ``Content-Length`` nor chunked framing (its body
    ends where the payload does), or its head has not ended.
    """
    _, _, message = payload.partition(b"\n")
    head_end = message.find(b"\r\n\r\n")
    size = 4
    if head_end < 0:
        head_end, size = message.find(b"\n\n"), 2
        if head_end < 0:
            return UNFRAMED
    head, body = message[: head_end + 2], message[head_end + size :]
    if _CHUNKED.search(head):
        return _chunked_framing(body)
    length = _LENGTH.search(head)
    if length is None:
        return UNFRAMED
    declared = int(length.group(1))
    return COMPLETE if len(body) == declared else SHORT if len(body) < declared else LONG


def _chunked_framing(body: bytes) -> str:
    at = 0
    while True:
        line_end = body.find(b"\r\n", at)
        if line_end < 0:
            return SHORT
        try:
            size = int(body[at:line_end].split(b";", 1)[0].strip(), 16)
        except ValueError:
            return UNFRAMED  # not chunked framing after all: judged by no rule
        if size == 0:  # the last chunk: trailer lines (usually none), then a blank line
            return _ends_with_blank_line(body[line_end + 2 :])
        at = line_end + 2 + size + 2
        if at > len(body):
            return SHORT


def parse_payload(record: bytes) -> Payload | None:
    header, newline, message = record.partition(b"\n")
    fields = header.split(b" ")
    if not newline or len(fields) < 3 or fields[0] not in (b"1", b"2", b"3"):
        return None
    try:
        timestamp = int(fields[2])
        latency = int(fields[3]) if len(fields) > 3 and fields[3] else UNKNOWN_LATENCY
        payload_id = fields[1].decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    if not payload_id:
        return None
    return Payload(fields[0].decode(), payload_id, timestamp, latency, message)


def merged(paths: t.Sequence[str], counts: ReadCounts | None = None) -> t.Iterator[Payload]:
    """The payloads of several files merged by timestamp, as GoReplay merges a glob's files."""
    counts = counts if counts is not None else ReadCounts()
    streams = [read_payloads(p, counts) for p in paths]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda p: p.timestamp)


# -- the HTTP message inside a payload --------------------------------------------------------------


class BadMessage(Exception):
    """A payload's message is not an HTTP/1.x message."""


@dataclass
class Message:
    """A parsed request or response: the start line's parts, the headers in order, the decoded body."""

    start: tuple[str, str, str]  # (method, target, version) or (version, status, reason)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    cut: bool = False  # the body is shorter than its framing says (recorded with a cap, or cut off)

    def header(self, name: str) -> str:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), "")


def parse_message(raw: bytes) -> Message:
    """Split a raw HTTP/1.x message; a chunked body is decoded, a Content-Length one cut to its length."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, rest = raw.partition(b"\n\n")
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
    if "chunked" in message.header("Transfer-Encoding").lower():
        message.body, message.cut = _dechunk(rest)
    elif message.header("Content-Length"):
        try:
            length = int(message.header("Content-Length"))
        except ValueError:
            raise BadMessage(f"Content-Length is not a number: {message.header('Content-Length')!r}") from None
        message.body, message.cut = rest[:length], len(rest) < length
    else:
        message.body = rest
    return message


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    """The decoded body of chunked framing, and whether it ended before its last chunk."""
    out = bytearray()
    at = 0
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return bytes(out), True
        size_text = data[at:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadMessage(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            return bytes(out), False
        start = line_end + 2
        if start + size > len(data):
            out += data[start:]
            return bytes(out), True
        out += data[start : start + size]
        at = start + size + 2  # the chunk's CRLF
