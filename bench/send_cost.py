"""CPU time per mirrored request on the send path: wsgimirror's transport against urllib3's urlopen.

Pinned to core 0 with the sink on core 1; 8 greenlets send N requests each way, alternating
rounds; prints the median microseconds of this process's CPU per request.
Usage: python bench/send_cost.py [N]
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import gevent.pool  # noqa: E402
from urllib3 import HTTPConnectionPool, Timeout  # noqa: E402

from wsgimirror.capture.body import BodyBuffer  # noqa: E402
from wsgimirror.config.model import Destination  # noqa: E402
from wsgimirror.send.head import build_head  # noqa: E402
from wsgimirror.send.transport import MirrorHTTPConnectionPool, exchange  # noqa: E402

PORT = 18931
ENVIRON = {
    "REQUEST_METHOD": "POST",
    "PATH_INFO": "/api/orders",
    "QUERY_STRING": "id=7",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_HOST": "api.com",
    "CONTENT_TYPE": "application/json",
    "CONTENT_LENGTH": "1024",
    "HTTP_ACCEPT": "*/*",
    "HTTP_USER_AGENT": "bench",
    "wsgi.url_scheme": "http",
}
BODY = b"x" * 1024


def with_wsgimirror(pool: HTTPConnectionPool, dest: Destination) -> None:
    buffer = BodyBuffer(1 << 20, 64 << 20)
    buffer.write(BODY)
    exchange(pool, build_head(ENVIRON, dest, buffer.size), buffer, False, 1.0, 5.0, cooperative=True)


def with_urlopen(pool: HTTPConnectionPool, dest: Destination) -> None:
    headers = {"Content-Type": "application/json", "Accept": "*/*", "User-Agent": "bench", "X-Mirrored-By": "x"}
    response = pool.urlopen(
        "POST", "/api/orders?id=7", body=BODY, headers=headers, retries=False, redirect=False,
        preload_content=False, timeout=Timeout(connect=1.0, read=5.0), assert_same_host=False,
    )  # fmt: skip
    response.drain_conn()
    response.release_conn()


def cpu_per_request(fn, n: int) -> float:
    dest = Destination("d", f"http://127.0.0.1:{PORT}", "http", "127.0.0.1", PORT, "")
    pool_class = MirrorHTTPConnectionPool if fn is with_wsgimirror else HTTPConnectionPool
    pool = pool_class("127.0.0.1", PORT, maxsize=8, block=False, retries=False)
    group = gevent.pool.Pool(8)
    for _ in range(50):  # warm the connections
        fn(pool, dest)
    start = os.times()
    for _ in range(n):
        group.spawn(fn, pool, dest)
    group.join()
    end = os.times()
    user, system = (end.user - start.user) / n * 1e6, (end.system - start.system) / n * 1e6
    print(f"  {fn.__name__}: user {user:.0f} us, system {system:.0f} us")
    used = (user + system) / 1e6 * n
    pool.close()
    return used / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    os.sched_setaffinity(0, {0})
    here = os.path.dirname(os.path.abspath(__file__))
    sink = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, os.path.join(here, "sink_server.py"), str(PORT)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sink.stdout.readline().strip() == "ready"
        results = {"wsgimirror": [], "urlopen": []}
        for _ in range(5):
            results["wsgimirror"].append(cpu_per_request(with_wsgimirror, n))
            results["urlopen"].append(cpu_per_request(with_urlopen, n))
        for name, values in results.items():
            print(f"{name:10s} median {statistics.median(values):6.1f} us/request  runs {[round(v) for v in values]}")
        ratio = statistics.median(results["wsgimirror"]) / statistics.median(results["urlopen"])
        print(f"wsgimirror / urlopen = {ratio:.2f}")
    finally:
        sink.terminate()
        sink.wait(timeout=5)


if __name__ == "__main__":
    main()
