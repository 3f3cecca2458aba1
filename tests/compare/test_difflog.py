"""The diff log in-process: its lines, its files (mode, rotation, a process of its own), and reading it back."""

import json
import logging
import os

import pytest

from wsgimirror.compare import difflog
from wsgimirror.compare.difflog import DiffLogWriter, LogError, read_logs
from wsgimirror.util.logs import Throttled


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
    from wsgimirror.util import pid as _pid

    monkeypatch.setattr(_pid, "_current", 4242)  # as in a worker forked after the first write
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


def test_a_record_that_arrives_after_close_is_refused_and_the_log_stays_closed(tmp_path):
    """A comparison that ended after close() used to reopen the log; the process, exiting, could then cut its
    record in two on a full disk."""
    path = tmp_path / "d.jsonl"
    writer = DiffLogWriter(str(path), 1 << 20)
    assert writer.write({"type": "counts", "by_endpoint": {}})
    writer.close()
    before = path.read_bytes()
    assert writer.write({"type": "example"}) is False
    assert path.read_bytes() == before and before.count(b"\n") == 1
    never = DiffLogWriter(str(tmp_path / "never.jsonl"), 1 << 20)
    never.close()
    assert never.write({"type": "counts"}) is False and not (tmp_path / "never.jsonl").exists()


def full_disk_writer(tmp_path) -> DiffLogWriter:
    """A writer whose file is on a full disk: its descriptor is pointed at /dev/full after the first record."""
    writer = DiffLogWriter(str(tmp_path / "d.jsonl"), 1 << 20)
    assert writer.write({"type": "counts", "by_endpoint": {}})
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, writer._fd)
    os.close(full)
    return writer


def test_a_full_disk_is_a_false_return_and_one_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="wsgimirror.compare.difflog")
    writer = full_disk_writer(tmp_path)
    assert writer.write({"type": "counts"}) is False
    assert f"wsgimirror cannot write the diff log {tmp_path}/d.jsonl: [Errno 28] No space left on device" in caplog.text
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
    assert report.settings[:2] == (50.0, 1.0)


def test_without_thresholds_or_times_the_defaults_apply(tmp_path):
    path = tmp_path / "d.jsonl"
    record = json.loads(counts_record("a", 1, 1.0, 0, 4))
    del record["time"]
    path.write_text(json.dumps(record) + "\n" + json.dumps({**record, "time": 5}) + "\n")
    report = read_logs([str(path)])
    assert report.settings[:2] == (20.0, 0.03) and report.counts["GET /"]["compared"] == 4
    assert read_logs([str(tmp_path / "d.jsonl")]).processes == 1
    empty = tmp_path / "e.jsonl"
    empty.write_text(json.dumps({"type": "example", "endpoint": "GET /"}) + "\n")
    assert read_logs([str(empty)]).settings[:2] == (20.0, 0.03)


def test_the_newest_record_of_a_process_wins_whatever_the_reading_order(tmp_path):
    current, rotated = tmp_path / "d.jsonl", tmp_path / "d.jsonl.1"
    current.write_text(counts_record("a", 1, 1.0, 300, 9) + "\n")
    rotated.write_text(counts_record("a", 1, 1.0, 100, 4) + "\n")  # older, read second
    assert read_logs([str(current), str(rotated)]).counts["GET /"]["compared"] == 9


def test_a_time_that_is_not_a_number_is_malformed(tmp_path):
    path = tmp_path / "d.jsonl"
    timed = counts_record("a", 1, 1.0, 0.5, 4)
    untimed = json.dumps({**json.loads(counts_record("a", 1, 1.0, 0, 9)), "time": "soon"})
    path.write_text(timed + "\n" + untimed + "\n")
    with pytest.raises(LogError, match=f"^{path}:2: time must be a number, got str$"):
        read_logs([str(path)])


def test_of_two_records_with_the_same_time_the_later_one_read_wins(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(counts_record("a", 1, 1.0, 100, 4) + "\n" + counts_record("a", 1, 1.0, 100, 6) + "\n")
    assert read_logs([str(path)]).counts["GET /"]["compared"] == 6


def test_processes_whose_last_records_share_a_time_are_read_without_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(counts_record("a", 1, 1.0, 100, 4, {"relative": 30, "absolute": 1}) + "\n"
                    + counts_record("b", 1, 1.0, 100, 6, {"relative": 30, "absolute": 1}) + "\n")  # fmt: skip
    report = read_logs([str(path)])
    assert (report.processes, report.counts["GET /"]["compared"], report.settings[:2]) == (2, 10, (30.0, 1.0))


def test_a_rotation_that_fails_leaves_no_descriptor_to_write_to(tmp_path, capfd):
    directory = tmp_path / "logs"
    directory.mkdir()
    writer = DiffLogWriter(str(directory / "d.jsonl"), 200)
    assert writer.write({"type": "counts", "pad": "p" * 100})
    for name in os.listdir(directory):
        os.unlink(directory / name)
    directory.rmdir()  # the log's directory is gone: rotating and reopening both fail
    assert writer.write({"type": "counts", "pad": "q" * 150}) is False
    assert writer.write({"type": "counts", "pad": "r"}) is False
    assert capfd.readouterr().out == ""  # nothing went to another descriptor
    writer.close()


def test_values_json_cannot_hold_are_written_as_text(tmp_path):
    writer = DiffLogWriter(str(tmp_path / "d.jsonl"), 1 << 20)
    assert writer.write({"type": "example", "raw": b"\x00bytes", "when": {1}})
    writer.close()
    [record] = [json.loads(line) for line in lines(tmp_path / "d.jsonl")]
    assert (record["raw"], record["when"]) == ("b'\\x00bytes'", "{1}")


def test_the_write_warning_names_the_file_and_the_error(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="wsgimirror.compare.difflog")
    difflog._write_failed._next = 0.0
    difflog._write_failed._held = 0
    writer = full_disk_writer(tmp_path)
    assert writer.write({"type": "counts"}) is False
    assert [r.getMessage() for r in caplog.records] == [
        f"wsgimirror cannot write the diff log {tmp_path}/d.jsonl: [Errno 28] No space left on device"
    ]
    writer.close()


def test_a_counts_record_without_a_time_counts_as_the_oldest(tmp_path):
    path = tmp_path / "d.jsonl"
    untimed = json.loads(counts_record("a", 1, 1.0, 0, 9))
    del untimed["time"]
    path.write_text(counts_record("a", 1, 1.0, 0.5, 4) + "\n" + json.dumps(untimed) + "\n")
    assert read_logs([str(path)]).counts["GET /"]["compared"] == 4


def test_a_record_that_cannot_fit_is_never_begun(tmp_path, monkeypatch):
    """Half a record written then cut back would stay half if the process were killed in between."""
    import resource

    path = tmp_path / "d.jsonl"
    writer = DiffLogWriter(str(path), 1 << 20)
    assert writer.write({"type": "counts", "by_endpoint": {}})
    size = path.stat().st_size
    writes = []
    real_write = os.write
    monkeypatch.setattr(difflog.os, "write", lambda fd, data: writes.append(len(data)) or real_write(fd, data))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, hard))
    try:
        assert writer.write({"type": "example", "pad": "x" * 100}) is False
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert writes == [] and path.stat().st_size == size
    writer.close()
