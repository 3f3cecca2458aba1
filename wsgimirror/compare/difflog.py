"""The diff log: JSON lines that ``wsgimirror report`` reads, from any number of processes and hosts.

Two kinds of record, both carrying the writing process's identity (host, pid, start time):

- ``counts``: the process's cumulative counts per endpoint (:data:`.analysis.Counts`) and
  the thresholds in force; written at most every ``Compare.LogSeconds`` while comparisons
  happen, and at ``close()``. The report keeps the last one of each process.
- ``example``: one comparison that differed, for the first ``Compare.Examples`` differences
  per endpoint and field in each process: the request as the mirror received it, both
  answers (bodies capped at :data:`EXAMPLE_BODY_BYTES`, base64), and the differing fields
  with both values.

The file holds real traffic: it is created 0600, never through a symbolic link, and never
appended to when it belongs to someone else (:mod:`wsgimirror.util.files`); ``{pid}`` in its path
gives each process its own. Past ``Compare.LogMaxBytes`` it is renamed with a ``.1`` suffix
(replacing the previous one) and a new file starts. A record is written whole or not at all: a
write cut short (a full disk) is taken back, so no record is ever glued to the next. A write that
fails is logged once per streak and never reaches a request.

The reader streams the files line by line. A line that is not JSON (a crash mid-write, a file
damaged otherwise) is skipped and counted; a JSON line that is not a record of the shape below
is refused, naming its file and line.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import resource
import socket
import time
import typing as t

from ..util.files import open_private
from ..util.green import new_lock
from ..util.logs import Throttled
from ..util.paths import NoMatch, expand
from ..util.pid import current_pid
from .analysis import ENDPOINT_COUNTERS, FIELD_COUNTERS, LATENCY_ARMS, Counts, merge
from .verdicts import Settings

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
        self._closed = False
        self.identity: dict[str, t.Any] = {}
        self.path = ""

    def write(self, record: dict[str, t.Any]) -> bool:
        """Append one record (the identity is added); False when it could not be written."""
        try:
            with self._lock:
                if self._closed and self._pid == current_pid():
                    return False  # a comparison that ended after close(): the process may be exiting mid-write
                self._open()
                line = json.dumps({**record, "process": self.identity}, separators=(",", ":"), default=str)
                data = line.encode("utf-8") + b"\n"
                if self._size and self._size + len(data) > self.max_bytes:
                    self._rotate()
                self._append(data)
            return True
        except OSError as err:
            _write_failed.warning("wsgimirror cannot write the diff log %s: %s", self.path or self.template, err)
            return False

    def _append(self, data: bytes) -> None:
        """The whole record, or nothing: a record that would not fit (the file size limit, the free space) is not
        begun, so that not even a process killed mid-write leaves half of one; a short write all the same (a
        race with another writer of the disk) is cut off again before raising."""
        before = os.fstat(self._fd).st_size
        _check_room(self._fd, before, len(data))
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError:
            if written:
                self._take_back(before, written)
            raise
        self._size = before + len(data)

    def _take_back(self, before: int, written: int) -> None:
        """Remove a partial record, unless another writer appended since (then the reader skips the damage)."""
        try:
            if os.fstat(self._fd).st_size == before + written:
                os.ftruncate(self._fd, before)
        except OSError:
            pass

    def _open(self) -> None:
        if self._pid == current_pid() and self._fd >= 0:
            return
        self._pid = current_pid()  # in a forked child, the parent's descriptor is left alone
        self._closed = False  # and its close() was the parent's
        self._fd = -1
        self.identity = process_identity()
        self.path = self.template.replace("{pid}", str(self._pid))
        self._fd = open_private(self.path)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        os.replace(self.path, self.path + ".1")
        self._fd = open_private(self.path)
        self._size = 0

    def close(self) -> None:
        """Close the file; later records are refused (a record cut by the process's exit would damage the log)."""
        with self._lock:
            if self._fd >= 0 and self._pid == current_pid():
                os.close(self._fd)
            self._fd = -1
            self._closed = True
            self._pid = current_pid()


def _check_room(fd: int, size: int, more: int) -> None:
    """Raise as the write would, before writing, when ``more`` bytes cannot fit after ``size``."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and size + more > limit:
        raise OSError(errno.EFBIG, "File too large")
    disk = os.fstatvfs(fd)
    free = disk.f_bfree if os.geteuid() == 0 else disk.f_bavail  # root may use the reserved blocks
    if free * disk.f_frsize < more:
        raise OSError(errno.ENOSPC, "No space left on device")


class LogError(Exception):
    """A diff log that cannot be read: one line saying which and why."""


class Report(t.NamedTuple):
    """What the report needs from a set of diff logs."""

    counts: Counts  # summed over processes
    examples: list[dict[str, t.Any]]
    settings: Settings  # the verdicts' thresholds, as the newest counts record gave them
    processes: int
    damaged: dict[str, int] = {}  # file -> lines that were not JSON, skipped
    skipped: dict[str, int] = {}  # comparisons not made, by reason, summed over processes


EXAMPLES_PER_FIELD = 5  # examples the report keeps per endpoint and field, from all processes together
MAX_EXAMPLES = 2000  # and in all: reading a log never holds more than this many


def read_logs(patterns: t.Sequence[str]) -> Report:
    """Read diff logs named by paths or globs: the last counts of each process, summed, and bounded examples."""
    try:
        paths = expand(patterns)
    except NoMatch as err:
        raise LogError(f"{err}: no file matches") from None
    latest: dict[tuple[t.Any, ...], tuple[float, dict[str, t.Any]]] = {}
    examples: list[dict[str, t.Any]] = []
    per_field: dict[tuple[str, str], int] = {}
    damaged: dict[str, int] = {}
    for path in paths:
        for record in _records(path, damaged):
            process = record["process"]
            key = (process.get("host"), process.get("pid"), process.get("start"))  # checked: all hashable
            if record["type"] == "counts":
                when = float(record["time"])
                if key not in latest or when >= latest[key][0]:
                    latest[key] = (when, record)
            elif len(examples) < MAX_EXAMPLES and _wanted(record, per_field):
                examples.append(record)
    settings = Settings()
    newest = max(latest.values(), key=lambda item: item[0], default=None)
    if newest is not None:
        given = newest[1]["thresholds"]
        settings = Settings(**{key: given[key] for key in Settings._fields if key in given})
    counts = merge(record["by_endpoint"] for _, record in latest.values())
    skipped: dict[str, int] = {}
    for _, record in latest.values():
        for reason, count in record["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + count
    return Report(counts, examples, settings, len(latest), damaged, skipped)


def _wanted(example: dict[str, t.Any], per_field: dict[tuple[str, str], int]) -> bool:
    """Keep an example while one of its fields has fewer than EXAMPLES_PER_FIELD."""
    wanted = False
    for difference in example["differences"] or [{"field": ""}]:
        key = (example["endpoint"], difference["field"])
        if per_field.get(key, 0) < EXAMPLES_PER_FIELD:
            per_field[key] = per_field.get(key, 0) + 1
            wanted = True
    return wanted


def _records(path: str, damaged: dict[str, int]) -> t.Iterator[dict[str, t.Any]]:
    """The records of one log, line by line; ``damaged[path]`` counts the lines that are not JSON."""
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise LogError(f"{path}: cannot read: {err.strerror or err}") from err
    with handle:
        number = 0
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                if not line.endswith(b"\n"):
                    break  # after the last line break: a record being written, or cut by a crash
                try:
                    record = json.loads(line)
                except RecursionError:
                    raise LogError(f"{path}:{number}: not a diff log record (nested too deeply)") from None
                except ValueError:
                    damaged[path] = damaged.get(path, 0) + 1
                    continue
                yield check_record(record, f"{path}:{number}")
        except OSError as err:
            raise LogError(f"{path}:{number + 1}: cannot read: {err.strerror or err}") from err


# -- the shape of a record, checked on reading -----------------------------------------------------------


def check_record(record: t.Any, where: str) -> dict[str, t.Any]:
    """``record`` with its missing keys filled in, when it is a diff log record of the shape this module
    writes; else :class:`LogError` naming ``where`` (file:line) and the key that is wrong."""
    if not isinstance(record, dict) or record.get("type") not in ("counts", "example"):
        raise LogError(f"{where}: not a diff log record (no counts or example type)")
    at = f"{where}: "  # each message goes on with the key path: "d.jsonl:3: app.status must be ..."
    process = _field(record, "process", dict, at, {})
    for key, kinds in (("host", str), ("pid", int), ("start", (int, float))):
        if key in process:
            _typed(process[key], kinds, f"{at}process.{key}")
    record["time"] = _number(record.get("time", 0), f"{at}time")  # no time: the oldest of its process
    if record["type"] == "counts":
        _check_counts(record, at)
    else:
        _check_example(record, at)
    return record


def _check_counts(record: dict[str, t.Any], at: str) -> None:
    if not isinstance(record.get("by_endpoint"), dict):
        raise LogError(f"{at}a counts record without by_endpoint")
    thresholds = _field(record, "thresholds", dict, at, {})
    defaults = Settings()
    for key in ("relative", "absolute", "latency_threshold"):
        value = thresholds[key] = _number(thresholds.get(key, getattr(defaults, key)), f"{at}thresholds.{key}")
        if not 0 <= value <= 100:
            raise LogError(f"{at}thresholds.{key} must be from 0 to 100, got {value!r}")
    confidence = thresholds["confidence"] = _number(thresholds.get("confidence", defaults.confidence),
                                                    f"{at}thresholds.confidence")  # fmt: skip
    if not 0.5 <= confidence < 1:
        raise LogError(f"{at}thresholds.confidence must be at least 0.5 and below 1, got {confidence!r}")
    _count(thresholds.setdefault("min_samples", defaults.min_samples), f"{at}thresholds.min_samples")
    thresholds["min_samples"] = max(1, thresholds["min_samples"])
    if thresholds.setdefault("added_fields", defaults.added_fields) not in ("report", "regression"):
        raise LogError(f"{at}thresholds.added_fields must be report or regression")
    for reason, count in _field(record, "skipped", dict, at, {}).items():
        _count(count, f"{at}skipped.{reason}")
    for name, endpoint in record["by_endpoint"].items():
        endpoint_at = f"{at}by_endpoint[{json.dumps(name)}]"
        _typed(endpoint, dict, endpoint_at)
        for key in ENDPOINT_COUNTERS:
            _count(endpoint.get(key, 0), f"{endpoint_at}.{key}")
        for field, values in _field(endpoint, "fields", dict, endpoint_at + ".", {}).items():
            field_at = f"{endpoint_at}.fields[{json.dumps(field)}]"
            _typed(values, dict, field_at)
            for key in FIELD_COUNTERS:
                _count(values.get(key, 0), f"{field_at}.{key}")
            for kind, count in _field(values, "kinds", dict, field_at + ".", {}).items():
                _count(count, f"{field_at}.kinds.{kind}")
        for arm, histogram in _field(endpoint, "latency", dict, endpoint_at + ".", {}).items():
            if arm not in LATENCY_ARMS:
                raise LogError(f"{endpoint_at}.latency.{arm} is not one of {', '.join(LATENCY_ARMS)}")
            _typed(histogram, dict, f"{endpoint_at}.latency.{arm}")
            for bucket, count in histogram.items():
                if not bucket.isdigit() or len(bucket) > 4:
                    raise LogError(f"{endpoint_at}.latency.{arm} has a bucket that is not a number: {bucket[:20]!r}")
                _count(count, f"{endpoint_at}.latency.{arm}.{bucket}")


def _check_example(record: dict[str, t.Any], at: str) -> None:
    for key in ("endpoint", "route", "cluster", "source"):
        _field(record, key, str, at, "")
    for side in ("request", "app", "mirror"):
        shown = _field(record, side, dict, at, {})
        side_at = f"{at}{side}."
        if side == "request":
            _field(shown, "method", str, side_at, "")
            _field(shown, "target", str, side_at, "")
        else:
            _field(shown, "status", int, side_at, 0)
        for i, pair in enumerate(_field(shown, "headers", list, side_at, [])):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise LogError(f"{side_at}headers[{i}] must be a [name, value] pair of strings")
        try:
            base64.b64decode(_field(shown, "body", str, side_at, ""), validate=True)
        except ValueError:
            raise LogError(f"{side_at}body is not base64") from None
        _count(_field(shown, "body_length", int, side_at, 0), f"{side_at}body_length")
    for i, difference in enumerate(_field(record, "differences", list, at, [])):
        difference_at = f"{at}differences[{i}]"
        _typed(difference, dict, difference_at)
        _field(difference, "field", str, difference_at + ".", "")
        _field(difference, "kind", str, difference_at + ".", "")


def _field(record: dict[str, t.Any], key: str, kind: type, at: str, default: t.Any) -> t.Any:
    """``record[key]``, set to ``default`` when missing; :class:`LogError` when it is not a ``kind``."""
    value = record.setdefault(key, default)
    _typed(value, kind, at + key)
    return value


def _typed(value: t.Any, kinds: t.Any, where: str) -> None:
    if not isinstance(value, kinds) or (isinstance(value, bool) and kinds in (int, (int, float))):
        names = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise LogError(f"{where} must be {_article(names)}, got {type(value).__name__}")


def _article(name: str) -> str:
    words = {"dict": "an object", "list": "an array", "str": "a string", "int": "an integer", "float": "a number"}
    return " or ".join(words.get(part, part) for part in name.split(" or ")).replace(
        "an integer or a number", "a number"
    )


def _number(value: t.Any, where: str) -> float:
    _typed(value, (int, float), where)
    if value != value or value in (float("inf"), float("-inf")):
        raise LogError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _count(value: t.Any, where: str) -> None:
    _typed(value, int, where)
    if not 0 <= value < 1 << 53:
        raise LogError(f"{where} must be a count from 0 to 2**53, got {value}")
