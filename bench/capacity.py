"""Capacity for slow destinations: the share of copies delivered at a fixed rate to a destination answering in 200 ms.

    python bench/capacity.py [--rate 400] [--seconds 10] [--mirror '{"MaxInFlight": 64}']

The plain app (bench/server.py, case ``slow``) on core 0 with the given ``Mirror`` settings (default: none, the
defaults); the sink (answering after 200 ms) and this load generator on core 1. The generator sends ``rate``
requests per second, evenly spaced, over 64 keep-alive connections, then reads the middleware's stats once every
mirror has ended. Little's law: rate x latency = 400 x 0.2 s = 80 mirrors in flight on average. Prints JSON.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.queue import Queue  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from apps import BODY  # noqa: E402
from run import free_port, server_stats  # noqa: E402

CONNECTIONS = 64


def start(args: list[str], cpu: str) -> subprocess.Popen:
    popen = subprocess.Popen(["taskset", "-c", cpu, sys.executable, *args], stdout=subprocess.PIPE, text=True)
    assert popen.stdout.readline().strip() == "ready"
    return popen


def load(port: int, rate: int, seconds: float) -> int:
    """Send ``rate`` requests per second for ``seconds``; returns how many were answered 200."""
    tickets: Queue = Queue()
    answered = [0]

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while tickets.get():
            conn.request("POST", "/api/plain", body=BODY, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            answered[0] += response.status == 200

    workers = [gevent.spawn(worker) for _ in range(CONNECTIONS)]
    begin = time.perf_counter()
    for i in range(int(rate * seconds)):
        gevent.sleep(max(0.0, begin + i / rate - time.perf_counter()))
        tickets.put(True)
    for _ in workers:
        tickets.put(False)
    gevent.joinall(workers, timeout=30)
    return answered[0]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--mirror", default="{}", help="the Mirror section, as JSON")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    slow, port = free_port(), free_port()
    sink = start([str(HERE / "sink_server.py"), str(slow), "0.2"], "1")
    server = start([str(HERE / "server.py"), "plain", "slow", str(port), str(slow), str(slow), str(slow), args.mirror],
                   "0")  # fmt: skip
    try:
        answered = load(port, args.rate, args.seconds)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and server_stats(port)["in_flight"]:
            time.sleep(0.2)
        stats = server_stats(port)
    finally:
        for popen in (server, sink):
            popen.terminate()
            popen.wait(10)
    copies = stats["copies"]
    print(json.dumps({
        "rate": args.rate, "seconds": args.seconds, "mirror": json.loads(args.mirror), "answered": answered,
        "copies": copies, "succeeded": stats["succeeded"], "dropped": stats["dropped"],
        "delivered_share": round(stats["succeeded"] / copies, 4) if copies else None,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
