"""The real traffic's tail under saturation: bare against fully mirrored, per-connection fairness included.

    python bench/tail.py [--rounds 3] [--duration 6] [--connections 16] [--apps plain,flask]

The server is pinned to core 0, wrk and the sink to core 1. Each round runs every case once, alternating;
medians are printed as JSON: requests/s, p50 and p99 (wrk), and how the requests spread over the keep-alive
connections (the fewest and most any connection got, from the server's own count per client port).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from apps import BODY  # noqa: E402
from run import LOAD_CPU, PATHS, SERVER_CPU, Proc, ensure_tools, free_port, wrk  # noqa: E402


def one(app: str, case: str, ports: dict[str, int], lua: str, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    os.environ["BENCH_PER_CONNECTION"] = "1"
    server = Proc([sys.executable, str(HERE / "server.py"), app, case, str(port), str(ports["fast"]), "1", "1"],
                  SERVER_CPU)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}{PATHS[app]}"
        wrk(url, args.connections, 1, lua)  # warm up
        result = wrk(url, args.connections, args.duration, lua)
    finally:
        stats = json.loads(server.stop().strip().splitlines()[-1])
    counts = stats.get("per_connection", [])
    # the warm-up's connections are counted too: keep the measured run's (the busiest ones)
    counts = sorted(counts)[-args.connections :]
    copies = stats.get("copies", 0)
    result["sent_share"] = round(stats.get("mirrored", 0) / copies, 3) if copies else 0.0
    result["fewest_per_connection"] = counts[0] if counts else 0
    result["most_per_connection"] = counts[-1] if counts else 0
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--apps", default="plain,flask")
    parser.add_argument("--cases", default="bare,fast")
    args = parser.parse_args()
    ensure_tools()
    with tempfile.TemporaryDirectory() as tmp:
        lua = os.path.join(tmp, "post.lua")
        lines = [
            'wrk.method = "POST"',
            f"wrk.body = [==[{BODY.decode()}]==]",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
        Path(lua).write_text("\n".join(lines) + "\n")
        ports = {"fast": free_port()}
        sink = Proc([sys.executable, str(HERE / "sink_server.py"), str(ports["fast"])], LOAD_CPU)
        try:
            runs: dict[str, list[dict[str, float]]] = {}
            for _ in range(args.rounds):
                for app in args.apps.split(","):
                    for case in args.cases.split(","):
                        runs.setdefault(f"{app}/{case}", []).append(one(app, case, ports, lua, args))
        finally:
            sink.stop()
    medians = {
        name: {key: round(statistics.median(r[key] for r in results), 3) for key in results[0]}
        for name, results in runs.items()
    }
    print(json.dumps({"medians": medians, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
