"""Flask's and Werkzeug's own test suites pass and fail exactly as they do without the middleware.

Their sdists (of the installed versions) ship their tests. Each suite runs twice in a child
pytest: unwrapped, then with ``tests/upstream/wsgimirror_upstream.py`` putting a
MirrorMiddleware around every app and mirroring every request to a local sink. The outcome
of every test must be the same, and every copy must be accounted for. Werkzeug's dev-server
tests (``test_serving.py``) start servers in children with their own ``PYTHONPATH``, out of
the plugin's reach; ``test_hostile_requests.py`` runs that server itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.helpers import ROOT

CACHE = Path(os.environ.get("WSGIMIRROR_UPSTREAM_CACHE", Path.home() / ".cache" / "wsgimirror-upstream"))
PLUGIN_DIR = ROOT / "tests" / "upstream"
SUITES = {
    "flask": ["tests"],
    "werkzeug": ["tests", "--ignore=tests/test_serving.py", "--ignore=tests/test_debug.py"],
}


def sdist_tests(project: str, into: Path) -> Path:
    """The extracted sdist of the installed version of ``project`` (downloaded once into the cache)."""
    release = f"{project}-{version(project)}"
    archive = CACHE / f"{release}.tar.gz"
    if not archive.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"{project}=={version(project)}", "-d", str(CACHE)],
            check=True, timeout=300,
        )  # fmt: skip
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / release


def outcomes(project: str, source: Path, mode: str, tmp: Path) -> tuple[dict[str, str], dict | None]:
    """Each test's outcome (passed, failed, skipped, error) and, when wrapped, the plugin's report."""
    junit, report = tmp / f"{mode}.xml", tmp / f"{mode}.json"
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_DIR), "WSGIMIRROR_UPSTREAM": mode,
           "WSGIMIRROR_UPSTREAM_REPORT": str(report)}  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "wsgimirror_upstream",
         f"--junitxml={junit}", *SUITES[project]],
        cwd=source, env=env, capture_output=True, timeout=600,
    )  # fmt: skip
    results = {}
    for case in ET.parse(junit).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        results[name] = next((k for k in ("error", "failure", "skipped") if k in kinds), "passed")
    return results, json.loads(report.read_text()) if report.exists() else None


@pytest.mark.parametrize("project", list(SUITES))
def test_the_suite_behaves_the_same_with_every_app_wrapped(project, tmp_path):
    source = sdist_tests(project, tmp_path)
    bare, none = outcomes(project, source, "off", tmp_path)
    wrapped, report = outcomes(project, source, project, tmp_path)
    assert none is None and report is not None
    assert len(bare) > 400
    changed = {name: (bare.get(name), wrapped.get(name)) for name in bare.keys() | wrapped.keys()
               if bare.get(name) != wrapped.get(name)}  # fmt: skip
    assert changed == {}
    stats = report["stats"]
    assert stats["copies"] > 150  # the wrapping worked: the suite's requests went through the middleware
    assert stats["copies"] == stats["pending"] + stats["mirrored"] + sum(stats["dropped"].values())
    assert (stats["pending"], stats["in_flight"], stats["failed"]) == (0, 0, 0)
    assert report["received"] == stats["succeeded"] == stats["mirrored"] > 20
