"""Django, end to end: examples/django_site served by `wsgimirror serve` and by gunicorn's gevent worker.

One view reads the body through ``request.body``, the other a multipart form with a file
through ``request.POST`` and ``request.FILES``. Every mirror arrives byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import pytest

from tests.helpers import ROOT, Client, Process, free_port, mirror_config, wait_until, write_config

BOUNDARY = b"wsgimirror-django-boundary"


def multipart(fields: dict[str, str], name: str, content: bytes) -> bytes:
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (BOUNDARY, k.encode(), v.encode())
        for k, v in fields.items()
    ]
    parts.append(
        b'--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n%s\r\n" % (BOUNDARY, name.encode(), content)
    )
    return b"".join(parts) + b"--%s--\r\n" % BOUNDARY


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def exercise(address, sink) -> None:
    """A raw body and a multipart upload; the real answers and the mirrors are checked byte for byte."""
    body = os.urandom(3 * 1024 * 1024 + 5)  # past Django's 2.5 MiB in-memory limit
    content = os.urandom(1024 * 1024 + 3)
    form = multipart({"title": "holiday", "tags": "a,b"}, "photo.bin", content)
    with Client(address, timeout=30) as client:
        answer = client.request("POST", "/api/body", body=body, host="127.0.0.1")
        assert json.loads(answer.body) == {"bytes": len(body), "sha256": sha(body)}
        answer = client.request(
            "POST", "/api/upload", body=form, host="127.0.0.1",
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}"},
        )  # fmt: skip
        assert json.loads(answer.body) == {"fields": {"title": "holiday", "tags": "a,b"}, "file": "photo.bin",
                                           "bytes": len(content), "sha256": sha(content)}  # fmt: skip
    received = {r.target: r for r in sink.wait_for(2, timeout=30)}
    assert received["/api/body"].body == body
    upload = received["/api/upload"]
    assert upload.body == form
    assert upload.headers["content-type"] == f"multipart/form-data; boundary={BOUNDARY.decode()}"


@pytest.fixture
def config(tmp_path, sink):
    return write_config(tmp_path, mirror_config(sink.address, route={"Match": {"Paths": ["/api/*"]},
                                                                     "Metadata": {"MirrorCluster": "m"}}))  # fmt: skip


def test_django_served_by_wsgimirror_serve_mirrors_every_body_exactly(config, sink):
    port = free_port()
    proc = Process([sys.executable, "-m", "wsgimirror", "serve", "examples.django_site.wsgi:django_app",
                    "--config", config, "--bind", f"127.0.0.1:{port}"], ready="serving on")  # fmt: skip
    try:
        exercise(("127.0.0.1", port), sink)
    finally:
        status, _, err = proc.stop()
    assert status == 0, err
    assert "stopped: 2 requests; 2 copies = 2 mirrored + 0 dropped + 0 pending; mirrored: 2 succeeded" in err


def test_django_under_gunicorns_gevent_workers_mirrors_every_body_exactly(config, sink):
    port = free_port()
    proc = Process([sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "2", "-b", f"127.0.0.1:{port}",
                    "examples.django_site.wsgi:application"], ready="Booting worker",
                   env={"WSGIMIRROR_CONFIG": config})  # fmt: skip
    try:

        def answers() -> bool:
            try:
                with Client(("127.0.0.1", port), timeout=2) as client:
                    return client.request("GET", "/health", host="127.0.0.1").status == 404
            except OSError:
                return False

        wait_until(answers, 30, "gunicorn to answer")
        exercise(("127.0.0.1", port), sink)
    finally:
        status, _, err = proc.stop()
    assert status == 0, err
    assert "Traceback" not in err


def test_the_example_settings_keep_the_log_clock_on_utc():
    """Django's default TIME_ZONE (America/Chicago) moved every log timestamp of the example 6 hours back."""
    import subprocess

    code = (
        "import os, time, django; os.environ['DJANGO_SETTINGS_MODULE'] = 'examples.django_site.settings'; "
        "django.setup(); print(time.strftime('%Z'), time.timezone)"
    )
    env = {**os.environ, "TZ": "UTC", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["UTC", "0"]
