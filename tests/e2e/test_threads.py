"""Without gevent patching (a threaded server), mirrors run in a bounded thread pool."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("threaded_server.py")
ROOT = Path(__file__).parents[2]


def run_child(max_in_flight: int) -> dict:
    child = subprocess.run(
        [sys.executable, str(SCRIPT), str(max_in_flight)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout)


def test_a_threaded_server_mirrors_through_threads_without_waiting():
    result = run_child(max_in_flight=8)
    assert result["answers"] == ["app got /slow", "app got /a", "app got /b"]
    assert max(result["timings"]) < 0.5  # the mirror of /slow takes 1 s; nobody waited for it
    assert sorted(r["path"] for r in result["received"]) == ["/a", "/b", "/slow"]
    assert all(r["body"] == r["path"] for r in result["received"])
    stats = result["stats"]
    assert (stats["executor"], stats["succeeded"], stats["in_flight"]) == ("thread", 3, 0)


def test_the_thread_pool_is_bounded_and_never_blocks():
    result = run_child(max_in_flight=1)
    assert max(result["timings"]) < 0.5
    stats = result["stats"]
    assert stats["dropped"].get("backlog_full", 0) >= 1
    assert stats["mirrored"] + stats["dropped"]["backlog_full"] == 3


def test_a_threaded_server_records_to_a_file_destination(tmp_path):
    from tests.gor_format import payloads

    child = subprocess.run([sys.executable, str(SCRIPT), "record", str(tmp_path)], capture_output=True, text=True,
                           timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    stats = result["stats"]
    assert result["closed"] and (stats["executor"], stats["succeeded"], stats["in_flight"]) == ("thread", 5, 0)
    [path] = tmp_path.glob("t_*.gor")
    found = payloads(path)
    assert [p.start for p in found[0::2]] == [f"POST /r{i} HTTP/1.1" for i in range(5)]
    assert [p.body for p in found[1::2]] == [b"app got " + b"b" * i for i in range(5)]
