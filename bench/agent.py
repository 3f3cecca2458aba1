"""The mirror agent's costs and isolation, side by side with bare and in-process, in one run.

    python bench/agent.py [--rounds 3] [--duration 5] [--parts cpu,single,saturated,compare] [--apps flask,plain]

The app's server is pinned to core 0; the load generators and sinks to core 1, where the agent puts itself
(it takes the cores its starter does not use). Each round runs every case of every part once, alternating;
the medians are printed as JSON and written to bench/results/agent.json.

- cpu: at 400 requests/s, CPU per request of the app's process, bare, in-process and with the agent (whose
  own CPU per request is reported beside it); implied full-mirroring throughput = bare / mirrored app CPU.
- single: one keep-alive connection, every request mirrored to a sink answering after 200 ms: p50 against bare.
- saturated: 16 connections saturating the app, everything mirrored: throughput and p99 against bare, and the
  share of copies delivered.
- compare: about 700 KB JSON answers nested 10 levels, 4 a second, mirrored to a candidate and compared; an
  unmirrored path's p99 at 100 requests/s, and the app's peak RSS growth: comparison off, in-process, agent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from apps import BODY  # noqa: E402
from run import FIXED_RATE, LOAD_CPU, PATHS, SERVER_CPU, Proc, cpu_seconds, ensure_tools, free_port, hey, wrk  # noqa: E402

PATHS = {**PATHS, "bigjson": "/api/big"}


class Server:
    """bench/server.py for one case; ``agent`` sends its mirrors through an agent at a socket of its own."""

    def __init__(self, app: str, case: str, ports: dict[str, int], agent: bool, compare: bool, tmp: str) -> None:
        self.port = free_port()
        self.socket = tempfile.mkdtemp(dir=tmp) + "/agent.sock" if agent else ""
        env = {"BENCH_AGENT": self.socket, "BENCH_COMPARE": "1" if compare else ""}
        previous = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            self.proc = Proc([sys.executable, str(HERE / "server.py"), app, case, str(self.port), str(ports["fast"]),
                              str(ports["slow"]), str(ports["dead"])], SERVER_CPU)  # fmt: skip
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self.url = f"http://127.0.0.1:{self.port}{PATHS[app]}"

    def agent_pid(self) -> int | None:
        if not self.socket:
            return None
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(self.socket)
                return int(struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0])
        except OSError:
            return None

    def stats(self) -> dict:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/_stats")
        stats = json.loads(conn.getresponse().read())
        conn.close()
        return stats

    def stop(self) -> None:
        agent = self.agent_pid()
        self.proc.stop()
        if agent:
            os.kill(agent, 15)


def memory_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def hey_get(url: str, rate: int, duration: float, connections: int = 1) -> dict[str, float]:
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "hey", "-z", f"{max(1, round(duration))}s", "-c", str(connections), "-q",
         str(max(1, rate // connections)), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    count = re.search(r"\[200\]\s+(\d+) responses", out)
    return {"p99_ms": float(p99.group(1)) * 1e3 if p99 else 0.0, "answered": int(count.group(1)) if count else 0}


# -- the parts ---------------------------------------------------------------------------------------------------


def cpu_part(app: str, ports: dict[str, int], args: argparse.Namespace, files: dict[str, str]) -> dict[str, dict]:
    results = {}
    for name, case, agent in (("bare", "bare", False), ("in-process", "fast", False), ("agent", "fast", True)):
        server = Server(app, case, ports, agent, False, files["tmp"])
        try:
            hey(server.url, FIXED_RATE, 1, files["body"])  # warm up (and start the agent)
            time.sleep(0.5)
            pid = server.agent_pid()
            before, agent_before = cpu_seconds(server.proc.pid), cpu_seconds(pid) if pid else 0.0
            answered = hey(server.url, FIXED_RATE, args.duration, files["body"])
            cpu, agent_cpu = cpu_seconds(server.proc.pid) - before, (cpu_seconds(pid) - agent_before if pid else 0.0)
        finally:
            server.stop()
        results[name] = {"app_us": cpu / max(answered, 1) * 1e6, "agent_us": agent_cpu / max(answered, 1) * 1e6}
    return results


def single_part(app: str, ports: dict[str, int], args: argparse.Namespace, files: dict[str, str]) -> dict[str, dict]:
    results = {}
    for name, case, agent in (("bare", "bare", False), ("in-process", "slow", False), ("agent", "slow", True)):
        server = Server(app, case, ports, agent, False, files["tmp"])
        try:
            wrk(server.url, 1, 1, files["lua"])
            results[name] = wrk(server.url, 1, args.duration, files["lua"])
        finally:
            server.stop()
    return results


def saturated_part(app: str, ports: dict[str, int], args: argparse.Namespace, files: dict[str, str]) -> dict[str, dict]:
    results = {}
    for name, case, agent in (("bare", "bare", False), ("in-process", "fast", False), ("agent", "fast", True)):
        server = Server(app, case, ports, agent, False, files["tmp"])
        try:
            wrk(server.url, 16, 1, files["lua"])
            time.sleep(0.5)
            before = server.stats() if case != "bare" else {}
            result = wrk(server.url, 16, args.duration, files["lua"])
            if case != "bare":
                time.sleep(1.0)  # let the copies handed off end
                after = server.stats()
                copies = after["copies"] - before["copies"]
                result["delivered"] = (after["succeeded"] - before["succeeded"]) / copies if copies else 0.0
        finally:
            server.stop()
        results[name] = result
    return results


def compare_part(ports: dict[str, int], args: argparse.Namespace, files: dict[str, str]) -> dict[str, dict]:
    results = {}
    candidate = {**ports, "fast": ports["json"]}
    for name, agent, compare in (("off", False, False), ("in-process", False, True), ("agent", True, True)):
        server = Server("bigjson", "fast", candidate, agent, compare, files["tmp"])
        try:
            ping = f"http://127.0.0.1:{server.port}/ping"
            hey_get(ping, 50, 1)  # warm up
            subprocess.run(["curl", "-s", "-o", "/dev/null", server.url], check=True)
            time.sleep(1.0)
            rss_before = memory_kb(server.proc.pid, "VmRSS")
            big = subprocess.Popen(["taskset", "-c", LOAD_CPU, "hey", "-z", f"{round(args.duration) + 2}s", "-c", "1",
                                    "-q", "4", server.url], stdout=subprocess.DEVNULL)  # fmt: skip
            time.sleep(1.0)
            result = hey_get(ping, 100, args.duration, 2)
            big.wait(timeout=60)
            result["rss_growth_mb"] = (memory_kb(server.proc.pid, "VmHWM") - rss_before) / 1024
            stats = server.stats()
            result["compared"] = stats.get("compare", {}).get("compared", 0)
        finally:
            server.stop()
        results[name] = result
    return results


# -- the run -------------------------------------------------------------------------------------------------------


def median(runs: list[dict], *keys: str) -> float:
    values = []
    for run in runs:
        value = run
        for key in keys:
            value = value[key]
        values.append(value)
    return round(statistics.median(values), 3)


def summary(raw: dict) -> dict:
    out: dict = {}
    for app, parts in raw.items():
        row: dict = {}
        if "cpu" in parts:
            cpu = parts["cpu"]
            bare = median(cpu, "bare", "app_us")
            row["cpu"] = {name: {"app_us": median(cpu, name, "app_us"), "agent_us": median(cpu, name, "agent_us"),
                                 "extra_us": round(median(cpu, name, "app_us") - bare, 1),
                                 "implied_throughput": round(bare / median(cpu, name, "app_us"), 3)}
                          for name in ("bare", "in-process", "agent")}  # fmt: skip
        if "single" in parts:
            bare = median(parts["single"], "bare", "p50_ms")
            row["single"] = {name: {"p50_ms": median(parts["single"], name, "p50_ms"),
                                    "vs_bare": round(median(parts["single"], name, "p50_ms") / bare, 3)}
                             for name in ("bare", "in-process", "agent")}  # fmt: skip
        if "saturated" in parts:
            sat = parts["saturated"]
            rps, p99 = median(sat, "bare", "rps"), median(sat, "bare", "p99_ms")
            row["saturated"] = {name: {"rps": median(sat, name, "rps"), "p99_ms": median(sat, name, "p99_ms"),
                                       "throughput_vs_bare": round(median(sat, name, "rps") / rps, 3),
                                       "p99_vs_bare": round(median(sat, name, "p99_ms") / p99, 3),
                                       **({"delivered": median(sat, name, "delivered")} if name != "bare" else {})}
                                for name in ("bare", "in-process", "agent")}  # fmt: skip
        if "compare" in parts:
            cmp = parts["compare"]
            off = median(cmp, "off", "p99_ms")
            row["compare"] = {name: {"ping_p99_ms": median(cmp, name, "p99_ms"),
                                     "p99_vs_off": round(median(cmp, name, "p99_ms") / off, 3),
                                     "rss_growth_mb": median(cmp, name, "rss_growth_mb"),
                                     "compared": median(cmp, name, "compared")}
                              for name in ("off", "in-process", "agent")}  # fmt: skip
        out[app] = row
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--parts", default="cpu,single,saturated,compare")
    parser.add_argument("--apps", default="flask,plain")
    args = parser.parse_args()
    ensure_tools()
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    parts = args.parts.split(",")
    raw: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o700)
        files = {"tmp": tmp, "body": os.path.join(tmp, "body.json"), "lua": os.path.join(tmp, "post.lua")}
        Path(files["body"]).write_bytes(BODY)
        Path(files["lua"]).write_text('wrk.method = "POST"\nwrk.body = [==[' + BODY.decode() + ']==]\n'
                                      'wrk.headers["Content-Type"] = "application/json"\n')  # fmt: skip
        ports = {"fast": free_port(), "slow": free_port(), "dead": free_port(), "json": free_port()}
        sinks = [Proc([sys.executable, str(HERE / "sink_server.py"), str(ports["fast"])], LOAD_CPU),
                 Proc([sys.executable, str(HERE / "sink_server.py"), str(ports["slow"]), "0.2"], LOAD_CPU),
                 Proc([sys.executable, str(HERE / "json_server.py"), str(ports["json"])], LOAD_CPU)]  # fmt: skip
        try:
            for number in range(args.rounds):
                for app in args.apps.split(","):
                    for part, run in (("cpu", cpu_part), ("single", single_part), ("saturated", saturated_part)):
                        if part in parts:
                            raw.setdefault(app, {}).setdefault(part, []).append(run(app, ports, args, files))
                            print(f"round {number + 1} {app} {part}: {json.dumps(raw[app][part][-1])}", flush=True)
                if "compare" in parts:
                    raw.setdefault("bigjson", {}).setdefault("compare", []).append(compare_part(ports, args, files))
                    print(f"round {number + 1} compare: {json.dumps(raw['bigjson']['compare'][-1])}", flush=True)
        finally:
            for sink in sinks:
                sink.stop()
    result = {"summary": summary(raw), "raw": raw}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "agent.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
