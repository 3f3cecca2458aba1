"""What shadow comparison costs (issue: CPU per comparison, latency, memory), in one run.

    python bench/compare_cost.py [--rounds 3]

1. CPU per comparison of two 2 KiB JSON answers that differ in one field, in-process
   (``Comparer.compare``: both trees, the diff, the counts), median of 5 runs.
2. Single-connection p50 latency of the real traffic, mirroring with and without comparison
   (alternating rounds, median of the rounds' p50s); the server on CPU 0, the rest on CPU 1.
3. Peak RSS of the server under 100 concurrent 5 MiB answers: bare, mirrored, and mirrored
   with comparison (the mirror's answer 5 MiB too).
Prints JSON.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare_server import document  # noqa: E402

from wsgimirror.capture.answer import Answer  # noqa: E402
from wsgimirror.capture.body import CaptureBudget  # noqa: E402
from wsgimirror.compare.comparer import Comparer  # noqa: E402
from wsgimirror.config.model import CompareSettings  # noqa: E402


def cpu_per_comparison(n: int = 3000) -> float:
    app_body = document(2200)
    data = json.loads(app_body)
    data["items"][3]["price"] += 1
    mirror_body = json.dumps(data).encode()
    comparer = Comparer(CompareSettings(max_per_second=10**9))
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/items/42"}

    def answer(body: bytes) -> Answer:
        a = Answer(1 << 20, CaptureBudget())
        a.status, a.headers, a.complete = 200, [("Content-Type", "application/json")], True
        a.feed(body)
        return a

    app, mirror = answer(app_body), answer(mirror_body)
    runs = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            comparer.compare("r", "c", False, environ, dict, app, mirror)
        runs.append((time.process_time() - start) / n * 1e6)
    assert comparer.snapshot()["different"] == 5 * n
    return round(statistics.median(runs), 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, mode: str, mirror_port: int, size: int, cpu: str) -> None:
        self.port = free_port()
        args = ["taskset", "-c", cpu, sys.executable, str(HERE / "compare_server.py"), mode, str(self.port),
                str(mirror_port), str(size)]  # fmt: skip
        self.popen = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": "."})
        assert self.popen.stdout.readline().strip() == "ready"

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.popen.pid}/status") as fh:
            line = next(line for line in fh if line.startswith("VmHWM"))
        return int(line.split()[1]) / 1024

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)


def request(sock: socket.socket, file) -> int:
    sock.sendall(b"GET /items/42 HTTP/1.1\r\nHost: bench\r\n\r\n")
    file.readline()
    length = 0
    while True:
        line = file.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return len(file.read(length))


def p50_ms(port: int, n: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        file = sock.makefile("rb")
        for _ in range(200):
            request(sock, file)  # warm up
        times = []
        for _ in range(n):
            start = time.perf_counter()
            request(sock, file)
            times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


def latency(rounds: int, n: int) -> dict:
    destination = Server("answer", 0, 2200, "1")
    results: dict[str, list[float]] = {"mirror": [], "compare": []}
    try:
        for _ in range(rounds):
            for mode in ("mirror", "compare"):
                server = Server(mode, destination.port, 2200, "0")
                try:
                    results[mode].append(p50_ms(server.port, n))
                finally:
                    server.stop()
    finally:
        destination.stop()
    mirror, compare = statistics.median(results["mirror"]), statistics.median(results["compare"])
    return {"p50_ms_mirror": mirror, "p50_ms_compare": compare, "ratio": round(compare / mirror, 3), "rounds": results}


def peak_memory(clients: int = 100, size: int = 5 << 20) -> dict:
    destination = Server("answer", 0, size, "1")
    peaks = {}
    try:
        for mode in ("bare", "mirror", "compare"):
            server = Server(mode, destination.port, size, "0")
            try:

                def one(port: int = server.port) -> int:
                    with socket.create_connection(("127.0.0.1", port)) as sock:
                        return request(sock, sock.makefile("rb"))

                jobs = [gevent.spawn(one) for _ in range(clients)]
                gevent.joinall(jobs, timeout=120, raise_error=True)
                assert all(job.value >= size * 0.9 for job in jobs)
                time.sleep(2)  # let the mirrors and their comparisons finish
                peaks[mode] = round(server.peak_rss_mb(), 1)
            finally:
                server.stop()
    finally:
        destination.stop()
    return {"clients": clients, "answer_mib": size >> 20, "peak_rss_mb": peaks}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    out = {"cpu_us_per_comparison": cpu_per_comparison()}
    print(json.dumps(out), file=sys.stderr, flush=True)
    out["single_connection"] = latency(args.rounds, args.requests)
    print(json.dumps(out["single_connection"]), file=sys.stderr, flush=True)
    out["memory"] = peak_memory()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
