"""The middleware's own overhead per request, in-process: no sockets, so a few microseconds show.

Calls a plain WSGI app with a prepared environ, bare and wrapped, and prints the extra
microseconds per request (median of 5 runs) as JSON: an unmatched request, a sampled-out
request, and a matched one up to the hand-off to the executor (the send itself excluded).
A recorded request goes to a file destination instead: its cost includes building the
copy's head, queueing it and, since the writer thread shares the interpreter, the writing.
"""

from gevent import monkey

monkey.patch_all()

import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from apps import BODY, config, plain_app  # noqa: E402

from wsgimirror.middleware import MirrorMiddleware  # noqa: E402

N = 20_000


class NullExecutor:
    """Accepts every mirror and ends it at once, unsent: the measurement stops at the hand-off.

    It does the bookkeeping of a mirror's end (the body released, the in-flight slot freed),
    so the shared admission count and the capture budget stay as under a real, fast executor.
    """

    name = "null"

    def __init__(self, runtime) -> None:
        self.runtime = runtime

    def try_submit(self, fn, state, target, route, environ, body, started, answer=None):
        target.in_flight -= 1
        body.release()
        if answer is not None:
            answer.release()
        self.runtime.ended(target.pool)
        return True


def start_response(status, headers, exc_info=None):
    return None


def environ() -> dict:
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/api/plain",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench",
        "HTTP_ACCEPT": "*/*",
        "wsgi.url_scheme": "http",
        "wsgi.input_terminated": True,
    }


def per_request(app) -> float:
    template = environ()
    start = time.perf_counter()
    for i in range(N):
        if not i % 100:
            gevent.sleep(0)  # a turn of the loop now and then, as a server has: the agent's link writes and reads
        env = template.copy()
        env["wsgi.input"] = io.BytesIO(BODY)
        result = app(env, start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return (time.perf_counter() - start) / N * 1e6


def wrapped(case: str, compare: bool = False, record_to: str | None = None, responses: bool = False,
            agent: str | None = None):  # fmt: skip
    settings = config(case, 9, 9, 9)
    if agent is not None:  # handed to a real agent (its destination refuses: the agent's work is not measured)
        import os

        os.environ["WSGIMIRROR_AGENT"] = "embedded"
        settings["Agent"] = {"Socket": agent, "IdleSeconds": 5, "BufferBytes": 1 << 30}
        mw = MirrorMiddleware(plain_app, settings)
        os.environ["WSGIMIRROR_AGENT"] = "in-process"
        return mw
    if compare:  # the app's answer is teed for the mirror's answer to be compared with
        settings["ReverseProxy"]["Routes"]["api"]["Metadata"]["MirrorCompare"] = "shadow"
    if record_to is not None:  # a file destination: written for real, by the writer thread
        settings["ReverseProxy"]["Clusters"]["shadow"]["Destinations"] = [{"Address": f"file://{record_to}"}]
        settings["ReverseProxy"]["Routes"]["api"]["Metadata"]["MirrorRecordResponses"] = str(responses).lower()
        settings["Record"] = {"MaxBytes": 1 << 40}
        return MirrorMiddleware(plain_app, settings)
    mw = MirrorMiddleware(plain_app, settings)
    mw._generation.dispatcher._runtime()
    mw._generation.dispatcher._executor = NullExecutor(mw._runtime)
    return mw


def main() -> None:
    import os

    os.environ["WSGIMIRROR_AGENT"] = "in-process"
    directory = tempfile.mkdtemp(prefix="bench-record-")
    apps = {
        "matched, handed to the agent": wrapped("fast", agent=f"{directory}/agent.sock"),
        "unmatched": wrapped("nomatch"),
        "sampled out (0 %)": wrapped("sample0"),
        "matched, up to the hand-off": wrapped("fast"),
        "matched and compared, up to the hand-off": wrapped("fast", compare=True),
        "recorded to a file, written": wrapped("fast", record_to=f"{directory}/r.gor"),
        "recorded with its answer, written": wrapped("fast", record_to=f"{directory}/a.gor", responses=True),
        "recorded with its answer to .gor.gz, written": wrapped("fast", record_to=f"{directory}/z.gor.gz",
                                                               responses=True),
    }  # fmt: skip
    runs: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(5):
        bare = per_request(plain_app)
        for name, app in apps.items():
            runs[name].append(per_request(app) - bare)
            while "recorded" in name and app.stats()["in_flight"]:  # its writing belongs to the requests measured
                gevent.sleep(0.001)
            while "agent" in name and app.stats()["pending"]:  # the agent's reports, read by the link
                gevent.sleep(0.001)
    shutil.rmtree(directory)
    print(json.dumps({name: statistics.median(values) for name, values in runs.items()}))


if __name__ == "__main__":
    main()
