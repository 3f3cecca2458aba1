"""The diff log in-process: its lines, its files (mode, rotation, a process of its own), and reading it back."""

import json
import logging
import os

import pytest

from wsgimirror._logs import Throttled
from wsgimirror.compare import difflog
from wsgimirror.compare.difflog import DiffLogWriter, LogError, read_logs


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test sees the diff log's first warning (they are throttled to one a minute)."""
    monkeypatch.setattr(difflog, "_write_failed", Throttled(difflog.log))


def lines(path):
    return path.read_text().splitlines()


def test_a_record_is_one_compact_json_line_with_the_process_identity(tmp_path):
    writer = DiffLogWriter(str(tmp_path / "d-{pid}.jsonl"), 1 << 20)
    assert writer.write({"type": "counts", "by_endpoint": {}}) is True
    (line,) = lines(tmp_path / f"d-{os.getpid()}.jsonl")
    assert line.startswith('{"type":"counts","by_endpoint":{},"process":{"host":')
    identity = json.loads(line)["process"]
    assert set(identity) == {"host", "pid", "start"} and identity["pid"] == os.getpid()
    assert isinstance(identity["start"], float) and identity["start"] == round(identity["start"], 3)
    writer.close()


def test_rotation_happens_past_the_limit_not_at_it_and_the_new_file_is_private(tmp_path):
    path = tmp_path / "d.jsonl"
    record = {"type": "example", "n": 1}
    size = len(json.dumps({**record, "process": difflog.process_identity()}, separators=(",", ":"))) + 1
    writer = DiffLogWriter(str(path), 2 * size)
    writer.write(record)
    writer.write(record)  # exactly at the limit: no rotation
    assert not (tmp_path / "d.jsonl.1").exists() and len(lines(path)) == 2
    writer.write(record)  # past it: the old file becomes .1, a new one starts
    assert len(lines(tmp_path / "d.jsonl.1")) == 2 and len(lines(path)) == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    writer.write(record)
    assert len(lines(path)) == 2
    writer.close()


def test_a_new_process_writes_its_own_file_with_its_own_identity(tmp_path, monkeypatch):
    writer = DiffLogWriter(str(tmp_path / "d-{pid}.jsonl"), 1 << 20)
    writer.write({"type": "counts"})
    monkeypatch.setattr(difflog.os, "getpid", lambda: 4242)  # as in a worker forked after the first write
    writer.write({"type": "counts"})
    (line,) = lines(tmp_path / "d-4242.jsonl")
    assert json.loads(line)["process"]["pid"] == 4242


def test_a_failed_open_is_retried_at_the_next_record(tmp_path, caplog):
    directory = tmp_path / "later"
    writer = DiffLogWriter(str(directory / "d.jsonl"), 1 << 20)
    assert writer.write({"type": "counts"}) is False
    assert f"wsgimirror cannot write the diff log {directory / 'd.jsonl'}: [Errno 2] No such file or directory" in (
        caplog.text
    )  # fmt: skip
    directory.mkdir()
    assert writer.write({"type": "counts"}) is True and len(lines(directory / "d.jsonl")) == 1
    writer.close()


def test_close_releases_the_file_and_is_safe_without_one(tmp_path):
    def descriptors():
        return len(os.listdir("/proc/self/fd"))

    DiffLogWriter(str(tmp_path / "never.jsonl"), 1 << 20).close()  # never opened: nothing to close
    before = descriptors()
    writer = DiffLogWriter(str(tmp_path / "d.jsonl"), 1 << 20)
    writer.write({"type": "counts"})
    assert descriptors() == before + 1
    writer.close()
    assert descriptors() == before


def test_a_full_disk_is_a_false_return_and_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger="wsgimirror.compare.difflog")
    writer = DiffLogWriter("/dev/full", 1 << 20)
    assert writer.write({"type": "counts"}) is False
    assert "wsgimirror cannot write the diff log /dev/full: [Errno 28] No space left on device" in caplog.text
    writer.close()


def test_reading_skips_blank_lines_and_names_a_missing_file(tmp_path):
    counts = {"type": "counts", "time": 1, "process": {"host": "h", "pid": 1, "start": 0},
              "by_endpoint": {"GET /": {"compared": 1}}}  # fmt: skip
    path = tmp_path / "d.jsonl"
    path.write_text("\n" + json.dumps({"type": "example", "endpoint": "GET /"}) + "\n\n" + json.dumps(counts) + "\n")
    report = read_logs([str(path)])
    assert report.counts["GET /"]["compared"] == 1 and len(report.examples) == 1 and report.processes == 1
    with pytest.raises(LogError, match=f"^{tmp_path / 'gone.jsonl'}: cannot read: No such file or directory$"):
        read_logs([str(tmp_path / "gone.jsonl")])


def counts_record(host, pid, start, time, compared, thresholds=None):
    record = {"type": "counts", "time": time, "process": {"host": host, "pid": pid, "start": start},
              "by_endpoint": {"GET /": {"compared": compared}}}  # fmt: skip
    if thresholds is not None:
        record["thresholds"] = thresholds
    return json.dumps(record)


def test_each_process_counts_once_by_its_last_record_and_the_newest_thresholds_apply(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join([
        counts_record("a", 1, 10.0, 100, 5),
        counts_record("a", 1, 10.0, 200, 7, {"relative": 50, "absolute": 1}),  # the same process, later: 7 not 5
        counts_record("a", 1, 99.0, 150, 1),  # pid 1 again after a restart: another process
        counts_record("b", 1, 10.0, 120, 2),  # another host
        counts_record("a", 2, 10.0, 110, 3),  # another pid
        counts_record("a", 1, 10.0, 200, 7, {"relative": 50, "absolute": 1}),  # the same record read twice (rotation)
    ]) + "\n")  # fmt: skip
    report = read_logs([str(path)])
    assert (report.processes, report.counts["GET /"]["compared"]) == (4, 7 + 1 + 2 + 3)
    assert report.thresholds == (50.0, 1.0)


def test_without_thresholds_or_times_the_defaults_apply(tmp_path):
    path = tmp_path / "d.jsonl"
    record = json.loads(counts_record("a", 1, 1.0, "soon", 4))
    path.write_text(json.dumps(record) + "\n" + json.dumps({**record, "time": 5}) + "\n")
    report = read_logs([str(path)])
    assert report.thresholds == (20.0, 0.03) and report.counts["GET /"]["compared"] == 4
    assert read_logs([str(tmp_path / "d.jsonl")]).processes == 1
    empty = tmp_path / "e.jsonl"
    empty.write_text(json.dumps({"type": "example", "endpoint": "GET /"}) + "\n")
    assert read_logs([str(empty)]).thresholds == (20.0, 0.03)
