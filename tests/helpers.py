"""Real servers and clients on 127.0.0.1 for the tests: no HTTP is mocked anywhere."""

from __future__ import annotations

import os
import socket
import sys
import time
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

import gevent
from gevent.pywsgi import WSGIHandler, WSGIServer

from wsgimirror.commands.serve import RawTargetHandler


def serve(app, handler_class=WSGIHandler, port: int = 0) -> WSGIServer:
    srv = WSGIServer(("127.0.0.1", port), app, log=None, error_log=None, handler_class=handler_class)
    srv.init_socket()
    srv.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    srv.start()
    return srv


@dataclass
class Recorded:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class Sink:
    """A recording mirror destination: a real gevent HTTP server that stores what it receives."""

    def __init__(self, delay: float = 0.0, status: int = 200, body: bytes = b"mirror-ok") -> None:
        self.delay = delay
        self.status = status
        self.body = body
        self.requests: list[Recorded] = []
        self._server: WSGIServer | None = None

    def start(self, port: int = 0) -> Sink:
        self._server = serve(self._app, handler_class=RawTargetHandler, port=port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: t.Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_port

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _app(self, environ, start_response):
        body = environ["wsgi.input"].read()
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        if environ.get("CONTENT_LENGTH"):
            headers["content-length"] = environ["CONTENT_LENGTH"]
        self.requests.append(Recorded(environ["REQUEST_METHOD"], environ["RAW_URI"], headers, body))
        if self.delay:
            gevent.sleep(self.delay)
        start_response(f"{self.status} Sink", [("Content-Type", "text/plain")])
        return [self.body]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Recorded]:
        wait_until(lambda: len(self.requests) >= count, timeout, f"{count} mirrored requests")
        return self.requests


def wait_until(predicate: t.Callable[[], t.Any], timeout: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        gevent.sleep(0.005)


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a raw HTTP/1.1 client: exact bytes, keep-alive, chunked uploads, aborts ---------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """One keep-alive connection that writes exact request bytes and reads framed responses."""

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str = "GET", *args: t.Any, **kwargs: t.Any) -> Response:
        """Send one request (the arguments of :func:`request_bytes`) and read its response."""
        self.send(request_bytes(method, *args, **kwargs))
        return self.read_response(head=method == "HEAD")

    def read_response(self, head: bool = False) -> Response:
        status_line = self.file.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = self.file.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if status < 200:
            return Response(status, headers, b"")
        if head or status in (204, 304):
            body = b""
        elif "content-length" in headers:
            body = self.file.read(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = self._read_chunked()
        else:
            body = self.file.read()
        return Response(status, headers, body)

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("the server closed the connection in the middle of a chunked body")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                self.file.readline()
                return b"".join(parts)
            parts.append(self.file.read(size))
            self.file.readline()


def request_bytes(
    method: str = "GET",
    target: str = "/",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    host: str = "app.test",
    chunked: bool = False,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    payload = b""
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        step = 7000
        pieces = [body[i : i + step] for i in range(0, len(body or b""), step)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    elif body is not None:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def one_request(address: tuple[str, int], **kwargs: t.Any) -> Response:
    with Client(address) as client:
        return client.request(**kwargs)


def mirror_config(*destinations: str, policy: str = "First", route: dict | None = None, **mirror: t.Any) -> dict:
    """A config mirroring every request to one cluster ``m`` holding ``destinations``."""
    return {
        "ReverseProxy": {
            "Routes": {"all": route or {"Match": {"Paths": ["*"]}, "Metadata": {"MirrorCluster": "m"}}},
            "Clusters": {"m": {"LoadBalancingPolicy": policy, "Destinations": [{"Address": d} for d in destinations]}},
        },
        "Mirror": mirror,
    }


def open_files() -> list[str]:
    """What this process's file descriptors point at (sockets, pipes, files, deleted temp files)."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the descriptor listdir itself used
            pass
    return targets


class ScriptedServer:
    """A raw TCP mirror destination whose answer to each request is a scripted behaviour.

    ``behaviour(sock, head, body)`` writes whatever it likes and returns True to keep the
    connection for the next request. Counts connections and requests.
    """

    def __init__(self, behaviour: t.Callable[[socket.socket, bytes, bytes], bool]) -> None:
        from gevent.server import StreamServer

        self.behaviour = behaviour
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.ended = 0  # connections that ended (either side closed them)
        self._server = StreamServer(("127.0.0.1", 0), self._handle)
        self._server.start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        self._server.stop(timeout=1)

    def _handle(self, sock: socket.socket, _addr: t.Any) -> None:
        self.connections += 1
        reader = sock.makefile("rb")
        try:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = reader.read(length)
                self.requests.append((head, body))
                if not self.behaviour(sock, head, body):
                    return
        except OSError:
            return
        finally:
            reader.close()
            sock.close()
            self.ended += 1


ROOT = Path(__file__).resolve().parents[1]


class Process:
    """A child process we started (by pid), with its stderr read up to a readiness marker."""

    def __init__(
        self, args: list[str], ready: str, env: dict[str, str] | None = None, timeout: float = 20, on_stdout=False
    ) -> None:
        from gevent import subprocess

        self.popen = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
        self.err_lines: list[str] = []
        if on_stdout:
            with gevent.Timeout(timeout, AssertionError(f"{args} did not print {ready!r}")):
                assert ready in self.popen.stdout.readline()
        else:
            self.wait_for_line(ready, timeout)

    def signal(self, signum: int) -> None:
        os.kill(self.popen.pid, signum)

    def wait_for_line(self, marker: str, timeout: float = 10) -> str:
        with gevent.Timeout(timeout, AssertionError(f"no line with {marker!r} in {self.err_lines}")):
            while True:
                line = self.popen.stderr.readline()
                self.err_lines.append(line)
                if marker in line:
                    return line
                if not line:
                    raise AssertionError(f"exited before printing {marker!r}: {''.join(self.err_lines)}")

    def stop(self, timeout: float = 15) -> tuple[int, str, str]:
        """SIGTERM, then wait; returns (exit status, stdout, all of stderr)."""
        if self.popen.poll() is None:
            self.signal(15)
        try:
            out, err = self.popen.communicate(timeout=timeout)
        except Exception:
            self.popen.kill()
            out, err = self.popen.communicate()
            raise
        return self.popen.returncode, out, "".join(self.err_lines) + err


def example_config(tmp_path: Path, *sink_addresses: str) -> str:
    """examples/mirror.json with its mirror destinations pointed at the test's sinks."""
    import json

    config = json.loads((ROOT / "examples" / "mirror.json").read_text())
    config["ReverseProxy"]["Clusters"]["shadow"]["Destinations"] = [{"Address": a} for a in sink_addresses]
    path = tmp_path / "mirror.json"
    path.write_text(json.dumps(config))
    return str(path)


class ChildServer:
    """``tests/e2e/child_server.py`` in a child process: the app, wrapped or bare, with its control paths."""

    def __init__(self, config: str) -> None:
        from gevent import subprocess

        self.popen = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "e2e" / "child_server.py"), config],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        with gevent.Timeout(20, AssertionError("the child server did not start")):
            line = self.popen.stdout.readline()
        assert line.startswith("ready "), line + self.popen.stderr.read()
        self.address = ("127.0.0.1", int(line.split()[1]))

    def control(self, target: str) -> dict:
        import json

        return json.loads(one_request(self.address, target=target, host="127.0.0.1").body)

    def stats(self) -> dict:
        return self.control("/__stats")

    def stop(self) -> str:
        """Stop the child (SIGTERM, by its pid) and return what it wrote on stderr."""
        if self.popen.returncode is None:
            if self.popen.poll() is None:
                self.popen.terminate()
            _, self.err = self.popen.communicate(timeout=15)
        return self.err

    def __enter__(self) -> ChildServer:
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.stop()


def write_config(tmp_path: Path, config: dict, name: str = "mirror.json") -> str:
    import json

    path = tmp_path / name
    path.write_text(json.dumps(config))
    return str(path)


def assert_accounted(stats: dict) -> None:
    """Every copy is pending, mirrored or dropped; every mirror succeeded, failed or is in flight.

    In total, and in every breakdown: by route, by cluster, and by destination, where a copy counts once
    picked for it (so none is pending there).
    """
    for shaped in [stats, *(v for key in ("by_route", "by_cluster", "by_destination") for v in stats[key].values())]:
        assert shaped["copies"] == shaped["pending"] + shaped["mirrored"] + sum(shaped["dropped"].values()), stats
        assert shaped["mirrored"] == shaped["succeeded"] + shaped["failed"] + shaped["in_flight"], stats
        assert min(shaped["copies"], shaped["pending"], shaped["mirrored"], *shaped["dropped"].values(), 0) == 0, stats
    for name, destination in stats["by_destination"].items():
        assert destination["pending"] == 0, (name, stats)
