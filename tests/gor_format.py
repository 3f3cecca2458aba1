"""An independent reader of GoReplay's file format, written from its byte-level facts, to check our files.

A file is payloads, each ``TYPE ID TIMESTAMP_NS LATENCY_NS\\n`` + raw HTTP message + ``\\n🐵🙈🙉\\n``.
It shares no code with ``wsgimirror.record.gor`` on purpose: both would agree on the same mistake.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

SEPARATOR = b"\n\xf0\x9f\x90\xb5\xf0\x9f\x99\x88\xf0\x9f\x99\x89\n"  # "\n🐵🙈🙉\n"
ID = re.compile(r"[0-9a-f]{24}")


@dataclass
class Payload:
    kind: int
    id: str
    timestamp: int
    latency: int
    head: bytes  # start line and headers, without the blank line
    body: bytes

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.decode().lower() == name.lower():
                return value.strip().decode("latin-1")
        return None

    @property
    def start(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")


def payloads(path: str | Path) -> list[Payload]:
    """Every payload of a complete file (it must end with a separator), strictly checked."""
    data = Path(path).read_bytes()
    if str(path).endswith(".gz"):
        data = gzip.decompress(data)
    pieces = data.split(SEPARATOR)
    assert pieces[-1] == b"", f"{path} does not end with a separator: {pieces[-1][:80]!r}"
    found = []
    for piece in pieces[:-1]:
        header, _, message = piece.partition(b"\n")
        kind, pid, timestamp, latency = header.decode("ascii").split(" ")
        head, blank, body = message.partition(b"\r\n\r\n")
        assert blank, f"no end of head in {message[:200]!r}"
        found.append(Payload(int(kind), pid, int(timestamp), int(latency), head, body))
    return found
