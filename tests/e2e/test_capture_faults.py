"""The copy of a request body under faults: a full disk, no file descriptors, two clusters, many uploads.

Whatever happens to the copy, the app reads its body and answers as it would without the
middleware; the copy is dropped with a reason, and the memory and disk it may hold are bounded
for the whole process.
"""

import hashlib
import json
import os

import gevent
import pytest

from tests.helpers import ChildServer, Client, assert_accounted, mirror_config, request_bytes, wait_until, write_config

MiB = 1 << 20


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(address, body: bytes, target: str = "/upload") -> dict:
    with Client(address, timeout=60) as client:
        response = client.request("POST", target, body=body, host="127.0.0.1")
    assert response.status == 200, response
    return json.loads(response.body)


def slow_uploads(address, bodies: list[bytes], pieces: int = 8, pause: float = 0.05) -> list[dict]:
    """All the uploads at once, each sending its body in ``pieces`` with a pause between them."""

    def one(body: bytes) -> dict:
        with Client(address, timeout=120) as client:
            head = request_bytes("POST", "/upload", body=b"", host="127.0.0.1").replace(
                b"Content-Length: 0", b"Content-Length: %d" % len(body)
            )
            client.send(head)
            step = -(-len(body) // pieces)
            for start in range(0, len(body), step):
                gevent.sleep(pause)
                client.send(body[start : start + step])
            response = client.read_response()
        assert response.status == 200, response
        return json.loads(response.body)

    jobs = [gevent.spawn(one, body) for body in bodies]
    gevent.joinall(jobs, raise_error=True)
    return [job.value for job in jobs]


# -- finding 2: a temp-file error never reaches the app ---------------------------------------------------


def test_a_full_disk_drops_the_copy_and_the_app_still_gets_its_body(tmp_path, sink):
    config = write_config(tmp_path, mirror_config(sink.address, MemoryBodyBytes=64 * 1024))
    with ChildServer(config) as child:
        child.control("/__limit?fsize=1048576")  # no file may grow past 1 MiB: the disk is "full"
        bodies = [os.urandom(4 * MiB) for _ in range(3)]
        for body in bodies:
            assert upload(child.address, body) == {"path": "/upload", "bytes": len(body), "sha256": digest(body)}
        small = os.urandom(512 * 1024)  # spills too, and fits
        assert upload(child.address, small)["sha256"] == digest(small)
        (mirrored,) = sink.wait_for(1)
        assert mirrored.body == small
        stats = child.stats()["stats"]
        assert stats["dropped"] == {"capture_error": 3}
        assert_accounted(stats)
        err = child.stop()
    assert err.count("cannot write a request body copy") == 1, err  # once per streak
    assert err.count("can write request body copies to temporary files again") == 1, err
    assert "Traceback" not in err


def test_no_file_descriptor_left_drops_copies_and_every_upload_is_answered(tmp_path, sink):
    config = write_config(tmp_path, mirror_config(sink.address, MemoryBodyBytes=0))
    with ChildServer(config) as child:
        with Client(child.address) as control:  # opened before the limit; used for stats after
            control.request("GET", "/__limit?files=24", host="127.0.0.1")
            bodies = [os.urandom(256 * 1024 + i) for i in range(20)]  # 20 connections + 20 temp files > 24
            answers = slow_uploads(child.address, bodies, pieces=4, pause=0.1)
            assert [a["sha256"] for a in answers] == [digest(b) for b in bodies]
            stats = json.loads(control.request("GET", "/__stats", host="127.0.0.1").body)["stats"]
        assert stats["dropped"].get("capture_error", 0) >= 5, stats
        assert stats["copies"] == 20
        assert_accounted(stats)
        assert "Traceback" not in child.stop()


# -- finding 3: each mirror of a request reads the body on its own -------------------------------------


def config_with_clusters(sinks, **mirror) -> dict:
    clusters = {f"c{i}": {"Destinations": [{"Address": s.address}]} for i, s in enumerate(sinks)}
    return {
        "ReverseProxy": {
            "Routes": {"all": {"Metadata": {"MirrorCluster": ",".join(clusters)}}},
            "Clusters": clusters,
        },
        "Mirror": mirror,
    }


@pytest.mark.parametrize("clusters", [1, 2, 3])
def test_large_spilled_bodies_reach_every_cluster_byte_for_byte(server, make_sink, clusters):
    from tests.e2e.apps import app
    from wsgimirror.middleware import MirrorMiddleware

    sinks = [make_sink() for _ in range(clusters)]
    mw = MirrorMiddleware(app, config_with_clusters(sinks, MemoryBodyBytes=64 * 1024, Timeout=30))
    address = server(mw)
    bodies = [os.urandom(6 * MiB + i) for i in range(3)]
    jobs = [gevent.spawn(upload, address, body) for body in bodies]
    gevent.joinall(jobs, raise_error=True)
    for s in sinks:
        assert sorted(digest(r.body) for r in s.wait_for(3, timeout=30)) == sorted(digest(b) for b in bodies)
    wait_until(lambda: mw.stats()["succeeded"] == 3 * clusters, 30, "every mirror to end")
    assert mw.stats()["capture"] == {"memory_bytes": 0, "disk_bytes": 0}


@pytest.mark.parametrize("clusters", [1, 2, 3])
def test_under_the_thread_executor_every_cluster_gets_the_exact_body(clusters):
    import subprocess
    import sys

    from tests.helpers import ROOT

    child = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "e2e" / "threaded_server.py"), "clusters", str(clusters)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["stats"]["executor"] == "thread"
    assert result["stats"]["succeeded"] == 3 * clusters, result["stats"]
    assert len(result["received"]) == clusters
    for received in result["received"].values():  # each cluster got the 3 bodies, hashes intact
        assert sorted(received) == sorted(result["sent"])


# -- finding 5: memory and disk bounded for the whole process ---------------------------------------


def rss_rise(config: str, bodies: list[bytes]) -> tuple[int, dict]:
    """Peak RSS rise (kB) of a child serving ``bodies`` as slow concurrent uploads, and its stats."""
    with ChildServer(config) as child:
        for _ in range(3):  # warm up: imports, first connections, pools
            upload(child.address, os.urandom(64 * 1024))
        before = child.stats()["memory"]["VmRSS"]
        answers = slow_uploads(child.address, bodies)
        assert [a["sha256"] for a in answers] == [digest(b) for b in bodies]
        after = child.stats()
    return after["memory"]["VmHWM"] - before, after["stats"]


def test_concurrent_slow_uploads_stay_within_the_capture_memory_cap(tmp_path, sink):
    bodies = [os.urandom(2 * MiB)] * 150
    bare, _ = rss_rise("bare", bodies)
    cap = 16 * MiB
    config = write_config(tmp_path, mirror_config(sink.address, CaptureMemoryBytes=cap, MaxInFlight=256))
    mirrored, stats = rss_rise(config, bodies)
    # The README's bound: bare + CaptureMemoryBytes + 64 KiB per capture in progress (buffers, objects).
    bound = bare + cap // 1024 + 150 * 64
    assert mirrored <= bound, f"RSS rose {mirrored} kB mirrored, {bare} kB bare; bound {bound} kB"
    assert stats["copies"] == 153 and stats["dropped"] == {}
    assert_accounted(stats)


def test_the_temp_file_cap_drops_copies_with_their_own_reason(tmp_path, sink):
    config = mirror_config(sink.address, MemoryBodyBytes=0, CaptureDiskBytes=4 * MiB, Timeout=30)
    with ChildServer(write_config(tmp_path, config)) as child:
        bodies = [os.urandom(MiB + i) for i in range(10)]
        answers = slow_uploads(child.address, bodies, pieces=4, pause=0.2)
        assert [a["sha256"] for a in answers] == [digest(b) for b in bodies]
        stats = child.stats()["stats"]
        assert stats["dropped"].get("spill_budget", 0) >= 6, stats  # at most 3 whole copies fit in 4 MiB
        assert stats["mirrored"] >= 1
        assert_accounted(stats)
        wait_until(lambda: child.stats()["stats"]["in_flight"] == 0, 30, "the mirrors to end")
        assert child.stats()["stats"]["capture"] == {"memory_bytes": 0, "disk_bytes": 0}
