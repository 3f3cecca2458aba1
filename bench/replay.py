"""How fast ``wsgimirror replay --speed 0`` sends, against nginx answering 204 on the other core.

    python bench/replay.py [--rounds 3] [--requests 20000] [--workers 1,2] [--baseline REV]

nginx (one worker, pinned to core 1, keep-alive without a request limit, no access log) answers every request
with 204. The replay is pinned to core 0 with one worker, and given both cores with two (``--workers 2``: the
command's own worker processes). ``--baseline REV`` adds the replay of an earlier commit (one process, from a
temporary git worktree), so that a change is measured against what it replaced in the same run on this noisy
machine. Each round runs each case once, alternating; the medians are printed and written to
bench/results/replay.json: requests per second, and the replay's CPU per request (all its processes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import free_port  # noqa: E402

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log error;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{ return 204; }}
    }}
}}
"""


def ensure_nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip
        found = shutil.which("nginx") or "/usr/sbin/nginx"
    if found is None or not os.path.exists(found):
        sys.exit("bench/replay.py needs nginx: apt-get install nginx-light")
    return found


def recording(path: Path, count: int) -> None:
    """``count`` small GETs of varied paths, a millisecond apart."""
    base = 1_764_160_000_000_000_000
    separator = "\n🐵🙈🙉\n".encode()
    with open(path, "wb") as out:
        for i in range(count):
            out.write(b"1 %024x %d -1\n" % (i, base + i * 1_000_000))
            out.write(b"GET /items/%d?page=%d HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench\r\n"
                      b"Accept: application/json\r\n\r\n" % (i, i % 7))  # fmt: skip
            out.write(separator)


def one_run(path: Path, port: int, workers: int, tree: Path | None = None) -> dict[str, float]:
    """One replay; ``tree``: the checkout whose wsgimirror runs (this one by default)."""
    cpus = "0" if workers == 1 else "0,1"
    args = ["taskset", "-c", cpus, sys.executable, "-m", "wsgimirror", "replay", str(path), "--target",
            f"http://127.0.0.1:{port}", "--speed", "0", "--json"]  # fmt: skip
    if workers > 1:
        args += ["--workers", str(workers)]
    root = tree or HERE.parent
    before = os.times()
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, cwd=root, check=False,
                          env={**os.environ, "PYTHONPATH": str(root)})  # fmt: skip
    seconds = time.monotonic() - started
    after = os.times()
    summary = json.loads(done.stdout)
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"rps": summary["succeeded"] / summary["seconds"], "seconds": summary["seconds"],
            "wall_seconds": seconds, "failed": summary["failed"],
            "cpu_us_per_request": cpu / max(1, summary["succeeded"]) * 1e6}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--baseline", metavar="REV", help="also run this commit's replay, in one process")
    args = parser.parse_args()
    nginx = ensure_nginx()
    cases: list[str] = [f"workers_{w}" for w in args.workers.split(",")]
    if args.baseline:
        cases.insert(0, "baseline")
    runs: dict[str, list[dict[str, float]]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp, "baseline")
        if args.baseline:
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.baseline], cwd=HERE.parent,
                           check=True, capture_output=True)  # fmt: skip
        port = free_port()
        Path(tmp, "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=port))
        server = subprocess.Popen(["taskset", "-c", "1", nginx, "-c", f"{tmp}/nginx.conf", "-p", tmp])
        try:
            time.sleep(0.5)
            path = Path(tmp, "small.gor")
            recording(path, args.requests)
            for number in range(1, args.rounds + 1):
                for case in cases:
                    if case == "baseline":
                        result = one_run(path, port, 1, tree)
                    else:
                        result = one_run(path, port, int(case.split("_")[1]))
                    runs[case].append(result)
                    print(f"round {number} {case}: {json.dumps(result)}", flush=True)
        finally:
            server.terminate()  # nginx stops on SIGTERM; by its pid, as every process we start
            server.wait(timeout=10)
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=HERE.parent, check=False)
    summary = {case: {key: round(statistics.median(r[key] for r in results), 1)
                      for key in ("rps", "cpu_us_per_request", "seconds")}
               for case, results in runs.items()}  # fmt: skip
    out = HERE / "results" / "replay.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"requests": args.requests, "baseline": args.baseline, "summary": summary,
                               "raw": runs}, indent=2))  # fmt: skip
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
