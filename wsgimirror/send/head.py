"""Step 5a, build: the request line and headers of a mirror, as a valid HTTP/1.1 message or not at all.

Only a valid HTTP/1.1 head leaves the process:

- the target is origin form under the destination's base path (absolute form is reduced
  to its path and query; anything else is refused), with the client's exact bytes when
  the server keeps them (``RAW_URI`` / ``REQUEST_URI``);
- the method and header names are tokens; values carry no CR, LF, NUL or other control
  bytes besides HTAB, and an obs-fold becomes one space (RFC 9112 5.2);
- hop-by-hop headers are left out, forwarding headers added, the route's transforms
  applied, then ``Content-Length`` and ``X-Mirrored-By`` set and ``Mirror.RemoveHeaders``
  applied last.

A request that cannot be written so raises :class:`BadRequest`; its copy is dropped as
``bad_request``.
"""

from __future__ import annotations

import typing as t
from functools import lru_cache
from urllib.parse import quote

from ..config.transforms import MirrorRequest
from ..util.syntax import connection_tokens, field_value, is_token, origin_form

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from ..config.model import Destination
    from ..config.transforms import Transform

MIRROR_MARK = "wsgimirror"
MARK_HEADER = "x-mirrored-by"  # the header that carries the mark (lower case)
# Headers never copied to a mirror (environ names): hop-by-hop ones, Expect, and those we set.
SKIPPED_HEADERS = frozenset(
    {
        "CONNECTION",
        "KEEP_ALIVE",
        "TE",
        "TRAILER",
        "TRANSFER_ENCODING",
        "UPGRADE",
        "EXPECT",
        "HOST",
        "CONTENT_LENGTH",
        "X_FORWARDED_FOR",
        "X_FORWARDED_HOST",
        "X_FORWARDED_PROTO",
        "X_MIRRORED_BY",
    }
)
PATH_SAFE = "/:@!$&'()*+,;=~"


class BadRequest(Exception):
    """The request cannot be mirrored as a valid HTTP/1.1 message; the message says why."""


def build_head(
    environ: WSGIEnvironment,
    destination: Destination,
    body_length: int,
    transforms: t.Sequence[Transform] = (),
    remove: t.AbstractSet[str] = frozenset(),
    mark: str = MIRROR_MARK,
) -> bytes:
    """The request line and headers of the mirror of the request described by ``environ``.

    ``mark`` is the ``X-Mirrored-By`` value (the ``Mirror.LoopToken`` when one is set);
    ``remove`` (``Mirror.RemoveHeaders``, lower case) wins over everything else.
    """
    target = request_target(environ)
    if target is None:
        raise BadRequest("the request target is neither origin nor absolute form")
    method = environ.get("REQUEST_METHOD", "GET")
    if not is_token(method):
        raise BadRequest("the method is not a token")
    path, _, query = target.partition("?")
    request = MirrorRequest(method, path, query, _end_to_end_headers(environ))
    for transform in transforms:
        transform.apply(request)
    # A recording keeps the request's own Host: it names no destination.
    host = original_host(environ) if request.original_host or destination.records else destination.host_header
    lines = [f"{request.method} {destination.base_path}{request.path}{'?' if request.query else ''}{request.query} "
             f"HTTP/1.1", f"Host: {_clean('Host', host)}"]  # fmt: skip
    lines.extend(f"{name}: {_clean(name, value)}" for name, value in request.headers if name.lower() not in remove)
    if body_length or environ.get("CONTENT_LENGTH") or "HTTP_TRANSFER_ENCODING" in environ:
        lines.append(f"Content-Length: {body_length}")
    lines.append(f"X-Mirrored-By: {mark}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _clean(name: str, value: str) -> str:
    """The value as it may go on the wire, or :class:`BadRequest`."""
    cleaned = field_value(value)
    if cleaned is None:
        raise BadRequest(f"the {name} header holds control characters")
    try:
        cleaned.encode("latin-1")
    except UnicodeEncodeError:
        raise BadRequest(f"the {name} header holds characters a WSGI server cannot have decoded") from None
    return cleaned


def _end_to_end_headers(environ: WSGIEnvironment) -> list[tuple[str, str]]:
    """The request's headers minus hop-by-hop ones, plus X-Forwarded-For/-Host/-Proto."""
    named_by_connection = {
        token.upper().replace("-", "_") for token in connection_tokens(environ.get("HTTP_CONNECTION", ""))
    }
    headers = []
    for key, value in environ.items():
        if not key.startswith("HTTP_"):
            continue
        name = key[5:]
        if name in SKIPPED_HEADERS or name in named_by_connection or name.startswith("PROXY_"):
            continue
        wire = header_name(name)
        if wire is None:
            raise BadRequest(f"{key} is not a header name")
        headers.append((wire, value))
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", environ["CONTENT_TYPE"]))
    client = environ.get("REMOTE_ADDR")
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    if client or forwarded:
        headers.append(("X-Forwarded-For", ", ".join(v for v in (forwarded, client) if v)))
    headers.append(("X-Forwarded-Host", original_host(environ)))
    headers.append(("X-Forwarded-Proto", environ.get("wsgi.url_scheme", "http")))
    return headers


def request_target(environ: WSGIEnvironment) -> str | None:
    """The path and query in origin form, as the client sent them when the server kept them.

    None when the target is neither origin nor absolute form (``*``, ``-admin/x``).
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        if str(environ.get("SERVER_SOFTWARE", "")).startswith("Werkzeug/"):
            raw = _undo_werkzeug_dance(raw)
        return origin_form(raw)
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    try:
        quoted = quote(path.encode("latin-1"), PATH_SAFE)
    except UnicodeEncodeError:
        return None
    query = environ.get("QUERY_STRING")
    return origin_form(f"{quoted or '/'}?{query}" if query else quoted or "/")


def _undo_werkzeug_dance(raw: str) -> str:
    """werkzeug's dev server decodes the target as Latin-1, then encodes it again as UTF-8."""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def original_host(environ: WSGIEnvironment) -> str:
    host = environ.get("HTTP_HOST")
    if host:
        return str(host)
    return f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}".rstrip(":")


@lru_cache(maxsize=512)
def header_name(environ_name: str) -> str | None:
    """``X_FORWARDED_FOR`` -> ``X-Forwarded-For``; None when the result is not a token."""
    name = "-".join(part.capitalize() for part in environ_name.split("_"))
    return name if is_token(name) else None
