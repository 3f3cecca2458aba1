"""Make the README's screenshot of the comparison report: a real run, rendered by headless Chromium.

    python bench/report_screenshot.py [docs/compare-report.png]

Serves the comparison tests' apps on 127.0.0.1 (the app and a baseline running v1, a candidate
running v2, which gets ``total`` wrong for one user in four, is 30 ms slower on ``/search`` and adds a
field to ``/health``), sends about 300 requests through the middleware (a few to ``/rare``, which is still
learning), writes the diff log, renders ``wsgimirror report --html`` and screenshots it.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import typing as t  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["WSGIMIRROR_AGENT"] = "in-process"  # one process: the driver waits for each mirror (see main)

import gevent  # noqa: E402

from tests.e2e.compare_apps import users_v1, users_v2  # noqa: E402
from tests.e2e.test_compare import compare_config, url  # noqa: E402
from tests.e2e.test_compare_trust import json_app  # noqa: E402
from tests.helpers import one_request, serve, wait_until  # noqa: E402
from wsgimirror.commands.cli import main as wsgimirror  # noqa: E402
from wsgimirror.middleware import MirrorMiddleware  # noqa: E402


def versions() -> tuple[t.Any, t.Any]:
    """v1 and v2 of a small service: users (v2 wrong one time in four), a slower search, a field added to health."""

    def route(version: int) -> t.Any:
        users = users_v1 if version == 1 else users_v2
        search = json_app(lambda e: {"hits": [1, 2, 3], "took": random.random()}, delay=0.03 if version == 2 else 0)
        health = json_app(lambda e: {"ok": True, **({"build": "2.0"} if version == 2 else {})})
        rare = json_app(lambda e: {"rare": version})

        def app(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
            path = environ["PATH_INFO"]
            chosen = search if path == "/search" else health if path == "/health" else rare if path == "/rare" \
                else users  # fmt: skip
            return chosen(environ, start_response)

        return app

    return route(1), route(2)


def main(out: str) -> int:
    work = Path(tempfile.mkdtemp(prefix="wsgimirror-shot-"))
    v1, v2 = versions()
    candidate, baseline = serve(v2), serve(v1)
    config = compare_config(
        url(candidate.address), url(baseline.address), Log=str(work / "diff.jsonl"), Examples=2, MaxPerSecond=10000
    )
    mw = MirrorMiddleware(v1, config)
    app = serve(mw)
    targets = [f"/users/{user}?expand=orders" for user in range(1, 201)] + ["/search"] * 60 + ["/health"] * 40
    targets += ["/rare"] * 4
    try:
        for target in targets:
            one_request(app.address, target=target, host="127.0.0.1")
            while mw._runtime.in_flight:  # the client shares the servers' loop: the mirrors first
                gevent.sleep(0.001)
        wait_until(lambda: mw.stats()["compare"]["compared"] >= len(targets))
        mw.close(5)
    finally:
        for server in (app, candidate, baseline):
            server.stop(timeout=1)
    page = work / "report.html"
    wsgimirror(["report", str(work / "diff.jsonl"), "--html", str(page)])
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1400",
         f"--user-data-dir={work / 'profile'}", f"--screenshot={Path(out).resolve()}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    shutil.rmtree(work)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "docs" / "compare-report.png")))
