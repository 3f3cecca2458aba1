"""Can the comparison be trusted? Labelled changes to two real open-source WSGI apps, judged endpoint by endpoint.

    python bench/compare_eval.py [--apps httpbin,pypiserver] [--requests 2500] [--seeds 5] [--variants full,tenth,none]

The apps are httpbin (Flask, Kenneth Reitz's HTTP request and response service) and pypiserver (Bottle, a
PyPI-compatible package index), installed once into ``~/.cache/wsgimirror-eval`` (pip, ``--target``: httpbin
pins an old greenlet that gevent cannot use, so the cache comes after the environment's own packages).

For each app: the app is served wrapped by MirrorMiddleware (in-process mode); the *candidate* is the app with
labelled changes applied to its answers, each on its own endpoint, some regressions (a status, a removed
field, a changed value, a header, a body, a change one time in three or five...) and some harmless (an
encoding, key order, JSON formatting, an added field, transfer headers, 12 against 12.0); the *baseline* is
the unchanged app. A seeded, mixed workload of ``--requests`` requests goes through real sockets; then every
endpoint's verdict is read from ``stats()["compare"]``.

- **labelled**: endpoint-level precision and recall of the regression verdicts against the labels;
- **null**: the candidate is the unchanged app: endpoints flagged, over ``--seeds`` seeds (the target is none);
- **early**: at every 50th request, any endpoint flagged with fewer than ``MinSamples`` comparisons on a side
  (the target is none).

Variants: ``full`` (the baseline mirrored at 100 %), ``tenth`` (at 10 %), ``none`` (no baseline). The
targets (precision and recall at least 0.95, no null flag) are for ``full``; the others are reported. Results
go to bench/results/compare_eval.json.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import typing as t  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ["WSGIMIRROR_AGENT"] = "in-process"  # one process holds the app, its mirrors and the counts read here

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from wsgimirror.middleware import MirrorMiddleware  # noqa: E402

CACHE = Path(os.environ.get("WSGIMIRROR_EVAL_CACHE", Path.home() / ".cache" / "wsgimirror-eval"))
PINS = ["httpbin==0.10.2", "pypiserver==2.4.2"]
MIN_SAMPLES = 10


def ensure_apps() -> None:
    site = CACHE / "site"
    marker = site / ".installed"
    if not marker.exists() or marker.read_text() != " ".join(PINS):
        site.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", "--target", str(site), *PINS],
                       check=True)  # fmt: skip
        marker.write_text(" ".join(PINS))
    sys.path.append(str(site))  # after the environment's own packages: its gevent and greenlet win


# -- changing an app's answers ---------------------------------------------------------------------------------

Answer = t.Tuple[str, t.List[t.Tuple[str, str]], bytes]


class Change(t.NamedTuple):
    path: str  # the request path it applies to (exactly)
    regression: bool
    what: str
    apply: t.Callable[[Answer, random.Random], Answer]


class Changed:
    """The app with ``changes`` applied to its answers (each to the requests of its path)."""

    def __init__(self, app: t.Any, changes: list[Change], seed: int) -> None:
        self.app, self.by_path, self.rng = app, {c.path: c for c in changes}, random.Random(seed)

    def __call__(self, environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> list[bytes]:
        captured: list[t.Any] = []
        result = self.app(environ, lambda status, headers, exc_info=None: captured.extend([status, headers]))
        try:
            body = b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
        status, headers = captured[0], list(captured[1])
        change = self.by_path.get(environ["PATH_INFO"])
        if change is not None:
            status, headers, body = change.apply((status, headers, body), self.rng)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]


def json_edit(
    edit: t.Callable[[t.Any, random.Random], t.Any], **dumps: t.Any
) -> t.Callable[[Answer, random.Random], Answer]:
    def apply(answer: Answer, rng: random.Random) -> Answer:
        status, headers, body = answer
        return status, headers, json.dumps(edit(json.loads(body), rng), **dumps).encode()

    return apply


def sometimes(
    share: float, apply: t.Callable[[Answer, random.Random], Answer]
) -> t.Callable[[Answer, random.Random], Answer]:
    return lambda answer, rng: apply(answer, rng) if rng.random() < share else answer


def status(new: str) -> t.Callable[[Answer, random.Random], Answer]:
    return lambda answer, rng: (new, answer[1], answer[2])


def text(old: bytes, new: bytes) -> t.Callable[[Answer, random.Random], Answer]:
    return lambda answer, rng: (answer[0], answer[1], answer[2].replace(old, new))


def encoded(coding: str) -> t.Callable[[Answer, random.Random], Answer]:
    """The same body under another content coding ('identity': decoded)."""

    def apply(answer: Answer, rng: random.Random) -> Answer:
        status_line, headers, body = answer
        current = next((v for k, v in headers if k.lower() == "content-encoding"), "")
        if current == "gzip":
            body = gzip.decompress(body)
        elif current == "deflate":
            body = zlib.decompress(body)
        headers = [(k, v) for k, v in headers if k.lower() not in ("content-encoding", "vary")]
        if coding == "gzip":
            body = gzip.compress(body)
        elif coding == "deflate":
            body = zlib.compress(body)
        if coding != "identity":
            headers += [("Content-Encoding", coding), ("Vary", "Accept-Encoding")]
        return status_line, headers, body

    return apply


def headers_edit(
    edit: t.Callable[[list[tuple[str, str]]], list[tuple[str, str]]],
) -> t.Callable[[Answer, random.Random], Answer]:
    return lambda answer, rng: (answer[0], edit(list(answer[1])), answer[2])


def drop_key(data: dict[str, t.Any], *path: str) -> dict[str, t.Any]:
    node = data
    for key in path[:-1]:
        node = node[key]
    node.pop(path[-1], None)
    return data


# -- httpbin ---------------------------------------------------------------------------------------------------


def httpbin_app() -> t.Any:
    import httpbin

    return httpbin.app


HTTPBIN_CHANGES = [
    Change("/status/418", True, "a status: 500 for 418", status("500 INTERNAL SERVER ERROR")),
    Change("/json", True, "a field removed", json_edit(lambda d, r: drop_key(d, "slideshow", "author"))),
    Change(
        "/get",
        True,
        "a value changed",
        json_edit(lambda d, r: {**d, "args": {k: v + "0" for k, v in d["args"].items()}}),
    ),
    Change(
        "/response-headers",
        True,
        "a header left out",
        headers_edit(lambda h: [(k, v) for k, v in h if k != "freeform"]),
    ),
    Change(
        "/headers",
        True,
        "one time in three, a header left out of the echo",
        sometimes(1 / 3, json_edit(lambda d, r: drop_key(d, "headers", "User-Agent"))),
    ),
    Change("/xml", True, "a text body changed", text(b"Sample Slide Show", b"Sample Slideshow")),
    Change("/html", True, "an HTML body changed", text(b"Moby-Dick", b"Moby Dick")),
    Change("/base64/aGVsbG8gd29ybGQ=", True, "a decoded body changed", text(b"hello", b"hallo")),
    Change(
        "/anything/order",
        True,
        "an object became a string",
        json_edit(lambda d, r: {**d, "json": json.dumps(d["json"])}),
    ),
    Change("/cookies", True, "the cookies forgotten", json_edit(lambda d, r: {"cookies": {}})),
    Change(
        "/redirect-to",
        True,
        "a redirect elsewhere",
        headers_edit(lambda h: [(k, "/elsewhere" if k.lower() == "location" else v) for k, v in h]),
    ),
    Change(
        "/ip", True, "one time in five, a wrong address", sometimes(0.2, json_edit(lambda d, r: {"origin": "10.0.0.1"}))
    ),
    Change("/gzip", False, "served without gzip", encoded("identity")),
    Change("/deflate", False, "served gzip instead of deflate", encoded("gzip")),
    Change(
        "/anything/keys",
        False,
        "keys reordered and indented",
        json_edit(lambda d, r: dict(reversed(list(d.items()))), indent=3),
    ),
    Change("/anything/added", False, "a field added", json_edit(lambda d, r: {**d, "api_version": 2})),
    Change(
        "/user-agent",
        False,
        "transfer headers: Server, Vary",
        headers_edit(lambda h: h + [("Server", "candidate/2"), ("Vary", "Accept")]),
    ),
    Change(
        "/anything/numbers",
        False,
        "12 became 12.0",
        json_edit(lambda d, r: {**d, "json": {k: float(v) for k, v in (d["json"] or {}).items()}}),
    ),
    Change("/robots.txt", False, "a text body encoded gzip", encoded("gzip")),
]


def httpbin_workload(rng: random.Random) -> t.Iterator[tuple[str, str, dict[str, str], bytes]]:
    """(method, target, headers, body) of a mixed workload, varied by ``rng``."""
    simple = ["/json", "/uuid", "/gzip", "/deflate", "/ip", "/status/418", "/status/200", "/xml", "/html",
              "/robots.txt", "/user-agent", "/headers", "/base64/aGVsbG8gd29ybGQ=", "/encoding/utf8", "/anything/added",
              "/links/10/0", "/cache", "/delay/0", "/image/png", "/deny", "/response-headers?freeform=x"]  # fmt: skip
    while True:
        choice = rng.randrange(30)
        if choice < len(simple):
            yield "GET", simple[choice], {"User-Agent": f"eval/{rng.randrange(3)}", "Accept": "*/*"}, b""
        elif choice == 21:
            yield "GET", f"/get?page={rng.randrange(1000)}", {}, b""
        elif choice == 22:
            yield "GET", "/cookies", {"Cookie": f"session=s{rng.randrange(99)}; theme=dark"}, b""
        elif choice == 23:
            yield "GET", f"/redirect-to?url=/get%3Fn%3D{rng.randrange(9)}", {}, b""
        elif choice == 24:
            yield "GET", f"/bytes/{rng.randrange(10, 64)}", {}, b""
        elif choice == 25:
            yield "POST", "/anything/order", {"Content-Type": "application/json"}, \
                json.dumps({"item": rng.randrange(50), "qty": 1}).encode()  # fmt: skip
        elif choice == 26:
            yield "POST", "/anything/keys", {"Content-Type": "application/json"}, b'{"a": 1, "b": [1, 2]}'
        elif choice == 27:
            yield "POST", "/anything/numbers", {"Content-Type": "application/json"}, \
                json.dumps({"price": 12, "count": rng.randrange(9)}).encode()  # fmt: skip
        elif choice == 28:
            yield (
                "POST",
                "/post",
                {"Content-Type": "application/x-www-form-urlencoded"},
                b"name=x&n=%d" % rng.randrange(9),
            )
        else:
            yield "DELETE", "/delete", {}, b""


# -- pypiserver ------------------------------------------------------------------------------------------------

PACKAGES = ["demo-1.0.tar.gz", "demo-1.1.tar.gz", "tools-0.3.tar.gz", "tools-0.4-py3-none-any.whl", "alpha-2.0.tar.gz",
            "beta-1.0.tar.gz", "gamma-3.1.tar.gz", "delta-0.9.tar.gz"]  # fmt: skip


def pypiserver_app(root: str) -> t.Any:
    import pypiserver

    rng = random.Random(1)
    for name in PACKAGES:
        path = Path(root, name)
        if not path.exists():
            path.write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    return pypiserver.app(roots=[root], authenticate=[], password_file=".")


def tools_json(data: dict[str, t.Any], rng: random.Random) -> dict[str, t.Any]:
    data["releases"].pop(next(iter(data["releases"])), None)
    return data


PYPISERVER_CHANGES = [
    Change("/simple/", True, "a package missing from the index", text(b'<a href="tools/">tools</a><br>', b"")),
    Change("/packages/demo-1.0.tar.gz", True, "a file's bytes changed", lambda a, r: (a[0], a[1], a[2][::-1])),
    Change("/health", True, "a failing health check", status("500 Internal Server Error")),
    Change("/simple/demo/", True, "a hash changed", text(b"#sha256=", b"#sha256=0")),
    Change("/demo/json", True, "a version changed", json_edit(lambda d, r: {**d, "info": {"version": "1.2"}})),
    Change("/simple/tools/", True, "a project not found", status("404 Not Found")),
    Change("/packages/", True, "a listing changed", text(b"Index of packages", b"Packages")),
    Change("/", True, "a wrong package count", text(b"serving 8 packages", b"serving 7 packages")),
    Change("/tools/json", True, "a release missing", json_edit(tools_json)),
    Change("/alpha/json", True, "one time in four, a failure", sometimes(0.25, status("500 Internal Server Error"))),
    Change("/simple/alpha/", False, "served gzip", encoded("gzip")),
    Change(
        "/packages/demo-1.1.tar.gz", False, "transfer headers: Server", headers_edit(lambda h: h + [("Server", "x")])
    ),
    Change(
        "/packages/tools-0.3.tar.gz", False, "transfer headers: Vary", headers_edit(lambda h: h + [("Vary", "Cookie")])
    ),
    Change("/packages/alpha-2.0.tar.gz", False, "served deflate", encoded("deflate")),
    Change("/beta/json", False, "keys reordered", json_edit(lambda d, r: dict(reversed(list(d.items()))))),
    Change("/gamma/json", False, "a field added", json_edit(lambda d, r: {**d, "last_serial": 42})),
    Change("/delta/json", False, "indented differently", json_edit(lambda d, r: d, indent=2)),
]


def pypiserver_workload(rng: random.Random) -> t.Iterator[tuple[str, str, dict[str, str], bytes]]:
    projects = ["demo", "tools", "alpha", "beta", "gamma", "delta"]
    paths = ["/", "/simple/", "/packages/", "/health", "/simple/nope/", "/favicon.ico",
             *(f"/simple/{p}/" for p in projects), *(f"/{p}/json" for p in projects),
             *(f"/packages/{name}" for name in PACKAGES)]  # fmt: skip
    while True:
        yield "GET", rng.choice(paths), {}, b""


# -- one run ---------------------------------------------------------------------------------------------------


def serve(app: t.Any) -> tuple[WSGIServer, str]:
    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None)
    server.start()
    return server, f"http://127.0.0.1:{server.server_port}"


def config(candidate: str, baseline: str | None, baseline_percent: int) -> dict[str, t.Any]:
    clusters = {"candidate": {"Destinations": {"c": {"Address": candidate}}}}
    metadata = {"MirrorCluster": "candidate", "MirrorCompare": "candidate"}
    if baseline is not None:
        clusters["baseline"] = {"Destinations": {"b": {"Address": baseline}},
                                "Metadata": {"MirrorPercent": baseline_percent}}  # fmt: skip
        metadata.update(MirrorCluster="candidate,baseline", MirrorBaseline="baseline")
    return {"ReverseProxy": {"Routes": {"all": {"Match": {"Paths": ["*"]}, "Metadata": metadata}},
                             "Clusters": clusters},
            "Compare": {"MaxPerSecond": 100_000, "MinSamples": MIN_SAMPLES}}  # fmt: skip


def send(port: int, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
    lines = [
        f"{method} {target} HTTP/1.1",
        "Host: shop.example",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        while sock.recv(65536):
            pass


def run(app_name: str, labelled: bool, seed: int, requests: int, variant: str, tmp: str) -> dict[str, t.Any]:
    """One run; the verdicts by endpoint, the early flags, and (labelled) the labels by endpoint."""
    if app_name == "httpbin":
        make, changes, workload = httpbin_app, HTTPBIN_CHANGES, httpbin_workload
    else:
        make, changes, workload = (lambda: pypiserver_app(tmp)), PYPISERVER_CHANGES, pypiserver_workload
    original = make()
    candidate = Changed(make(), changes if labelled else [], seed)
    servers = []
    cand_server, cand_url = serve(candidate)
    servers.append(cand_server)
    base_url = None
    if variant != "none":
        base_server, base_url = serve(make())
        servers.append(base_server)
    mw = MirrorMiddleware(original, config(cand_url, base_url, 10 if variant == "tenth" else 100))
    app_server, _ = serve(mw)
    servers.append(app_server)
    early: list[str] = []
    try:
        rng = random.Random(seed)
        for number, (method, target, headers, body) in enumerate(workload(rng), 1):
            if number > requests:
                break
            send(app_server.server_port, method, target, headers, body)
            while mw._runtime.in_flight:  # the client shares the servers' loop: the mirrors first
                gevent.sleep(0.001)
            if number % 50 == 0:
                early += _early_flags(mw.stats()["compare"]["by_endpoint"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and mw.stats()["in_flight"]:
            time.sleep(0.05)
        rows = mw.stats()["compare"]["by_endpoint"]
    finally:
        for server in servers:
            server.stop(timeout=1)
        mw.close()
    endpoints = {name: {"regression": row["regression"], "verdict": row["verdict"], "compared": row["compared"],
                        "baseline": row["baseline_compared"], "fields": [f for f, v in row["fields"].items()
                                                                         if v["regression"]]}
                 for name, row in rows.items()}  # fmt: skip
    labels = {}
    if labelled:
        for change in changes:
            name = mw._comparer.endpoints.name(_method_of(change.path, workload), change.path)
            labels[name] = labels.get(name, False) or change.regression
    return {"endpoints": endpoints, "early": sorted(set(early)), "labels": labels}


def _method_of(
    path: str, workload: t.Callable[[random.Random], t.Iterator[tuple[str, str, dict[str, str], bytes]]]
) -> str:
    for method, target, _, _ in _first(workload(random.Random(0)), 5000):
        if target.partition("?")[0] == path:
            return method
    return "GET"


def _first(iterator: t.Iterator[t.Any], count: int) -> t.Iterator[t.Any]:
    for number, item in enumerate(iterator):
        if number >= count:
            return
        yield item


def _early_flags(rows: dict[str, t.Any]) -> list[str]:
    """Endpoints flagged before each side had its minimum sample (the target is none)."""
    return [
        name
        for name, row in rows.items()
        if row["regression"]
        and (row["compared"] < MIN_SAMPLES or (row["with_baseline"] and row["baseline_compared"] < MIN_SAMPLES))
    ]


def scores(result: dict[str, t.Any]) -> dict[str, t.Any]:
    flagged = {name for name, row in result["endpoints"].items() if row["regression"]}
    truth = {name for name, regression in result["labels"].items() if regression}
    tp, fp, fn = len(flagged & truth), len(flagged - truth), len(truth - flagged)
    return {
        "precision": round(tp / (tp + fp), 3) if tp + fp else 1.0,
        "recall": round(tp / (tp + fn), 3) if tp + fn else 1.0,
        "true_positives": tp, "false_positives": sorted(flagged - truth), "missed": sorted(truth - flagged),
        "labelled_regressions": len(truth), "labelled_harmless": len(result["labels"]) - len(truth),
        "endpoints": len(result["endpoints"]), "early_flags": result["early"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", default="httpbin,pypiserver")
    parser.add_argument("--requests", type=int, default=2500)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--variants", default="full,tenth,none")
    args = parser.parse_args()
    ensure_apps()
    results: dict[str, t.Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for app_name in args.apps.split(","):
            for variant in args.variants.split(","):
                labelled = scores(run(app_name, True, 1, args.requests, variant, tmp))
                null = [run(app_name, False, seed, args.requests, variant, tmp) for seed in range(1, args.seeds + 1)]
                flagged_null = [sorted(n for n, row in r["endpoints"].items() if row["regression"]) for r in null]
                results.setdefault(app_name, {})[variant] = {
                    "labelled": labelled,
                    "null_flagged": flagged_null,
                    "null_early_flags": sorted({e for r in null for e in r["early"]}),
                }
                print(f"{app_name} {variant}: precision {labelled['precision']} recall {labelled['recall']} "
                      f"(false positives {labelled['false_positives']}, missed {labelled['missed']}); null runs "
                      f"flagged {[len(f) for f in flagged_null]}; early flags {labelled['early_flags']}",
                      flush=True)  # fmt: skip
    out = HERE / "results" / "compare_eval.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"requests": args.requests, "seeds": args.seeds, "results": results}, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
