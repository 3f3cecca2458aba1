"""GoReplay's file format: payloads of raw HTTP messages, as GoReplay writes and reads them.

A file (``.gor``, or ``.gor.gz`` gzip-compressed) is a sequence of payloads. Each payload is a
header line ``TYPE ID TIMESTAMP_NS LATENCY_NS\\n``, the raw HTTP message, then the separator
``\\n🐵🙈🙉\\n``. Type 1 is a request, 2 the original response (same id), 3 a replayed response.
Nothing is escaped: a body that contains the separator splits its payload (GoReplay's own
limitation), and the reader then skips the pieces as malformed.

The reader follows GoReplay's: lines split on ``\\n`` are collected until a line is the
separator; a header with fewer than three fields is malformed and skipped; text after the last
separator (a payload being written, or cut by a crash) is ignored.
"""

from __future__ import annotations

import gzip
import heapq
import random
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


def read_payloads(path: str, counts: ReadCounts | None = None) -> t.Iterator[Payload]:
    """The payloads of one file in file order; malformed ones are counted in ``counts`` and skipped."""
    counts = counts if counts is not None else ReadCounts()
    try:
        raw: t.Any = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    except OSError as err:
        raise Unreadable(f"{path}: {err.strerror or err}") from err
    counts.files += 1
    with raw:
        pending: list[bytes] = []
        try:
            for line in raw:
                if line == SEPARATOR_LINE and pending:
                    record = b"".join(pending)[:-1]  # the separator's own leading \n
                    pending = []
                    payload = parse_payload(record)
                    if payload is None:
                        counts.malformed += 1
                    else:
                        yield payload
                else:
                    pending.append(line)
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            if isinstance(err, EOFError):  # a .gz cut short (the writer was killed): keep what came before
                counts.partial += 1
                return
            raise Unreadable(f"{path}: {err}") from err
        if any(piece.strip() for piece in pending):
            counts.partial += 1


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
