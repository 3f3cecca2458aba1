"""The benchmark: what mirroring costs the app, measured in one run so that ratios mean something.

    python bench/run.py [--duration 3] [--rounds 3] [--apps flask,plain] [--skip-memory]

The server is pinned to core 0; wrk, hey and the sinks to core 1. Every case is run once per
round, rounds alternate the cases, and the tables quote medians. Results go to
bench/results/latest.{json,md,png}. Needs wrk and hey (Debian packages; installed here
with apt-get when running as root) and matplotlib (pip install -e ".[bench]").
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from apps import BODY, CASE_LABELS, CASES  # noqa: E402

SERVER_CPU, LOAD_CPU = "0", "1"
FIXED_RATE = 400  # requests per second, well below saturation
PATHS = {"flask": "/api/echo", "plain": "/api/plain"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_tools() -> None:
    missing = [tool for tool in ("wrk", "hey", "taskset") if shutil.which(tool) is None]
    if missing and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk", "hey"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        missing = [tool for tool in ("wrk", "hey", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"bench needs {', '.join(missing)}: apt-get install wrk hey")


class Proc:
    """A process we started, pinned to a core, ready once it printed "ready"; stopped by its pid."""

    def __init__(self, args: list[str], cpu: str) -> None:
        self.popen = subprocess.Popen(["taskset", "-c", cpu, *args], stdout=subprocess.PIPE, text=True)
        line = self.popen.stdout.readline().strip()
        if line != "ready":
            self.popen.kill()
            raise RuntimeError(f"{args} did not start: {line!r}")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> str:
        self.popen.terminate()
        out, _ = self.popen.communicate(timeout=15)
        return out


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid``, in seconds, from schedstat (nanoseconds)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
            total += int(fh.read().split()[0])
    return total / 1e9


def server_stats(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/_stats")
    stats = json.loads(conn.getresponse().read())
    conn.close()
    return stats


def mirrored_share(before: dict, after: dict) -> float | None:
    """The share of copies made between two stats snapshots that were sent (not shed)."""
    copies = after.get("copies", 0) - before.get("copies", 0)
    if not copies:
        return None
    return (after["mirrored"] - before["mirrored"]) / copies


def sink_count(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/_count")
    count = int(conn.getresponse().read())
    conn.close()
    return count


def _seconds(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def wrk(url: str, connections: int, duration: float, script: str) -> dict[str, float]:
    seconds = f"{max(1, round(duration))}s"
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _seconds(latency["50"]) * 1e3,
        "p99_ms": _seconds(latency["99"]) * 1e3,
        "errors": int(errors.group(1)) if errors else 0,
    }


def hey(url: str, rate: int, duration: float, body_file: str) -> int:
    """Send at a fixed rate (4 workers x rate/4 per second); returns the count of 200 answers."""
    seconds = f"{max(1, round(duration))}s"
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "hey", "-z", seconds, "-c", "4", "-q", str(rate // 4), "-m", "POST",
         "-T", "application/json", "-D", body_file, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    match = re.search(r"\[200\]\s+(\d+) responses", out)
    return int(match.group(1)) if match else 0


def run_case(app: str, case: str, ports: dict[str, int], args: argparse.Namespace, files: dict[str, str]) -> dict:
    port = free_port()
    server = Proc(
        [sys.executable, str(HERE / "server.py"), app, case, str(port), str(ports["fast"]), str(ports["slow"]),
         str(ports["dead"])],
        SERVER_CPU,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}{PATHS[app]}"
    try:
        wrk(url, 32, 1, files["lua"])  # warm up
        time.sleep(0.5)
        stats_before = server_stats(port)
        saturated = wrk(url, 32, args.duration, files["lua"])
        saturated["mirrored_share"] = mirrored_share(stats_before, server_stats(port))
        single = wrk(url, 1, args.duration, files["lua"])
        time.sleep(0.5)  # let mirrors of the load above end
        arrived_before, cpu_before = sink_count(ports["fast"]), cpu_seconds(server.pid)
        answered = hey(url, FIXED_RATE, args.duration, files["body"])
        cpu = cpu_seconds(server.pid) - cpu_before
        time.sleep(0.5)
        arrived = sink_count(ports["fast"]) - arrived_before
    finally:
        stats = json.loads(server.stop().strip().splitlines()[-1] or "{}")
    return {
        "saturated": saturated,
        "single": single,
        "fixed": {"answered": answered, "cpu_us": cpu / max(answered, 1) * 1e6, "mirrors_arrived": arrived},
        "stats": stats,
    }


def median_of(runs: list[dict], *keys: str) -> float:
    values = []
    for run in runs:
        value = run
        for key in keys:
            value = value[key]
        values.append(value)
    return statistics.median(values)


def _median_or_none(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(raw: dict) -> dict:
    summary: dict = {}
    for app, cases in raw.items():
        bare_cpu = median_of(cases["bare"], "fixed", "cpu_us")
        bare_single = median_of(cases["bare"], "single", "p50_ms")
        bare_rps = median_of(cases["bare"], "saturated", "rps")
        rows = {}
        for case, runs in cases.items():
            cpu = median_of(runs, "fixed", "cpu_us")
            rows[case] = {
                "label": CASE_LABELS[case],
                "rps": median_of(runs, "saturated", "rps"),
                "rps_ratio": median_of(runs, "saturated", "rps") / bare_rps,
                "sent_share": _median_or_none([r["saturated"]["mirrored_share"] for r in runs]),
                "p50_ms": median_of(runs, "saturated", "p50_ms"),
                "p99_ms": median_of(runs, "saturated", "p99_ms"),
                "single_p50_ms": median_of(runs, "single", "p50_ms"),
                "single_ratio": median_of(runs, "single", "p50_ms") / bare_single,
                "cpu_us": cpu,
                "extra_cpu_us": cpu - bare_cpu,
                "implied_ratio": bare_cpu / cpu,
                "answered": median_of(runs, "fixed", "answered"),
                "arrived": median_of(runs, "fixed", "mirrors_arrived"),
                "errors": max(r["saturated"]["errors"] + r["single"]["errors"] for r in runs),
            }
        summary[app] = rows
    return summary


def markdown(summary: dict, extra: dict) -> str:
    lines = []
    for app, rows in summary.items():
        lines += [
            f"**{app}** endpoint (1 KiB JSON POST); saturated = 32 keep-alive connections; single = 1 connection; "
            f"fixed = {FIXED_RATE} requests/s",
            "",
            "| case | saturated req/s | vs bare | p50 ms | p99 ms | copies sent when saturated | single p50 ms "
            "| vs bare | CPU µs/req at fixed rate | implied throughput | mirrors arrived / answered at fixed rate |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for case, r in rows.items():
            arrived = f"{r['arrived']:.0f} / {r['answered']:.0f}" if case in ("fast", "sample10") else "-"
            share = "-" if r["sent_share"] is None else f"{r['sent_share']:.0%}"
            lines.append(
                f"| {r['label']} | {r['rps']:.0f} | {r['rps_ratio']:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                f"| {share} | {r['single_p50_ms']:.3f} | {r['single_ratio']:.2f} | {r['cpu_us']:.0f} "
                f"| {r['implied_ratio']:.2f} | {arrived} |"
            )
        lines.append("")
    if "inprocess" in extra:
        lines += ["In-process overhead per request (no sockets), median of 5 runs:", ""]
        lines += ["| request | µs |", "|---|---|"]
        lines += [f"| {name} | {value:.2f} |" for name, value in extra["inprocess"].items()]
        lines.append("")
    if "memory" in extra:
        lines += ["Peak RSS growth of the app process while uploads are mirrored:", ""]
        lines += ["| upload | bare app MiB | mirrored MiB |", "|---|---|---|"]
        for name, row in extra["memory"].items():
            lines.append(f"| {name} | {row['bare']:.1f} | {row['mirrored']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def chart(summary: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install -e '.[bench]')")
        return
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    metrics = [("rps", "saturated requests/s"), ("single_p50_ms", "single-connection p50 (ms)"),
               ("cpu_us", f"CPU µs per request at {FIXED_RATE}/s")]  # fmt: skip
    width = 0.8 / len(summary)
    for ax, (key, title) in zip(axes, metrics):
        for i, (app, rows) in enumerate(summary.items()):
            values = [rows[c][key] for c in CASES if c in rows]
            ax.bar([x + i * width for x in range(len(values))], values, width, label=app)
        ax.set_title(title)
        ax.set_xticks([x + width / 2 for x in range(len(CASES))], CASES, rotation=30)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apps", default="flask,plain")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    ensure_tools()
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    apps, cases = args.apps.split(","), args.cases.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = {"lua": os.path.join(tmp, "post.lua"), "body": os.path.join(tmp, "body.json")}
        Path(files["body"]).write_bytes(BODY)
        lua = [
            'wrk.method = "POST"',
            f"wrk.body = [==[{BODY.decode()}]==]",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
        Path(files["lua"]).write_text("\n".join(lua) + "\n")
        ports = {"fast": free_port(), "slow": free_port(), "dead": free_port()}
        sinks = [
            Proc([sys.executable, str(HERE / "sink_server.py"), str(ports["fast"])], LOAD_CPU),
            Proc([sys.executable, str(HERE / "sink_server.py"), str(ports["slow"]), "0.2"], LOAD_CPU),
        ]
        raw: dict = {app: {case: [] for case in cases} for app in apps}
        try:
            for round_number in range(args.rounds):
                for app in apps:
                    for case in cases:
                        result = run_case(app, case, ports, args, files)
                        raw[app][case].append(result)
                        print(
                            f"round {round_number + 1} {app:5} {case:8} {result['saturated']['rps']:8.0f} req/s  "
                            f"single p50 {result['single']['p50_ms']:.3f} ms  "
                            f"cpu {result['fixed']['cpu_us']:.0f} us/req  arrived {result['fixed']['mirrors_arrived']}",
                            flush=True,
                        )
        finally:
            for sink in sinks:
                sink.stop()
    extra = {}
    inprocess = subprocess.run(
        ["taskset", "-c", SERVER_CPU, sys.executable, str(HERE / "inprocess.py")], capture_output=True, text=True
    )
    if inprocess.returncode == 0:
        extra["inprocess"] = json.loads(inprocess.stdout)
    else:
        print(inprocess.stderr)
    if not args.skip_memory:
        memory = subprocess.run([sys.executable, str(HERE / "memory.py")], capture_output=True, text=True)
        if memory.returncode == 0:
            extra["memory"] = json.loads(memory.stdout)
        else:
            print(memory.stderr)
    summary = summarise(raw)
    table = markdown(summary, extra)
    print("\n" + table)
    (out / "latest.json").write_text(json.dumps({"summary": summary, "extra": extra, "raw": raw}, indent=1))
    (out / "latest.md").write_text(table)
    chart(summary, out / "latest.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
