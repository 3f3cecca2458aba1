"""CPU per mirror inside the server, against the send microbenchmark, in the same run.

    python bench/cpu_per_mirror.py [--rounds 5] [--duration 6] [--apps flask,plain] [--variant NAME=DIR ...]

For each app, alternating rounds serve it bare and mirrored (100 % to the fast sink) on core 0 at a
fixed 400 requests/s from core 1, and read the server's CPU time. The extra CPU per mirrored
request is (mirrored - bare) per request; the implied full-mirroring throughput is bare / mirrored
CPU per request. ``bench/send_cost.py`` then measures the send path alone, and the ratio of the two
is printed: the target is at most 1.3.

``--variant NAME=DIR`` serves the mirrored case once more per round with ``DIR`` first on
PYTHONPATH (a copy of the package with one change), to weigh a change before making it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from apps import BODY  # noqa: E402
from run import FIXED_RATE, LOAD_CPU, PATHS, SERVER_CPU, Proc, cpu_seconds, ensure_tools, free_port, hey  # noqa: E402


def served(app: str, case: str, ports: dict[str, int], duration: float, body: str, pythonpath: str | None) -> float:
    """CPU microseconds per answered request of one server at the fixed rate."""
    port = free_port()
    env_path = os.pathsep.join(p for p in (pythonpath, os.environ.get("PYTHONPATH")) if p)
    previous = os.environ.get("PYTHONPATH")
    if env_path:
        os.environ["PYTHONPATH"] = env_path
    try:
        server = Proc([sys.executable, str(HERE / "server.py"), app, case, str(port), str(ports["fast"]),
                       str(ports["fast"]), str(ports["dead"])], SERVER_CPU)  # fmt: skip
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
    url = f"http://127.0.0.1:{port}{PATHS[app]}"
    try:
        hey(url, FIXED_RATE, 1, body)  # warm up
        time.sleep(0.3)
        before = cpu_seconds(server.pid)
        answered = hey(url, FIXED_RATE, duration, body)
        cpu = cpu_seconds(server.pid) - before
    finally:
        server.stop()
    return cpu / max(answered, 1) * 1e6


def send_microbenchmark() -> float:
    out = subprocess.run([sys.executable, str(HERE / "send_cost.py")], capture_output=True, text=True, check=True)
    return float(re.search(r"wsgimirror\s+median\s+([\d.]+)", out.stdout).group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--apps", default="flask,plain")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR")
    args = parser.parse_args()
    ensure_tools()
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    variants = dict(v.split("=", 1) for v in args.variant)
    cases = {"bare": ("bare", None), "mirrored": ("fast", None)}
    cases.update({name: ("fast", path) for name, path in variants.items()})
    apps = args.apps.split(",")
    runs: dict[str, dict[str, list[float]]] = {app: {name: [] for name in cases} for app in apps}
    with tempfile.TemporaryDirectory() as tmp:
        body = os.path.join(tmp, "body.json")
        Path(body).write_bytes(BODY)
        ports = {"fast": free_port(), "dead": free_port()}
        sink = Proc([sys.executable, str(HERE / "sink_server.py"), str(ports["fast"])], LOAD_CPU)
        try:
            for number in range(args.rounds):
                for app in apps:
                    for name, (case, pythonpath) in cases.items():
                        cpu = served(app, case, ports, args.duration, body, pythonpath)
                        runs[app][name].append(cpu)
                        print(f"round {number + 1} {app:5} {name:10} {cpu:7.1f} us/request", flush=True)
        finally:
            sink.stop()
    send = send_microbenchmark()
    summary: dict = {"send_us": send, "apps": {}}
    for app in apps:
        bare = statistics.median(runs[app]["bare"])
        row = {"bare_us": round(bare, 1)}
        for name in cases:
            if name == "bare":
                continue
            mirrored = statistics.median(runs[app][name])
            row[name] = {"us": round(mirrored, 1), "extra_us": round(mirrored - bare, 1),
                         "ratio_to_send": round((mirrored - bare) / send, 2),
                         "implied_throughput": round(bare / mirrored, 2)}  # fmt: skip
        summary["apps"][app] = row
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
