"""The ``wsgimirror`` command: serve an app with mirroring, check a config, receive mirrors, run a demo. Kept
whole (over 400 lines): the parser and one short handler per subcommand, in the order ``--help`` lists them.

``serve``, ``sink`` and ``demo`` monkey-patch with gevent before anything else is
imported (the package itself imports lazily for this reason); ``check`` does not.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import typing as t

from ..errors import ConfigError
from . import CommandError

log = logging.getLogger("wsgimirror.cli")

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL_HELP = "how much wsgimirror logs to stderr (default: %(default)s)"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "agent" and args.detach:
        _detach(args.log_file or args.socket + ".log")  # before gevent: the starter returns once the agent listens
    if args.command not in ("check", "report") and not getattr(args, "dry_run", False):
        from gevent import monkey

        if not monkey.is_module_patched("socket"):  # main() called again in one process (tests) patches once
            monkey.patch_all()
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, getattr(args, "log_level", "info").upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args))
    except ConfigError as err:
        print(f"wsgimirror: invalid config: {err}", file=sys.stderr)
        return 2
    except CommandError as err:
        print(f"wsgimirror: {err}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsgimirror", description="Mirror WSGI traffic to other HTTP services.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve a WSGI app with gevent, mirroring its traffic",
        description="Monkey-patch with gevent, import the app, wrap it in MirrorMiddleware with the config, and "
        "serve it with gevent's WSGI server, keeping the raw request target. SIGTERM or SIGINT: answer the "
        "requests in flight, send their mirrors, and exit with a line that accounts for every copy. SIGHUP: "
        "reload the config (a file that fails to load keeps the old one).",
    )
    serve.add_argument("app", metavar="MODULE:APP", help="the app, or a factory called as MODULE:create_app()")
    serve.add_argument("--config", required=True, metavar="FILE", help="the mirroring config (JSON)")
    serve.add_argument("--bind", default="127.0.0.1:8000", metavar="HOST:PORT", help="default: %(default)s")
    serve.add_argument(
        "--drain-timeout", type=float, default=5.0, metavar="SECONDS", help="on SIGTERM/SIGINT (default: %(default)s)"
    )
    serve.add_argument("--access-log", action="store_true", help="log every request to stderr")
    serve.add_argument(
        "--metrics-bind",
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics at /metrics and the live comparison at /compare there (needs "
        "wsgimirror[prometheus]); a bare PORT listens on 127.0.0.1. The pages show traffic: keep them off the network",
    )
    serve.add_argument("--log-level", choices=LOG_LEVELS, default="info", help=LOG_LEVEL_HELP)
    serve.set_defaults(handler=_serve)

    check = commands.add_parser(
        "check",
        help="validate a config and print its routing table",
        description="Load a config as serve and the middleware do, and print each route in the order it is "
        "tried with its hosts, paths, methods and mirror clusters. Exit status: 0 valid, 2 invalid (one line "
        "naming the key path and what is wrong).",
    )
    check.add_argument("config", metavar="FILE", help="the config (JSON, as the seed proxy's appsettings.json)")
    check.set_defaults(handler=_check)

    report = commands.add_parser(
        "report",
        help="summarise comparison diff logs; exit 1 when an endpoint regresses",
        description="Sum the diff logs of any number of processes and hosts (files or globs) and show, per "
        "endpoint, how often the mirrors answered differently from the app. Exit status: 0 nothing "
        "regresses, 1 something does, 2 a log is missing or malformed.",
    )
    report.add_argument("logs", nargs="+", metavar="LOG", help="diff log files or globs")
    report.add_argument("--json", action="store_true", help="print the figures as JSON")
    report.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    report.add_argument("--all", action="store_true", help="also list the endpoints within the noise or the same")
    report.add_argument("--fail-slower", action="store_true", help="exit 1 when a candidate is slower, too")
    report.set_defaults(handler=_report)

    replay = commands.add_parser(
        "replay",
        help="play GoReplay files (.gor, .gor.gz) back to a target, paced, optionally comparing answers",
        description="Send the requests recorded in GoReplay files (written by wsgimirror's file destinations "
        "or by GoReplay) to --target, merged by timestamp and paced as recorded, gaps included. Requests "
        "whose body was cut are not sent, and X-Mirrored-By is removed (a replay is not a loop). Exit "
        "status: 0 every request sent got an answer (and, with --compare, nothing regressed), 1 otherwise or "
        "when a file was skipped as unreadable, 2 bad arguments.",
    )
    replay.add_argument(
        "files",
        nargs="+",
        metavar="FILE_GLOB_OR_DIR",
        help="files (.gor, .gor.gz), globs (quote them: GoReplay names its chunks x_0.gor and x.gor_0.gz), or "
        "directories (every recording in them)",
    )
    replay.add_argument(
        "--target", metavar="URL", help="http(s)://host:port[/base] to send to (required, except with --dry-run)"
    )
    pacing = replay.add_mutually_exclusive_group()
    pacing.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="F",
        help="scale the recorded pacing (2: twice as fast; 0: as fast as possible)",
    )
    pacing.add_argument("--rate", type=float, metavar="N", help="send N requests per second instead")
    replay.add_argument(
        "--max-wait",
        type=float,
        metavar="SECONDS",
        help="wait at most this long between two requests (default: the recorded gap, however long)",
    )
    replay.add_argument(
        "--read-depth",
        type=int,
        default=100,
        metavar="N",
        help="payloads of a file ordered by timestamp at once, as GoReplay's --input-file-read-depth "
        "(default: %(default)s)",
    )
    replay.add_argument("--loop", action="store_true", help="start over at the end")
    replay.add_argument("--duration", type=float, metavar="SECONDS", help="stop sending after this long")
    replay.add_argument(
        "--concurrency", type=int, default=64, metavar="N", help="requests in flight per worker (default: %(default)s)"
    )
    replay.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes sharing the sending, for a target faster than one core can feed; with --speed 0 each takes "
        "the next requests when it is free, paced each every N-th request (default: %(default)s; not with --compare)",
    )
    replay.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="per request (default: 5)")
    replay.add_argument("--original-host", action="store_true", help="send the recorded Host, not the target's")
    replay.add_argument(
        "--keep-mirror-mark",
        action="store_true",
        help="send X-Mirrored-By as recorded (by default it is removed: a target that mirrors would drop "
        "the copies of marked requests as loops)",
    )
    replay.add_argument(
        "--filter-method", action="append", default=[], metavar="METHOD", help="replay only this method (repeatable)"
    )
    replay.add_argument("--filter-path", metavar="REGEX", help="replay only targets this regex finds")
    replay.add_argument(
        "--compare", action="store_true", help="compare each answer with the recorded one (type 2 payloads)"
    )
    replay.add_argument("--config", metavar="FILE", help="a config whose Compare section tunes --compare")
    replay.add_argument("--diff-log", metavar="FILE", help="write the comparison's diff log here")
    replay.add_argument("--ca-file", metavar="PEM", help="trust these CA certificates for an https target")
    replay.add_argument("--insecure", action="store_true", help="do not verify an https target's certificate")
    replay.add_argument("--dry-run", action="store_true", help="count what would be sent, and how long it takes")
    replay.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    replay.add_argument("--log-level", choices=LOG_LEVELS, default="warning", help=LOG_LEVEL_HELP)
    replay.set_defaults(handler=_replay)

    sink = commands.add_parser(
        "sink",
        help="receive mirrored requests and show or record them",
        description="A destination for trying mirroring out: print one line per request it answers (malformed "
        "ones included), optionally append each as a JSON line with its body, and answer with --status after "
        "--delay.",
    )
    sink.add_argument("--bind", default="127.0.0.1:9000", metavar="HOST:PORT", help="default: %(default)s")
    sink.add_argument("--out", metavar="FILE.jsonl", help="append one JSON line per request")
    sink.add_argument("--delay", type=float, default=0.0, metavar="SECONDS", help="answer after this long")
    sink.add_argument("--status", type=int, default=200, metavar="CODE", help="answer with this status")
    sink.add_argument("--log-level", choices=LOG_LEVELS, default="info", help=LOG_LEVEL_HELP)
    sink.set_defaults(handler=_sink)

    agent = commands.add_parser(
        "agent",
        help="run the mirror agent: it sends, compares and records the copies middlewares hand it",
        description="Listen on a Unix socket for middlewares (same user only) and do everything a mirror does "
        "after its hand-off. Middlewares start an embedded agent by themselves; run this as a sidecar (systemd, "
        "Kubernetes) and name its socket in the config's Agent section (Mode external, Socket PATH).",
    )
    agent.add_argument("--socket", required=True, metavar="PATH", help="the Unix socket to listen on")
    agent.add_argument(
        "--idle-seconds", type=float, default=0.0, metavar="S", help="exit after this long with no client (0: never)"
    )
    agent.add_argument(
        "--metrics-bind", metavar="[HOST:]PORT", help="serve /metrics and the live /compare there (loopback for a port)"
    )
    agent.add_argument("--detach", action="store_true", help="return once listening, the agent running on alone")
    agent.add_argument(
        "--log-file", metavar="FILE", help="with --detach: where its output goes (default: the socket's path + .log)"
    )
    agent.add_argument("--log-level", choices=LOG_LEVELS, default="info", help=LOG_LEVEL_HELP)
    agent.set_defaults(handler=_agent)

    demo = commands.add_parser(
        "demo",
        help="watch mirroring happen on 127.0.0.1, then exit",
        description="Serve a small Flask app wrapped in the middleware and two sinks behind a Hash cluster keyed on "
        "X-Forwarded-For, all on 127.0.0.1; send ten varied requests; print what the app answered beside what "
        "each mirror received, and the stats. Needs wsgimirror[demo]; stops everything it started.",
    )
    demo.add_argument("--json", action="store_true", help="print the stats as JSON instead of a table")
    demo.add_argument("--log-level", choices=LOG_LEVELS, default="warning", help=LOG_LEVEL_HELP)
    demo.set_defaults(handler=_demo)
    return parser


def parse_bind(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise CommandError(f"--bind must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def import_app(spec: str) -> t.Callable[..., t.Any]:
    """``module:app`` or ``module:factory()``, importing from the current directory first."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(f"the app must be MODULE:APP or MODULE:FACTORY(), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise CommandError(f"cannot import {module_name!r}: {err}") from err
    call = attribute.endswith("()")
    name = attribute[:-2] if call else attribute
    try:
        target = getattr(module, name)
    except AttributeError:
        raise CommandError(f"module {module_name!r} has no attribute {name!r}") from None
    app = target() if call else target
    if not callable(app):
        raise CommandError(f"{spec!r} is not a WSGI callable")
    return t.cast(t.Callable[..., t.Any], app)


def parse_metrics_bind(value: str) -> tuple[str, int]:
    """``PORT`` (on 127.0.0.1) or ``HOST:PORT``; a host that is not loopback is warned about."""
    bind = ("127.0.0.1", int(value)) if value.isdigit() else parse_bind(value)
    if not _loopback(bind[0]):
        log.warning(
            "--metrics-bind %s is not a loopback address: /metrics and /compare (examples of live traffic, "
            "masked as the README's Security section says) are reachable from the network", value
        )  # fmt: skip
    return bind


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    from .serve import serve

    metrics_bind = parse_metrics_bind(args.metrics_bind) if args.metrics_bind else None
    if metrics_bind is not None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise CommandError("--metrics-bind needs prometheus_client: pip install 'wsgimirror[prometheus]'") from None
    return serve(
        import_app(args.app),
        args.config,
        parse_bind(args.bind),
        args.drain_timeout,
        access_log=args.access_log,
        metrics_bind=metrics_bind,
    )


def _check(args: argparse.Namespace) -> int:
    from ..config.load import load_config
    from ..config.routetable import routing_table

    config = load_config(args.config)
    print(routing_table(config, args.config))
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..compare.difflog import LogError, read_logs
    from ..compare.html import render
    from ..compare.report import as_json, as_text, endpoint_rows
    from ..util.files import write_replacing
    from ..util.text import printable

    try:
        report = read_logs(args.logs)
    except LogError as err:
        raise CommandError(printable(str(err))) from err
    for path, lines in report.damaged.items():
        print(f"wsgimirror: {printable(path)}: {lines} damaged line{'s' if lines != 1 else ''} skipped (not JSON)",
              file=sys.stderr)  # fmt: skip
    print(as_json(report) if args.json else as_text(report, args.all))
    if args.html:
        try:
            write_replacing(args.html, render(report).encode("utf-8"))
        except OSError as err:
            raise CommandError(f"cannot write {printable(args.html)}: {err.strerror or err}") from err
    rows = endpoint_rows(report)
    failing = any(row["regression"] or (args.fail_slower and row["shown"] == "slower") for row in rows)
    return 1 if failing else 0


def _replay(args: argparse.Namespace) -> int:
    from ..record.gor import Unreadable
    from ..record.replay import Replay
    from ..record.source import ReplayError
    from ..record.summary import dumps, exit_status, plan, plan_text, summary_text

    try:
        options = _replay_options(args)
        if args.dry_run:
            figures = plan(options)
            print(dumps(figures) if args.json else plan_text(figures, options))
            return 0
        if options.workers > 1:
            from ..record.workers import run_workers

            summary = run_workers(options)
        else:
            summary = Replay(options).run()
    except (ReplayError, Unreadable) as err:
        raise CommandError(str(err)) from err
    print(dumps(summary) if args.json else summary_text(summary))
    return exit_status(summary)


def _replay_options(args: argparse.Namespace) -> t.Any:
    import re
    from dataclasses import replace

    from ..config.load import load_config
    from ..config.model import CompareSettings
    from ..record.source import Options, ReplayError, expand

    if not args.target and not args.dry_run:
        raise ReplayError("--target URL is required")
    numbers = {"--speed": (args.speed, 0.0), "--rate": (args.rate, None), "--max-wait": (args.max_wait, None),
               "--duration": (args.duration, None), "--timeout": (args.timeout, None)}  # fmt: skip
    for name, (value, floor) in numbers.items():
        if value is not None and (value != value or value < 0 or (floor is None and value == 0)):
            raise ReplayError(f"{name} must be {'at least 0' if floor == 0.0 else 'more than 0'}, got {value:g}")
    if args.concurrency < 1:
        raise ReplayError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.read_depth < 1:
        raise ReplayError(f"--read-depth must be at least 1, got {args.read_depth}")
    if args.workers < 1:
        raise ReplayError(f"--workers must be at least 1, got {args.workers}")
    if args.workers > 1 and args.compare:
        raise ReplayError("--compare runs in one process: leave --workers at 1")
    try:
        path_filter = re.compile(args.filter_path) if args.filter_path else None
    except re.error as err:
        raise ReplayError(f"--filter-path is not a regular expression: {err}") from None
    if (args.config or args.diff_log) and not args.compare and not args.dry_run:
        raise ReplayError("--config and --diff-log go with --compare")
    settings = load_config(args.config).compare if args.config else CompareSettings()
    if args.diff_log:
        from ..config.sections import _log_path

        settings = replace(settings, log=_log_path(args.diff_log, "--diff-log"))
    # A replay compares every answer: MaxPerSecond protects a live server's CPU, not a CI run's.
    settings = replace(settings, max_per_second=1_000_000)
    options = Options(
        paths=expand(args.files),
        target=args.target or "http://127.0.0.1",
        speed=args.speed,
        rate=args.rate,
        max_wait=args.max_wait,
        loop=args.loop,
        duration=args.duration,
        concurrency=args.concurrency,
        timeout=args.timeout,
        original_host=args.original_host,
        keep_mirror_mark=args.keep_mirror_mark,
        read_depth=args.read_depth,
        workers=args.workers,
        methods=frozenset(m.upper() for m in args.filter_method),
        path_filter=path_filter,
        compare=args.compare,
        compare_settings=settings,
        ca_file=args.ca_file,
        insecure=args.insecure,
    )
    if args.target:
        from ..record.replay import _destination

        _destination(args.target)
    return options


_ready_pipe = -1  # --detach: where the detached agent says it listens


LOG_FILE_BYTES = 10 << 20  # a detached agent's log past this at its start is renamed with .1


def _detach(log_file: str) -> None:
    """Fork: the parent waits until the child listens and exits with its word; the child starts a new session
    and lets go of its starter's terminal and pipes (a supervisor reading them would wait for ever), writing
    to ``log_file`` (0600) instead."""
    global _ready_pipe
    from ..util.files import open_private

    read, write = os.pipe()
    if os.fork():
        os.close(write)
        said = os.read(read, 16)
        os._exit(0 if said == b"listening" else 1)
    os.close(read)
    os.setsid()
    _other_cores()
    _lower_priority()
    _ready_pipe = write
    try:
        if os.path.getsize(log_file) > LOG_FILE_BYTES:
            os.replace(log_file, log_file + ".1")
    except OSError:
        pass
    log = open_private(log_file)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)


def _other_cores() -> None:
    """Run on the cores the starter does not (it inherited the starter's affinity): a server pinned to core 0
    gets its agent on the others; one that may use every core shares them all with it."""
    try:
        mine = os.sched_getaffinity(0)
        others = set(range(os.cpu_count() or 1)) - mine
        if others:
            os.sched_setaffinity(0, others)
    except (AttributeError, OSError):  # no affinity on this platform, or a cpuset that forbids the others
        pass


def _lower_priority() -> None:
    """Mirrors take spare CPU only: the embedded agent runs under SCHED_IDLE, so on a core it shares with the app
    (or anything else) it runs when nothing else wants the core and gives way the moment something does. Where
    that policy is missing, the lowest nice."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


def _agent(args: argparse.Namespace) -> int:
    from ..agent.server import run_agent

    def ready() -> None:
        if _ready_pipe >= 0:
            os.write(_ready_pipe, b"listening")
            os.close(_ready_pipe)

    metrics_bind = parse_metrics_bind(args.metrics_bind) if args.metrics_bind else None
    try:
        return run_agent(args.socket, args.idle_seconds or float("inf"), metrics_bind, ready)
    except OSError as err:
        raise CommandError(f"--socket {args.socket}: {err.strerror or err}") from err


def _sink(args: argparse.Namespace) -> int:
    from ..util.files import open_private
    from .sink import run_sink

    out = None
    if args.out:  # appended to, created 0600, never through a link or into another user's file
        try:
            out = open(open_private(args.out), "a", encoding="utf-8")
        except OSError as err:
            raise CommandError(f"--out {args.out}: {err.strerror or err}") from err
    try:
        return run_sink(parse_bind(args.bind), out, args.delay, args.status, args.out or "")
    finally:
        if out is not None:
            out.close()


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(as_json=args.json)
