"""This process's id without a system call on every request: read once, and again in a forked child.

The sender, the recorder and the comparison check it per mirror to notice a fork (gunicorn forks its
workers after the app is imported); ``os.getpid()`` is a system call each time.
"""

from __future__ import annotations

import os

_current = os.getpid()


def _forked() -> None:
    global _current
    _current = os.getpid()


os.register_at_fork(after_in_child=_forked)


def current_pid() -> int:
    return _current
