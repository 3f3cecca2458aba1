"""Peak RSS growth of the app process while uploads are mirrored: one 100 MiB, then 20 concurrent 10 MiB.

The app streams the body through (as an upload endpoint does); the mirror is spilled past
MemoryBodyBytes to a temp file and streamed to the sink. The peak is reset before each
load through /proc/PID/clear_refs. Prints JSON: MiB of growth, bare app and mirrored.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import SERVER_CPU, Proc, free_port, sink_count  # noqa: E402

MiB = 1 << 20
PIECE = os.urandom(64 * 1024)


def upload(port: int, size: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.putrequest("POST", "/api/upload")
    conn.putheader("Content-Length", str(size))
    conn.putheader("Content-Type", "application/octet-stream")
    conn.endheaders()
    sent = 0
    while sent < size:
        piece = PIECE[: min(len(PIECE), size - sent)]
        conn.send(piece)
        sent += len(piece)
    response = conn.getresponse()
    assert response.status == 200, response.status
    response.read()
    conn.close()


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_growth(pid: int, load, wait_for) -> float:
    """MiB the peak RSS rose above the RSS before ``load`` ran."""
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    before = status_kib(pid, "VmRSS")
    load()
    wait_for()
    return (status_kib(pid, "VmHWM") - before) / 1024


def measure(case: str, sink_port: int) -> dict[str, float]:
    port = free_port()
    mirror = json.dumps({"MaxBodyBytes": 256 * MiB})
    server = Proc(
        [sys.executable, str(HERE / "server.py"), "upload", case, str(port), str(sink_port), "9", "9", mirror],
        SERVER_CPU,
    )
    try:
        upload(port, 2 * MiB)  # warm up: first temp file, first pooled connection
        time.sleep(0.3)
        start = sink_count(sink_port)

        def arrived(n: int):
            def wait() -> None:
                if case == "bare":
                    return
                deadline = time.monotonic() + 60
                while sink_count(sink_port) < start + n and time.monotonic() < deadline:
                    time.sleep(0.05)

            return wait

        one = peak_growth(server.pid, lambda: upload(port, 100 * MiB), arrived(1))

        def twenty() -> None:
            threads = [threading.Thread(target=upload, args=(port, 10 * MiB)) for _ in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        many = peak_growth(server.pid, twenty, arrived(21))
    finally:
        server.stop()
    return {"one 100 MiB upload": one, "20 concurrent 10 MiB uploads": many}


def main() -> None:
    sink_port = free_port()
    sink = Proc([sys.executable, str(HERE / "sink_server.py"), str(sink_port)], "1")
    try:
        bare = measure("bare", sink_port)
        mirrored = measure("fast", sink_port)
    finally:
        sink.stop()
    print(json.dumps({name: {"bare": bare[name], "mirrored": mirrored[name]} for name in bare}))


if __name__ == "__main__":
    main()
