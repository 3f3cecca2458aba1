"""Step 5a, shape: a route's ``Transforms`` (the seed proxy's format), applied to mirrors only.

The app always sees the request as it came; each mirror is built from the snapshot and
then reshaped, in order, by the route's transforms. Supported entries::

    {"RequestHeader": "X-Env", "Set": "shadow"}      {"RequestHeader": "X-Env", "Append": "shadow"}
    {"RequestHeaderRemove": "Cookie"}                {"RequestHeaderOriginalHost": "true"}
    {"PathPrefix": "/v2"}  {"PathRemovePrefix": "/api"}  {"PathSet": "/x"}
    {"QueryValueParameter": "a", "Set": "1"}         {"QueryValueParameter": "a", "Append": "1"}
    {"QueryRemoveParameter": "token"}

Query transforms keep every other parameter byte for byte.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus

from ..errors import ConfigError
from ..util.syntax import field_value, has_control, is_token, shown, wsgi_header_name
from .appsettings import Section


class MirrorRequest:
    """The mirrored request while it is being shaped: path and query as sent on the wire."""

    __slots__ = ("method", "path", "query", "headers", "original_host")

    def __init__(self, method: str, path: str, query: str, headers: list[tuple[str, str]]) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.original_host = False

    def remove_header(self, name: str) -> None:
        lower = name.lower()
        self.headers = [(n, v) for n, v in self.headers if n.lower() != lower]


@dataclass(frozen=True)
class Transform:
    """One validated transform: ``kind`` is the entry's first key, ``name`` and ``value`` its arguments."""

    kind: str
    name: str = ""
    value: str = ""
    append: bool = False

    def apply(self, request: MirrorRequest) -> None:
        _APPLY[self.kind](self, request)


def _request_header(tr: Transform, request: MirrorRequest) -> None:
    if not tr.append:
        request.remove_header(tr.name)
    request.headers.append((tr.name, tr.value))


def _request_header_remove(tr: Transform, request: MirrorRequest) -> None:
    request.remove_header(tr.name)


def _original_host(tr: Transform, request: MirrorRequest) -> None:
    request.original_host = tr.value.lower() == "true"


def _path_prefix(tr: Transform, request: MirrorRequest) -> None:
    request.path = tr.value.rstrip("/") + request.path


def _path_remove_prefix(tr: Transform, request: MirrorRequest) -> None:
    prefix = tr.value.rstrip("/")
    if request.path == prefix or request.path.startswith(prefix + "/"):
        request.path = request.path[len(prefix) :] or "/"


def _path_set(tr: Transform, request: MirrorRequest) -> None:
    request.path = tr.value


def _query_value(tr: Transform, request: MirrorRequest) -> None:
    pieces = _query_pieces(request.query)
    if not tr.append:
        pieces = [p for p in pieces if _query_name(p) != tr.name]
    pieces.append(f"{quote(tr.name, safe='')}={quote(tr.value, safe='')}")
    request.query = "&".join(pieces)


def _query_remove(tr: Transform, request: MirrorRequest) -> None:
    request.query = "&".join(p for p in _query_pieces(request.query) if _query_name(p) != tr.name)


def _query_pieces(query: str) -> list[str]:
    return [p for p in query.split("&") if p]


def _query_name(piece: str) -> str:
    return unquote_plus(piece.partition("=")[0])


_APPLY: dict[str, t.Callable[[Transform, MirrorRequest], None]] = {
    "RequestHeader": _request_header,
    "RequestHeaderRemove": _request_header_remove,
    "RequestHeaderOriginalHost": _original_host,
    "PathPrefix": _path_prefix,
    "PathRemovePrefix": _path_remove_prefix,
    "PathSet": _path_set,
    "QueryValueParameter": _query_value,
    "QueryRemoveParameter": _query_remove,
}
# The keys each kind takes besides its own; one of a pair of alternatives is required.
_ARGUMENTS: dict[str, tuple[str, ...]] = {"RequestHeader": ("Set", "Append"), "QueryValueParameter": ("Set", "Append")}
PROTECTED_HEADERS = ("host", "content-length", "x-mirrored-by")


def compile_transforms(raw: t.Any, path: str) -> tuple[Transform, ...]:
    """Validate a route's ``Transforms`` list into :class:`Transform` objects, naming any bad entry."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(path, "must be an array of transforms")
    return tuple(_compile_one(entry, f"{path}[{i}]") for i, entry in enumerate(raw))


def _compile_one(entry: t.Any, path: str) -> Transform:
    if not isinstance(entry, dict) or not entry or not all(isinstance(key, str) for key in entry):
        raise ConfigError(path, f'must be an object such as {{"PathPrefix": "/v2"}}, got {shown(entry, as_json=True)}')
    raw, entry = entry, Section(entry, path)  # keys in any case, as .NET reads them
    kinds = [kind for kind in _APPLY if kind in entry]
    if len(kinds) != 1:
        supported = ", ".join(_APPLY)
        raise ConfigError(path, f"unknown transform {shown(raw)}; supported: {supported}")
    kind = kinds[0]
    name = entry[kind]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}.{kind}", f"must be a non-empty string, got {shown(name, as_json=True)}")
    allowed = _ARGUMENTS.get(kind, ())
    extra = sorted(key for key in entry if key.lower() not in {k.lower() for k in (kind, *allowed)})
    if extra:
        raise ConfigError(path, f"unexpected key {extra[0]!r} in {kind} transform")
    if kind.startswith("Path") and not name.startswith("/"):
        raise ConfigError(f"{path}.{kind}", f"must start with '/', got {name!r}")
    if kind.startswith("Path") and has_control(name):
        raise ConfigError(
            f"{path}.{kind}", f"must not contain spaces or control characters, got {shown(name, as_json=True)}"
        )
    if kind == "RequestHeader" and not is_token(name):
        raise ConfigError(f"{path}.{kind}", f"{shown(name)} is not a header name")
    if kind == "RequestHeaderRemove" and wsgi_header_name(name) is not None:
        raise ConfigError(f"{path}.{kind}", t.cast(str, wsgi_header_name(name)))
    if kind == "RequestHeaderOriginalHost" and name.lower() not in ("true", "false"):
        raise ConfigError(f"{path}.{kind}", f"must be 'true' or 'false', got {name!r}")
    if kind in ("RequestHeader", "RequestHeaderRemove") and name.lower() in PROTECTED_HEADERS:
        raise ConfigError(f"{path}.{kind}", f"{name!r} is set by wsgimirror and cannot be changed by a transform")
    if not allowed:
        return Transform(kind, name=name, value=name)
    given = [key for key in allowed if key in entry]
    if len(given) != 1:
        raise ConfigError(path, f"{kind} needs exactly one of {' or '.join(allowed)}")
    value = entry[given[0]]
    if not isinstance(value, str):
        raise ConfigError(f"{path}.{given[0]}", f"must be a string, got {shown(value, as_json=True)}")
    if kind == "RequestHeader":
        value = _wire_header_value(value, f"{path}.{given[0]}")
    return Transform(kind, name=name, value=value, append=given[0] == "Append")


def _wire_header_value(value: str, path: str) -> str:
    """A header value as the head builder encodes it (Latin-1): characters beyond it go out as UTF-8."""
    if field_value(value) != value:
        raise ConfigError(path, f"must not contain line breaks or control characters, got {shown(value)}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8").decode("latin-1")
    return value
