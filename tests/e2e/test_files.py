"""Files wsgimirror writes, on a bad day: a planted link, another user's file, a full disk.

Every file holds real traffic. None is written through a symbolic link, none is appended to when
someone else owns it, each is private (0600), and a full disk never leaves a record cut in two.
"""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest

from tests.e2e.test_compare import compare_config
from tests.helpers import ChildServer, one_request, wait_until, write_config
from wsgimirror.commands.cli import main
from wsgimirror.middleware import MirrorMiddleware

VICTIM = b"someone else's file: must never change\n"


@pytest.fixture(autouse=True)
def every_warning_logged():
    """The diff log's write warning is throttled to one a minute: each test sees its own."""
    from wsgimirror.compare import difflog

    difflog._write_failed._next, difflog._write_failed._held = 0.0, 0


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"answer": "app"}']


def compared(server, sink, log_path: str) -> MirrorMiddleware:
    """A middleware comparing every request with ``sink``'s answer, logging to ``log_path``."""
    return MirrorMiddleware(app, compare_config(sink.address, Log=log_path, LogSeconds=0.01))


def serve_and_compare(server, sink, mw, requests=3):
    address = server(mw)
    for i in range(requests):
        assert one_request(address, target=f"/orders/{i}").body == b'{"answer": "app"}'
    wait_until(lambda: mw.stats()["compare"]["compared"] == requests, what="the comparisons")
    mw.close()


def victim(tmp_path):
    target = tmp_path / "victim"
    target.write_bytes(VICTIM)
    return target


def test_the_diff_log_never_follows_a_planted_link(server, sink, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="wsgimirror")
    target = victim(tmp_path)
    (tmp_path / "diff.jsonl").symlink_to(target)
    serve_and_compare(server, sink, compared(server, sink, str(tmp_path / "diff.jsonl")))
    assert target.read_bytes() == VICTIM
    assert "is a symbolic link; wsgimirror never writes through one" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file of another user needs root")
def test_the_diff_log_is_never_appended_to_a_file_another_user_made(server, sink, tmp_path, caplog):
    """A world-writable file planted at the log's path by someone else would receive the traffic."""
    caplog.set_level(logging.WARNING, logger="wsgimirror")
    planted = tmp_path / "diff.jsonl"
    planted.write_bytes(VICTIM)
    os.chown(planted, 65534, 65534)
    planted.chmod(0o666)
    serve_and_compare(server, sink, compared(server, sink, str(planted)))
    assert planted.read_bytes() == VICTIM
    assert "belongs to another user (uid 65534)" in caplog.text


def test_a_diff_log_of_ours_that_others_could_read_is_made_private(server, sink, tmp_path):
    log = tmp_path / "diff.jsonl"
    log.write_bytes(b"")
    log.chmod(0o644)
    serve_and_compare(server, sink, compared(server, sink, str(log)))
    assert stat.S_IMODE(log.stat().st_mode) == 0o600 and log.read_bytes()


def a_log(tmp_path):
    record = {"type": "counts", "time": 1, "process": {"host": "h", "pid": 1, "start": 0},
              "by_endpoint": {"GET /": {"compared": 3, "same": 3}}}  # fmt: skip
    path = tmp_path / "diff.jsonl"
    path.write_text(json.dumps(record) + "\n")
    return path


def test_report_html_replaces_a_planted_link_instead_of_writing_through_it(tmp_path, capsys):
    target = victim(tmp_path)
    page = tmp_path / "page.html"
    page.symlink_to(target)
    assert main(["report", str(a_log(tmp_path)), "--html", str(page)]) == 0
    assert target.read_bytes() == VICTIM
    assert not page.is_symlink() and page.read_text().startswith("<!doctype html>")
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diff.jsonl", "page.html", "victim"]  # no temporary left


def test_report_html_writes_a_private_page(tmp_path, capsys):
    page = tmp_path / "page.html"
    page.write_text("THE PREVIOUS PAGE")
    page.chmod(0o644)
    assert main(["report", str(a_log(tmp_path)), "--html", str(page)]) == 0
    assert stat.S_IMODE(page.stat().st_mode) == 0o600 and "THE PREVIOUS PAGE" not in page.read_text()


def test_the_sink_refuses_an_out_file_that_is_a_link(tmp_path, capsys):
    target = victim(tmp_path)
    out = tmp_path / "out.jsonl"
    out.symlink_to(target)
    assert main(["sink", "--bind", "127.0.0.1:0", "--out", str(out)]) == 2
    assert (
        capsys.readouterr().err == f"wsgimirror: --out {out}: is a symbolic link; wsgimirror never writes through one\n"
    )
    assert target.read_bytes() == VICTIM


def logged_comparisons(log):
    """How many comparisons the diff log's latest counts record holds (0 before the first)."""
    records = [json.loads(line) for line in log.read_bytes().splitlines()] if log.exists() else []
    counts = [r for r in records if r["type"] == "counts"]
    return sum(e["compared"] for e in counts[-1]["by_endpoint"].values()) if counts else 0


def test_a_full_disk_never_leaves_a_diff_log_record_cut_in_two(tmp_path, make_sink, capsys):
    """A write cut short used to leave a record glued to the next, and report then refused the whole file."""
    candidate = make_sink(body=b'{"different": true}')
    log = tmp_path / "diff.jsonl"
    config = compare_config(candidate.address, Log=str(log), LogSeconds=0.01, Examples=50)
    with ChildServer(write_config(tmp_path, config)) as child:
        for i in range(200):  # until the log holds enough comparisons of one endpoint for a verdict
            if logged_comparisons(log) >= 10:
                break
            one_request(child.address, target=f"/a?i={i}", host="127.0.0.1")
        assert logged_comparisons(log) >= 10
        compared = child.stats()["stats"]["compare"]["compared"]
        child.control(f"/__limit?fsize={log.stat().st_size + 1500}")  # the next example crosses the limit
        for i in range(30):
            one_request(child.address, target=f"/b{i}", host="127.0.0.1")
        wait_until(lambda: child.stats()["stats"]["compare"]["compared"] >= compared + 30, what="the comparisons")
    lines = log.read_bytes().split(b"\n")
    assert lines.pop() == b"" and all(json.loads(line)["type"] in ("counts", "example") for line in lines)
    assert main(["report", str(log)]) == 1  # every record read: the candidate regresses
    assert capsys.readouterr().err == ""  # no damaged line to skip
