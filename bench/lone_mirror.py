"""What a mirror costs when it comes alone: the send path in bursts, back to back, and paced as a server sees it.

    python bench/lone_mirror.py [--rounds 5] [--count 2000]

No server and no WSGI: the same ``exchange`` as ``bench/send_cost.py`` (a 1 KiB POST to the local
sink, on a kept-alive connection), pinned to core 0 with the sink on core 1, in five shapes per round:

- ``burst c8``: 8 greenlets back to back, as ``send_cost.py`` measures it;
- ``back to back c1``: one mirror at a time, the next as soon as the last is answered;
- ``ticks only``: a loop that wakes 400 times a second and does nothing, the floor of the next two;
- ``a mirror a tick``: a mirror started at each of those wake-ups, as a server at 400 requests/s does;
- ``8 mirrors every 8th tick``: the same rate, started in batches of eight;
- ``a hand-off a tick``: at each wake-up the copy (head and body) is written to a Unix socket that a
  process on core 1 reads, and nothing comes back: what the app's process would pay if another process sent;
- ``8 hand-offs every 8th tick``: the same, eight copies in one write.

Prints each shape's CPU microseconds per mirror (median of the rounds) and, for the paced shapes, what
a mirror adds above the ticks. ``bench/cpu_per_mirror.py`` compares the server's extra CPU per mirror
with ``burst c8``; this says how much of the gap a lone mirror's own wake-ups explain.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import typing as t  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
from send_cost import ENVIRON, PORT  # noqa: E402

from wsgimirror.capture.body import BodyBuffer  # noqa: E402
from wsgimirror.config.model import Destination  # noqa: E402
from wsgimirror.send.head import build_head  # noqa: E402
from wsgimirror.send.transport import MirrorHTTPConnectionPool, exchange  # noqa: E402

RATE = 400  # requests (ticks) per second, as bench/cpu_per_mirror.py serves them
BODY = b"x" * 1024
DESTINATION = Destination("d", f"http://127.0.0.1:{PORT}", "http", "127.0.0.1", PORT, "")
POOL = MirrorHTTPConnectionPool("127.0.0.1", PORT, maxsize=8, block=False, retries=False)


def mirror() -> None:
    buffer = BodyBuffer(1 << 20, 64 << 20)
    buffer.write(BODY)
    exchange(POOL, build_head(ENVIRON, DESTINATION, buffer.size), buffer, False, 1.0, 5.0, cooperative=True)


def cpu() -> float:
    times = os.times()
    return times.user + times.system


def back_to_back(count: int, concurrency: int) -> float:
    group = gevent.pool.Pool(concurrency)
    start = cpu()
    for _ in range(count):
        group.spawn(mirror)
    group.join()
    return (cpu() - start) / count * 1e6


def paced(count: int, batch: int, work: t.Callable[[], None] = mirror) -> float:
    """CPU per tick of a loop woken RATE times a second; ``batch`` works every ``batch``-th tick (0: none)."""
    period = 1.0 / RATE
    group = gevent.pool.Group()
    start, begun = cpu(), time.monotonic()
    for tick in range(1, count + 1):
        if batch and tick % batch == 0:
            for _ in range(batch):
                group.spawn(work)
        gevent.sleep(max(begun + tick * period - time.monotonic(), 0))
    group.join()
    return (cpu() - start) / count * 1e6


class HandOff:
    """A Unix socket to a reader process on core 1 that discards what it gets: the copy leaves the process."""

    READER = (
        "import socket, sys\n"
        "s = socket.socket(fileno=int(sys.argv[1]))\n"
        "s.setblocking(True)\n"
        "while s.recv(1 << 16):\n"
        "    pass\n"
    )

    def __init__(self, batch: int = 1) -> None:
        import socket

        self.batch, self.held = batch, 0

        self.mine, theirs = socket.socketpair()
        self.reader = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", self.READER, str(theirs.fileno())],
                                       pass_fds=[theirs.fileno()])  # fmt: skip
        theirs.close()
        self.copy = build_head(ENVIRON, DESTINATION, len(BODY)) + BODY

    def __call__(self) -> None:
        self.held += 1
        if self.held == self.batch:
            self.mine.sendall(self.copy * self.batch)
            self.held = 0

    def close(self) -> None:
        self.mine.close()
        self.reader.wait(timeout=5)


HAND_OFF, HAND_OFF_8 = HandOff(), HandOff(8)

SHAPES = {
    "burst c8": lambda n: back_to_back(n, 8),
    "back to back c1": lambda n: back_to_back(n, 1),
    "ticks only": lambda n: paced(n, 0),
    "a mirror a tick": lambda n: paced(n, 1),
    "8 mirrors every 8th tick": lambda n: paced(n, 8),
    "a hand-off a tick": lambda n: paced(n, 1, HAND_OFF),
    "8 hand-offs every 8th tick": lambda n: paced(n, 8, HAND_OFF_8),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    here = os.path.dirname(os.path.abspath(__file__))
    sink = subprocess.Popen(["taskset", "-c", "1", sys.executable, os.path.join(here, "sink_server.py"), str(PORT)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        for _ in range(50):  # warm the connections
            mirror()
        runs: dict[str, list[float]] = {name: [] for name in SHAPES}
        for _ in range(args.rounds):
            for name, shape in SHAPES.items():
                runs[name].append(shape(args.count))
        medians = {name: round(statistics.median(values), 1) for name, values in runs.items()}
        ticks = medians["ticks only"]
        print(json.dumps({
            "us_per_mirror": medians,
            "above_ticks": {"a mirror a tick": round(medians["a mirror a tick"] - ticks, 1),
                            "8 mirrors every 8th tick": round(medians["8 mirrors every 8th tick"] - ticks, 1),
                            "a hand-off a tick": round(medians["a hand-off a tick"] - ticks, 1),
                            "8 hand-offs every 8th tick": round(medians["8 hand-offs every 8th tick"] - ticks, 1)},
            "runs": {name: [round(v) for v in values] for name, values in runs.items()},
        }, indent=1))  # fmt: skip
    finally:
        HAND_OFF.close()
        HAND_OFF_8.close()
        sink.terminate()
        sink.wait(timeout=5)


if __name__ == "__main__":
    main()
