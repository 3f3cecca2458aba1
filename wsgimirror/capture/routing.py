"""Step 1, match: find the first route whose hosts, paths and methods all match a request.

Routes are tried in ``Order`` (ties in file order). Hosts are case-insensitive:
``api.com`` matches that host on any port, ``api.com:8080`` only that port, and
``*.api.com`` or ``*api.com`` match by suffix. Paths are exact or end in ``*`` for a
prefix (case-sensitive, as the path itself), or are templates of the seed proxy's and YARP's
syntax: ``{name}`` matches one segment, a last ``{**name}`` the rest of the path, empty included.
``*`` or an absent list matches all.
"""

from __future__ import annotations

import re
import typing as t

from ..config.model import DEFAULT_PORTS, Route
from ..util.syntax import ascii_digits, split_host_port

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment


class _HostPattern:
    __slots__ = ("suffix", "name", "port")

    def __init__(self, pattern: str) -> None:
        self.suffix = pattern.startswith("*")
        body = pattern[1:] if self.suffix else pattern
        self.name, self.port = split_host_port(body)

    def matches(self, name: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        return name.endswith(self.name) if self.suffix else name == self.name


class _CompiledRoute:
    __slots__ = ("route", "hosts", "exact_paths", "path_prefixes", "templates", "methods")

    def __init__(self, route: Route) -> None:
        self.route = route
        hosts = route.hosts if "*" not in route.hosts else ()
        self.hosts = tuple(_HostPattern(h) for h in hosts)
        paths = route.paths if "*" not in route.paths else ()
        templates = [p for p in paths if "{" in p]
        plain = [p for p in paths if "{" not in p]
        self.exact_paths = frozenset(p for p in plain if not p.endswith("*"))
        self.path_prefixes = tuple(p[:-1] for p in plain if p.endswith("*"))
        self.templates = re.compile("|".join(f"(?:{template_regex(p)})" for p in templates)) if templates else None
        self.methods = frozenset(route.methods)

    def matches(self, environ: WSGIEnvironment, path: str) -> bool:
        if self.methods and environ.get("REQUEST_METHOD", "GET").upper() not in self.methods:
            return False
        if (self.exact_paths or self.path_prefixes or self.templates) and not (
            path in self.exact_paths
            or path.startswith(self.path_prefixes)
            or (self.templates is not None and self.templates.fullmatch(path) is not None)
        ):
            return False
        if self.hosts:
            host = request_host(environ)
            return host is not None and any(pattern.matches(*host) for pattern in self.hosts)
        return True


def template_regex(template: str) -> str:
    """A path template as a regular expression: ``{name}`` one segment, a last ``{**name}`` the rest.

    ``/api/{**rest}`` matches ``/api``, ``/api/`` and everything below, as YARP's catch-all does.
    """
    parts: list[str] = []
    for segment in template.split("/"):
        if segment.startswith("{*"):
            return "/".join(parts) + "(?:/.*)?"
        parts.append("[^/]+" if segment.startswith("{") else re.escape(segment))
    return "/".join(parts)


class Router:
    """Matches requests against a configuration's routes."""

    __slots__ = ("_routes",)

    def __init__(self, routes: t.Iterable[Route]) -> None:
        self._routes = tuple(_CompiledRoute(route) for route in routes)

    def match(self, environ: WSGIEnvironment) -> Route | None:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        for compiled in self._routes:
            if compiled.matches(environ, path):
                return compiled.route
        return None


def request_host(environ: WSGIEnvironment) -> tuple[str, int] | None:
    """The host and port the client addressed: the Host header, else the server's name and port.

    None when the Host header is malformed (``app.local:²``): it matches no host pattern.
    """
    header = environ.get("HTTP_HOST")
    if header:
        name, port = split_host_port(header)
        if port == -1:
            return None
        if port is None:
            port = DEFAULT_PORTS.get(str(environ.get("wsgi.url_scheme")), 80)  # http's, when absent or unknown
        return name, port
    server_port = environ.get("SERVER_PORT")
    port = int(server_port) if isinstance(server_port, str) and ascii_digits(server_port) else 80
    return str(environ.get("SERVER_NAME") or "").lower(), port
