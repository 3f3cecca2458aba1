"""Where an embedded agent lives, and how the first middleware on a host starts it.

- The socket is in a directory only the user can enter: ``$XDG_RUNTIME_DIR/wsgimirror`` when that
  exists, else ``/tmp/wsgimirror-<uid>``, created 0700 and refused when it is a link, another user's,
  or open to others (as ssh-agent keeps its socket).
- Its name is a digest of the config's identity (the config file's real path, or the JSON of a config
  given as a dict): every worker of one deployment finds the same agent, and two deployments on one
  host get one each.
- Starting takes a lock file beside the socket, so concurrent gunicorn workers start one agent, not one
  each; under the lock, a socket file nobody answers on (a dead agent's) is removed first.
- The agent is started detached (``wsgimirror agent --detach``: a new session, its starter gone once it
  listens), so it outlives the worker that started it; it exits after ``Agent.IdleSeconds`` with no
  client.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
import typing as t
from contextlib import contextmanager

from .protocol import PROTOCOL

if t.TYPE_CHECKING:
    from ..config.model import AgentSettings

STARTUP_SECONDS = 10.0  # the longest an agent may take to listen once started
LOCK_POLL = 0.01


class AgentUnavailable(OSError):
    """No agent can be reached or started: the message says why."""


def runtime_directory() -> str:
    """The user's private directory for agent sockets, created if absent, checked if present."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = os.path.join(base, "wsgimirror") if base and os.path.isdir(base) else f"/tmp/wsgimirror-{os.geteuid()}"
    private_directory(path)
    return path


def private_directory(path: str) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise AgentUnavailable(
            errno.ENOTDIR, "is not a directory (a link?); the agent's socket needs a private one", path
        )
    if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise AgentUnavailable(errno.EPERM, "must be a directory of this user's that others cannot enter (0700)", path)


def identity(source: t.Any, config_source: t.Mapping[str, t.Any]) -> str:
    """What names a deployment: its config file's real path, or its config's JSON."""
    if isinstance(source, (str, os.PathLike)):
        return "file:" + os.path.realpath(os.fspath(source))
    return "json:" + json.dumps(config_source, sort_keys=True, default=str)


def socket_path(name: str) -> str:
    """The embedded agent's socket for the deployment named ``name`` (and the frames' protocol)."""
    key = hashlib.sha256(f"{os.geteuid()}\n{name}\n{PROTOCOL}".encode()).hexdigest()[:16]
    return os.path.join(runtime_directory(), f"agent-{key}.sock")


def connect(path: str) -> socket.socket:
    """A connection to the agent at ``path`` (non-blocking), or the OSError of the attempt."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(2.0)
        sock.connect(path)
        sock.settimeout(0.0)
    except BaseException:
        sock.close()
        raise
    return sock


def connect_or_start(path: str, settings: AgentSettings, start: bool) -> socket.socket:
    """Connect to the agent at ``path``; with ``start``, start one when none answers (under the lock)."""
    try:
        return connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        if not start:
            raise
    with locked(path + ".lock"):
        try:
            return connect(path)  # another worker started it while we waited for the lock
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        remove_stale(path)
        start_agent(path, settings)
        return connect(path)


@contextmanager
def locked(path: str) -> t.Iterator[None]:
    """An exclusive lock on ``path`` (created 0600), waited for cooperatively (gevent's sleep when patched)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS * 2
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AgentUnavailable(
                        errno.ETIMEDOUT, "another process held the agent's lock too long", path
                    ) from None
                time.sleep(LOCK_POLL)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_stale(path: str) -> None:
    """Remove a socket file nobody answers on (a dead agent's); anything else at the path is refused."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
        raise AgentUnavailable(errno.EEXIST, "is not a socket of this user's; it is left alone", path)
    os.unlink(path)


def start_agent(path: str, settings: AgentSettings) -> None:
    """Start a detached agent at ``path`` and return once it listens (its starter exits then)."""
    args = [sys.executable, "-m", "wsgimirror", "agent", "--socket", path, "--detach",
            "--idle-seconds", f"{settings.idle_seconds:g}"]  # fmt: skip
    if settings.metrics_bind:
        args += ["--metrics-bind", settings.metrics_bind]
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # wsgimirror/..
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    try:
        started = subprocess.run(args, stdin=subprocess.DEVNULL, env=env, timeout=STARTUP_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise AgentUnavailable(errno.ECHILD, f"the agent did not start: {err}", path) from err
    if started.returncode != 0:
        raise AgentUnavailable(errno.ECHILD, f"the agent did not start (exit status {started.returncode})", path)
