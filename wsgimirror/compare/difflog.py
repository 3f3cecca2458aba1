"""The diff log: JSON lines that ``wsgimirror report`` reads, from any number of processes and hosts.

Two kinds of record, both carrying the writing process's identity (host, pid, start time):

- ``counts``: the process's cumulative counts per endpoint (:data:`.analysis.Counts`) and
  the thresholds in force; written at most every ``Compare.LogSeconds`` while comparisons
  happen, and at ``close()``. The report keeps the last one of each process.
- ``example``: one comparison that differed, for the first ``Compare.Examples`` differences
  per endpoint and field in each process: the request as the mirror received it, both
  answers (bodies capped at :data:`EXAMPLE_BODY_BYTES`, base64), and the differing fields
  with both values.

The file is created with mode 0600 (it holds real traffic); ``{pid}`` in its path gives each
process its own. Past ``Compare.LogMaxBytes`` it is renamed with a ``.1`` suffix (replacing
the previous one) and a new file starts. A write that fails (a full disk) is logged once
per streak and never reaches a request.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import typing as t

from .._logs import Throttled
from .._paths import NoMatch, expand
from .._pid import current_pid
from ..stats import new_lock
from .analysis import Counts, merge

log = logging.getLogger(__name__)
_write_failed = Throttled(log)

EXAMPLE_BODY_BYTES = 16 * 1024


def process_identity() -> dict[str, t.Any]:
    return {"host": socket.gethostname(), "pid": current_pid(), "start": round(time.time(), 3)}


class DiffLogWriter:
    """Appends records to one process's diff log; forks get their own file and identity."""

    def __init__(self, template: str, max_bytes: int) -> None:
        self.template = template
        self.max_bytes = max_bytes
        self._lock = new_lock()
        self._fd = -1
        self._pid = -1
        self._size = 0
        self.identity: dict[str, t.Any] = {}
        self.path = ""

    def write(self, record: dict[str, t.Any]) -> bool:
        """Append one record (the identity is added); False when it could not be written."""
        try:
            with self._lock:
                self._open()
                line = json.dumps({**record, "process": self.identity}, separators=(",", ":"), default=str)
                data = line.encode("utf-8") + b"\n"
                if self._size and self._size + len(data) > self.max_bytes:
                    self._rotate()
                os.write(self._fd, data)
                self._size += len(data)
            return True
        except OSError as err:
            _write_failed.warning("wsgimirror cannot write the diff log %s: %s", self.path or self.template, err)
            return False

    def _open(self) -> None:
        if self._pid == current_pid() and self._fd >= 0:
            return
        self._pid = current_pid()  # in a forked child, the parent's descriptor is left alone
        self._fd = -1
        self.identity = process_identity()
        self.path = self.template.replace("{pid}", str(self._pid))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        os.replace(self.path, self.path + ".1")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = 0

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0 and self._pid == current_pid():
                os.close(self._fd)
            self._fd = -1


class LogError(Exception):
    """A diff log that cannot be read: one line saying which and why."""


class Report(t.NamedTuple):
    """What the report needs from a set of diff logs."""

    counts: Counts  # summed over processes
    examples: list[dict[str, t.Any]]
    thresholds: tuple[float, float]  # relative, absolute (percent)
    processes: int


def read_logs(patterns: t.Sequence[str]) -> Report:
    """Read diff logs named by paths or globs: the last counts of each process, summed, and all examples."""
    try:
        paths = expand(patterns)
    except NoMatch as err:
        raise LogError(f"{err}: no file matches") from None
    latest: dict[tuple[t.Any, ...], tuple[float, dict[str, t.Any]]] = {}
    examples: list[dict[str, t.Any]] = []
    for path in paths:
        for record in _records(path):
            process = record.get("process") or {}
            key = (process.get("host"), process.get("pid"), process.get("start"))
            if record.get("type") == "counts":
                when = record.get("time", 0)
                when = float(when) if isinstance(when, (int, float)) else 0.0
                if key not in latest or when >= latest[key][0]:
                    latest[key] = (when, record)
            elif record.get("type") == "example":
                examples.append(record)
    thresholds = (20.0, 0.03)
    newest = max(latest.values(), key=lambda item: item[0], default=None)
    if newest is not None:
        given = newest[1].get("thresholds") or {}
        thresholds = (float(given.get("relative", 20.0)), float(given.get("absolute", 0.03)))
    try:
        counts = merge(record.get("by_endpoint", {}) for _, record in latest.values())
    except (TypeError, ValueError, AttributeError) as err:
        raise LogError(f"a counts record is malformed: {err}") from None
    return Report(counts, examples, thresholds, len(latest))


def _records(path: str) -> t.Iterator[dict[str, t.Any]]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        raise LogError(f"{path}: cannot read: {err.strerror or err}") from err
    lines = data.split(b"\n")
    partial = lines.pop()  # after the last newline: empty, or a record cut by a crash mid-write (skipped)
    del partial
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise LogError(f"{path}:{number}: not a diff log record (invalid JSON)") from None
        if not isinstance(record, dict) or record.get("type") not in ("counts", "example"):
            raise LogError(f"{path}:{number}: not a diff log record (no counts or example type)")
        if record["type"] == "counts" and not isinstance(record.get("by_endpoint"), dict):
            raise LogError(f"{path}:{number}: a counts record without by_endpoint")
        yield record
