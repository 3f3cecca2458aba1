"""Make the README's screenshot of the comparison report: a real run, rendered by headless Chromium.

    python bench/report_screenshot.py [docs/compare-report.png]

Serves the comparison tests' apps on 127.0.0.1 (the app and a baseline running v1, a candidate
running v2, which gets ``total`` wrong for one user in four), sends 200 requests through the
middleware, writes the diff log, renders ``wsgimirror report --html`` and screenshots it.
"""

from gevent import monkey

monkey.patch_all()

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.compare_apps import users_v1, users_v2  # noqa: E402
from tests.e2e.test_compare import compare_config, url  # noqa: E402
from tests.helpers import one_request, serve, wait_until  # noqa: E402
from wsgimirror import MirrorMiddleware  # noqa: E402
from wsgimirror.cli import main as wsgimirror  # noqa: E402


def main(out: str) -> int:
    work = Path(tempfile.mkdtemp(prefix="wsgimirror-shot-"))
    candidate, baseline = serve(users_v2), serve(users_v1)
    config = compare_config(
        url(candidate.address), url(baseline.address), Log=str(work / "diff.jsonl"), Examples=2, MaxPerSecond=10000
    )
    mw = MirrorMiddleware(users_v1, config)
    app = serve(mw)
    try:
        for user in range(1, 201):
            one_request(app.address, target=f"/users/{user}?expand=orders", host="127.0.0.1")
        wait_until(lambda: mw.stats()["compare"]["compared"] >= 200)
        mw.close(5)
    finally:
        for server in (app, candidate, baseline):
            server.stop(timeout=1)
    page = work / "report.html"
    wsgimirror(["report", str(work / "diff.jsonl"), "--html", str(page)])
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1500",
         f"--user-data-dir={work / 'profile'}", f"--screenshot={Path(out).resolve()}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    shutil.rmtree(work)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "docs" / "compare-report.png")))
