"""CPU time per mirror over TLS with keep-alive, against plain HTTP, on wsgimirror's send path.

Pinned to core 0 with the sinks on core 1; 8 greenlets send N 1 KiB POSTs each way over kept-alive
connections, alternating rounds; prints the median microseconds of this process's CPU per mirror and the
ratio. The certificates are made by trustme. Usage: python bench/tls_cost.py [N]
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import gevent.pool  # noqa: E402
import trustme  # noqa: E402
from send_cost import BODY, ENVIRON  # noqa: E402

from wsgimirror.agent.runtime import _new_pool  # noqa: E402
from wsgimirror.capture.body import BodyBuffer  # noqa: E402
from wsgimirror.config.model import Destination, HttpClientSettings, MirrorSettings  # noqa: E402
from wsgimirror.send.head import build_head  # noqa: E402
from wsgimirror.send.transport import exchange  # noqa: E402

PLAIN, TLS = 18941, 18942


def send(pool, dest: Destination) -> None:
    buffer = BodyBuffer(1 << 20, 64 << 20)
    buffer.write(BODY)
    exchange(pool, build_head(ENVIRON, dest, buffer.size), buffer, False, 1.0, 5.0, cooperative=True)


def cpu_per_mirror(scheme: str, port: int, http_client: HttpClientSettings, n: int) -> float:
    dest = Destination("d", f"{scheme}://127.0.0.1:{port}", scheme, "127.0.0.1", port, "")
    pool = _new_pool(dest, MirrorSettings(max_in_flight=8), http_client)
    group = gevent.pool.Pool(8)
    for _ in range(50):  # warm the connections (and the handshakes)
        group.spawn(send, pool, dest)
    group.join()
    start = os.times()
    for _ in range(n):
        group.spawn(send, pool, dest)
    group.join()
    end = os.times()
    pool.close()
    return ((end.user - start.user) + (end.system - start.system)) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    os.sched_setaffinity(0, {0})
    here = os.path.dirname(os.path.abspath(__file__))
    ca = trustme.CA()
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, ca_file = (os.path.join(tmp, name) for name in ("cert.pem", "key.pem", "ca.pem"))
        issued = ca.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(cert)
        issued.private_key_pem.write_to_path(key)
        ca.cert_pem.write_to_path(ca_file)
        sinks = [
            subprocess.Popen(
                ["taskset", "-c", "1", sys.executable, os.path.join(here, "sink_server.py"), *args],
                stdout=subprocess.PIPE,
                text=True,
            )
            for args in ([str(PLAIN)], [str(TLS), "0", cert, key])
        ]
        try:
            for sink in sinks:
                assert sink.stdout.readline().strip() == "ready"
            results: dict[str, list[float]] = {"http": [], "https": []}
            for _ in range(5):
                results["http"].append(cpu_per_mirror("http", PLAIN, HttpClientSettings(), n))
                results["https"].append(cpu_per_mirror("https", TLS, HttpClientSettings(ca_file=ca_file), n))
            for name, values in results.items():
                print(f"{name:6s} median {statistics.median(values):6.1f} us/mirror  runs {[round(v) for v in values]}")
            ratio = statistics.median(results["https"]) / statistics.median(results["http"])
            print(f"https / http = {ratio:.2f}")
        finally:
            for sink in sinks:
                sink.terminate()
                sink.wait(timeout=5)


if __name__ == "__main__":
    main()
