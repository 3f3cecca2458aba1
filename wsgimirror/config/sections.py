"""The top-level sections beside ``ReverseProxy``: ``Mirror``, ``Record``, ``Compare`` and ``Agent``."""

from __future__ import annotations

import os
import typing as t

from ..errors import ConfigError
from ..util.syntax import has_control, is_token, shown, wsgi_header_name
from .model import (
    ADDED_FIELDS,
    AGENT_MODES,
    ARRAY_ORDERS,
    EXECUTORS,
    KNOWN_AGENT_KEYS,
    KNOWN_COMPARE_KEYS,
    KNOWN_MIRROR_KEYS,
    KNOWN_RECORD_KEYS,
    LOOP_TOKEN_MIN,
    MAX_IN_FLIGHT,
    SENSITIVE_NAMES,
    TRANSFER_HEADERS,
    AgentSettings,
    CompareSettings,
    MirrorSettings,
    RecordSettings,
)
from .rules import _boolean, _check_keys, _integer, _json_type, _object, _optional_str, _seconds
from .transforms import PROTECTED_HEADERS


def _record_settings(raw: t.Any, path: str) -> RecordSettings:
    body = _object(raw, path)
    _check_keys(body, path, KNOWN_RECORD_KEYS)
    defaults = RecordSettings()
    return RecordSettings(
        queue_bytes=_integer(body.get("QueueBytes", defaults.queue_bytes), f"{path}.QueueBytes", minimum=4096),
        flush_seconds=_seconds(body.get("FlushSeconds", defaults.flush_seconds), f"{path}.FlushSeconds"),
        chunk_bytes=_integer(body.get("ChunkBytes", defaults.chunk_bytes), f"{path}.ChunkBytes", minimum=4096),
        max_bytes=_integer(body.get("MaxBytes", defaults.max_bytes), f"{path}.MaxBytes", minimum=0),
    )


def _mirror_settings(raw: t.Any, path: str) -> MirrorSettings:
    body = _object(raw, path)
    _check_keys(body, path, KNOWN_MIRROR_KEYS)
    defaults = MirrorSettings()
    executor = _optional_str(body.get("Executor"), f"{path}.Executor") or defaults.executor
    if executor.lower() not in EXECUTORS:
        raise ConfigError(f"{path}.Executor", f"must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    return MirrorSettings(
        max_in_flight=_integer(
            body.get("MaxInFlight", defaults.max_in_flight), f"{path}.MaxInFlight", minimum=1, maximum=MAX_IN_FLIGHT
        ),
        memory_body_bytes=_integer(
            body.get("MemoryBodyBytes", defaults.memory_body_bytes), f"{path}.MemoryBodyBytes", minimum=0
        ),
        max_body_bytes=_integer(body.get("MaxBodyBytes", defaults.max_body_bytes), f"{path}.MaxBodyBytes", minimum=0),
        connect_timeout=_seconds(body.get("ConnectTimeout", defaults.connect_timeout), f"{path}.ConnectTimeout"),
        timeout=_seconds(body.get("Timeout", defaults.timeout), f"{path}.Timeout"),
        executor=executor.lower(),
        remove_headers=_remove_headers(body.get("RemoveHeaders", []), f"{path}.RemoveHeaders"),
        breaker_failures=_integer(
            body.get("BreakerFailures", defaults.breaker_failures), f"{path}.BreakerFailures", minimum=0
        ),
        breaker_seconds=_seconds(body.get("BreakerSeconds", defaults.breaker_seconds), f"{path}.BreakerSeconds"),
        loop_token=_loop_token(body.get("LoopToken"), f"{path}.LoopToken"),
        capture_memory_bytes=_integer(
            body.get("CaptureMemoryBytes", defaults.capture_memory_bytes), f"{path}.CaptureMemoryBytes", minimum=0
        ),
        capture_disk_bytes=_integer(
            body.get("CaptureDiskBytes", defaults.capture_disk_bytes), f"{path}.CaptureDiskBytes", minimum=0
        ),
        keep_alive_connections=_integer(
            body.get("KeepAliveConnections", defaults.keep_alive_connections), f"{path}.KeepAliveConnections",
            minimum=0, maximum=MAX_IN_FLIGHT,
        ),
        keep_alive_seconds=_seconds(body.get("KeepAliveSeconds", defaults.keep_alive_seconds),
                                    f"{path}.KeepAliveSeconds"),
    )  # fmt: skip


def _compare_settings(raw: t.Any, path: str) -> CompareSettings:
    body = _object(raw, path)
    _check_keys(body, path, KNOWN_COMPARE_KEYS)
    defaults = CompareSettings()
    order = _optional_str(body.get("ArrayOrder"), f"{path}.ArrayOrder") or defaults.array_order
    if order.lower() not in ARRAY_ORDERS:
        raise ConfigError(f"{path}.ArrayOrder", f"must be one of {', '.join(ARRAY_ORDERS)}, got {order!r}")
    extra_headers = _header_names(body.get("IgnoreHeaders", []), f"{path}.IgnoreHeaders")
    transfer = _header_names(body.get("TransferHeaders", list(TRANSFER_HEADERS)), f"{path}.TransferHeaders")
    added = (_optional_str(body.get("AddedFields"), f"{path}.AddedFields") or defaults.added_fields).lower()
    if added not in ADDED_FIELDS:
        raise ConfigError(f"{path}.AddedFields", f"must be one of {', '.join(ADDED_FIELDS)}, got {added!r}")
    confidence = round(_threshold(body.get("Confidence", defaults.confidence * 100), f"{path}.Confidence") / 100, 9)
    if not 0.5 <= confidence < 1:
        raise ConfigError(
            f"{path}.Confidence", f"must be at least 50 and below 100 (percent), got {confidence * 100:g}"
        )
    return CompareSettings(
        max_body_bytes=_integer(body.get("MaxBodyBytes", defaults.max_body_bytes), f"{path}.MaxBodyBytes", minimum=0),
        memory_bytes=_integer(body.get("MemoryBytes", defaults.memory_bytes), f"{path}.MemoryBytes", minimum=0),
        ignore_headers=frozenset(transfer | extra_headers),
        ignore_fields=_field_patterns(body.get("IgnoreFields", []), f"{path}.IgnoreFields"),
        array_order=order.lower(),
        endpoints=_endpoint_templates(body.get("Endpoints", []), f"{path}.Endpoints"),
        relative_threshold=_threshold(body.get("RelativeThreshold", defaults.relative_threshold),
                                      f"{path}.RelativeThreshold"),
        absolute_threshold=_threshold(body.get("AbsoluteThreshold", defaults.absolute_threshold),
                                      f"{path}.AbsoluteThreshold"),
        log=_log_path(body.get("Log"), f"{path}.Log"),
        log_max_bytes=_integer(body.get("LogMaxBytes", defaults.log_max_bytes), f"{path}.LogMaxBytes",
                               minimum=4096),
        log_seconds=_seconds(body.get("LogSeconds", defaults.log_seconds), f"{path}.LogSeconds"),
        examples=_integer(body.get("Examples", defaults.examples), f"{path}.Examples", minimum=0, maximum=1000),
        max_per_second=_integer(body.get("MaxPerSecond", defaults.max_per_second), f"{path}.MaxPerSecond",
                                minimum=1, maximum=1_000_000),
        sensitive_names=_sensitive_names(body.get("SensitiveNames", list(SENSITIVE_NAMES)),
                                         f"{path}.SensitiveNames"),
        min_samples=_integer(body.get("MinSamples", defaults.min_samples), f"{path}.MinSamples", minimum=1,
                             maximum=1_000_000),
        confidence=confidence,
        latency_threshold=_threshold(body.get("LatencyThreshold", defaults.latency_threshold),
                                     f"{path}.LatencyThreshold"),
        added_fields=added,
        strict_types=_boolean(body.get("StrictTypes", defaults.strict_types), f"{path}.StrictTypes"),
    )  # fmt: skip


def _header_names(raw: t.Any, path: str) -> set[str]:
    names = set()
    for where, name in _string_items(raw, path, "header names"):
        if not is_token(name):
            raise ConfigError(where, f"{shown(name)} is not a header name")
        names.add(name.lower())
    return names


def _sensitive_names(raw: t.Any, path: str) -> tuple[str, ...]:
    names = []
    for where, name in _string_items(raw, path, "names"):
        if not is_token(name):
            raise ConfigError(where, f"must be a name such as token or session, got {shown(name)}")
        names.append(name.lower())
    return tuple(names)


def _string_items(raw: t.Any, path: str, what: str) -> t.Iterator[tuple[str, str]]:
    """(path of the item, the item) for an array of non-empty strings."""
    if not isinstance(raw, list):
        raise ConfigError(path, f"must be an array of {what}, got {_json_type(raw)}")
    for i, item in enumerate(raw):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{path}[{i}]", f"must be {what[:-1]}, got {_json_type(item)} {shown(item)}")
        yield f"{path}[{i}]", item.strip()


def _field_patterns(raw: t.Any, path: str) -> tuple[str, ...]:
    patterns = []
    for where, pattern in _string_items(raw, path, "field paths"):
        root = pattern.split(".", 1)[0].split("[", 1)[0]
        if root not in ("status", "headers", "body") or has_control(pattern) or " " in pattern:
            raise ConfigError(where, f"must be a field path under status, headers or body, got {pattern!r}")
        patterns.append(pattern.lower() if root == "headers" else pattern)
    return tuple(patterns)


def _endpoint_templates(raw: t.Any, path: str) -> tuple[str, ...]:
    templates = []
    for where, template in _string_items(raw, path, "path templates"):
        if not template.startswith("/") or has_control(template) or " " in template or "?" in template:
            raise ConfigError(where, f"must be a path template such as /users/{{id}}, got {template!r}")
        for segment in template.split("/"):
            if ("{" in segment or "}" in segment) and not _is_placeholder(segment):
                raise ConfigError(where, f"a placeholder must be a whole segment such as {{id}}, got {segment!r}")
        templates.append(template)
    return tuple(templates)


def _is_placeholder(segment: str) -> bool:
    return len(segment) > 2 and segment[0] == "{" and segment[-1] == "}" and "{" not in segment[1:-1] \
        and "}" not in segment[1:-1]  # fmt: skip


def _threshold(value: t.Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"must be a percentage, got {_json_type(value)} {shown(value)}")
    if not 0 <= value <= 100:
        raise ConfigError(path, f"must be from 0 to 100, got {value}")
    return float(value)


def _agent_settings(raw: t.Any, path: str) -> AgentSettings:
    body = _object(raw, path)
    _check_keys(body, path, KNOWN_AGENT_KEYS)
    defaults = AgentSettings()
    mode = (_optional_str(body.get("Mode"), f"{path}.Mode") or defaults.mode).lower()
    if mode not in AGENT_MODES:
        raise ConfigError(f"{path}.Mode", f"must be one of {', '.join(AGENT_MODES)}, got {body.get('Mode')!r}")
    socket = _optional_str(body.get("Socket"), f"{path}.Socket")
    if socket is not None and (not socket.startswith("/") or "\x00" in socket or len(socket.encode()) > 100):
        raise ConfigError(f"{path}.Socket", f"must be an absolute path of at most 100 bytes, got {shown(socket)}")
    if mode == "external" and socket is None:
        raise ConfigError(f"{path}.Socket", "is required when Mode is external: the agent's socket path")
    bind = _optional_str(body.get("MetricsBind"), f"{path}.MetricsBind")
    if bind is not None and not _is_bind(bind):
        raise ConfigError(f"{path}.MetricsBind", f"must be PORT or HOST:PORT, got {shown(bind)}")
    return AgentSettings(
        mode=mode,
        socket=socket,
        idle_seconds=_seconds(body.get("IdleSeconds", defaults.idle_seconds), f"{path}.IdleSeconds"),
        buffer_bytes=_integer(body.get("BufferBytes", defaults.buffer_bytes), f"{path}.BufferBytes", minimum=65536),
        metrics_bind=bind,
    )


def _is_bind(value: str) -> bool:
    """``PORT`` or ``HOST:PORT`` (an IPv6 host in brackets)."""
    host, colon, port = value.rpartition(":")
    return port.isdigit() and int(port) < 65536 and (not colon or bool(host.strip("[]")))


def _log_path(raw: t.Any, path: str) -> str | None:
    """The diff log's path: its directory must exist and be writable now, not at the first difference."""
    value = _optional_str(raw, path)
    if value is None:
        return None
    if not value.strip() or "\x00" in value:
        raise ConfigError(path, f"must be a file path, got {shown(value)}")
    directory = os.path.dirname(os.path.abspath(value))
    if "{pid}" in directory:
        raise ConfigError(path, f"{{pid}} belongs in the file name, not the directory: {shown(value)}")
    _writable_directory(directory, path)
    return value


def _writable_directory(directory: str, path: str) -> None:
    """A file wsgimirror writes goes there: the directory must exist and be writable at load, not at the first write."""
    if not os.path.isdir(directory):
        raise ConfigError(path, f"directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(path, f"directory {directory!r} is not writable")


def _loop_token(raw: t.Any, path: str) -> str | None:
    """The shared secret that marks this deployment's mirrors; a header value of at least 16 characters."""
    token = _optional_str(raw, path)
    if token is None:
        return None
    if len(token) < LOOP_TOKEN_MIN or has_control(token) or not token.isascii():
        raise ConfigError(
            path, f"must be a secret of at least {LOOP_TOKEN_MIN} printable ASCII characters without spaces"
        )
    return token


def _remove_headers(raw: t.Any, path: str) -> frozenset[str]:
    if not isinstance(raw, list):
        raise ConfigError(path, f"must be an array of header names, got {_json_type(raw)}")
    names = set()
    for i, name in enumerate(raw):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{path}[{i}]", f"must be a header name, got {_json_type(name)} {shown(name)}")
        problem = wsgi_header_name(name.strip())
        if problem is not None:
            raise ConfigError(f"{path}[{i}]", problem)
        if name.strip().lower() in PROTECTED_HEADERS:
            raise ConfigError(f"{path}[{i}]", f"{name!r} is set by wsgimirror and cannot be removed")
        names.add(name.strip().lower())
    return frozenset(names)
