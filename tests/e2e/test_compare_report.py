"""``wsgimirror report`` over the diff logs of real ``wsgimirror serve`` processes, and the HTML page in Chromium."""

import json
import shutil
import subprocess as std_subprocess
import sys

import pytest

from tests.e2e.compare_apps import users_v1, users_v2
from tests.e2e.test_compare import compare_config, url
from tests.helpers import Process, free_port, one_request, wait_until, write_config
from wsgimirror.commands.cli import main

PY = sys.executable
ENDPOINT = "GET /users/{id}"


def serve_compared(config_path: str) -> tuple[Process, tuple[str, int], tuple[str, int]]:
    port, metrics = free_port(), free_port()
    args = [PY, "-m", "wsgimirror", "serve", "tests.e2e.compare_apps:users_v1", "--config", config_path,
            "--bind", f"127.0.0.1:{port}", "--metrics-bind", f"127.0.0.1:{metrics}"]  # fmt: skip
    return Process(args, ready="serving on"), ("127.0.0.1", port), ("127.0.0.1", metrics)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Two serve processes comparing against one candidate and one baseline; their logs, once they stopped."""
    from tests.helpers import serve

    tmp_path = tmp_path_factory.mktemp("report")
    candidate, baseline = serve(users_v2), serve(users_v1)
    config = compare_config(url(candidate.address), url(baseline.address), Log=str(tmp_path / "diff-{pid}.jsonl"))
    config_path = write_config(tmp_path, config)
    processes = [serve_compared(config_path) for _ in range(2)]
    live = {}
    try:
        for n, (_, address, metrics) in enumerate(processes):
            for user in range(1, 41):
                assert one_request(address, target=f"/users/{user + 40 * n}", host="127.0.0.1").status == 200

            def compared(metrics=metrics):
                figures = json.loads(one_request(metrics, target="/compare.json", host="127.0.0.1").body)
                rows = figures["endpoints"]
                return rows and rows[0]["compared"] == 40 and rows[0]["baseline_compared"] == 40

            wait_until(compared, what="the comparisons of one process")
        live["json"] = json.loads(one_request(processes[0][2], target="/compare.json", host="127.0.0.1").body)
        live["html"] = one_request(processes[0][2], target="/compare", host="127.0.0.1")
    finally:
        for proc, _, _ in processes:
            status, _, err = proc.stop()
            assert status == 0, err
        candidate.stop(timeout=1)
        baseline.stop(timeout=1)
    return tmp_path, live


def test_the_report_sums_the_logs_of_two_processes_and_exits_1_on_a_regression(two_processes, capsys):
    tmp_path, _ = two_processes
    assert len(list(tmp_path.glob("diff-*.jsonl"))) == 2
    assert main(["report", str(tmp_path / "diff-*.jsonl")]) == 1
    text = capsys.readouterr().out
    assert text.startswith("2 processes, 1 endpoints: 1 regressing, 0 slower, 0 learning, 0 within the noise")
    assert f"! {ENDPOINT}" in text
    assert "body.total: differs in 25.0% of 80 (noise 0.0% of 80), p 2.5e-07; kinds: value in 20" in text
    assert "body.generated_at: differs" not in text  # noise: differs as often against the baseline

    assert main(["report", "--json", *map(str, sorted(tmp_path.glob("diff-*.jsonl")))]) == 1
    (row,) = json.loads(capsys.readouterr().out)["endpoints"]
    assert (row["endpoint"], row["compared"], row["baseline_compared"], row["regression"]) == (ENDPOINT, 80, 80, True)
    assert row["fields"]["body.total"]["differences"] == 20 and row["fields"]["body.total"]["regression"]
    assert row["fields"]["body.request_id"]["regression"] is False


def test_serve_shows_the_live_report_on_the_metrics_port(two_processes):
    _, live = two_processes
    (row,) = live["json"]["endpoints"]  # one process's 40 comparisons a side
    assert row["endpoint"] == ENDPOINT and row["fields"]["body.total"]["rate"] == 0.25
    assert live["html"].status == 200 and live["html"].headers["content-type"].startswith("text/html")
    assert b"GET /users/{id}" in live["html"].body


COUNTS = '{"type": "counts", "time": 1, "by_endpoint": {"GET /": %s}}\n'


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no file matches"),
        ('{"type": "other"}\n', ":1: not a diff log record (no counts or example type)"),
        ("[1, 2]\n", ":1: not a diff log record (no counts or example type)"),
        ('{"type": "counts", "by_endpoint": []}\n', ":1: a counts record without by_endpoint"),
        (COUNTS % '{"compared": "x"}', ':1: by_endpoint["GET /"].compared must be an integer, got str'),
        (COUNTS % '{"compared": -1}', ':1: by_endpoint["GET /"].compared must be a count from 0 to 2**53, got -1'),
        (COUNTS % '{"compared": true}', ':1: by_endpoint["GET /"].compared must be an integer, got bool'),
        (COUNTS % '{"fields": []}', ':1: by_endpoint["GET /"].fields must be an object, got list'),
        (COUNTS % '{"fields": {"a": {"kinds": {"value": 1.5}}}}',
         ':1: by_endpoint["GET /"].fields["a"].kinds.value must be an integer, got float'),
        (COUNTS % "[]", ':1: by_endpoint["GET /"] must be an object, got list'),
        ('{"type": "counts", "time": "soon", "by_endpoint": {}}\n', ":1: time must be a number, got str"),
        ('{"type": "counts", "time": NaN, "by_endpoint": {}}\n', ":1: time must be a finite number, got nan"),
        ('{"type": "counts", "thresholds": {"relative": "x"}, "by_endpoint": {}}\n',
         ":1: thresholds.relative must be a number, got str"),
        ('{"type": "counts", "process": {"host": ["h"]}, "by_endpoint": {}}\n',
         ":1: process.host must be a string, got list"),
        ('\n{"type": "example", "app": {"status": "200"}}\n', ":2: app.status must be an integer, got str"),
        ('{"type": "example", "mirror": {"headers": [["a"]]}}\n', ":1: mirror.headers[0] must be a [name, value] pair"),
        ('{"type": "example", "request": {"body": "%%%"}}\n', ":1: request.body is not base64"),
        ('{"type": "example", "differences": [{"field": 1}]}\n', ":1: differences[0].field must be a string, got int"),
        ('{"type": "example", "endpoint": {}}\n', ":1: endpoint must be a string, got dict"),
        ("[" * 100_000 + "]" * 100_000 + "\n", ":1: not a diff log record (nested too deeply)"),
    ],
)  # fmt: skip
def test_a_missing_or_malformed_log_exits_2_with_one_line_naming_the_file_and_line(tmp_path, capsys, content,
                                                                                    message):  # fmt: skip
    """CI reads exit 1 as a regression: a malformed log must never crash into it with a traceback."""
    path = tmp_path / "diff.jsonl"
    if content is not None:
        path.write_text(content)
    assert main(["report", str(path) if content is not None else str(tmp_path / "missing-*.jsonl")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    if content is not None:
        assert f"wsgimirror: {path}:" in err


def test_a_damaged_line_is_skipped_and_counted_and_the_rest_is_reported(tmp_path, capsys):
    """A record cut by a crash or a full disk, glued to the next: the report reads the rest."""
    record = {"type": "counts", "time": 1, "process": {"host": "h", "pid": 1, "start": 0},
              "by_endpoint": {"GET /": {"compared": 3, "same": 3}}}  # fmt: skip
    path = tmp_path / "diff.jsonl"
    path.write_text('{"type": "counts", "by_end' + json.dumps(record) + "\nnot json\n" + json.dumps(record) + "\n")
    assert main(["report", str(path)]) == 0
    captured = capsys.readouterr()
    assert "GET /" in captured.out and "1 process, 1 endpoints" in captured.out
    assert captured.err == f"wsgimirror: {path}: 2 damaged lines skipped (not JSON)\n"
    assert main(["report", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["damaged_lines"] == 2


def test_a_log_cut_mid_record_by_a_crash_is_read_up_to_the_cut(tmp_path, capsys):
    record = {"type": "counts", "time": 1, "process": {"host": "h", "pid": 1, "start": 0},
              "by_endpoint": {"GET /": {"compared": 3, "same": 3, "different": 0, "baseline_compared": 0,
                                        "baseline_different": 0, "fields": {}}}}  # fmt: skip
    path = tmp_path / "diff.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps(record)[:40])
    assert main(["report", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["endpoints"][0]["compared"] == 3


def test_nothing_regressing_exits_0(tmp_path, capsys):
    record = {"type": "counts", "time": 1, "process": {"host": "h", "pid": 1, "start": 0},
              "by_endpoint": {"GET /": {"compared": 10, "same": 9, "different": 1, "baseline_compared": 10,
                                        "baseline_different": 1, "fields": {"body.t": {"kinds": {"value": 1},
                                        "differences": 1, "noise": 1}}}}}  # fmt: skip
    path = tmp_path / "diff.jsonl"
    path.write_text(json.dumps(record) + "\n")
    assert main(["report", str(path)]) == 0
    assert "0 regressing" in capsys.readouterr().out


# -- the HTML page, rendered by a real browser -------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is needed (Debian: apt-get install chromium; .ci/run installs it)"
    return found


def rendered_dom(page) -> str:
    """The DOM after the page's scripts ran, as headless Chromium serialises it (no network at all)."""
    run = std_subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--user-data-dir=" + str(page.parent / "profile"), "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_the_html_report_renders_in_chromium_with_endpoints_and_highlighted_fields(two_processes, tmp_path, capsys):
    logs, _ = two_processes
    page = tmp_path / "report.html"
    assert main(["report", str(logs / "diff-*.jsonl"), "--html", str(page)]) == 1
    capsys.readouterr()
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch
    from lxml import html as lxml_html

    dom = lxml_html.fromstring(rendered_dom(page))
    rows = dom.xpath("//table[@id='endpoints']/tbody/tr")
    assert [row.get("data-endpoint") for row in rows] == [ENDPOINT]
    assert "regression" in rows[0].get("class")
    regressing = dom.xpath("//table[contains(@class,'fields')]/tbody/tr[contains(@class,'regression')]/@data-field")
    assert regressing == ["body.total"]
    # each example shows both answers side by side, with the differing total highlighted on each side
    example = dom.xpath("//div[@class='example']")[0]  # the examples of regressing fields come first
    assert "body.total" in example.get("data-fields").split()
    marked = [
        " ".join(d.text_content().split()) for d in example.xpath(".//div[contains(@class,'side')]//div[@class='diff']")
    ]
    assert any(m.startswith('"total": ') for m in marked)
    assert dom.xpath("//span[@id='verdict']")[0].text_content() == "1 regressing"


def test_traffic_in_the_page_is_escaped(tmp_path):
    from wsgimirror.compare.difflog import Report
    from wsgimirror.compare.html import render
    from wsgimirror.compare.verdicts import Settings

    hostile = "<script>document.title='owned'</script>"
    example = {"endpoint": "GET /x", "source": "candidate", "cluster": "c",
               "request": {"method": "GET", "target": "/x?" + hostile, "headers": []},
               "app": {"status": 200, "headers": [["X-Evil", hostile]], "body": "", "body_length": 0},
               "mirror": {"status": 200, "headers": [], "body": "", "body_length": 0},
               "differences": [{"field": "headers.x-evil", "kind": "missing", "app": hostile,
                                "mirror": None}]}  # fmt: skip
    counts = {"GET /x": {"compared": 1, "same": 0, "different": 1, "baseline_compared": 0, "baseline_different": 0,
                         "fields": {"headers.x-evil": {"kinds": {"missing": 1}, "differences": 1,
                                                    "noise": 0}}}}  # fmt: skip
    page = tmp_path / "page.html"
    page.write_text(render(Report(counts, [example], Settings(min_samples=1), 1)))
    assert hostile not in page.read_text()
    dom = rendered_dom(page)
    assert "<title>wsgimirror comparison" in dom and "owned" not in dom.split("</title>")[0]
