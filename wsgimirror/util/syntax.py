"""HTTP/1.1 syntax rules shared by the config loader, the router and the head builder.

One place says what a token, a field value and a ``host:port`` are (RFC 9110 and 9112),
so a name the config accepts is one the sender can put on the wire, and a Host the
router reads is one the config could have written.
"""

from __future__ import annotations

import json
import re
import typing as t

# RFC 9110 5.6.2: a token is one or more tchar: ALPHA, DIGIT and !#$%&'*+-.^_`|~
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# RFC 9112 5.2: obs-fold = OWS CRLF RWS; a recipient may replace it with one space.
_OBS_FOLD = re.compile(r"[ \t]*\r?\n[ \t]+")
# Field values carry no control bytes besides HTAB (CR, LF and NUL included), and no DEL.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A request target in origin form: "/" then no whitespace or control bytes.
_ORIGIN_FORM = re.compile(r"/[^\x00-\x20\x7f]*\Z")
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")


def is_token(value: str) -> bool:
    """True when ``value`` is an RFC 9110 token: a valid method or header name."""
    return bool(_TOKEN.match(value))


def wsgi_header_name(name: str) -> str | None:
    """Why ``name`` can never name a header a WSGI app receives, or None when it can."""
    if not is_token(name):
        return f"{shown(name)} is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    if "_" in name:
        dashed = shown(name.replace("_", "-"))
        return f"{shown(name)} has '_': WSGI servers drop such headers or merge them with '-'; write {dashed}"
    return None


def connection_tokens(value: str) -> set[str]:
    """The options of a Connection header, lower case: ``"keep-alive, Upgrade"`` -> ``{"keep-alive", "upgrade"}``."""
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def field_value(value: str) -> str | None:
    """``value`` ready for the wire: obs-folds become one space; None when a control byte is left."""
    if "\n" in value:
        value = _OBS_FOLD.sub(" ", value)
    if CONTROL.search(value):
        return None
    return value


def has_control(value: str) -> bool:
    """True when ``value`` holds whitespace-breaking or control bytes (not fit for a request line)."""
    return bool(re.search(r"[\x00-\x20\x7f]", value))


def origin_form(target: str) -> str | None:
    """The request target reduced to origin form (path and query), or None when it is not one.

    ``http://evil.example/admin?x=1`` becomes ``/admin?x=1`` (absolute form, RFC 9112 3.2.2);
    ``/a?b`` stays byte for byte; anything else (``*``, ``-admin/x``, whitespace, control bytes)
    is None. Raw bytes past ASCII, which no valid target holds, are percent-encoded: the only
    valid spelling of the same path (``/café`` becomes ``/caf%C3%A9``).
    """
    absolute = _ABSOLUTE_FORM.match(target)
    if absolute is not None:
        target = target[absolute.end() :] or "/"
        if target.startswith("?"):
            target = "/" + target
    if not _ORIGIN_FORM.match(target):
        return None
    return target if target.isascii() else _NON_ASCII.sub(_percent, target)


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _percent(match: re.Match[str]) -> str:
    """A WSGI string's character is a byte (Latin-1); anything past it goes out as UTF-8."""
    char = match.group()
    data = char.encode("latin-1") if char <= "\xff" else char.encode("utf-8")
    return "".join(f"%{byte:02X}" for byte in data)


def ascii_digits(value: str) -> bool:
    """True for a non-empty run of 0-9 only (``str.isdigit`` also takes ``²`` and other digits)."""
    return value.isascii() and value.isdigit()


def split_host_port(host: str) -> tuple[str, int | None]:
    """``"Api.com:8080"`` -> ``("api.com", 8080)``; IPv6 literals lose their brackets.

    The port is None when absent, and -1 when present but not a decimal number of at most
    five ASCII digits (``app.local:²``); this never raises.
    """
    host = host.lower()
    port: str | None
    if host.startswith("["):
        name, closed, rest = host[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return name, -1  # "[::1" or "[::1]x:80"
        port = rest[1:] if rest else None
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:
        name, port = host, None  # no port, or a bare IPv6 address
    if port is None:
        return name, None
    return name, int(port) if ascii_digits(port) and len(port) <= 5 else -1


def shown(value: t.Any, limit: int = 80, as_json: bool = False) -> str:
    """A short rendering of any value for an error message; never fails, however deep or odd.

    Scalars as Python writes them (``'1'``, ``True``) unless ``as_json``; objects and arrays as JSON.
    """
    scalar = isinstance(value, (str, int, float, type(None)))
    try:
        text = repr(value) if scalar and not as_json else json.dumps(value, default=repr)
    except (RecursionError, TypeError, ValueError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
