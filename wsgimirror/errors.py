"""The exceptions wsgimirror raises to its callers.

Only configuration problems reach the caller: everything that goes wrong while a
mirror is captured or sent is counted and logged, never raised into the app.
"""

from __future__ import annotations


class WsgiMirrorError(Exception):
    """Base class of every exception raised by wsgimirror."""


class ConfigError(WsgiMirrorError, ValueError):
    """The configuration is invalid.

    ``path`` is the dotted key path of the offending value (for example
    ``ReverseProxy.Clusters.m.Destinations[1].Address``) and ``reason`` says what
    is wrong with it; ``str(err)`` is ``"<path>: <reason>"``.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class MirrorSendError(WsgiMirrorError):
    """A mirrored request failed on the wire; ``reason`` is a short label for stats and logs."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
