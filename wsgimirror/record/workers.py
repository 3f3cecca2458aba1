"""``wsgimirror replay --workers N``: N processes share a replay, for targets faster than one core can feed.

Each worker is a fork of the command: it reads every file (reading is cheap beside sending) and sends its
share of the requests. With ``--speed 0`` the share is first come, first served (blocks of requests are
claimed, see :class:`~.source.Claims`), so a worker on a core it shares with the target, or held by a slow
answer, leaves more to the others instead of setting the pace. Paced, a worker sends every N-th request on
the same clock (``--rate`` is shared out: each sends ``rate / N``). Workers report to
the parent through a pipe, one JSON object per line: counters a few times a second (the parent draws one
progress line from them), then the worker's summary and the latencies it kept. The parent adds the
summaries up: what each read of the files themselves (malformed headers, unknown types, files skipped or
cut short) is taken once, from the first worker, which alone warns about files. Ctrl-C and SIGTERM reach
every worker; each stops scheduling, lets its requests in flight end and reports as usual.

``--compare`` runs in one process (one comparison engine sees every answer): it refuses ``--workers``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import typing as t
from collections import Counter
from dataclasses import replace

from .replay import Latencies, Replay, progress_line
from .source import Claims, Options
from .summary import plan

TICK_SECONDS = 0.25  # how often a worker reports its counters


def run_workers(options: Options, progress: t.TextIO | None = None, every: float | None = None) -> dict[str, t.Any]:
    """Run ``options.workers`` worker processes and return their summaries added up."""
    progress = progress if progress is not None else sys.stderr
    expected = plan(options)["expected_seconds"] if progress.isatty() else None
    if options.speed == 0 and not options.rate:
        options = replace(options, claims=Claims())
    children: dict[int, tuple[int, t.Any]] = {}  # pid -> (index, the read end of its pipe)
    for index in range(options.workers):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            os.close(read)
            for _, (_, other) in children.items():
                other.close()
            _worker(options, index, write)
        os.close(write)
        children[pid] = (index, os.fdopen(read, "rb"))
    return _collect(options, children, progress, every, expected)


def _worker(options: Options, index: int, fd: int) -> t.NoReturn:
    code = 0
    out = os.fdopen(fd, "w")
    try:
        count = options.workers
        warn = (options.warn or _warn) if index == 0 else _silent
        mine = replace(options, workers=1, share=(index, count), rate=options.rate / count if options.rate else None,
                       warn=warn)  # fmt: skip
        replay = Replay(mine, progress=open(os.devnull, "w"), every=TICK_SECONDS)

        def tick() -> None:
            r = replay.results
            out.write(json.dumps({"sent": r.sent, "succeeded": r.succeeded, "failed": r.failed}) + "\n")
            out.flush()

        replay.tick = tick
        summary = replay.run()
        summary["_payload_malformed"] = replay.source.counts.malformed
        summary["_latencies"] = list(replay.results.latencies.kept())
        out.write(json.dumps({"summary": summary}) + "\n")
        out.flush()
    except BaseException as err:  # the parent reports a worker that could not finish
        code = 1
        try:
            out.write(json.dumps({"error": f"{type(err).__name__}: {err}"}) + "\n")
            out.flush()
        except OSError:
            pass
    finally:
        os._exit(code)


def _warn(message: str) -> None:
    sys.stderr.write(f"wsgimirror replay: {message}\n")
    sys.stderr.flush()


def _silent(message: str) -> None:
    """A worker other than the first does not warn: the first warns once for all of them."""


def _collect(options: Options, children: dict[int, tuple[int, t.Any]], progress: t.TextIO, every: float | None,
             expected: float | None) -> dict[str, t.Any]:  # fmt: skip
    """Read the workers' reports until each has given its summary; draw the progress line from their counters."""
    import gevent
    from gevent.os import make_nonblocking, nb_read

    counters: dict[int, dict[str, int]] = {}
    summaries: dict[int, dict[str, t.Any]] = {}
    errors: list[str] = []
    started = time.monotonic()

    def follow(index: int, pipe: t.Any) -> None:
        fd = pipe.fileno()
        make_nonblocking(fd)
        pending = b""
        while True:
            data = nb_read(fd, 1 << 20)
            if not data:
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                report = json.loads(line)
                if "summary" in report:
                    summaries[index] = report["summary"]
                elif "error" in report:
                    errors.append(f"worker {index + 1}: {report['error']}")
                else:
                    counters[index] = report

    def forward(signum: int) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    tty = progress.isatty()
    handlers = [gevent.signal_handler(signum, forward, signum) for signum in (signal.SIGINT, signal.SIGTERM)]
    readers = [gevent.spawn(follow, index, pipe) for index, pipe in children.values()]
    try:
        while not all(reader.dead for reader in readers):
            gevent.joinall(readers, timeout=every or (0.5 if tty else 5.0))
            if all(reader.dead for reader in readers):
                break
            total = Counter[str]()
            for figures in counters.values():
                total.update(figures)
            line = progress_line(total["sent"], total["succeeded"], total["failed"], time.monotonic() - started,
                                 options.duration if options.loop else expected)  # fmt: skip
            progress.write(("\r\033[K" if tty else "") + line + ("" if tty else "\n"))
            progress.flush()
    finally:
        for handler in handlers:
            handler.cancel()
        for pid in children:
            os.waitpid(pid, 0)
        for _, pipe in children.values():
            pipe.close()
    if tty:
        progress.write("\r\033[K")
        progress.flush()
    if errors or len(summaries) != len(children):
        from .source import ReplayError

        raise ReplayError("; ".join(errors) or "a worker ended without a summary")
    return merge([summaries[index] for index in sorted(summaries)])


def merge(summaries: list[dict[str, t.Any]]) -> dict[str, t.Any]:
    """The workers' summaries as one: what they sent added up; what they read of the files, the first's."""
    first = summaries[0]
    total: dict[str, t.Any] = {}
    for key in ("records", "sent", "succeeded", "failed", "skipped_cut", "filtered"):
        total[key] = sum(s[key] for s in summaries)
    bad = sum(s["skipped_malformed"] - s["_payload_malformed"] for s in summaries)
    failures: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    latencies = Latencies()
    for summary in summaries:
        failures.update(summary["failures"])
        statuses.update(summary["statuses"])
        for seconds in summary["_latencies"]:
            latencies.add(seconds)
    seconds = max(s["seconds"] for s in summaries)
    examples = [example for s in summaries for example in s["malformed_examples"]][:5]
    return {
        "records": total["records"],
        "sent": total["sent"],
        "succeeded": total["succeeded"],
        "failed": total["failed"],
        "failures": dict(failures),
        "statuses": dict(sorted(statuses.items())),
        "skipped_malformed": first["_payload_malformed"] + bad,
        "skipped_cut": total["skipped_cut"],
        "skipped_unknown_type": first["skipped_unknown_type"],
        "malformed_examples": examples,
        "filtered": total["filtered"],
        "partial_files": first["partial_files"],
        "unreadable_files": first["unreadable_files"],
        "file_problems": first["file_problems"],
        "latency_ms": {"p50": latencies.percentile_ms(0.50), "p99": latencies.percentile_ms(0.99)}
        if total["succeeded"]
        else None,
        "seconds": seconds,
        "rate": round(total["sent"] / seconds, 1) if total["sent"] and seconds > 0 else None,
        "answered_rate": round(total["succeeded"] / seconds, 1) if total["succeeded"] and seconds > 0 else None,
        "workers": len(summaries),
    }
