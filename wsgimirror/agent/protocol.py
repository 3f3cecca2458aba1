"""The frames between a middleware and its agent: one definition, written and read here.

A frame is a 4-byte big-endian length, then a ``marshal`` (format 4) tuple whose first item names it.
``marshal`` is fast on the plain values a frame holds and is read only from a peer that the agent has
checked is the same user (``SO_PEERCRED``); every frame is checked for its shape after reading.

From the middleware to the agent:

- ``("config", generation, json_text)``: a configuration, named by the SHA-256 of its JSON; copies
  name the generation they matched, so a copy is finished under the config it matched;
- ``("copy", generation, route, clusters, environ, body, body_size, in_file, answer, arrived, latency)``:
  one request to mirror. ``body`` is the body (or its first part); when ``in_file`` the rest is in the
  file whose descriptor travels with the frame (``SCM_RIGHTS``), never its bytes. ``answer`` is the
  app's answer (see :func:`answer_fields`) or None;
- ``("ask", number, question)``: a question the agent answers with a ``reply``.

From the agent to the middleware:

- ``("events", [(kind, route, cluster, destination, value, seconds), ...])``: what happened to copies,
  in batches (a few a second): ``started``, ``succeeded`` (value: the status), ``written``, ``failed``
  (value: the reason), ``dropped`` (value: the reason; ``destination`` empty before a pick), ``unstarted``
  (value: the reason: picked, then not sent after all); ``log`` (route: the logger, value: the level,
  seconds: the message): a warning of the agent's, for the client to log;
- ``("reply", number, value)``.
"""

from __future__ import annotations

import marshal
import struct
import typing as t

HEADER = struct.Struct("!I")
MAX_FRAME = 160 << 20  # a copy's body travels inline up to MemoryBodyBytes (and its answer up to MaxBodyBytes)
VERSION = 4  # marshal's format
# The frames' shapes: raised whenever one changes. The embedded agent's socket name includes it, so an app
# upgraded to new shapes starts its own agent while the old one idles out, instead of talking past it.
PROTOCOL = 2

CONFIG, COPY, ASK, EVENTS, REPLY = "config", "copy", "ask", "events", "reply"
# A copy's fields, after its kind.
COPY_FIELDS = ("generation", "route", "clusters", "environ", "body", "body_size", "in_file", "answer", "arrived",
               "latency")  # fmt: skip
STARTED, SUCCEEDED, WRITTEN, FAILED, DROPPED, UNSTARTED = "started", "succeeded", "written", "failed", "dropped", \
    "unstarted"  # fmt: skip
LOG = "log"  # an event that is a warning of the agent's: (LOG, logger name, "", "", level, message)


class ProtocolError(Exception):
    """A frame that is not one of the frames above: the connection is closed."""


def frame(message: tuple[t.Any, ...]) -> bytes:
    payload = marshal.dumps(message, VERSION)
    return HEADER.pack(len(payload)) + payload


class Reader:
    """Frames from a stream of bytes, as they arrive in pieces."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[t.Any, ...]]:
        """The frames completed by ``data``."""
        buffer = self._buffer
        buffer += data
        frames = []
        at = 0
        while len(buffer) - at >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, at)
            if length > MAX_FRAME:
                raise ProtocolError(f"a frame of {length} bytes, past {MAX_FRAME}")
            end = at + HEADER.size + length
            if len(buffer) < end:
                break
            frames.append(_message(bytes(buffer[at + HEADER.size : end])))
            at = end
        del buffer[:at]
        return frames


def _message(payload: bytes) -> tuple[t.Any, ...]:
    try:
        message = marshal.loads(payload)
    except (ValueError, EOFError, TypeError) as err:
        raise ProtocolError(f"not a frame: {err}") from None
    if not isinstance(message, tuple) or not message or not isinstance(message[0], str):
        raise ProtocolError("not a frame: no kind")
    return message


def copy_fields(message: tuple[t.Any, ...]) -> dict[str, t.Any]:
    """A ``copy`` frame's fields by name, each checked for its type."""
    if len(message) != len(COPY_FIELDS) + 1:
        raise ProtocolError(f"a copy of {len(message) - 1} fields, not {len(COPY_FIELDS)}")
    fields = dict(zip(COPY_FIELDS, message[1:]))
    kinds = {"generation": str, "route": str, "clusters": tuple, "environ": dict, "body": bytes, "body_size": int,
             "in_file": bool, "arrived": int, "latency": int}  # fmt: skip
    for name, kind in kinds.items():
        if not isinstance(fields[name], kind):
            raise ProtocolError(f"a copy whose {name} is a {type(fields[name]).__name__}")
    if fields["answer"] is not None and not isinstance(fields["answer"], tuple):
        raise ProtocolError("a copy whose answer is not a tuple")
    return fields


# An app's answer, as it crosses: (status, status_text, headers, body kept, length, sha256 hex, whole, complete,
# budget_refused, started, elapsed). See wsgimirror.capture.answer.Answer.
ANSWER_FIELDS = ("status", "status_text", "headers", "body", "length", "digest", "whole", "complete",
                 "budget_refused", "started", "elapsed")  # fmt: skip
